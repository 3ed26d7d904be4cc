"""The documentation stays what the people who read it need: a short README whose quick starts each
list prerequisites and end with a check, links that resolve, nothing that points outside the
repository, a request in test.http for every route, and the docs build inside `make test`.
(The site itself is built with `mkdocs build --strict` by `make docs`; its generated tables are
checked in tests/unit/test_docs_tables.py.)"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
# What a reader cannot follow: files or threads outside this repository.
OUTSIDE = re.compile(r"DESIGN\.md|\bseeds?\b|\bissue\s*#\s*\d+|\(#\d+\)|hardening issue|embedder's issue", re.I)


def slug(heading: str) -> str:
    """GitHub's (and MkDocs' toc) anchor of a heading: lowercase, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_\[\]()]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def test_readme_is_a_short_quick_start():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; the rest belongs in docs/"
    headings = [line[3:] for line in lines if line.startswith("## ")]
    for quick_start in ("Deploy with azd", "Embed the client on your own site", "Audit the archive"):
        assert quick_start in headings
        section = README.read_text(encoding="utf-8").split(f"## {quick_start}\n", 1)[1].split("\n## ", 1)[0]
        assert "**You need:**" in section, f"{quick_start}: no prerequisites"
        assert "**Check that it worked:**" in section, f"{quick_start}: no check at the end"
    text = README.read_text(encoding="utf-8")
    for command in (
        "make run",
        "make test",
        "azd env get-value AZURE_STORAGE_TABLE_ENDPOINT",
        "az role assignment create",
    ):
        assert command in text


@pytest.mark.parametrize("path", [README, ROOT / "test.http", ROOT / "mkdocs.yml", *PAGES], ids=lambda p: p.name)
def test_nothing_refers_outside_the_repository(path):
    found = OUTSIDE.findall(path.read_text(encoding="utf-8"))
    assert not found, f"{path.name} refers to something outside the repository: {found}"


def test_readme_links_resolve():
    text = README.read_text(encoding="utf-8")
    anchors = {slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links
    for link in links:
        if link.startswith(("http://", "https://")):
            continue
        target, _, anchor = link.partition("#")
        if not target:
            assert anchor in anchors, f"README.md: no heading for #{anchor}"
        else:
            assert (ROOT / target).exists(), f"README.md links to {target}, which does not exist"


def _routes() -> list[tuple[str, str]]:
    """(method, route) of every HTTP trigger in function_app.py, OPTIONS aside."""
    tree = ast.parse((ROOT / "function_app.py").read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "route":
            kw = {k.arg: k.value for k in node.keywords}
            route = ast.literal_eval(kw["route"])
            methods = ast.literal_eval(kw["methods"]) if "methods" in kw else ["GET", "POST"]
            out += [(m, route) for m in methods if m != "OPTIONS"]
    return out


def test_test_http_has_a_request_for_every_route():
    routes = _routes()
    assert len(routes) >= 8
    requests = re.findall(
        r"^(GET|POST|PUT|DELETE|PATCH|OPTIONS) \{\{gateway\}\}(/.*)$", (ROOT / "test.http").read_text(), re.M
    )
    for method, route in routes:
        pattern = re.escape("/api/" + route).replace(r"\{", "{").replace(r"\}", "}")
        pattern = re.sub(r"\{\w+\}", r"[^/?\\s]+", pattern) + r"(\?.*)?$"
        assert any(m == method and re.match(pattern, path) for m, path in requests), (
            f"test.http: no {method} /api/{route}"
        )


def test_vscode_files_are_the_quickstarts():
    vscode = ROOT / ".vscode"
    recommended = json.loads((vscode / "extensions.json").read_text())["recommendations"]
    assert {"ms-azuretools.vscode-azurefunctions", "ms-python.python"} <= set(recommended)
    tasks = {t["label"]: t for t in json.loads((vscode / "tasks.json").read_text())["tasks"]}
    assert tasks["func: host start"]["dependsOn"] == "pip install (functions)"
    launch = json.loads((vscode / "launch.json").read_text())["configurations"]
    attach = next(c for c in launch if c["request"] == "attach")
    assert attach["preLaunchTask"] == "func: host start"
    assert json.loads((vscode / "settings.json").read_text())["azureFunctions.pythonVenv"] == ".venv"


def test_make_test_builds_the_docs_strictly():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^test: .*\bdocs\b", makefile, re.M)
    docs_recipe = makefile.split("\ndocs:", 1)[1].split("\n\n", 1)[0]
    assert "mkdocs build --strict" in docs_recipe and "mktemp -d" in docs_recipe


def test_every_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in PAGES:
        assert f": {page.relative_to(DOCS).as_posix()}" in nav, f"{page.name} is not in mkdocs.yml's nav"
