// App Service authentication ("Easy Auth") with Microsoft Entra ID in front of the function app's HTTP
// routes; main.bicep deploys it only when sign-in is on (SIGN_IN_ENABLED). The platform then validates the
// caller's Entra token before the app runs, answers 401 without one, sets WEBSITE_AUTH_ENABLED=True in the
// app's environment, and injects X-MS-CLIENT-PRINCIPAL (dropping any copy a client sent): the app trusts
// that header only then (realtime_gateway/gateway/routes.py). Queue and timer triggers are not affected.
//
// No client secret is stored. The page is a single-page app that gets an access token for this app
// registration itself (MSAL, authorization code flow with PKCE, no secret) and calls the API with
// `Authorization: Bearer`; the platform only validates that token, which needs no secret. The token store
// is off, so nothing is kept server-side either. A secret is needed only for the platform's own redirect
// sign-in (/.auth/login/aad with the code flow); where that is unavoidable, clientSecretSettingName names an
// app setting that holds a Key Vault reference (main.bicep: AUTH_CLIENT_SECRET_KEYVAULT_URI), never the
// secret itself. Without it, /.auth/login/aad falls back to the id token (implicit) flow, also secret-free.
//
// CORS preflights carry no token. The platform has been reported to let a preflight (OPTIONS with both
// Origin and Access-Control-Request-Method) through to the app's OPTIONS routes (Azure/azure-webpubsub#141);
// not verified here. If the page's preflights get 401, set PLATFORM_CORS=true: platform CORS answers them
// before authentication runs (Azure/azure-functions-host#7316), at the cost of the exposed x-call-id header.
// Who may sign in: by default any account of the tenant that can get a token for the app registration;
// set "Assignment required" on its enterprise application to limit it to assigned users and groups.

@description('Name of the function app (an existing Microsoft.Web/sites).')
param siteName string

@minLength(1) // sign-in without an app registration cannot validate anything: fail the deployment instead
@description('Application (client) id of the Entra app registration the tokens are issued for.')
param clientId string

@minLength(1)
@description('Entra tenant id of that app registration.')
param tenantId string

@description('Accepted token audiences (aud): the client id and api://<client id> for v2 and v1 tokens, plus any extra.')
param allowedAudiences array = []

@description('Paths reachable without a token (e.g. /api/health for probes and the postdeploy smoke check).')
param excludedPaths array = []

@description('Name of the app setting holding a Key Vault reference to the client secret; empty (default): no secret.')
param clientSecretSettingName string = ''

resource site 'Microsoft.Web/sites@2023-12-01' existing = {
  name: siteName
}

resource authSettings 'Microsoft.Web/sites/config@2023-12-01' = {
  parent: site
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
      runtimeVersion: '~1'
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'Return401' // an API: no redirect to a sign-in page
      excludedPaths: excludedPaths
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        // The secret's setting name only when there is one: no secret, no property.
        registration: union({
          clientId: clientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenantId}/v2.0'
        }, empty(clientSecretSettingName) ? {} : {
          clientSecretSettingName: clientSecretSettingName
        })
        validation: {
          allowedAudiences: allowedAudiences
        }
      }
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
    httpSettings: {
      requireHttps: true
      forwardProxy: {
        convention: 'NoProxy'
      }
    }
  }
}

output name string = authSettings.name
