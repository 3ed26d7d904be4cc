"""Phone calls as a deploy option (SIP_ENABLED), in process: the azd variable, the postprovision hook's
wiring and its agreement with the templates and the app, and what the app does with a Key Vault
reference the platform could not resolve. The templates evaluated with SIP on and off are in
tests/integration/test_infra_pycep.py (checkov's Bicep parser); the hook run against fakes of ARM,
the webhook endpoints API and Key Vault is tests/integration/test_infra_sip_hook.py."""

from __future__ import annotations

import importlib.util
import json
import re
import sys

import pytest
import yaml

from realtime_gateway.settings import SettingsError, load_settings
from tests.fixtures.infra import MAIN, PARAMS, ROOT, deployed_env

HOOK_PATH = ROOT / "infra" / "hooks" / "sip_webhook.py"
PARAMETERS = json.loads((ROOT / "infra" / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]


@pytest.fixture(scope="module")
def hook():
    """The hook as a module (it puts its own folder on sys.path for its sibling; undone here)."""
    spec = importlib.util.spec_from_file_location("sip_webhook_hook", HOOK_PATH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    saved = list(sys.path)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path[:] = saved
        sys.modules.pop(spec.name, None)


def test_sip_is_an_azd_option_off_by_default():
    assert (PARAMS["sipEnabled"]["type"], PARAMS["sipEnabled"]["default"]) == ("bool", False)
    assert PARAMETERS["sipEnabled"]["value"] == "${SIP_ENABLED=false}"
    assert re.search(r"^module sipVault '\./app/sip-vault\.bicep' = if \(sipEnabled\) \{$", MAIN, re.M)


def test_the_hook_runs_after_each_provision_after_the_local_settings():
    doc = yaml.safe_load((ROOT / "azure.yaml").read_text(encoding="utf-8"))
    for platform, python in (("posix", "python3"), ("windows", "python")):
        run = doc["hooks"]["postprovision"][platform]["run"]
        assert run == f"{python} infra/hooks/local_settings.py && {python} infra/hooks/sip_webhook.py"
    assert HOOK_PATH.is_file()


def test_the_hook_writes_the_secrets_the_app_settings_reference(hook):
    assert f"var sipWebhookSecretName = '{hook.SECRET_NAME}'" in MAIN
    assert f"var sipCallerSaltName = '{hook.SALT_NAME}'" in MAIN
    references = re.search(r"^var sipSecretSettings = sipEnabled \? \{\n(.*?)\n\} : \{\}$", MAIN, re.M | re.S)
    assert references, "sipSecretSettings"
    assert references.group(1).split("\n") == [
        "  SIP_WEBHOOK_SECRET: '@Microsoft.KeyVault(SecretUri=${sipVaultUri}secrets/${sipWebhookSecretName})'",
        "  SIP_CALLER_SALT: '@Microsoft.KeyVault(SecretUri=${sipVaultUri}secrets/${sipCallerSaltName})'",
    ]
    # what the hook reads: outputs of the template
    outputs = set(re.findall(r"^output (\w+) ", MAIN, re.M))
    assert {"SIP_KEY_VAULT_URI", "AZURE_OPENAI_RESOURCE_ID", "SERVICE_API_URI", "SERVICE_API_NAME"} <= outputs


def test_the_hook_registers_the_route_the_app_serves(hook):
    prefix = json.loads((ROOT / "host.json").read_text(encoding="utf-8"))["extensions"]["http"]["routePrefix"]
    app = (ROOT / "function_app.py").read_text(encoding="utf-8")
    assert re.search(r'@app\.route\(route="sip/incoming", methods=\["POST"\]', app)
    assert f"/{prefix}/sip/incoming" == hook.ROUTE
    assert f"'{hook.ROUTE}'" in MAIN  # and sign-in, when on, lets the service's webhook through


def test_the_hook_talks_https_only_but_to_loopback_fakes(hook):
    assert hook.base_url("X", "https://cog-abc123.openai.azure.com/") == "https://cog-abc123.openai.azure.com"
    assert hook.base_url("X", "https://kv-abc123.vault.azure.net/", trailing_slash=True).endswith(".net/")
    assert hook.base_url("X", "http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    for bad in ("", None, "http://cog-abc123.openai.azure.com", "https://host/path", "ftp://host"):
        with pytest.raises(hook.HookError, match="X"):
            hook.base_url("X", bad)


def test_the_hook_scrubs_what_it_holds(hook):
    hook.SENSITIVE.update({"whsec_c2VjcmV0", "tok-123"})
    assert hook.scrub("got whsec_c2VjcmV0 with tok-123") == "got *** with ***"
    assert hook.same_url(
        "HTTPS://Func.azurewebsites.net/api/sip/incoming/", "https://func.azurewebsites.net/api/sip/incoming"
    )
    assert not hook.same_url("https://other.net/api/sip/incoming", "https://func.azurewebsites.net/api/sip/incoming")


def app_env(**sip: str) -> dict[str, str]:
    return {**deployed_env(sipEnabled=True), **sip}


def test_an_unresolved_key_vault_reference_is_named_never_used():
    reference = "@Microsoft.KeyVault(SecretUri=https://kv-abc123.vault.azure.net/secrets/sip-caller-salt)"
    with pytest.raises(SettingsError) as err:
        load_settings(app_env(SIP_WEBHOOK_SECRET="whsec_c2VjcmV0c2VjcmV0c2VjcmV0", SIP_CALLER_SALT=reference))
    assert "SIP_CALLER_SALT is a Key Vault reference the platform has not resolved" in str(err.value)
    with pytest.raises(SettingsError) as err:
        load_settings(app_env(SIP_WEBHOOK_SECRET=reference.replace("caller-salt", "webhook-secret")))
    message = str(err.value)
    assert "SIP_WEBHOOK_SECRET is a Key Vault reference the platform has not resolved" in message
    assert "whsec_" not in message  # one clear cause, not the format error on top
    # resolved, the pair the hook writes is accepted
    sip = load_settings(app_env(SIP_WEBHOOK_SECRET="whsec_c2VjcmV0c2VjcmV0c2VjcmV0", SIP_CALLER_SALT="x" * 43)).sip
    assert sip.enabled and sip.caller_salt == "x" * 43
