"""No keys anywhere in infra/, local auth off, and the identity gets exactly the roles it needs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
FILES = sorted(p for p in INFRA.rglob("*") if p.is_file() and p.suffix in (".bicep", ".json", ".py"))
RBAC = (INFRA / "app" / "rbac.bicep").read_text(encoding="utf-8")
OPENAI_ACCESS = (INFRA / "app" / "openai-access.bicep").read_text(encoding="utf-8")
SIP_VAULT = (INFRA / "app" / "sip-vault.bicep").read_text(encoding="utf-8")

ROLES = {
    "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd": "Cognitive Services OpenAI User",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
    # phone calls only (SIP_ENABLED): tests/unit/test_infra_sip.py
    "a97b65f3-24c7-4388-baec-2e87135dc908": "Cognitive Services User",
    "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7": "Key Vault Secrets Officer",
}


def text(name: str) -> str:
    return (INFRA / name).read_text(encoding="utf-8")


# The SIP hook may read the Azure OpenAI account's key (ARM listKeys) and send it as `api-key`, only when
# the webhook registration refuses the deployer's Entra token: in memory, never stored or printed
# (tests/integration/test_infra_sip_hook.py proves both). Nothing else in infra/ may name a key.
KEY_FALLBACK = {"hooks/sip_webhook.py": {"listKeys", "api-key"}}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_no_keys_or_key_based_connection_strings(path):
    src = path.read_text(encoding="utf-8")
    allowed = KEY_FALLBACK.get(path.relative_to(INFRA).as_posix(), set())
    for pattern in (
        r"listKeys",
        r"listkeys",
        r"AccountKey",
        r"SharedAccessKey",
        r"DefaultEndpointsProtocol",
        r"\.key1\b",
        r"\.key2\b",
        r"primaryKey",
        r"api-key",
        r"AZURE_OPENAI_API_KEY",
        r"listConnectionStrings",
        r"InstrumentationKey=",
    ):
        if pattern not in allowed:
            assert not re.search(pattern, src), f"{path.name}: {pattern}"
    # The only connection string is Application Insights' ingestion address (no secret; ingestion
    # needs the Entra token because disableLocalAuth is true).
    for line in src.splitlines():
        if re.search(r"connectionString", line, re.I):
            assert "applicationInsights.properties.ConnectionString" in line or line.strip().startswith("//"), line


def test_storage_shared_keys_off():
    main = text("main.bicep")
    assert re.search(r"^\s*allowSharedKeyAccess: false\b", main, re.M)
    assert "allowBlobPublicAccess: false" in main
    for path in FILES:
        assert "allowSharedKeyAccess: true" not in path.read_text(encoding="utf-8"), path.name


def test_local_auth_disabled_everywhere_it_exists():
    assert re.search(r"^\s*disableLocalAuth: true\b", text("app/openai.bicep"), re.M)
    assert re.search(r"^\s*disableLocalAuth: true\b", text("main.bicep"), re.M)  # Application Insights
    assert re.search(r"^\s*disableLocalAuth: true\b", text("app/log-analytics.bicep"), re.M)
    for path in FILES:
        assert "disableLocalAuth: false" not in path.read_text(encoding="utf-8"), path.name


def test_openai_account_kind_and_subdomain():
    src = text("app/openai.bicep")
    assert "kind: 'OpenAI'" in src
    assert "customSubDomainName: name" in src
    assert re.search(r"format: 'OpenAI'", src) and "version: modelVersion" in src
    main = text("main.bicep")
    # the current GA realtime model (gpt-realtime 2025-08-28 takes no new customers); DESIGN.md: Models
    assert "param openAiModelName string = 'gpt-realtime-1.5'" in main
    assert "param openAiModelVersion string = '2026-02-23'" in main
    # the deployment is named after the model unless AZURE_OPENAI_DEPLOYMENT_NAME says otherwise
    assert "param openAiDeploymentName string = ''" in main
    assert "var openAiDeployment = !empty(openAiDeploymentName) ? openAiDeploymentName : openAiModelName" in main
    assert "deploymentName: openAiDeployment\n" in main and "AZURE_OPENAI_DEPLOYMENT: openAiDeployment\n" in main
    params = json.loads(text("main.parameters.json"))["parameters"]
    assert params["openAiModelName"]["value"] == "${AZURE_OPENAI_MODEL=gpt-realtime-1.5}"
    assert params["openAiModelVersion"]["value"] == "${AZURE_OPENAI_MODEL_VERSION=2026-02-23}"
    assert params["openAiDeploymentName"]["value"] == "${AZURE_OPENAI_DEPLOYMENT_NAME}"


def role_ids_in(src: str) -> dict[str, str]:
    """var name -> role definition id for `var x = '<guid>'` lines."""
    return dict(re.findall(r"^var (\w+) = '([0-9a-f-]{36})'", src, re.M))


def test_every_role_present_with_its_name():
    ids = {**role_ids_in(RBAC), **role_ids_in(OPENAI_ACCESS), **role_ids_in(SIP_VAULT)}
    assert set(ids.values()) == set(ROLES)
    for src in (RBAC, OPENAI_ACCESS, SIP_VAULT):
        for line in src.splitlines():
            m = re.match(r"^var \w+ = '([0-9a-f-]{36})' // (.+)$", line)
            if m:
                assert m.group(2).startswith(ROLES[m.group(1)]), line


def test_identity_gets_every_role_as_service_principal():
    ids = role_ids_in(RBAC)
    by_id = {v: k for k, v in ids.items()}
    storage_roles = re.search(r"var identityStorageRoles = \[(.*?)\]", RBAC, re.S).group(1).split()
    assert {ids[v] for v in storage_roles} == {
        "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
        "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
        "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    }
    assert by_id["3913510d-42f4-4e42-8a64-420c390055eb"] == "monitoringMetricsPublisherRoleDefinitionId"
    assert "scope: applicationInsights" in RBAC
    assert "principalId: managedIdentityPrincipalId" in OPENAI_ACCESS and "scope: account" in OPENAI_ACCESS
    # every assignment uses a deterministic name (re-deployable) and a subscription-level role id
    for src in (RBAC, OPENAI_ACCESS, SIP_VAULT):
        assignments = src.count("'Microsoft.Authorization/roleAssignments@")
        assert assignments and src.count("name: guid(") == assignments
        assert src.count("subscriptionResourceId('Microsoft.Authorization/roleDefinitions'") == assignments


def test_developer_roles_only_when_principal_given():
    assert "if (!empty(userPrincipalId))" in RBAC and "if (!empty(userPrincipalId))" in OPENAI_ACCESS
    user_roles = re.search(r"var userStorageRoles = \[(.*?)\]", RBAC, re.S).group(1).split()
    assert set(user_roles) == {"queueDataContributorRoleDefinitionId", "tableDataContributorRoleDefinitionId"}
    main = text("main.bicep")
    assert "userPrincipalId: principalId" in main


def test_function_app_uses_only_the_user_assigned_identity():
    api = text("app/api.bicep")
    assert "systemAssigned: false" in api
    assert "type: 'UserAssignedIdentity'" in api
    assert "httpsOnly: true" in api
