// Flex Consumption function app (AVM web/site, as in functions-quickstart-python-http-azd):
// deployment package, host storage, telemetry and Azure OpenAI all through the user-assigned identity.
param name string
param location string = resourceGroup().location
param tags object = {}
param applicationInsightsName string
param appServicePlanId string
param appSettings object = {}
param runtimeName string
param runtimeVersion string
param serviceName string = 'api'
param storageAccountName string
param deploymentStorageContainerName string
param instanceMemoryMB int = 2048
param maximumInstanceCount int = 100
param identityId string
param identityClientId string
@description('Origins for siteConfig.cors; empty leaves CORS to the app.')
param corsAllowedOrigins array = []

resource stg 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// Identity-based AzureWebJobsStorage: no plain AzureWebJobsStorage setting may exist, it would win silently.
var identitySettings = {
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__blobServiceUri: stg.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: stg.properties.primaryEndpoints.queue
  AzureWebJobsStorage__tableServiceUri: stg.properties.primaryEndpoints.table
  AZURE_CLIENT_ID: identityClientId // which identity azure-identity picks for Azure OpenAI tokens
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  // Not a secret: the ingestion address and resource id; ingestion itself requires the Entra token above.
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString
}

module api 'br/public:avm/res/web/site:0.15.1' = {
  name: '${serviceName}-flex-consumption'
  params: {
    kind: 'functionapp,linux'
    name: name
    location: location
    tags: union(tags, { 'azd-service-name': serviceName })
    serverFarmResourceId: appServicePlanId
    httpsOnly: true
    managedIdentities: {
      systemAssigned: false
      userAssignedResourceIds: [
        identityId
      ]
    }
    // Key Vault references in app settings (e.g. the optional sign-in secret) resolve with this identity;
    // without it the platform would look for a system-assigned identity, which this app does not have.
    keyVaultAccessIdentityResourceId: identityId
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${stg.properties.primaryEndpoints.blob}${deploymentStorageContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: runtimeName
        version: runtimeVersion
      }
    }
    siteConfig: {
      alwaysOn: false
      minTlsVersion: '1.2'
      // No ftpsState: Flex Consumption documents it as unsupported (deploys go through the package container).
      cors: empty(corsAllowedOrigins) ? null : {
        allowedOrigins: corsAllowedOrigins
        supportCredentials: false
      }
    }
    // Identity settings last: extra settings cannot replace them. The AVM site module merges these
    // into the app's current settings: a setting removed here stays on the app until deleted by hand
    // (az functionapp config appsettings delete; README: Deploy-time traps).
    appSettingsKeyValuePairs: union(appSettings, identitySettings)
  }
}

output SERVICE_API_NAME string = api.outputs.name
output SERVICE_API_URI string = 'https://${api.outputs.defaultHostname}'
