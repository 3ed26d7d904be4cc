// Phone calls over SIP (SIP_ENABLED): a Key Vault for the two values the gateway must not hold in plain
// app settings, the webhook endpoint's signing secret and the callers' salt. main.bicep deploys it only
// with SIP on and references both secrets from the app settings SIP_WEBHOOK_SECRET and SIP_CALLER_SALT
// (@Microsoft.KeyVault(SecretUri=...), resolved by the app's user-assigned identity: api.bicep sets
// keyVaultAccessIdentityResourceId). The template declares no secret: the postprovision hook
// (infra/hooks/sip_webhook.py) writes them, the salt once and never again (it keys the callers' hashes,
// so it must survive every deploy), the signing secret when it registers the webhook endpoint. A secret
// declared here would be overwritten by each provision.
param name string
param location string = resourceGroup().location
param tags object = {}
@description('Principal id of the function app\'s identity: reads the secrets.')
param appPrincipalId string
@description('Object id of the person running azd (AZURE_PRINCIPAL_ID): the hook writes the secrets as them. Empty to skip.')
param userPrincipalId string = ''
@allowed([
  'User'
  'ServicePrincipal'
])
param userPrincipalType string = 'User'

var secretsUserRoleDefinitionId = '4633458b-17de-408a-b874-0445c86b69e6' // Key Vault Secrets User: the app resolves its references
var secretsOfficerRoleDefinitionId = 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7' // Key Vault Secrets Officer: the deployer's hook writes the secrets

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true // roles only: no access policies, so nobody reads a secret without a role here
    accessPolicies: []
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    // Recoverable for 90 days and not purgeable: the salt cannot be lost by accident. The name stays taken
    // meanwhile, so after `azd down` recover the vault (`az keyvault recover`) before the next `azd up`.
    enablePurgeProtection: true
    // Public like the rest of the infra: the Flex app has no virtual network, and the hook runs on the
    // deployer's machine. Access is by role only.
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource appSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, appPrincipalId, secretsUserRoleDefinitionId)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', secretsUserRoleDefinitionId)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource userSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(userPrincipalId)) {
  name: guid(vault.id, userPrincipalId, secretsOfficerRoleDefinitionId)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', secretsOfficerRoleDefinitionId)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}

output name string = vault.name
output uri string = vault.properties.vaultUri
