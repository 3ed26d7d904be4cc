"""The built-in phone tools without a socket: SIP_TRANSFER_TARGETS, transfer_call's allow-list, retry
and call-back fallback against a fake `/refer`, end_call, and the control's part (no next response
for a call that leaves; the hang-up after the response is done and its audio has played)."""

from __future__ import annotations

import json
import threading

import pytest

from local.testing.host_process import wait_until
from realtime_gateway.core.events import parse
from realtime_gateway.errors import ApiError
from realtime_gateway.listener.call_tools import END_CALL, ENDING, REFER_BACKOFF, TRANSFER_CALL, CallTools
from realtime_gateway.listener.control import Control
from realtime_gateway.listener.tools import ToolBox
from realtime_gateway.settings import SettingsError, load_settings, transfer_targets

BASE = {"AZURE_OPENAI_ENDPOINT": "https://r.openai.azure.com", "AZURE_OPENAI_DEPLOYMENT": "gpt-realtime"}
SIP = {
    "SIP_WEBHOOK_SECRET": "whsec_" + "c2lnbmluZyBrZXkgb2YgdGhlIHBob25lIGxpbmU=",
    "SIP_CALLER_SALT": "a-salt-of-16-chars",
}
TARGETS = {"sales": "tel:+15550001111", "support": "sip:help@example.com"}
CALL = "rtc_0123456789abcdef"


# ---- SIP_TRANSFER_TARGETS ----------------------------------------------------------------------------
def test_targets_are_names_for_tel_and_sip_uris():
    errors: list[str] = []
    raw = " Sales = tel:+15550001111 , support=sip:help@example.com,front desk=sips:desk@pbx.example:5061"
    assert transfer_targets(raw, errors) == {
        "sales": "tel:+15550001111",
        "support": "sip:help@example.com",
        "front desk": "sips:desk@pbx.example:5061",
    }
    assert errors == [] and transfer_targets("", errors) == {}


@pytest.mark.parametrize(
    "raw",
    [
        "tel:+15550001111",  # no name
        "sales=https://example.com",
        "sales=tel:5550-abc",
        "sales=sip:nohost",
        "=tel:+15550001111",
        "sales!=tel:+15550001111",
        "sales=tel:+15550001111,Sales=tel:+15550002222",  # a name twice
        "a=tel:+15550001111,b=tel:+15550001111",  # a URI twice
    ],
)
def test_bad_targets_are_named(raw):
    errors: list[str] = []
    transfer_targets(raw, errors)
    assert errors and "SIP_TRANSFER_TARGETS" in errors[0]
    with pytest.raises(SettingsError, match="SIP_TRANSFER_TARGETS"):
        load_settings({**BASE, "SIP_TRANSFER_TARGETS": raw})


def test_a_phone_policy_that_declares_transfer_call_needs_targets():
    tools = json.dumps([TRANSFER_CALL, END_CALL])
    with pytest.raises(SettingsError, match="declares transfer_call: set SIP_TRANSFER_TARGETS"):
        load_settings({**BASE, **SIP, "REALTIME_TOOLS": tools})
    s = load_settings({**BASE, **SIP, "REALTIME_TOOLS": tools, "SIP_TRANSFER_TARGETS": "sales=tel:+15550001111"})
    assert s.sip.transfer_targets == {"sales": "tel:+15550001111"}
    load_settings({**BASE, "REALTIME_TOOLS": tools})  # phone calls off: nothing to transfer, no error
    load_settings({**BASE, **SIP, "REALTIME_TOOLS": json.dumps([END_CALL])})


# ---- the tools against a fake /refer ---------------------------------------------------------------
class FakeApi:
    def __init__(self, *failures: ApiError | Exception) -> None:
        self.failures = list(failures)
        self.refers: list[tuple[str, str]] = []

    def refer(self, call_id: str, target_uri: str, deadline: float | None = None) -> None:
        self.refers.append((call_id, target_uri))
        if self.failures:
            raise self.failures.pop(0)


def server_error() -> ApiError:  # what RealtimeApi raises for the service's 500
    return ApiError(502, "upstream_error", "Azure OpenAI answered the refer request with status 500")


def tools(api: FakeApi, phone: bool = True, sleeps: list[float] | None = None) -> CallTools:
    box = CallTools.load([TRANSFER_CALL, END_CALL, {"type": "function", "name": "other"}], CALL, phone, TARGETS, api)
    assert box is not None and set(box.declared) == {"transfer_call", "end_call"}
    box._sleep = (sleeps if sleeps is not None else []).append
    return box


def test_nothing_to_load_without_the_built_ins():
    assert CallTools.load([{"type": "function", "name": "other"}], CALL, True, TARGETS, FakeApi()) is None


@pytest.mark.parametrize(
    "wanted, found",
    [
        ("sales", "sales"),
        ("  SALES ", "sales"),
        ("+15550001111", "sales"),
        ("1 (555) 000-1111", "sales"),
        ("tel:+15550001111", "sales"),
        ("sip:help@example.com", "support"),
        ("Support", "support"),
        ("+15550009999", None),  # a number nobody configured
        ("marketing", None),
        ("sip:other@example.com", None),
    ],
)
def test_a_target_is_found_by_name_number_or_uri(wanted, found):
    got = tools(FakeApi()).resolve(wanted)
    assert (got[0] if got else None) == found
    if got:
        assert got[1] == TARGETS[found]


def test_a_transfer_refers_once_to_the_configured_uri():
    api = FakeApi()
    step = tools(api).run("transfer_call", "call_1", json.dumps({"target": "+1 555 000 1111"}))
    assert api.refers == [(CALL, "tel:+15550001111")]
    assert step.then == "transferred" and step.detail == "transferred to sales"
    record = step.outcome.record()
    assert record["ok"] and record["call_id"] == "call_1"
    assert (record["outcome"], record["target"], record["attempts"]) == (
        "transferred",
        "sales",
        [{"result": "transferred"}],
    )
    assert json.loads(step.outcome.output) == {"status": "transferred", "target": "sales"}


def test_a_failing_refer_is_tried_once_more_then_the_model_offers_a_call_back():
    api, sleeps = FakeApi(server_error(), server_error()), []
    step = tools(api, sleeps=sleeps).run("transfer_call", "call_1", '{"target": "support"}')
    assert api.refers == [(CALL, "sip:help@example.com")] * 2 and sleeps == [REFER_BACKOFF]
    assert step.then == "respond"  # the model answers the caller with the fallback
    record = step.outcome.record()
    assert not record["ok"] and record["error_kind"] == "transfer_failed" and record["outcome"] == "fallback"
    assert record["target"] == "support"
    assert [a["result"] for a in record["attempts"]] == ["failed", "failed"]
    assert record["attempts"][0]["error"] == "upstream_error" and "500" in record["attempts"][0]["detail"]
    error = json.loads(step.outcome.output)["error"]
    assert "did not go through" in error and "call-back" in error


def test_a_second_try_that_works_is_a_transfer():
    api = FakeApi(server_error())
    step = tools(api).run("transfer_call", "c", '{"target": "sales"}')
    assert len(api.refers) == 2 and step.then == "transferred"
    assert [a["result"] for a in step.outcome.record()["attempts"]] == ["failed", "transferred"]


def test_a_call_that_is_gone_is_not_tried_again():
    api = FakeApi(ApiError(404, "call_not_found", "no pending or live call with this id"))
    step = tools(api).run("transfer_call", "c", '{"target": "sales"}')
    assert len(api.refers) == 1 and step.outcome.record()["outcome"] == "fallback"


@pytest.mark.parametrize(
    "name, arguments, phone, kind",
    [
        ("transfer_call", '{"target": "marketing"}', True, "unknown_target"),
        ("transfer_call", '{"target": "+15550009999"}', True, "unknown_target"),
        ("transfer_call", "{}", True, "invalid_arguments"),
        ("transfer_call", '{"target": ""}', True, "invalid_arguments"),
        ("transfer_call", '{"target": "sales", "extra": 1}', True, "invalid_arguments"),
        ("transfer_call", "not json", True, "bad_json"),
        ("transfer_call", "[1]", True, "not_an_object"),
        ("transfer_call", '{"target": "sales"}', False, "not_a_phone_call"),
        ("end_call", "{}", False, "not_a_phone_call"),
    ],
)
def test_refusals_are_error_outputs_and_never_a_refer(name, arguments, phone, kind):
    api = FakeApi()
    step = tools(api, phone=phone).run(name, "c", arguments)
    assert api.refers == [] and step.then == "respond"
    record = step.outcome.record()
    assert (record["ok"], record["error_kind"], record["outcome"]) == (False, kind, "refused")
    assert set(json.loads(step.outcome.output)) == {"error"}
    if kind == "unknown_target":
        assert "sales, support" in record["error"]  # the model learns what it may ask for


def test_end_call_says_the_call_is_ending_and_asks_for_the_hang_up():
    step = tools(FakeApi()).run("end_call", "c", "{}")
    assert step.then == "hang_up" and step.outcome.ok
    assert json.loads(step.outcome.output) == {"status": "ending", "message": ENDING}
    assert step.outcome.record()["outcome"] == "hangup"


# ---- the control: what follows the output ---------------------------------------------------------
class Harness:
    def __init__(self, api: FakeApi, phone: bool = True) -> None:
        self.sent: list[dict] = []
        self.marks: list[tuple[str, dict]] = []
        self.hangups: list[tuple[str, str]] = []
        self.ended: list[tuple[str, str]] = []
        self.hung_up = threading.Event()
        declared = [TRANSFER_CALL, END_CALL, {"type": "function", "name": "echo", "parameters": {}}]
        box = ToolBox.load(declared, "", 5)
        assert box is not None
        box.functions = {"echo": lambda: "echoed", "end_call": lambda: "the module's, never called"}
        self.calls = tools(api, phone)
        self.control = Control(
            box,
            None,
            self.sent.append,
            lambda kind, payload: self.marks.append((kind, payload)),
            self._hangup,
            calls=self.calls,
            ended=lambda reason, why: self.ended.append((reason, why)),
        )

    def _hangup(self, reason: str, why: str) -> None:
        self.hangups.append((reason, why))
        self.hung_up.set()

    def event(self, kind: str, **fields) -> None:
        self.control.on_event(parse(json.dumps({"type": kind, "event_id": "e", **fields})))

    def call(self, name: str, arguments: str, response_id: str = "resp_1") -> None:
        item = {"type": "function_call", "status": "completed", "call_id": f"call_{name}", "name": name}
        self.event("response.output_item.done", response_id=response_id, item={**item, "arguments": arguments})
        wait_until(lambda: any(m[0] == "listener.tool" for m in self.marks), 5, 0.01, "the tool's row")

    def done(self, response_id: str = "resp_1") -> None:
        self.event("response.done", response={"id": response_id})

    def kinds(self) -> list[str]:
        return [m["type"] for m in self.sent]


def test_end_call_hangs_up_after_its_response_is_done_and_sends_no_next_response():
    h = Harness(FakeApi())
    h.call("end_call", "{}")
    assert h.kinds() == ["conversation.item.create"] and h.hangups == []
    h.done()
    assert h.hung_up.wait(5)
    h.control.close(5)
    assert h.hangups == [("assistant_hangup", "the assistant ended the call (end_call)")]
    assert "response.create" not in h.kinds()
    (row,) = [p for k, p in h.marks if k == "listener.tool"]
    assert row["name"] == "end_call" and row["outcome"] == "hangup" and row["sent"]


def test_end_call_waits_for_the_goodbye_to_play_out():
    h = Harness(FakeApi())
    h.event("output_audio_buffer.started", response_id="resp_1")  # the goodbye, still playing
    h.call("end_call", "{}")
    h.done()
    assert not h.hung_up.wait(0.3)  # response.done: the words are out, the audio is not
    h.event("output_audio_buffer.stopped", response_id="resp_1")
    assert h.hung_up.wait(5)
    h.control.close(5)
    assert [r for r, _ in h.hangups] == ["assistant_hangup"]


def test_a_call_that_ends_while_the_goodbye_plays_is_not_hung_up_again():
    h = Harness(FakeApi())
    h.event("output_audio_buffer.started", response_id="resp_1")
    h.call("end_call", "{}")
    h.done()
    h.control.close(5)  # the caller hung up first: the listener closes the control
    assert h.hangups == []


def test_an_accepted_transfer_names_the_end_and_asks_for_no_next_response():
    api = FakeApi()
    h = Harness(api)
    h.call("transfer_call", '{"target": "sales"}')
    h.done()
    h.control.close(5)
    assert api.refers == [(CALL, "tel:+15550001111")]
    assert h.ended == [("transferred", "transferred to sales")] and h.hangups == []
    assert h.kinds() == ["conversation.item.create"]


def test_a_failed_transfer_lets_the_model_answer_with_the_fallback():
    h = Harness(FakeApi(server_error(), server_error()))
    h.call("transfer_call", '{"target": "sales"}')
    h.done()
    wait_until(lambda: "response.create" in h.kinds(), 5, 0.01, "the next response")
    h.control.close(5)
    output = h.sent[0]["item"]["output"]
    assert "call-back" in json.loads(output)["error"] and h.ended == [] and h.hangups == []
    (row,) = [p for k, p in h.marks if k == "listener.tool"]
    assert row["outcome"] == "fallback" and row["ok"] is False and row["error_kind"] == "transfer_failed"


def test_on_a_browser_call_the_built_ins_answer_an_error_and_the_module_is_not_called():
    h = Harness(FakeApi(), phone=False)
    h.call("end_call", "{}")
    h.done()
    wait_until(lambda: "response.create" in h.kinds(), 5, 0.01, "the next response")
    h.control.close(5)
    assert h.hangups == [] and "phone calls only" in h.sent[0]["item"]["output"]


def test_other_tools_still_run_from_the_module():
    h = Harness(FakeApi())
    h.call("echo", "{}")
    h.done()
    wait_until(lambda: "response.create" in h.kinds(), 5, 0.01, "the next response")
    h.control.close(5)
    assert json.loads(h.sent[0]["item"]["output"]) == "echoed"
