// Static Web App serving static_web/; azd finds it by the azd-service-name tag. Free unless a linked
// backend is wanted (that needs Standard).
param name string
param location string
param tags object = {}
@allowed(['Free', 'Standard'])
param sku string = 'Free'

resource web 'Microsoft.Web/staticSites@2022-09-01' = {
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'web' })
  sku: {
    name: sku
    tier: sku
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
