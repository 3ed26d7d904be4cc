// Static Web App (Free) serving static_web/; azd finds it by the azd-service-name tag.
param name string
param location string
param tags object = {}

resource web 'Microsoft.Web/staticSites@2022-09-01' = {
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'web' })
  sku: {
    name: 'Free'
    tier: 'Free'
  }
  properties: {
    allowConfigFileUpdates: true
    stagingEnvironmentPolicy: 'Enabled'
    buildProperties: {
      skipGithubActionWorkflowGeneration: true
    }
  }
}

output name string = web.name
output uri string = 'https://${web.properties.defaultHostname}'
