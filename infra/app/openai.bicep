// Azure OpenAI account (Entra ID only) with one realtime model deployment.
param name string
param location string
param tags object = {}
param deploymentName string
param modelName string
param modelVersion string
param skuName string = 'GlobalStandard'
param capacity int = 10

resource account 'Microsoft.CognitiveServices/accounts@2024-10-01' = {
  name: name
  location: location
  tags: tags
  kind: 'OpenAI'
  sku: {
    name: 'S0'
  }
  properties: {
    customSubDomainName: name // required for Entra ID tokens; gives https://<name>.openai.azure.com
    disableLocalAuth: true // no api keys: the gateway uses its managed identity
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
    }
  }
}

resource deployment 'Microsoft.CognitiveServices/accounts/deployments@2024-10-01' = {
  parent: account
  name: deploymentName
  sku: {
    name: skuName
    capacity: capacity
  }
  properties: {
    model: {
      format: 'OpenAI'
      name: modelName
      version: modelVersion
    }
    versionUpgradeOption: 'OnceNewDefaultVersionAvailable'
  }
}

output name string = account.name
output endpoint string = 'https://${account.properties.customSubDomainName}.openai.azure.com'
output deploymentName string = deployment.name
