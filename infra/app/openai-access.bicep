// Cognitive Services OpenAI User on one Azure OpenAI account (new or existing, in this module's
// resource group) for the function identity and, if given, the developer; with phone calls on
// (SIP_ENABLED), the developer also gets Cognitive Services User, the role Microsoft's SIP page asks for,
// so the postprovision hook can register the webhook endpoint with their Entra token.
param openAiName string
param managedIdentityPrincipalId string
param userPrincipalId string = ''
@allowed([
  'User'
  'ServicePrincipal'
])
param userPrincipalType string = 'User'
@description('Phone calls are on: the developer registers the webhook endpoint (infra/hooks/sip_webhook.py).')
param userRegistersWebhooks bool = false

var openAiUserRoleDefinitionId = '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd' // Cognitive Services OpenAI User
var cognitiveServicesUserRoleDefinitionId = 'a97b65f3-24c7-4388-baec-2e87135dc908' // Cognitive Services User: the webhook endpoints (SIP)

resource account 'Microsoft.CognitiveServices/accounts@2024-10-01' existing = {
  name: openAiName
}

resource identityOpenAiUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, managedIdentityPrincipalId, openAiUserRoleDefinitionId)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', openAiUserRoleDefinitionId)
    principalId: managedIdentityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource userOpenAiUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(userPrincipalId)) {
  name: guid(account.id, userPrincipalId, openAiUserRoleDefinitionId)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', openAiUserRoleDefinitionId)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}

resource userWebhooks 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (userRegistersWebhooks && !empty(userPrincipalId)) {
  name: guid(account.id, userPrincipalId, cognitiveServicesUserRoleDefinitionId)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', cognitiveServicesUserRoleDefinitionId)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}
