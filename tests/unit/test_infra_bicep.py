"""Offline structure checks of infra/*.bicep (no Bicep compiler here, so this is what can be checked).

A small scanner blanks comments and string literals (keeping `${...}` interpolations as code),
then the tests check delimiters balance, every local module call passes exactly the parameters
its file declares (all required ones, no unknown ones), referenced module outputs exist,
registry modules are pinned, and main.parameters.json matches main.bicep.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))
IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def blank(text: str) -> str:
    """`text` with comments and string contents replaced by spaces (same length, newlines kept).

    Interpolations inside strings stay as code so their braces and calls are still checked.
    """
    out = list(text)
    n = len(text)

    def wipe(a: int, b: int) -> None:
        for k in range(a, b):
            if out[k] != "\n":
                out[k] = " "

    def skip_string(i: int) -> int:
        # i is at the opening quote; returns the index after the closing quote.
        if text.startswith("'''", i):
            end = text.index("'''", i + 3) + 3
            wipe(i + 1, end - 1)
            return end
        j = i + 1
        while j < n:
            c = text[j]
            if c == "\\":
                wipe(j, j + 2)
                j += 2
            elif c == "'":
                return j + 1
            elif c == "$" and j + 1 < n and text[j + 1] == "{":
                j = skip_code(j + 2, "}")  # interpolation: code up to its closing brace
            elif c == "\n":
                raise AssertionError(f"unterminated string at offset {i}")
            else:
                wipe(j, j + 1)
                j += 1
        raise AssertionError(f"unterminated string at offset {i}")

    def skip_code(i: int, closer: str | None) -> int:
        depth = 0
        while i < n:
            c = text[i]
            if text.startswith("//", i):
                end = text.find("\n", i)
                end = n if end < 0 else end
                wipe(i, end)
                i = end
            elif text.startswith("/*", i):
                end = text.index("*/", i) + 2
                wipe(i, end)
                i = end
            elif c == "'":
                i = skip_string(i)
            elif closer and c == "{":
                depth += 1
                i += 1
            elif closer and c == "}":
                if depth == 0:
                    return i + 1
                depth -= 1
                i += 1
            else:
                i += 1
        return i

    skip_code(0, None)
    return "".join(out)


def code(path: Path) -> str:
    return blank(path.read_text(encoding="utf-8"))


def block_after(src: str, start: int) -> str:
    """The `{...}` block whose opening brace is the first one at or after `start`."""
    open_at = src.index("{", start)
    depth = 0
    for k in range(open_at, len(src)):
        if src[k] == "{":
            depth += 1
        elif src[k] == "}":
            depth -= 1
            if depth == 0:
                return src[open_at : k + 1]
    raise AssertionError("unbalanced block")


def top_level_keys(block: str) -> set[str]:
    """Keys of the object literal `block` (only its own level)."""
    keys, depth = set(), 0
    for line in block.splitlines():
        if depth == 1:
            m = re.match(rf"^\s*({IDENT})\s*:", line)
            if m:
                keys.add(m.group(1))
        depth += line.count("{") + line.count("[") - line.count("}") - line.count("]")
    return keys


def declared_params(path: Path) -> dict[str, bool]:
    """param name -> has a default value."""
    return {m.group(1): bool(m.group(2)) for m in re.finditer(rf"^param\s+({IDENT})\s+\S+(\s*=)?", code(path), re.M)}


NO_DEFAULT = object()


def bicep_literal(expr: str):
    """The Python value of a literal Bicep default ('text', true/false, an integer); else the expression text."""
    expr = expr.strip()
    m = re.fullmatch(r"'((?:[^'\\]|\\.)*)'", expr)
    if m and "${" not in m.group(1):
        return re.sub(r"\\(.)", r"\1", m.group(1))
    if expr in ("true", "false"):
        return expr == "true"
    if re.fullmatch(r"-?\d+", expr):
        return int(expr)
    return expr


def param_decls(path: Path) -> dict[str, dict]:
    """name -> {type, default (see bicep_literal; NO_DEFAULT when required), decorators (the text right above)}."""
    raw = path.read_text(encoding="utf-8").splitlines()
    src = code(path).splitlines()  # same lines, comments and string contents blanked
    decls = {}
    for i, line in enumerate(src):
        m = re.match(rf"^param\s+({IDENT})\s+({IDENT})(\s*=\s*)?", line)
        if not m:
            continue
        above: list[str] = []
        j = i - 1
        while j >= 0 and raw[j].strip() and not re.match(r"^(param|var|resource|module|output)\s", raw[j]):
            above.insert(0, raw[j])
            j -= 1
        default = bicep_literal(raw[i][m.end() :].split(" //")[0]) if m.group(3) else NO_DEFAULT
        decls[m.group(1)] = {"type": m.group(2), "default": default, "decorators": "\n".join(above)}
    return decls


def decorator_value(decorators: str, name: str):
    """The integer argument of @minValue/@maxValue/@minLength/@maxLength, or None."""
    m = re.search(rf"^@{name}\((-?\d+)\)", decorators, re.M)
    return int(m.group(1)) if m else None


def declared_outputs(path: Path) -> set[str]:
    return set(re.findall(rf"^output\s+({IDENT})\s", code(path), re.M))


def module_calls(path: Path):
    """(symbol, target, params keys or None, source) for each module declaration in `path`."""
    src = code(path)
    raw = path.read_text(encoding="utf-8")
    for m in re.finditer(rf"^module\s+({IDENT})\s+'", src, re.M):
        target = re.match(r"'([^']*)'", raw[m.end() - 1 :]).group(1)
        body = block_after(src, m.end())
        p = re.search(r"\bparams\s*:\s*\{", body)
        params = top_level_keys(block_after(body, p.start())) if p else None
        yield m.group(1), target, params, body


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
    assert "'azd-service-name': 'web'" in web and "name: 'Free'" in web


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
    import subprocess

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
