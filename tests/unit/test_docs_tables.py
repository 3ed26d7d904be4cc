"""The docs' settings and error tables (docs/gen_tables.py, rendered into the site by `make docs`)
say what the code does: every setting the code reads is in the table with its real default and
range, proven against `load_settings` itself, and every error code the package can answer with is
in the error table, found again here by a plain text scan that does not share the generator's code."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

from realtime_gateway import settings as settings_module
from realtime_gateway.settings import SettingsError, StorageConfigError

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "realtime_gateway"
DOCS = ROOT / "docs"


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_tables", DOCS / "gen_tables.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_tables"] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


gen = _load_generator()
SETTINGS = {s.name: s for s in gen.read_settings()}
BASE = {"AZURE_OPENAI_ENDPOINT": "https://example.openai.azure.com", "AZURE_OPENAI_DEPLOYMENT": "realtime"}


def table_rows(markdown: str) -> list[list[str]]:
    """The body rows of every Markdown table in `markdown`, cells stripped (escaped pipes kept)."""
    rows = []
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if cells[0] not in ("Setting", "Status"):
                rows.append(cells)
    return rows


SETTINGS_ROWS = {row[0].strip("`"): row for row in table_rows(gen.settings_table())}
ERROR_ROWS = [(int(row[0]), row[1].strip("`"), row[2]) for row in table_rows(gen.errors_table())]


def load(name: str, extra: dict[str, str]):
    """What the setting's own loader makes of `extra` (on top of the two required settings)."""
    loader = SETTINGS[name].loader
    if loader == "load_settings":
        return settings_module.load_settings({**BASE, **extra})
    return getattr(settings_module, loader)(extra)


def refusal(name: str, value: str) -> str:
    """The loader's complaint about NAME=value ('' when it accepts it)."""
    try:
        load(name, {name: value})
    except (SettingsError, StorageConfigError) as exc:
        return str(exc)
    return ""


# ---- the settings table -----------------------------------------------------------------------------
def test_every_setting_name_in_the_source_is_found():
    # a plain scan for quoted names: anything the ast reader misses (a new way of reading one) shows here
    quoted = set(
        re.findall(
            r"\"((?:[A-Z][A-Z0-9]*_)+[A-Z0-9]+|AzureWebJobsStorage(?:__\w+)?)\"",
            (PACKAGE / "settings.py").read_text(encoding="utf-8"),
        )
    )
    assert quoted - set(SETTINGS) == set()
    assert set(SETTINGS) - quoted == set()


def test_every_setting_is_described_and_nothing_else():
    described = {name for _, group in gen.MEANINGS for name in group}
    assert set(SETTINGS) - described == set(), (
        "settings the code reads without a line in docs/gen_tables.py MEANINGS: add one for each"
    )
    assert described - set(SETTINGS) == set(), "MEANINGS describes settings the code no longer reads"
    assert set(SETTINGS_ROWS) == set(SETTINGS)
    assert all(row[4] for row in SETTINGS_ROWS.values())


def test_every_setting_with_a_field_has_its_default_from_the_dataclasses():
    unresolved = [n for n, s in SETTINGS.items() if not gen.field_default(s)[0] and n not in gen.DEFAULT_TEXT]
    # read by the code but stored in no field of their own: their default is "unset"
    assert set(unresolved) <= {
        "AZURE_OPENAI_RESOURCE",
        "REALTIME_SESSION_POLICY_FILE",
        "REALTIME_TURN_DETECTION",
        "REALTIME_INPUT_TRANSCRIPTION",
        "REALTIME_TOOLS",
        "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    }, unresolved
    for name in unresolved:
        assert SETTINGS_ROWS[name][1] == "unset"


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_the_documented_default_is_the_default(name):
    shown = SETTINGS_ROWS[name][1]
    if shown == "required":
        with pytest.raises(SettingsError, match=name):
            settings_module.load_settings({k: v for k, v in BASE.items() if k != name})
        return
    if shown == "unset":
        return
    text = "" if shown == "empty" else shown.strip("`")
    if SETTINGS[name].loader == "storage_connection":
        pytest.skip("storage settings have no default but unset")
    # setting the documented default changes nothing: it is what the code does without the setting
    assert load(name, {name: text}) == load(name, {}), f"{name}={text!r} is not the default"


RANGED = {
    name: row[2] for name, row in SETTINGS_ROWS.items() if re.match(r"(whole number|number), -?[\d.,]+ to ", row[2])
}


def test_ranges_are_read():
    assert len(RANGED) >= 25  # every bounded number the settings take


@pytest.mark.parametrize("name", sorted(RANGED))
def test_the_documented_range_is_enforced(name):
    m = re.match(r"(whole number|number), (-?[\d.,]+) to (-?[\d.,]+)", RANGED[name])
    assert m
    whole = m.group(1) == "whole number"
    low, high = (float(g.replace(",", "")) for g in m.group(2, 3))
    step = 1 if whole else 0.001

    def text(x: float) -> str:
        return str(int(x)) if whole else repr(float(x))

    between = f"{name} must be between"
    for inside in (low, high):  # other rules may still refuse it (a pool lead over half its TTL), not this one
        assert between not in refusal(name, text(inside)), (name, inside)
    for outside in (low - step, high + step):
        assert between in refusal(name, text(outside)), (name, outside)


@pytest.mark.parametrize("name", sorted(n for n, row in SETTINGS_ROWS.items() if row[2] == "`true` or `false`"))
def test_booleans_refuse_anything_else(name):
    assert f"{name} must be true or false" in refusal(name, "maybe")


@pytest.mark.parametrize("name", sorted(n for n, row in SETTINGS_ROWS.items() if row[2] == "JSON"))
def test_json_settings_refuse_broken_json(name):
    assert f"{name} is not valid JSON" in refusal(name, "{")


def test_azd_variables_named_in_the_table_exist():
    params = json.loads((ROOT / "infra" / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    variables = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", json.dumps(params)))
    for name, row in SETTINGS_ROWS.items():
        named = re.findall(r"`([A-Z][A-Z0-9_]+)`", row[3])
        assert set(named) <= variables, (name, row[3])
        if row[3] == "azd":  # an azd variable of the setting's own name
            assert name in variables, name


# ---- the error table ----------------------------------------------------------------------------------
def _package_text() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(PACKAGE.rglob("*.py")))


def test_every_error_in_the_source_is_in_the_table():
    text = _package_text()
    found = {(int(s), c) for s, c in re.findall(r"\bApiError\(\s*(\d{3}),\s*\"([a-z_]+)\"", text)}
    found |= {(int(s), c) for s, c in re.findall(r"\b_error\(\s*(\d{3}),\s*\"([a-z_]+)\"", text)}
    found |= {(429, c) for c in re.findall(r"\bRefused\(\s*\"([a-z_]+)\"", text)}
    found |= {(400, c) for c in re.findall(r"\bBadRange\(\s*\"([a-z_]+)\"", text)}  # passed on as ApiError(400, ...)
    table = {(status, code) for status, code, _ in ERROR_ROWS}
    assert found == table
    assert len(table) >= 30


def test_retry_after_is_marked_where_the_code_sends_it():
    retry = {code for _, code, mark in ERROR_ROWS if mark == "yes"}
    assert retry == {
        "rate_limited",
        "too_many_active_calls",
        "budget_exhausted",
        "upstream_throttled",
        "limits_unavailable",
    }


def test_calls_the_generator_cannot_read_only_pass_an_error_along():
    _, unread = gen.read_errors()
    for where in unread:
        module, line = where.rsplit(":", 1)
        source = (PACKAGE / module).read_text(encoding="utf-8").splitlines()[int(line) - 1]
        assert ".status" in source and ".code" in source, where


def test_the_http_api_page_explains_every_code():
    page = (DOCS / "http-api.md").read_text(encoding="utf-8")
    missing = sorted({code for _, code, _ in ERROR_ROWS if not re.search(rf"`(\d{{3}} )?{code}`", page)})
    assert not missing, f"docs/http-api.md names no route for: {missing}"


def test_the_pages_place_both_tables():
    markers = {page.name: gen.MARKER.findall(page.read_text(encoding="utf-8")) for page in sorted(DOCS.rglob("*.md"))}
    assert markers["settings.md"] == ["settings"]
    assert markers["http-api.md"] == ["errors"]
    rendered = gen.on_page_markdown("a\n<!-- generated: errors -->\nb")
    assert "`payload_too_large`" in rendered and "<!--" not in rendered
