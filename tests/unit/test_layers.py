"""The package's layers point one way (CONTRIBUTING.md): a module imports only from layers below its
own, or from its own folder; the call core needs nothing but the standard library; nothing below
function_app.py knows the Functions runtime; only function_app.py and the audit command build the
process's services."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "realtime_gateway"
# from the bottom up; a module's layer is its folder (or its own name at the package's top)
LAYERS = [
    {"core"},
    {"errors", "redact", "retry", "trace_summary"},
    {"settings"},
    {"telemetry"},
    {"archive", "limits", "upstream"},
    {"listener", "phone"},
    {"gateway"},
    {"audit"},
    {"services"},
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def unit_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in a module of the package."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names = [f"{module}.{alias.name}" for alias in node.names] if not node.module else [module]
            found += [(node.lineno, name) for name in names]
    return found


def modules() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"]


def test_every_module_is_in_a_layer():
    assert {unit_of(p) for p in modules()} <= set(RANK)


def test_imports_point_down_only():
    wrong = []
    for path in modules():
        unit = unit_of(path)
        for line, module in imports(path):
            parts = module.split(".")
            if parts[0] != "realtime_gateway" or len(parts) < 2:
                continue
            target = parts[1]
            if target != unit and RANK.get(target, -1) >= RANK[unit]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} ({unit}) imports {module} ({target})")
    assert wrong == []


def test_the_core_needs_only_the_standard_library_and_nothing_knows_the_functions_runtime():
    for path in modules():
        for line, module in imports(path):
            top = module.split(".")[0]
            assert top != "azure" or not module.startswith("azure.functions"), f"{path}:{line}"
            if unit_of(path) == "core":
                assert top in sys.stdlib_module_names or module.startswith("realtime_gateway.core"), f"{path}:{line}"


def test_only_the_app_and_the_audit_command_build_the_services():
    users = {
        str(p.relative_to(ROOT))
        for p in [*modules(), ROOT / "function_app.py"]
        if any(m.startswith("realtime_gateway.services") for _, m in imports(p)) and p.stem != "services"
    }
    assert users <= {"function_app.py", "realtime_gateway/audit/cli.py"}
