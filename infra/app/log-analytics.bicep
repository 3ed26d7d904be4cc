// Log Analytics workspace behind Application Insights; queries need Entra ID (no shared keys).
param name string
param location string = resourceGroup().location
param tags object = {}
param retentionInDays int = 30

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
    features: {
      disableLocalAuth: true
    }
  }
}

output name string = workspace.name
output resourceId string = workspace.id
