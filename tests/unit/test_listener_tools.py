"""The tool runner, the schema subset and the guardrail policy, without a socket; and their settings."""

from __future__ import annotations

import json

import pytest

from realtime_gateway.core import schema
from realtime_gateway.listener.guardrails import Guardrail
from realtime_gateway.listener.tools import ToolBox
from realtime_gateway.settings import SettingsError, load_settings, parse_terms

BASE = {"AZURE_OPENAI_ENDPOINT": "https://r.openai.azure.com", "AZURE_OPENAI_DEPLOYMENT": "gpt-realtime"}
PARAMS = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 2, "maxLength": 5},
        "n": {"type": "integer", "minimum": 1, "maximum": 3},
        "mode": {"enum": ["a", "b"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "ratio": {"type": ["number", "null"]},
    },
    "required": ["name"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    "value, problems",
    [
        ({"name": "abc", "n": 2, "mode": "a", "tags": ["x"], "ratio": None}, []),
        ({"name": "abc", "n": 2.0, "ratio": 0.5}, []),  # 2.0 is an integer in JSON
        ({}, ["$.name is required"]),
        ({"name": "a"}, ["$.name is shorter than 2"]),
        ({"name": "abcdef"}, ["$.name is longer than 5"]),
        ({"name": "abc", "n": True}, ["$.n must be integer"]),  # true is not a number
        ({"name": "abc", "n": 4}, ["$.n is more than 3"]),
        ({"name": "abc", "n": 0}, ["$.n is less than 1"]),
        ({"name": "abc", "mode": "c"}, ["$.mode must be one of ['a', 'b']"]),
        ({"name": "abc", "tags": ["x", 1]}, ["$.tags[1] must be string"]),
        ({"name": "abc", "ratio": "x"}, ["$.ratio must be number or null"]),
        ({"name": "abc", "other": 1}, ["$.other is not allowed"]),
    ],
)
def test_schema_subset_validation(value, problems):
    assert schema.errors(value, PARAMS) == problems


def test_schema_keywords_outside_the_subset_are_named():
    assert schema.unsupported(PARAMS) == []
    bad = {"type": "object", "properties": {"x": {"type": "string", "pattern": "^a"}}, "oneOf": []}
    assert schema.unsupported(bad) == ["parameters.oneOf", "parameters.properties.x.pattern"]


def box(timeout=0.3):
    tools = [{"type": "function", "name": n, "parameters": {}} for n in ("explode", "slow")]
    tb = ToolBox.load(tools, "tests.fixture_app.tools", timeout)
    tb.declared = {**tb.declared, "echo": PARAMS}
    tb.functions = {**tb.functions, "echo": lambda name, n=1: {"echo": name * n}}
    return tb


def test_tool_runs_and_failures_become_error_outputs():
    tb = box()
    ok = tb.run("echo", "call_1", '{"name": "ab", "n": 2}')
    assert ok.ok and json.loads(ok.output) == {"echo": "abab"} and ok.error is None
    assert ok.record()["result"] == ok.output and "error" not in ok.record()
    for name, args, error in [
        ("echo", '{"name": 1}', "invalid arguments: $.name must be string"),
        ("echo", "[1]", "the arguments must be a JSON object"),
        ("echo", "{", "the arguments are not valid JSON"),
        ("explode", "{}", "tool 'explode' failed: RuntimeError: boom"),
        ("slow", '{"seconds": 2}', "tool 'slow' did not answer within 0.3 s"),
        ("nope", "{}", "unknown tool 'nope'"),
    ]:
        out = tb.run(name, "call_2", args)
        assert not out.ok and out.error == error and json.loads(out.output) == {"error": error}
        assert out.record()["error"] == error


def test_a_tool_module_that_fails_to_import_answers_every_call_with_an_error():
    tb = ToolBox.load([{"type": "function", "name": "x"}], "no_such_module_here", 1)
    assert tb.run("x", "c", "{}").error == "the tools module could not be loaded (ModuleNotFoundError)"
    assert ToolBox.load([], "app_tools", 1) is None  # nothing declared: no tools


def test_secrets_in_a_tool_result_are_redacted():
    import app_tools  # noqa: F401 (the example module imports)

    tb = ToolBox({"leak": {}}, {"leak": lambda: {"key": "ek_abcdef123456"}}, 1)
    assert "ek_abcdef123456" not in tb.run("leak", "c", "{}").output


def test_guardrail_terms_and_hook():
    assert parse_terms("bad, very bad ") == [r"\bbad\b", r"\bvery\ bad\b"]
    assert parse_terms('["sec(ret)?", "x+"]') == ["sec(ret)?", "x+"]
    with pytest.raises(ValueError):
        parse_terms('["", 1]')
    g = Guardrail.load(tuple(parse_terms("bad")), "", "n", 2)
    assert g.match("a BAD word") == (r"\bbad\b", "BAD") and g.match("badger") is None
    assert Guardrail.load((), "", "n", 2) is None
    hooked = Guardrail([], lambda text: "too loud" if "!" in text else None, "", 0)
    assert hooked.ask_hook("hi!") == "too loud" and hooked.ask_hook("hi") is None
    failing = Guardrail([], lambda text: 1 / 0, "", 0)
    assert failing.ask_hook("x") is None  # a broken hook lets the text pass


def test_tool_and_guardrail_settings():
    s = load_settings(
        {
            **BASE,
            "TOOLS_MODULE": "app_tools",
            "TOOL_TIMEOUT_SECONDS": "2.5",
            "GUARDRAIL_BLOCKED_TERMS": '["sec(ret)?"]',
            "GUARDRAIL_HOOK": "my.mod:check",
            "GUARDRAIL_NOTICE": "",
            "GUARDRAIL_MAX_HITS": "0",
            "REALTIME_TOOLS": json.dumps([{"type": "function", "name": "t", "parameters": PARAMS}]),
        }
    )
    assert (s.tools_module, s.tool_timeout, s.guardrail_terms) == ("app_tools", 2.5, ("sec(ret)?",))
    assert (s.guardrail_hook, s.guardrail_notice, s.guardrail_max_hits) == ("my.mod:check", "", 0)
    assert load_settings(BASE).guardrail_notice and load_settings(BASE).tools_module == ""
    with pytest.raises(SettingsError) as err:
        load_settings(
            {
                **BASE,
                "TOOLS_MODULE": "bad module",
                "TOOL_TIMEOUT_SECONDS": "500",
                "GUARDRAIL_BLOCKED_TERMS": '["("]',
                "GUARDRAIL_HOOK": "nocolon",
                "GUARDRAIL_MAX_HITS": "-1",
                "REALTIME_TOOLS": json.dumps([{"type": "function", "name": "t", "parameters": {"anyOf": []}}]),
            }
        )
    for name in (
        "TOOLS_MODULE",
        "TOOL_TIMEOUT_SECONDS",
        "GUARDRAIL_BLOCKED_TERMS",
        "GUARDRAIL_HOOK",
        "GUARDRAIL_MAX_HITS",
    ):
        assert name in str(err.value), name
    assert "parameters.anyOf is outside the supported JSON-schema subset" in str(err.value)
