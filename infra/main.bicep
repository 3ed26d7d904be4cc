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
param keyVaultName string = ''

// ---- Azure OpenAI -------------------------------------------------------------------------
// Every parameter from here on is an azd variable (main.parameters.json: `azd env set NAME value`);
// the azd name is given in each description and equals the app setting's name where there is one.
@description('Region of the new Azure OpenAI resource (AZURE_OPENAI_LOCATION); realtime models exist only in some regions (eastus2, swedencentral).')
param openAiLocation string = 'eastus2'

// gpt-realtime-1.5 (2026-02-23) is the current GA realtime model in East US 2 and Sweden Central;
// gpt-realtime (2025-08-28) takes no new customers and retires 2027-02-28 (DESIGN.md: Models).
@description('Realtime model to deploy (AZURE_OPENAI_MODEL).')
param openAiModelName string = 'gpt-realtime-1.5'

@description('Model version to deploy (AZURE_OPENAI_MODEL_VERSION); check it against the region\'s model list when changing the model.')
param openAiModelVersion string = '2026-02-23'

@description('Deployment name the gateway calls (AZURE_OPENAI_DEPLOYMENT_NAME; the app setting AZURE_OPENAI_DEPLOYMENT and the session model). Empty: the model name.')
param openAiDeploymentName string = ''

@description('Deployment SKU (AZURE_OPENAI_DEPLOYMENT_SKU); realtime models are offered as GlobalStandard.')
param openAiDeploymentSkuName string = 'GlobalStandard'

@minValue(1)
@description('Deployment capacity in units of 1,000 tokens per minute (AZURE_OPENAI_DEPLOYMENT_CAPACITY).')
param openAiDeploymentCapacity int = 10

@description('Use an existing Azure OpenAI resource instead of creating one (AZURE_OPENAI_EXISTING_ENDPOINT): its endpoint, e.g. https://my-resource.openai.azure.com. Its deployment must be named as the deployment name above.')
param existingOpenAiEndpoint string = ''

@description('Name of that existing resource (AZURE_OPENAI_EXISTING_NAME), to grant the identity Cognitive Services OpenAI User on it. Empty: grant the role yourself (README).')
param existingOpenAiName string = ''

@description('Resource group of that existing resource (AZURE_OPENAI_EXISTING_RESOURCE_GROUP; same subscription). Empty: the group this template creates.')
param existingOpenAiResourceGroup string = ''

// ---- Function app -------------------------------------------------------------------------
@allowed([
  512
  2048
  4096
])
@description('Flex Consumption instance memory in MB (AZURE_FUNCTION_INSTANCE_MEMORY_MB).')
param instanceMemoryMB int = 2048

@minValue(40)
@maxValue(1000)
@description('Flex Consumption scale-out limit (AZURE_FUNCTION_MAXIMUM_INSTANCE_COUNT).')
param maximumInstanceCount int = 100

// A comma-separated string, not an array: azd variables are strings and azd converts them to int and bool only.
// Not named ALLOWED_ORIGINS in azd: that name is an output of this template, which azd writes back into the
// environment after every provision, so the Static Web App's own URL would feed back in as an "extra" origin.
@description('Origins allowed besides the Static Web App (EXTRA_ALLOWED_ORIGINS): comma-separated https://host[:port], e.g. a site hosted elsewhere.')
param extraAllowedOrigins string = ''

@description('Put the allowed origins in siteConfig.cors (PLATFORM_CORS; the platform answers preflights, but cannot expose x-call-id). False (default) leaves CORS to the app: ALLOWED_ORIGINS and its OPTIONS routes, tested locally.')
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

// ---- Cost and abuse limits (README: Cost and abuse control) ---------------------------------
// Ranges match realtime_gateway/settings.py, so a value the app would refuse fails the deployment instead.
@minValue(0)
@maxValue(100000)
@description('Requests a minute per client on /api/connect and /api/token (RATE_LIMIT_PER_MINUTE; 0 = off).')
param rateLimitPerMinute int = 10

@minValue(0)
@maxValue(100000)
@description('Requests a minute per client on the hang-up and call-state routes (CONTROL_RATE_PER_MINUTE; 0 = off).')
param controlRatePerMinute int = 120

@minValue(0)
@maxValue(10000)
@description('Calls not yet ended across the app (MAX_ACTIVE_CALLS; 0 = off).')
param maxActiveCalls int = 100

@minValue(1)
@maxValue(256)
@description('Rows the active-call slots are spread over in the limits table (LIMIT_SLOT_SHARDS); more shards, less contention at a high MAX_ACTIVE_CALLS. Raised to what MAX_ACTIVE_CALLS needs (400 calls a row) when that is more.')
param limitSlotShards int = 16

@minValue(10)
@maxValue(3600)
@description('A reserved active-call slot whose call never attached expires after this many seconds (CALL_SLOT_ATTACH_SECONDS).')
param callSlotAttachSeconds int = 120

@minValue(0)
@maxValue(1000000000)
@description('Call minutes a UTC day may spend, whole app (DAILY_CALL_MINUTES; 0 = unlimited).')
param dailyCallMinutes int = 0

@minValue(0)
@maxValue(1000000000000000)
@description('Tokens a UTC day may spend, whole app (DAILY_TOKEN_BUDGET; 0 = unlimited).')
param dailyTokenBudget int = 0

// USD amounts are strings: Bicep has no decimal type (the app parses them as numbers, 0 or more).
@description('USD a UTC day may spend, whole app: usage priced at the PRICE_* settings plus running minutes (DAILY_SPEND_LIMIT_USD; 0 = off).')
param dailySpendLimitUsd string = '20'

@minValue(0)
@maxValue(1000000000)
@description('Per signed-in principal: call minutes a day (PRINCIPAL_DAILY_CALL_MINUTES; 0 = no per-principal budget).')
param principalDailyCallMinutes int = 0

@minValue(0)
@maxValue(1000000000000000)
@description('Per signed-in principal: tokens a day (PRINCIPAL_DAILY_TOKEN_BUDGET; 0 = no per-principal budget).')
param principalDailyTokenBudget int = 0

@description('Per signed-in principal: USD a day (PRINCIPAL_DAILY_SPEND_LIMIT_USD; 0 = no per-principal spend limit).')
param principalDailySpendLimitUsd string = '0'

@description('USD per minute reserved against the spend limits for a call still running, until its usage is charged (PRICE_RUNNING_CALL_PER_MINUTE).')
param priceRunningCallPerMinute string = '0.10'

@description('Limits table unreachable: let requests through the rate limit (RATE_LIMIT_FAIL_OPEN).')
param rateLimitFailOpen bool = true

@description('Limits table unreachable: let calls through the budgets and the active-call cap (BUDGET_FAIL_OPEN).')
param budgetFailOpen bool = false

@description('A spent daily budget also hangs up the calls still running (BUDGET_HANGUP_RUNNING); false lets them finish.')
param budgetHangupRunning bool = true

@description('GET /api/token (seed parity; TOKEN_ROUTE_ENABLED). A call started with its secret has no listener, no slot and no usage, so the limits cannot hold it: off by default, for a public site.')
param tokenRouteEnabled bool = false

@description('Header with the client address (CLIENT_IP_HEADER).')
param clientIpHeader string = 'x-forwarded-for'

@minValue(1)
@maxValue(20)
@description('How many trusted front ends append to that header (CLIENT_IP_HOP): 1 = the one the platform appended. Behind Front Door: 2 (README: Cost and abuse control).')
param clientIpHop int = 1

// List prices of gpt-realtime (2025-08); check those of the deployed model and region.
@description('USD per million text input tokens (PRICE_INPUT_TEXT_PER_MTOK).')
param priceInputTextPerMtok string = '4.00'

@description('USD per million audio input tokens (PRICE_INPUT_AUDIO_PER_MTOK).')
param priceInputAudioPerMtok string = '32.00'

@description('USD per million cached input tokens (PRICE_CACHED_INPUT_PER_MTOK).')
param priceCachedInputPerMtok string = '0.40'

@description('USD per million text output tokens (PRICE_OUTPUT_TEXT_PER_MTOK).')
param priceOutputTextPerMtok string = '16.00'

@description('USD per million audio output tokens (PRICE_OUTPUT_AUDIO_PER_MTOK).')
param priceOutputAudioPerMtok string = '64.00'

@description('USD per million input transcription tokens (PRICE_TRANSCRIPTION_PER_MTOK).')
param priceTranscriptionPerMtok string = '6.00'

@description('USD per minute of duration-billed input transcription (PRICE_TRANSCRIPTION_PER_MINUTE).')
param priceTranscriptionPerMinute string = '0.006'

// ---- Session policy, audit, health -------------------------------------------------------------
@description('The listener holds the server-side session policy against client events from the browser\'s data channel (POLICY_ENFORCE).')
param policyEnforce bool = true

@minValue(0)
@maxValue(1000)
@description('Policy violations after which the call is hung up (POLICY_MAX_VIOLATIONS).')
param policyMaxViolations int = 3

@description('The read-only /api/audit/* routes, behind function keys (AUDIT_API_ENABLED).')
param auditApiEnabled bool = false

@minValue(0)
@maxValue(36500)
@description('Days the archive keeps a call; the retention timer deletes older calls (ARCHIVE_RETENTION_DAYS; 0 = keep every call).')
param archiveRetentionDays int = 0

@description('Request headers a page may send beyond the gateway\'s own, comma-separated (CORS_ALLOWED_HEADERS).')
param corsAllowedHeaders string = ''

@description('Let allowed origins send credentials (cookies, an Easy Auth session) (CORS_ALLOW_CREDENTIALS).')
param corsAllowCredentials bool = false

@minValue(10)
@maxValue(7200)
@description('The service\'s own session cap in seconds: Azure OpenAI ends a session at 30 minutes (SERVICE_SESSION_SECONDS).')
param serviceSessionSeconds int = 1800

@minValue(10)
@maxValue(86400)
@description('A conversation\'s calls together, in seconds: each rollover past the session cap continues it (MAX_CONVERSATION_SECONDS).')
param maxConversationSeconds int = 7200

@description('Phone calls: where the transfer_call tool may send a call, comma-separated name=tel:+number or name=sip:user@host; empty: nowhere (SIP_TRANSFER_TARGETS).')
param sipTransferTargets string = ''

@allowed(['Free', 'Standard'])
@description('The Static Web App\'s plan: Standard only if you link the function app as its backend (STATIC_WEB_APP_SKU).')
param staticWebAppSku string = 'Free'

@minValue(0)
@maxValue(3600)
@description('Seconds /api/health reuses its last answer, so probes cannot hammer storage and identity (HEALTH_CACHE_SECONDS).')
param healthCacheSeconds int = 15

@minValue(1)
@description('Worker threads per Python worker for the HTTP functions (PYTHON_THREADPOOL_THREAD_COUNT); listeners run on their own pool (LISTENER_MAX_CONCURRENT; README: listener capacity).')
param pythonThreadpoolThreadCount int = 24

// ---- Phone calls over SIP (docs/phone.md: Deploying) ------------------------------------------------
@description('Phone calls over SIP (SIP_ENABLED): a Key Vault holding the webhook\'s signing secret and the callers\' salt, referenced by the app settings SIP_WEBHOOK_SECRET and SIP_CALLER_SALT; the postprovision hook registers the webhook endpoint and prints the SIP URI for the trunk.')
param sipEnabled bool = false

// ---- Sign-in: App Service authentication with Microsoft Entra ID --------------------------------
@description('Put App Service authentication ("Easy Auth", Microsoft Entra ID) in front of every HTTP route but /api/health (SIGN_IN_ENABLED). Needs authClientId.')
param signInEnabled bool = false

@description('Application (client) id of the Entra app registration the callers\' tokens are issued for (AUTH_CLIENT_ID). Required when sign-in is on.')
param authClientId string = ''

@description('Entra tenant of that app registration (AUTH_TENANT_ID). Empty: the tenant of this deployment.')
param authTenantId string = ''

@description('Token audiences accepted besides api://<client id> and the client id itself (AUTH_ALLOWED_AUDIENCES): comma-separated.')
param authAllowedAudiences string = ''

@description('Paths reachable without a token besides /api/health (AUTH_EXCLUDED_PATHS): comma-separated, e.g. a webhook that signs its own requests.')
param authExcludedPaths string = ''

// Only for the browser redirect sign-in (/.auth/login/aad with the code flow); the gateway's API needs none.
@description('Key Vault secret URI of the app registration\'s client secret (AUTH_CLIENT_SECRET_KEYVAULT_URI), e.g. https://my-vault.vault.azure.net/secrets/easyauth. Empty (default): no secret.')
param authClientSecretKeyVaultUri string = ''

@allowed([
  ''
  'true'
  'false'
])
@description('Refuse calls without a signed-in principal (REQUIRE_PRINCIPAL). Empty: true when sign-in is on, false otherwise. true without sign-in needs App Service authentication set up another way: the app refuses the setting without WEBSITE_AUTH_ENABLED.')
param requirePrincipal string = ''

@description('More app settings (REALTIME_INSTRUCTIONS, REALTIME_VOICE, MAX_CALL_SECONDS, REALTIME_TOOLS with TOOLS_MODULE, GUARDRAIL_BLOCKED_TERMS, ...); they override the defaults below but never the identity settings. An object, so not an azd variable: pass it in main.parameters.json.')
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
var openAiDeployment = !empty(openAiDeploymentName) ? openAiDeploymentName : openAiModelName
var openAiRoleGroup = useExistingOpenAi && !empty(existingOpenAiResourceGroup) ? existingOpenAiResourceGroup : resourceGroupActualName
// For the SIP hook (the resource's internalId and region make the SIP URI); unknown for an existing resource without its name.
var openAiResourceId = useExistingOpenAi && empty(existingOpenAiName) ? '' : resourceId(subscription().subscriptionId, openAiRoleGroup, 'Microsoft.CognitiveServices/accounts', useExistingOpenAi ? existingOpenAiName : openAiAccountName)

// Phone calls: the vault's URI is known before it exists (a vault's name is its host), so the app settings
// can reference its secrets without reading a conditional module's outputs. The hook writes these two names.
var sipVaultName = !empty(keyVaultName) ? keyVaultName : '${abbrs.keyVaultVaults}${resourceToken}'
var sipVaultUri = 'https://${sipVaultName}${environment().suffixes.keyvaultDns}/'
var sipWebhookSecretName = 'sip-webhook-secret'
var sipCallerSaltName = 'sip-caller-salt'

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
    deploymentName: openAiDeployment
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
    userRegistersWebhooks: sipEnabled
  }
  dependsOn: [
    rg
    openAi
  ]
}

// Only with phone calls on (SIP_ENABLED). Turning them off later leaves the vault (and its secrets) in place.
module sipVault './app/sip-vault.bicep' = if (sipEnabled) {
  name: 'sipVault'
  scope: rg
  params: {
    name: sipVaultName
    location: location
    tags: tags
    appPrincipalId: apiUserAssignedIdentity.outputs.principalId
    userPrincipalId: principalId
    userPrincipalType: principalType
  }
}

module web './app/web.bicep' = {
  name: 'web'
  scope: rg
  params: {
    name: !empty(staticWebAppName) ? staticWebAppName : '${abbrs.webStaticSites}${resourceToken}'
    location: staticWebAppLocation
    tags: tags
    sku: staticWebAppSku
  }
}

// A shard row of the limits table holds at most 400 active-call slots (realtime_gateway/settings.py
// SLOTS_PER_SHARD: one 32K-character property), and the app refuses MAX_ACTIVE_CALLS above 400 x LIMIT_SLOT_SHARDS:
// deploy at least as many shards as the cap needs, so MAX_ACTIVE_CALLS=10000 alone is a valid deployment.
var slotsPerShard = 400
var slotShards = max(limitSlotShards, (maxActiveCalls + slotsPerShard - 1) / slotsPerShard)

// Comma-separated lists (azd variables are strings); spaces are dropped, as the app itself does.
var extraOrigins = empty(extraAllowedOrigins) ? [] : split(replace(extraAllowedOrigins, ' ', ''), ',')
var allowedOrigins = union([web.outputs.uri], extraOrigins)

// Sign-in (app/auth.bicep). /api/health stays reachable without a token for probes and the postdeploy smoke check.
var authTenant = !empty(authTenantId) ? authTenantId : tenant().tenantId
var authAudiences = union([
  'api://${authClientId}'
  authClientId
], empty(authAllowedAudiences) ? [] : split(replace(authAllowedAudiences, ' ', ''), ','))
var authUnauthenticatedPaths = union([
  '/api/health'
], sipEnabled ? [
  '/api/sip/incoming' // the service's webhook carries no Entra token: the route checks its signature instead
] : [], empty(authExcludedPaths) ? [] : split(replace(authExcludedPaths, ' ', ''), ','))
// No client secret by default (app/auth.bicep says why). If one is wanted, the app setting holds a Key Vault
// reference, never the secret: the function identity resolves it and needs Key Vault Secrets User on the vault.
var authSecretSettingName = 'MICROSOFT_PROVIDER_AUTHENTICATION_SECRET'
var useAuthSecret = signInEnabled && !empty(authClientSecretKeyVaultUri)
var authSecretSettings = useAuthSecret ? {
  MICROSOFT_PROVIDER_AUTHENTICATION_SECRET: '@Microsoft.KeyVault(SecretUri=${authClientSecretKeyVaultUri})'
} : {}

// Phone calls: Key Vault references (versionless: the app follows the secret's latest version), never the values.
var sipSecretSettings = sipEnabled ? {
  SIP_WEBHOOK_SECRET: '@Microsoft.KeyVault(SecretUri=${sipVaultUri}secrets/${sipWebhookSecretName})'
  SIP_CALLER_SALT: '@Microsoft.KeyVault(SecretUri=${sipVaultUri}secrets/${sipCallerSaltName})'
} : {}

// App settings the gateway reads (realtime_gateway/settings.py); identity and storage settings are added in api.bicep.
var gatewayAppSettings = union({
  AZURE_OPENAI_ENDPOINT: openAiEndpoint
  AZURE_OPENAI_DEPLOYMENT: openAiDeployment
  LISTENER_QUEUE: listenerQueueName // the bindings name their queue %LISTENER_QUEUE%
  ARCHIVE_EVENTS_TABLE: eventsTableName
  ARCHIVE_SESSIONS_TABLE: sessionsTableName
  ALLOWED_ORIGINS: join(allowedOrigins, ',')
  PYTHON_THREADPOOL_THREAD_COUNT: string(pythonThreadpoolThreadCount)
  // glibc keeps what finished listeners freed in one arena per thread; two arenas keep a long-running
  // worker's memory flat (docs/benchmarks.md: +13.0 MiB over 10 minutes of 50 calls, +9.0 MiB with two).
  MALLOC_ARENA_MAX: '2'
  // Flex Consumption: one listener invocation covers a whole 60-minute call (host.json
  // functionTimeout 01:10:00), so no hand-overs. On Consumption use 480 and 00:10:00.
  LISTENER_TIME_BOX_SECONDS: '3900'
  // Client secrets minted ahead for /connect (realtime_gateway/upstream/secret_pool.py); 0 turns the pool off.
  SECRET_POOL_SIZE: '8'
  SECRET_POOL_TTL_SECONDS: '600'
  SECRET_POOL_LEAD_SECONDS: '120'
  // Listener threads per worker process: at least host.json batchSize + newBatchThreshold (README: listener capacity).
  LISTENER_MAX_CONCURRENT: '160'
  AUDIT_API_ENABLED: string(auditApiEnabled) // the read-only /api/audit/* routes (function keys), off by default
  ARCHIVE_RETENTION_DAYS: string(archiveRetentionDays) // 0 keeps every call; the retention timer deletes older calls
  OTEL_SERVICE_NAME: functionAppName // cloud_RoleName of the app's own traces (realtime_gateway/telemetry.py)
  POLICY_ENFORCE: string(policyEnforce)
  POLICY_MAX_VIOLATIONS: string(policyMaxViolations)
  HEALTH_CACHE_SECONDS: string(healthCacheSeconds)
  CORS_ALLOWED_HEADERS: corsAllowedHeaders
  CORS_ALLOW_CREDENTIALS: string(corsAllowCredentials)
  SERVICE_SESSION_SECONDS: string(serviceSessionSeconds)
  MAX_CONVERSATION_SECONDS: string(maxConversationSeconds)
  SIP_TRANSFER_TARGETS: sipTransferTargets
  // With sign-in on, the platform sets WEBSITE_AUTH_ENABLED and injects (and strips any client-sent)
  // X-MS-CLIENT-PRINCIPAL: only then does the app trust that header.
  REQUIRE_PRINCIPAL: !empty(requirePrincipal) ? requirePrincipal : string(signInEnabled)
  LIMITS_TABLE: limitsTableName
  RATE_LIMIT_PER_MINUTE: string(rateLimitPerMinute)
  CONTROL_RATE_PER_MINUTE: string(controlRatePerMinute)
  MAX_ACTIVE_CALLS: string(maxActiveCalls)
  LIMIT_SLOT_SHARDS: string(slotShards) // at least what MAX_ACTIVE_CALLS needs
  CALL_SLOT_ATTACH_SECONDS: string(callSlotAttachSeconds)
  DAILY_CALL_MINUTES: string(dailyCallMinutes)
  DAILY_TOKEN_BUDGET: string(dailyTokenBudget)
  DAILY_SPEND_LIMIT_USD: dailySpendLimitUsd
  PRINCIPAL_DAILY_CALL_MINUTES: string(principalDailyCallMinutes)
  PRINCIPAL_DAILY_TOKEN_BUDGET: string(principalDailyTokenBudget)
  PRINCIPAL_DAILY_SPEND_LIMIT_USD: principalDailySpendLimitUsd
  PRICE_RUNNING_CALL_PER_MINUTE: priceRunningCallPerMinute
  RATE_LIMIT_FAIL_OPEN: string(rateLimitFailOpen)
  BUDGET_FAIL_OPEN: string(budgetFailOpen)
  BUDGET_HANGUP_RUNNING: string(budgetHangupRunning)
  TOKEN_ROUTE_ENABLED: string(tokenRouteEnabled)
  CLIENT_IP_HEADER: clientIpHeader
  CLIENT_IP_HOP: string(clientIpHop)
  PRICE_INPUT_TEXT_PER_MTOK: priceInputTextPerMtok
  PRICE_INPUT_AUDIO_PER_MTOK: priceInputAudioPerMtok
  PRICE_CACHED_INPUT_PER_MTOK: priceCachedInputPerMtok
  PRICE_OUTPUT_TEXT_PER_MTOK: priceOutputTextPerMtok
  PRICE_OUTPUT_AUDIO_PER_MTOK: priceOutputAudioPerMtok
  PRICE_TRANSCRIPTION_PER_MTOK: priceTranscriptionPerMtok
  PRICE_TRANSCRIPTION_PER_MINUTE: priceTranscriptionPerMinute
}, authSecretSettings, extraAppSettings, sipSecretSettings) // with SIP on, the vault's references win over extra settings

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
    sipVault // its role assignment first, so the Key Vault references resolve
  ]
}

// Only when sign-in is on. Turning it off later does not remove it (incremental deployment): switch it off
// on the app itself (portal: Authentication, or `az webapp auth update --enabled false`).
module auth './app/auth.bicep' = if (signInEnabled) {
  name: 'auth'
  scope: rg
  params: {
    siteName: api.outputs.SERVICE_API_NAME // after the app and its settings exist
    clientId: authClientId
    tenantId: authTenant
    allowedAudiences: authAudiences
    excludedPaths: authUnauthenticatedPaths
    clientSecretSettingName: useAuthSecret ? authSecretSettingName : ''
  }
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
output AZURE_OPENAI_DEPLOYMENT string = openAiDeployment
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_STORAGE_TABLE_ENDPOINT string = 'https://${storage.outputs.name}.table.${environment().suffixes.storage}'
output AZURE_FUNCTION_IDENTITY_CLIENT_ID string = apiUserAssignedIdentity.outputs.clientId
output AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID string = apiUserAssignedIdentity.outputs.principalId
output AZURE_OPENAI_RESOURCE_ID string = openAiResourceId
output SIP_KEY_VAULT_URI string = sipEnabled ? sipVaultUri : ''
