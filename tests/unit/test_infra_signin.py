"""Sign-in as a deploy option: App Service authentication (Microsoft Entra ID) in front of the API.

Checked offline on the Bicep text (the scanner of tests/fixtures/infra.py: comments and strings blanked
where structure matters), and against the app's own settings loader for what the platform then
sets (WEBSITE_AUTH_ENABLED) and what the template sets (REQUIRE_PRINCIPAL).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from realtime_gateway.settings import SettingsError, load_settings
from tests.fixtures.infra import APP_SETTINGS, NO_DEFAULT, block_after, code, deployed_env, param_decls

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
MAIN = (INFRA / "main.bicep").read_text(encoding="utf-8")
AUTH_PATH = INFRA / "app" / "auth.bicep"
AUTH = AUTH_PATH.read_text(encoding="utf-8")
PARAMETERS = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]


def block(src: str, key: str) -> str:
    """The `{...}` object of the first `key: {` in `src`."""
    m = re.search(rf"\b{key}\s*:\s*\{{", src)
    assert m, key
    return block_after(src, m.start())


def health_path() -> str:
    """/<routePrefix>/<route of the health function>, as the Functions host serves it."""
    prefix = json.loads((ROOT / "host.json").read_text(encoding="utf-8"))["extensions"]["http"]["routePrefix"]
    app = (ROOT / "function_app.py").read_text(encoding="utf-8")
    assert re.search(r'@app\.route\(route="health", methods=\[[^\]]*"GET"', app)
    return f"/{prefix}/health"


def test_sign_in_is_an_azd_option_off_by_default():
    decls = param_decls(INFRA / "main.bicep")
    assert (decls["signInEnabled"]["type"], decls["signInEnabled"]["default"]) == ("bool", False)
    expected = {
        "signInEnabled": "${SIGN_IN_ENABLED=false}",
        "authClientId": "${AUTH_CLIENT_ID}",
        "authTenantId": "${AUTH_TENANT_ID}",
        "authAllowedAudiences": "${AUTH_ALLOWED_AUDIENCES}",
        "authExcludedPaths": "${AUTH_EXCLUDED_PATHS}",
        "authClientSecretKeyVaultUri": "${AUTH_CLIENT_SECRET_KEYVAULT_URI}",
        "requirePrincipal": "${REQUIRE_PRINCIPAL}",
    }
    assert {k: PARAMETERS[k]["value"] for k in expected} == expected
    for name in expected:
        assert decls[name]["default"] in (False, ""), name  # nothing about sign-in is on unless set


def test_the_auth_config_is_deployed_only_with_sign_in():
    src = code(INFRA / "main.bicep")
    modules = re.findall(r"^module\s+(\w+)\s+'\./app/auth\.bicep'\s*=\s*(.*?)\{", MAIN, re.M)
    assert modules == [("auth", "if (signInEnabled) ")]
    body = block_after(src, src.index("module auth "))
    assert re.search(r"^\s*siteName: api\.outputs\.SERVICE_API_NAME\b", body, re.M)  # after the app and its settings
    # authsettingsV2 is declared once, in the conditional module, nowhere else (the AVM site module gets none)
    for path in sorted(INFRA.rglob("*.bicep")):
        text = path.read_text(encoding="utf-8")
        assert ("authsettingsV2" in text.replace("authsettingsv2", "authsettingsV2")) == (path == AUTH_PATH), path.name
    assert "authSettingV2Configuration" not in (INFRA / "app" / "api.bicep").read_text(encoding="utf-8")


def test_auth_config_requires_a_token_everywhere_but_health():
    assert re.search(r"^resource \w+ 'Microsoft\.Web/sites/config@\d{4}-\d{2}-\d{2}' = \{", AUTH, re.M)
    resource = block_after(AUTH, AUTH.index("'Microsoft.Web/sites/config@"))
    assert "name: 'authsettingsV2'" in resource and "parent: site" in resource
    assert re.search(r"platform: \{\s*enabled: true\b", resource)
    validation = block(resource, "globalValidation")
    assert re.search(r"^\s*requireAuthentication: true$", validation, re.M)
    assert "unauthenticatedClientAction: 'Return401'" in validation  # an API: 401, never a redirect
    assert re.search(r"^\s*excludedPaths: excludedPaths$", validation, re.M)
    aad = block(resource, "azureActiveDirectory")
    assert re.search(r"^\s*enabled: true$", aad, re.M) and "clientId: clientId" in aad
    # main.bicep passes /api/health (always) plus the optional AUTH_EXCLUDED_PATHS
    assert re.search(r"^\s*excludedPaths: authUnauthenticatedPaths$", MAIN, re.M)
    paths = re.search(r"^var authUnauthenticatedPaths = union\(\[\s*'([^']+)'\s*\]", MAIN, re.M)
    assert paths and paths.group(1) == health_path() == "/api/health"
    assert "split(replace(authExcludedPaths, ' ', ''), ',')" in MAIN


def test_no_client_secret_is_stored():
    resource = block_after(AUTH, AUTH.index("'Microsoft.Web/sites/config@"))
    assert not re.search(r"\bclientSecret\s*:", AUTH)  # never a secret value, only a setting's name
    assert re.search(r"tokenStore: \{\s*enabled: false\s*\}", resource)
    assert re.search(
        r"empty\(clientSecretSettingName\) \? \{\} : \{\s*clientSecretSettingName: clientSecretSettingName\s*\}",
        resource,
    )
    assert param_decls(AUTH_PATH)["clientSecretSettingName"]["default"] == ""
    assert "No client secret is stored" in AUTH  # and why, for the next reader
    # The optional secret is a Key Vault reference resolved by the app's identity, only with sign-in on.
    assert "var useAuthSecret = signInEnabled && !empty(authClientSecretKeyVaultUri)" in MAIN
    m = re.search(r"^var authSecretSettings = useAuthSecret \? \{\n(.*?)\n\} : \{\}$", MAIN, re.M | re.S)
    assert m, "authSecretSettings"
    assert m.group(1).strip() == (
        "MICROSOFT_PROVIDER_AUTHENTICATION_SECRET: '@Microsoft.KeyVault(SecretUri=${authClientSecretKeyVaultUri})'"
    )
    assert "var authSecretSettingName = 'MICROSOFT_PROVIDER_AUTHENTICATION_SECRET'" in MAIN
    assert "clientSecretSettingName: useAuthSecret ? authSecretSettingName : ''" in MAIN
    assert "keyVaultAccessIdentityResourceId: identityId" in (INFRA / "app" / "api.bicep").read_text(encoding="utf-8")


def test_sign_in_needs_an_app_registration_and_defaults_to_this_tenant():
    decls = param_decls(AUTH_PATH)
    assert decls["clientId"]["default"] is NO_DEFAULT and "@minLength(1)" in decls["clientId"]["decorators"]
    assert decls["tenantId"]["default"] is NO_DEFAULT and "@minLength(1)" in decls["tenantId"]["decorators"]
    assert "var authTenant = !empty(authTenantId) ? authTenantId : tenant().tenantId" in MAIN
    assert "openIdIssuer: '${environment().authentication.loginEndpoint}${tenantId}/v2.0'" in AUTH
    # v1 access tokens carry api://<client id>, v2 ones the client id itself; AUTH_ALLOWED_AUDIENCES adds more
    audiences = re.search(r"^var authAudiences = union\(\[(.*?)\]", MAIN, re.M | re.S)
    assert audiences and audiences.group(1).split() == ["'api://${authClientId}'", "authClientId"]
    assert "allowedAudiences: allowedAudiences" in AUTH


def test_require_principal_follows_sign_in():
    assert APP_SETTINGS["REQUIRE_PRINCIPAL"] == "!empty(requirePrincipal) ? requirePrincipal : string(signInEnabled)"
    assert (
        "@allowed([\n  ''\n  'true'\n  'false'\n])"
        in param_decls(INFRA / "main.bicep")["requirePrincipal"]["decorators"]
    )
    off = load_settings(deployed_env())
    assert (off.require_principal, off.platform_auth) == (False, False)
    # With sign-in on, the platform adds WEBSITE_AUTH_ENABLED=True to the app's environment.
    on = load_settings({**deployed_env(signInEnabled=True), "WEBSITE_AUTH_ENABLED": "True"})
    assert (on.require_principal, on.platform_auth) == (True, True)
    opted_out = load_settings(
        {**deployed_env(signInEnabled=True, requirePrincipal="false"), "WEBSITE_AUTH_ENABLED": "True"}
    )
    assert opted_out.require_principal is False
    # REQUIRE_PRINCIPAL without the platform's authentication: the app refuses to trust any principal header
    with pytest.raises(SettingsError, match="REQUIRE_PRINCIPAL"):
        load_settings(deployed_env(requirePrincipal="true"))


def test_the_web_config_checks_skipped_for_checkov_see_only_the_auth_config():
    """infra/checkov-skip.txt skips checkov's `web` config checks because checkov applies them to every
    Microsoft.Web/sites/config and the only one written here is authsettingsV2 (the site itself is an AVM
    module, not scanned). Keep it so, or those skips would hide real findings."""
    skipped = {
        line.split()[0]
        for line in (INFRA / "checkov-skip.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    web_checks = {
        "CKV_AZURE_13",
        "CKV_AZURE_63",
        "CKV_AZURE_65",
        "CKV_AZURE_66",
        "CKV_AZURE_80",
        "CKV_AZURE_88",
        "CKV_AZURE_222",
    }
    assert web_checks <= skipped
    declared = []
    for path in sorted(INFRA.rglob("*.bicep")):
        for m in re.finditer(
            r"^resource \w+ '(Microsoft\.Web/sites[^@']*)@[^']+'( existing)?", path.read_text(encoding="utf-8"), re.M
        ):
            if not m.group(2):
                declared.append((path.name, m.group(1)))
    assert declared == [("auth.bicep", "Microsoft.Web/sites/config")]
