// The realtime gateway on Azure: Flex Consumption function app + storage (queue, tables) +
// Azure OpenAI realtime deployment + Static Web App, all reached with one user-assigned managed
// identity and no keys. Layout follows Azure-Samples/functions-quickstart-python-http-azd.
// Not compiled or deployed in this repository's sandbox (no Bicep CLI, no Azure): see README.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the environment, used to derive a short unique token for every resource name.')
param environmentName string

@minLength(1)
@description('Location of the resource group, storage, monitoring and the Flex Consumption function app.')
@allowed([
  'australiaeast'
  'australiasoutheast'
  'brazilsouth'
  'canadacentral'
  'centralindia'
  'centralus'
  'eastasia'
  'eastus'
  'eastus2'
  'eastus2euap'
  'francecentral'
  'germanywestcentral'
  'italynorth'
  'japaneast'
  'koreacentral'
  'northcentralus'
  'northeurope'
  'norwayeast'
  'southafricanorth'
  'southcentralus'
  'southeastasia'
  'southindia'
  'spaincentral'
  'swedencentral'
  'uaenorth'
  'uksouth'
  'ukwest'
  'westcentralus'
  'westeurope'
  'westus'
  'westus2'
  'westus3'
])
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object id of the developer running azd (AZURE_PRINCIPAL_ID): gets queue, table and OpenAI data roles for local runs and the audit command. Empty to skip.')
param principalId string = ''

@description('Kind of principalId: User for a person, ServicePrincipal for a CI identity.')
@allowed([
  'User'
  'ServicePrincipal'
])
param principalType string = 'User'

// Optional explicit names; empty means derived from the environment token.
param resourceGroupName string = ''
param apiServiceName string = ''
param apiUserAssignedIdentityName string = ''
param appServicePlanName string = ''
param storageAccountName string = ''
param logAnalyticsName string = ''
param applicationInsightsName string = ''
param openAiName string = ''
param staticWebAppName string = ''

// ---- Azure OpenAI -------------------------------------------------------------------------
@description('Region of the new Azure OpenAI resource; realtime models exist only in some regions (e.g. eastus2, swedencentral).')
param openAiLocation string = 'eastus2'

@description('Deployment name the gateway calls (AZURE_OPENAI_DEPLOYMENT and the session model).')
param openAiDeploymentName string = 'gpt-realtime'

@description('Realtime model to deploy.')
param openAiModelName string = 'gpt-realtime'

@description('Model version to deploy.')
param openAiModelVersion string = '2025-08-28'

@description('Deployment SKU; realtime models are offered as GlobalStandard.')
param openAiDeploymentSkuName string = 'GlobalStandard'

@minValue(1)
@description('Deployment capacity in units of 1,000 tokens per minute.')
param openAiDeploymentCapacity int = 10

@description('Use an existing Azure OpenAI resource instead of creating one: its endpoint, e.g. https://my-resource.openai.azure.com. Its deployment must be named openAiDeploymentName.')
param existingOpenAiEndpoint string = ''

@description('Name of that existing resource, to grant the identity Cognitive Services OpenAI User on it. Empty: grant the role yourself (README).')
param existingOpenAiName string = ''

@description('Resource group of that existing resource (same subscription). Empty: the group this template creates.')
param existingOpenAiResourceGroup string = ''

// ---- Function app -------------------------------------------------------------------------
@allowed([
  512
  2048
  4096
])
@description('Flex Consumption instance memory (MB).')
param instanceMemoryMB int = 2048

@minValue(40)
@maxValue(1000)
@description('Flex Consumption scale-out limit.')
param maximumInstanceCount int = 100

@description('Origins allowed besides the Static Web App (https://host[:port]), e.g. a site hosted elsewhere.')
param extraAllowedOrigins array = []

@description('Put the allowed origins in siteConfig.cors (the platform answers preflights, but cannot expose x-call-id). False (default) leaves CORS to the app: ALLOWED_ORIGINS and its OPTIONS routes, tested locally.')
param platformCors bool = false

@description('Queue the /connect route feeds and the sideband listener drains (LISTENER_QUEUE); `<name>-poison` is created too.')
@minLength(3)
@maxLength(56) // queue names stop at 63 characters, and `-poison` adds 7
param listenerQueueName string = 'call-listener'

@description('Archive table for call events (ARCHIVE_EVENTS_TABLE).')
param eventsTableName string = 'callevents'

@description('Archive table for call summaries (ARCHIVE_SESSIONS_TABLE).')
param sessionsTableName string = 'callsessions'

@description('Table of the cost and abuse limits shared by every instance (LIMITS_TABLE): rate windows, active-call slots, daily usage.')
param limitsTableName string = 'gatewaylimits'

@description('Requests a minute per client on /api/connect and /api/token (RATE_LIMIT_PER_MINUTE; 0 = off).')
param rateLimitPerMinute int = 10

@description('Calls not yet ended across the app (MAX_ACTIVE_CALLS; 0 = off, at most 500).')
param maxActiveCalls int = 100

@description('Call minutes a UTC day may spend, whole app (DAILY_CALL_MINUTES; 0 = unlimited).')
param dailyCallMinutes int = 0

@description('Tokens a UTC day may spend, whole app (DAILY_TOKEN_BUDGET; 0 = unlimited).')
param dailyTokenBudget int = 0

@description('Per signed-in principal: call minutes a day (PRINCIPAL_DAILY_CALL_MINUTES; 0 = no per-principal budget).')
param principalDailyCallMinutes int = 0

@description('Per signed-in principal: tokens a day (PRINCIPAL_DAILY_TOKEN_BUDGET; 0 = no per-principal budget).')
param principalDailyTokenBudget int = 0

@description('Limits table unreachable: let requests through the rate limit (RATE_LIMIT_FAIL_OPEN).')
param rateLimitFailOpen bool = true

@description('Limits table unreachable: let calls through the budgets and the active-call cap (BUDGET_FAIL_OPEN).')
param budgetFailOpen bool = false

@description('GET /api/token (seed parity; TOKEN_ROUTE_ENABLED). A call started with its secret has no listener, no slot and no usage: switch it off on a public site that relies on the limits.')
param tokenRouteEnabled bool = true

@description('A spent daily budget also hangs up the calls still running (BUDGET_HANGUP_RUNNING); false lets them finish.')
param budgetHangupRunning bool = false

@description('A reserved active-call slot whose call never attached expires after this many seconds (CALL_SLOT_ATTACH_SECONDS).')
param callSlotAttachSeconds int = 120

@description('Header with the client address and how many trusted front ends append to it (CLIENT_IP_HEADER, CLIENT_IP_HOP). Behind Front Door: 2 (README: Cost and abuse control).')
param clientIpHeader string = 'x-forwarded-for'
param clientIpHop int = 1

@description('USD per million tokens for the cost estimate (PRICE_*_PER_MTOK) and per minute of duration-billed transcription.')
param prices object = {
  PRICE_INPUT_TEXT_PER_MTOK: '4.00'
  PRICE_INPUT_AUDIO_PER_MTOK: '32.00'
  PRICE_CACHED_INPUT_PER_MTOK: '0.40'
  PRICE_OUTPUT_TEXT_PER_MTOK: '16.00'
  PRICE_OUTPUT_AUDIO_PER_MTOK: '64.00'
  PRICE_TRANSCRIPTION_PER_MTOK: '6.00'
  PRICE_TRANSCRIPTION_PER_MINUTE: '0.006'
}

@description('Worker threads per Python worker for the HTTP functions; listeners run on their own pool (LISTENER_MAX_CONCURRENT; README: listener capacity).')
param pythonThreadpoolThreadCount int = 24

@description('More app settings (REALTIME_INSTRUCTIONS, REALTIME_VOICE, MAX_CALL_SECONDS, REALTIME_TOOLS with TOOLS_MODULE, GUARDRAIL_BLOCKED_TERMS, ...); they override the defaults below but never the identity settings.')
param extraAppSettings object = {}

// ---- Static Web App -----------------------------------------------------------------------
@description('Static Web Apps (Free) exists only in a few regions.')
@allowed([
  'centralus'
  'eastasia'
  'eastus2'
  'westeurope'
  'westus2'
])
param staticWebAppLocation string = 'eastus2'

var abbrs = loadJsonContent('./abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = { 'azd-env-name': environmentName }
var functionAppName = !empty(apiServiceName) ? apiServiceName : '${abbrs.webSitesFunctions}api-${resourceToken}'
// A container name is 3-63 lowercase letters, digits and single hyphens: a custom app name may have capitals.
var deploymentStorageContainerName = replace(replace('app-package-${toLower(take(functionAppName, 32))}-${take(toLower(uniqueString(functionAppName, resourceToken)), 7)}', '--', '-'), '--', '-')
var resourceGroupActualName = !empty(resourceGroupName) ? resourceGroupName : '${abbrs.resourcesResourceGroups}${environmentName}'

var useExistingOpenAi = !empty(existingOpenAiEndpoint)
var openAiAccountName = !empty(openAiName) ? openAiName : '${abbrs.cognitiveServicesAccounts}${resourceToken}'
// The account's custom subdomain is its name, so the endpoint is known before it exists.
var openAiEndpoint = useExistingOpenAi ? existingOpenAiEndpoint : 'https://${openAiAccountName}.openai.azure.com'
var grantOpenAiRole = !useExistingOpenAi || !empty(existingOpenAiName)
var openAiRoleGroup = useExistingOpenAi && !empty(existingOpenAiResourceGroup) ? existingOpenAiResourceGroup : resourceGroupActualName

resource rg 'Microsoft.Resources/resourceGroups@2021-04-01' = {
  name: resourceGroupActualName
  location: location
  tags: tags
}

// The one identity the function app uses for storage, deployment, App Insights and Azure OpenAI.
module apiUserAssignedIdentity 'br/public:avm/res/managed-identity/user-assigned-identity:0.4.1' = {
  name: 'apiUserAssignedIdentity'
  scope: rg
  params: {
    location: location
    tags: tags
    name: !empty(apiUserAssignedIdentityName) ? apiUserAssignedIdentityName : '${abbrs.managedIdentityUserAssignedIdentities}api-${resourceToken}'
  }
}

module appServicePlan 'br/public:avm/res/web/serverfarm:0.1.1' = {
  name: 'appserviceplan'
  scope: rg
  params: {
    name: !empty(appServicePlanName) ? appServicePlanName : '${abbrs.webServerFarms}${resourceToken}'
    sku: {
      name: 'FC1'
      tier: 'FlexConsumption'
    }
    reserved: true
    location: location
    tags: tags
  }
}

// Host storage, Flex deployment container, listener queue and archive tables: identity only.
module storage 'br/public:avm/res/storage/storage-account:0.8.3' = {
  name: 'storage'
  scope: rg
  params: {
    name: !empty(storageAccountName) ? storageAccountName : '${abbrs.storageStorageAccounts}${resourceToken}'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false // no account keys: every client (host, app, deployment) uses Entra ID
    dnsEndpointType: 'Standard'
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
    blobServices: {
      containers: [
        { name: deploymentStorageContainerName }
      ]
    }
    minimumTlsVersion: 'TLS1_2'
    skuName: 'Standard_LRS'
    location: location
    tags: tags
  }
}

module storageData './app/storage-data.bicep' = {
  name: 'storageData'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    queueNames: [
      listenerQueueName
      '${listenerQueueName}-poison'
    ]
    tableNames: [
      eventsTableName
      sessionsTableName
      limitsTableName
    ]
  }
}

// Plain resource rather than the AVM module so disableLocalAuth is set explicitly.
module logAnalytics './app/log-analytics.bicep' = {
  name: 'logAnalytics'
  scope: rg
  params: {
    name: !empty(logAnalyticsName) ? logAnalyticsName : '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'br/public:avm/res/insights/component:0.4.1' = {
  name: 'appinsights'
  scope: rg
  params: {
    name: !empty(applicationInsightsName) ? applicationInsightsName : '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
    workspaceResourceId: logAnalytics.outputs.resourceId
    disableLocalAuth: true // telemetry is accepted only with an Entra token (APPLICATIONINSIGHTS_AUTHENTICATION_STRING)
  }
}

module openAi './app/openai.bicep' = if (!useExistingOpenAi) {
  name: 'openai'
  scope: rg
  params: {
    name: openAiAccountName
    location: openAiLocation
    tags: tags
    deploymentName: openAiDeploymentName
    modelName: openAiModelName
    modelVersion: openAiModelVersion
    skuName: openAiDeploymentSkuName
    capacity: openAiDeploymentCapacity
  }
}

module openAiAccess './app/openai-access.bicep' = if (grantOpenAiRole) {
  name: 'openAiAccess'
  scope: resourceGroup(openAiRoleGroup)
  params: {
    openAiName: useExistingOpenAi ? existingOpenAiName : openAiAccountName
    managedIdentityPrincipalId: apiUserAssignedIdentity.outputs.principalId
    userPrincipalId: principalId
    userPrincipalType: principalType
  }
  dependsOn: [
    rg
    openAi
  ]
}

module web './app/web.bicep' = {
  name: 'web'
  scope: rg
  params: {
    name: !empty(staticWebAppName) ? staticWebAppName : '${abbrs.webStaticSites}${resourceToken}'
    location: staticWebAppLocation
    tags: tags
  }
}

var allowedOrigins = union([web.outputs.uri], extraAllowedOrigins)

// App settings the gateway reads (realtime_gateway/settings.py); identity and storage settings are added in api.bicep.
var gatewayAppSettings = union({
  AZURE_OPENAI_ENDPOINT: openAiEndpoint
  AZURE_OPENAI_DEPLOYMENT: openAiDeploymentName
  LISTENER_QUEUE: listenerQueueName // the bindings name their queue %LISTENER_QUEUE%
  ARCHIVE_EVENTS_TABLE: eventsTableName
  ARCHIVE_SESSIONS_TABLE: sessionsTableName
  ALLOWED_ORIGINS: join(allowedOrigins, ',')
  PYTHON_THREADPOOL_THREAD_COUNT: string(pythonThreadpoolThreadCount)
  // Flex Consumption: one listener invocation covers a whole 60-minute call (host.json
  // functionTimeout 01:10:00), so no hand-overs. On Consumption use 480 and 00:10:00.
  LISTENER_TIME_BOX_SECONDS: '3900'
  // Client secrets minted ahead for /connect (realtime_gateway/upstream/secret_pool.py); 0 turns the pool off.
  SECRET_POOL_SIZE: '8'
  SECRET_POOL_TTL_SECONDS: '600'
  SECRET_POOL_LEAD_SECONDS: '120'
  // Listener threads per worker process: at least host.json batchSize + newBatchThreshold (README: listener capacity).
  LISTENER_MAX_CONCURRENT: '160'
  AUDIT_API_ENABLED: 'false' // the read-only /api/audit/* routes (function keys), off by default
  ARCHIVE_RETENTION_DAYS: '0' // 0 keeps every call; the retention timer deletes older calls
  OTEL_SERVICE_NAME: functionAppName // cloud_RoleName of the app's own traces (realtime_gateway/telemetry.py)
  LIMITS_TABLE: limitsTableName
  RATE_LIMIT_PER_MINUTE: string(rateLimitPerMinute)
  MAX_ACTIVE_CALLS: string(maxActiveCalls)
  DAILY_CALL_MINUTES: string(dailyCallMinutes)
  DAILY_TOKEN_BUDGET: string(dailyTokenBudget)
  PRINCIPAL_DAILY_CALL_MINUTES: string(principalDailyCallMinutes)
  PRINCIPAL_DAILY_TOKEN_BUDGET: string(principalDailyTokenBudget)
  RATE_LIMIT_FAIL_OPEN: string(rateLimitFailOpen)
  BUDGET_FAIL_OPEN: string(budgetFailOpen)
  BUDGET_HANGUP_RUNNING: string(budgetHangupRunning)
  TOKEN_ROUTE_ENABLED: string(tokenRouteEnabled)
  CALL_SLOT_ATTACH_SECONDS: string(callSlotAttachSeconds)
  CLIENT_IP_HEADER: clientIpHeader
  CLIENT_IP_HOP: string(clientIpHop)
}, prices, extraAppSettings)

module api './app/api.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: functionAppName
    location: location
    tags: tags
    applicationInsightsName: monitoring.outputs.name
    appServicePlanId: appServicePlan.outputs.resourceId
    runtimeName: 'python'
    runtimeVersion: '3.11'
    storageAccountName: storage.outputs.name
    deploymentStorageContainerName: deploymentStorageContainerName
    identityId: apiUserAssignedIdentity.outputs.resourceId
    identityClientId: apiUserAssignedIdentity.outputs.clientId
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    corsAllowedOrigins: platformCors ? allowedOrigins : []
    appSettings: gatewayAppSettings
  }
  dependsOn: [
    storageData
  ]
}

module rbac './app/rbac.bicep' = {
  name: 'rbacAssignments'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    applicationInsightsName: monitoring.outputs.name
    managedIdentityPrincipalId: apiUserAssignedIdentity.outputs.principalId
    userPrincipalId: principalId
    userPrincipalType: principalType
  }
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output SERVICE_API_NAME string = api.outputs.SERVICE_API_NAME
output AZURE_FUNCTION_NAME string = api.outputs.SERVICE_API_NAME
output SERVICE_API_URI string = api.outputs.SERVICE_API_URI
output SERVICE_WEB_NAME string = web.outputs.name
output SERVICE_WEB_URI string = web.outputs.uri
output ALLOWED_ORIGINS string = join(allowedOrigins, ',')
output AZURE_OPENAI_ENDPOINT string = openAiEndpoint
output AZURE_OPENAI_DEPLOYMENT string = openAiDeploymentName
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_STORAGE_TABLE_ENDPOINT string = 'https://${storage.outputs.name}.table.${environment().suffixes.storage}'
output AZURE_FUNCTION_IDENTITY_CLIENT_ID string = apiUserAssignedIdentity.outputs.clientId
output AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID string = apiUserAssignedIdentity.outputs.principalId
