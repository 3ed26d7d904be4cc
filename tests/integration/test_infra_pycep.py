"""Checkov's Bicep parser (pycep, in .venv-checkov) reads every template under infra/: run in a child
process, since checkov's pins conflict with the test venv's (Makefile: infra-scan)."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.fixtures.infra import BICEP_FILES, ROOT

CHECKOV_PYTHON = ROOT / ".venv-checkov" / "bin" / "python"  # `make infra-scan` creates it (checkov and its pycep)
PYCEP_PARSE = """
import json, sys
from pathlib import Path
from pycep import BicepParser
failed = {}
for name in sys.argv[1:]:
    try:
        BicepParser().parse(file_path=Path(name))
    except Exception as exc:  # lark's errors name the line and column
        failed[name] = f"{type(exc).__name__}: {str(exc)[:400]}"
print(json.dumps(failed))
"""


def test_checkovs_bicep_parser_reads_every_template():
    """A real parser where one exists here: pycep, the parser checkov scans Bicep with. A file it cannot
    parse would not be scanned at all, so `make infra-scan` could pass without looking (pycep also lags
    the language: no lambdas, for instance, which is why the templates split lists without them)."""
    if not CHECKOV_PYTHON.exists():
        pytest.skip("no .venv-checkov (make infra-scan creates it)")
    probe = subprocess.run([str(CHECKOV_PYTHON), "-c", "import pycep"], capture_output=True, timeout=60)
    if probe.returncode:
        pytest.skip("pycep is not importable from .venv-checkov")
    result = subprocess.run(
        [str(CHECKOV_PYTHON), "-c", PYCEP_PARSE, *map(str, BICEP_FILES)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {}


# ---- phone calls (SIP_ENABLED), read through the same parser --------------------------------------
PYCEP_DUMP = """
import json, sys
from pathlib import Path
from pycep import BicepParser
print(json.dumps({name: BicepParser().parse(file_path=Path(name)) for name in sys.argv[1:]}, default=str))
"""
INFRA = ROOT / "infra"
# What a few Bicep expressions stand for in the evaluation below (a made-up environment token).
KNOWN = {"resourceToken": "abc123", "environment().suffixes.keyvaultDns": ".vault.azure.net"}
UNKNOWN = object()


@pytest.fixture(scope="module")
def trees() -> dict[str, dict]:
    if not CHECKOV_PYTHON.exists():
        pytest.skip("no .venv-checkov (make infra-scan creates it)")
    files = ["main.bicep", "app/sip-vault.bicep", "app/openai-access.bicep", "app/api.bicep"]
    result = subprocess.run(
        [str(CHECKOV_PYTHON), "-c", PYCEP_DUMP, *files], capture_output=True, text=True, timeout=120, cwd=INFRA
    )
    if result.returncode and "No module named 'pycep'" in result.stderr:
        pytest.skip("pycep is not importable from .venv-checkov")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


class Template:
    """Evaluates the parts of a parsed template these tests need for given parameters: literals,
    parameters and variables, `${...}` interpolation, conditionals, `!`, `&&`, `empty` and `union`;
    anything else is UNKNOWN (a bare string is a name when the template declares it, else a literal)."""

    def __init__(self, tree: dict, **params):
        self.tree = tree
        self.params = {name: decl.get("default") for name, decl in tree.get("parameters", {}).items()}
        self.params.update(params)
        abbrs = json.loads((INFRA / "abbreviations.json").read_text(encoding="utf-8"))
        self.known = {**KNOWN, **{f"abbrs.{k}": v for k, v in abbrs.items()}}

    def name(self, ident: str):
        if ident in self.known:  # stands in for what only a deployment computes (uniqueString, environment())
            return self.known[ident]
        if ident in self.params:
            return self.params[ident]
        if ident in self.tree.get("variables", {}):
            return self.value(self.tree["variables"][ident]["value"])
        return UNKNOWN

    def text(self, literal: str):
        def part(m: re.Match) -> str:
            value = self.name(m.group(1))
            return value if isinstance(value, str) else "\0"

        out = re.sub(r"\$\{([^}]+)\}", part, literal)
        return UNKNOWN if "\0" in out else out

    def value(self, node):
        if isinstance(node, str):
            declared = node in self.params or node in self.tree.get("variables", {})
            return self.name(node) if declared else self.text(node)
        if isinstance(node, list):
            return [self.value(n) for n in node]
        if not isinstance(node, dict):
            return node
        if "operator" in node:
            kind, ops = node["operator"]["type"], node["operator"]["operands"]
            if kind == "conditional":
                cond = self.value(ops["condition"])
                return UNKNOWN if cond is UNKNOWN else self.value(ops["true_value" if cond else "false_value"])
            if kind == "not":
                inner = ops["bool_value"]
                if isinstance(inner, dict) and inner.get("operator", {}).get("type") == "conditional":
                    # pycep reads `!a ? b : c` as `!(a ? b : c)`; in Bicep `!` binds tighter: `(!a) ? b : c`
                    branches = inner["operator"]["operands"]
                    cond = self.value(branches["condition"])
                    return UNKNOWN if cond is UNKNOWN else self.value(branches["false_value" if cond else "true_value"])
                v = self.value(inner)
                return UNKNOWN if v is UNKNOWN else not v
            if kind == "and":
                a, b = self.value(ops["operand_1"]), self.value(ops["operand_2"])
                return UNKNOWN if UNKNOWN in (a, b) else bool(a and b)
            return UNKNOWN
        if "function" in node:
            kind, args = node["function"]["type"], node["function"].get("parameters") or {}
            if kind == "empty":
                v = self.value(args["item_to_test"])
                return UNKNOWN if v is UNKNOWN else len(v) == 0
            if kind == "union":
                parts = [self.value(a) for a in args.values()]
                if all(isinstance(p, dict) for p in parts):
                    return {k: v for p in parts for k, v in p.items()}
                if all(isinstance(p, list) for p in parts):
                    return list(dict.fromkeys(x for p in parts for x in p))
            return UNKNOWN
        return {k: self.value(v) for k, v in node.items()}

    def deployed(self, kind: str, symbol: str) -> bool:
        config = self.tree[kind][symbol]["config"]
        return "condition" not in config or self.value(config["condition"]) is True

    def config(self, kind: str, symbol: str) -> dict:
        config = self.tree[kind][symbol]["config"]
        return config["config"] if "condition" in config else config


def module_output(node) -> tuple[str, str]:
    """`module.outputs.name` as pycep parses it: (module, name)."""
    outer = node["operator"]["operands"]
    return outer["operand_1"], outer["operand_2"]["operator"]["operands"]["operand_2"]


def test_phone_calls_off_by_default_deploy_no_vault_no_role_and_no_reference(trees):
    main = Template(trees["main.bicep"])
    assert main.params["sipEnabled"] is False
    assert not main.deployed("modules", "sipVault")  # no vault, so none of its role assignments either
    settings = main.value(trees["main.bicep"]["variables"]["gatewayAppSettings"]["value"])
    assert not {"SIP_WEBHOOK_SECRET", "SIP_CALLER_SALT"} & set(settings)
    assert main.value(trees["main.bicep"]["outputs"]["SIP_KEY_VAULT_URI"]["value"]) == ""
    assert main.value(trees["main.bicep"]["variables"]["authUnauthenticatedPaths"]["value"]) == ["/api/health"]
    assert main.value(main.config("modules", "openAiAccess")["params"]["userRegistersWebhooks"]) is False
    # the vault and its roles exist nowhere else in infra/
    for name, tree in trees.items():
        if name != "app/sip-vault.bicep":
            types = {r["type"] for r in tree.get("resources", {}).values()}
            assert "Microsoft.KeyVault/vaults" not in types, name
    roles = Template(trees["app/openai-access.bicep"], userPrincipalId="user-oid")
    assert not roles.deployed("resources", "userWebhooks")


def test_phone_calls_on_deploy_the_vault_its_roles_and_the_references(trees):
    main = Template(trees["main.bicep"], sipEnabled=True)
    assert main.deployed("modules", "sipVault")
    vault_call = main.config("modules", "sipVault")
    assert vault_call["scope"] == "rg" and main.value(vault_call["params"]["name"]) == "kv-abc123"
    # the identity that gets Key Vault Secrets User is the one the app resolves its references with
    assert module_output(vault_call["params"]["appPrincipalId"]) == ("apiUserAssignedIdentity", "principalId")
    api_call = main.config("modules", "api")
    assert module_output(api_call["params"]["identityId"]) == ("apiUserAssignedIdentity", "resourceId")
    api = trees["app/api.bicep"]["modules"]["api"]["config"]["params"]
    assert api["keyVaultAccessIdentityResourceId"] == "identityId"  # a user-assigned identity resolves them
    assert "sipVault" in api_call["dependsOn"]  # the role exists before the app's settings reference the vault

    settings = main.value(trees["main.bicep"]["variables"]["gatewayAppSettings"]["value"])
    vault = "https://kv-abc123.vault.azure.net/"
    assert settings["SIP_WEBHOOK_SECRET"] == f"@Microsoft.KeyVault(SecretUri={vault}secrets/sip-webhook-secret)"
    assert settings["SIP_CALLER_SALT"] == f"@Microsoft.KeyVault(SecretUri={vault}secrets/sip-caller-salt)"
    assert main.value(trees["main.bicep"]["outputs"]["SIP_KEY_VAULT_URI"]["value"]) == vault
    paths = main.value(trees["main.bicep"]["variables"]["authUnauthenticatedPaths"]["value"])
    assert paths == ["/api/health", "/api/sip/incoming"]  # the service's webhook carries no Entra token
    assert main.value(main.config("modules", "openAiAccess")["params"]["userRegistersWebhooks"]) is True
    roles = Template(trees["app/openai-access.bicep"], userPrincipalId="user-oid", userRegistersWebhooks=True)
    assert roles.deployed("resources", "userWebhooks")

    module = Template(trees["app/sip-vault.bicep"], userPrincipalId="user-oid")
    vault_props = module.config("resources", "vault")["properties"]
    assert vault_props["enableRbacAuthorization"] is True and vault_props["accessPolicies"] == []
    assert vault_props["enableSoftDelete"] is True and vault_props["enablePurgeProtection"] is True
    assert vault_props["publicNetworkAccess"] == "Enabled"  # as the storage account and the OpenAI account
    app_role = module.config("resources", "appSecretsUser")
    assert module.deployed("resources", "appSecretsUser") and app_role["scope"] == "vault"
    assert app_role["properties"]["principalId"] == "appPrincipalId"
    role_id = app_role["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]
    assert module.value(role_id) == "4633458b-17de-408a-b874-0445c86b69e6"  # Key Vault Secrets User
    officer = module.config("resources", "userSecretsOfficer")["properties"]["roleDefinitionId"]
    assert module.value(officer["function"]["parameters"]["resource_name_1"]) == "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"
    assert module.deployed("resources", "userSecretsOfficer")
    no_principal = Template(trees["app/sip-vault.bicep"])  # AZURE_PRINCIPAL_ID empty: no role for a person
    assert not no_principal.deployed("resources", "userSecretsOfficer")
