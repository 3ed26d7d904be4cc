"""Offline structure checks of infra/*.bicep (no Bicep compiler here, so this is what can be checked).

A small scanner (tests/fixtures/infra.py) blanks comments and string literals (keeping `${...}`
interpolations as code), then the tests check delimiters balance, every local module call passes
exactly the parameters its file declares (all required ones, no unknown ones), referenced module
outputs exist, registry modules are pinned, and main.parameters.json matches main.bicep. Checkov's
own Bicep parser reading every template runs in a child process: tests/integration/test_infra_pycep.py.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.fixtures.infra import (
    BICEP_FILES,
    IDENT,
    INFRA,
    blank,
    code,
    declared_outputs,
    declared_params,
    module_calls,
)


def test_there_are_templates():
    names = {p.relative_to(INFRA).as_posix() for p in BICEP_FILES}
    assert {"main.bicep", "app/api.bicep", "app/rbac.bicep", "app/openai.bicep", "app/web.bicep"} <= names


def test_scanner_blanks_strings_but_keeps_interpolations():
    src = "var a = 'x{y}${f(b, '}')}z' // {\nvar c = {\n}"
    out = blank(src)
    assert len(out) == len(src)
    assert "x{y}" not in out and "// {" not in out  # string text and comments gone
    assert "${f(b, ' ')}" in out  # the interpolation stays code, its inner string blanked
    assert out.count("{") == out.count("}") == 2  # the interpolation pair and `c`


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_delimiters_balance(path):
    src = code(path)
    stack = []
    pairs = {")": "(", "]": "[", "}": "{"}
    for lineno, line in enumerate(src.splitlines(), 1):
        for c in line:
            if c in "([{":
                stack.append((c, lineno))
            elif c in pairs:
                assert stack and stack[-1][0] == pairs[c], f"{path.name}:{lineno}: unmatched {c!r}"
                stack.pop()
    assert not stack, f"{path.name}: unclosed {stack[-1][0]!r} from line {stack[-1][1]}"


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_no_commas_between_object_properties_on_separate_lines(path):
    # Bicep separates multi-line properties/items by newlines; a trailing comma is a compile error.
    for lineno, line in enumerate(code(path).splitlines(), 1):
        assert not line.rstrip().endswith(","), f"{path.name}:{lineno}: trailing comma"


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_local_module_calls_match_module_parameters(path):
    for symbol, target, params, _ in module_calls(path):
        if target.startswith("br"):
            continue
        module_file = (path.parent / target).resolve()
        assert module_file.is_file(), f"{path.name}: module {symbol} -> missing {target}"
        declared = declared_params(module_file)
        given = params or set()
        unknown = given - declared.keys()
        missing = {name for name, has_default in declared.items() if not has_default} - given
        assert not unknown, f"{path.name}: module {symbol} passes undeclared {sorted(unknown)}"
        assert not missing, f"{path.name}: module {symbol} omits required {sorted(missing)}"


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_local_module_outputs_used_are_declared(path):
    src = code(path)
    local = {
        sym: (path.parent / target).resolve() for sym, target, _, _ in module_calls(path) if not target.startswith("br")
    }
    for sym, name in re.findall(rf"\b({IDENT})!?\.outputs\.({IDENT})", src):
        if sym in local:
            assert name in declared_outputs(local[sym]), f"{path.name}: {sym}.outputs.{name} is not declared"


def test_registry_modules_are_pinned_avm_versions():
    refs = []
    for path in BICEP_FILES:
        refs += re.findall(r"'(br[:/][^']+)'", path.read_text(encoding="utf-8"))
    assert refs, "expected Azure Verified Modules references"
    for ref in refs:
        assert re.fullmatch(r"br/public:avm/res/[a-z0-9-]+/[a-z0-9-]+:\d+\.\d+\.\d+", ref), ref


def test_no_duplicate_symbols():
    for path in BICEP_FILES:
        symbols = re.findall(rf"^(?:module|resource|param|var)\s+({IDENT})", code(path), re.M)
        dupes = {s for s in symbols if symbols.count(s) > 1}
        assert not dupes, f"{path.name}: duplicate symbols {dupes}"


def test_abbreviations_used_exist():
    abbrs = json.loads((INFRA / "abbreviations.json").read_text(encoding="utf-8"))
    used = set(re.findall(rf"\babbrs\.({IDENT})", (INFRA / "main.bicep").read_text(encoding="utf-8")))
    assert used and used <= abbrs.keys(), used - abbrs.keys()


def test_main_targets_subscription_and_parameters_file_matches():
    main = INFRA / "main.bicep"
    assert re.search(r"^targetScope\s*=\s*'subscription'", main.read_text(encoding="utf-8"), re.M)
    params = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    declared = declared_params(main)
    assert set(params) <= declared.keys(), set(params) - declared.keys()
    required = {name for name, has_default in declared.items() if not has_default}
    assert required <= set(params), required - set(params)
    assert params["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert params["location"]["value"] == "${AZURE_LOCATION}"
    assert params["principalId"]["value"] == "${AZURE_PRINCIPAL_ID}"


def test_main_outputs_the_urls():
    outputs = declared_outputs(INFRA / "main.bicep")
    assert {"SERVICE_API_URI", "SERVICE_WEB_URI", "AZURE_OPENAI_ENDPOINT", "SERVICE_API_NAME"} <= outputs


def test_flex_consumption_function_app_shape():
    api = (INFRA / "app" / "api.bicep").read_text(encoding="utf-8")
    main = (INFRA / "main.bicep").read_text(encoding="utf-8")
    assert "tier: 'FlexConsumption'" in main and "name: 'FC1'" in main
    assert "runtimeName: 'python'" in main and "runtimeVersion: '3.11'" in main
    for needle in (
        "functionAppConfig",
        "type: 'blobContainer'",
        "type: 'UserAssignedIdentity'",
        "userAssignedIdentityResourceId: identityId",
        "instanceMemoryMB: instanceMemoryMB",
        "maximumInstanceCount: maximumInstanceCount",
        "allowedOrigins: corsAllowedOrigins",
        "'azd-service-name': serviceName",
    ):
        assert needle in api, needle
    web = (INFRA / "app" / "web.bicep").read_text(encoding="utf-8")
    assert "'azd-service-name': 'web'" in web and "param sku string = 'Free'" in web  # Standard only if chosen
