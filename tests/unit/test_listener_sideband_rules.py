"""Sideband rules that need no socket: close codes map to endings, the URL escapes the call id, malformed
queue messages are poisoned (redirects and unknown calls, on a loopback server:
tests/integration/test_listener_sideband_handshake.py)."""

import pytest

from realtime_gateway.core.message import CallMessage
from realtime_gateway.listener.call_listener import ended_reason
from realtime_gateway.listener.handler import handle_call_message
from realtime_gateway.listener.sideband import SidebandClosed, sideband_url
from realtime_gateway.services import Services
from realtime_gateway.settings import Settings


def test_close_codes_map_to_how_the_call_ended():
    assert ended_reason(SidebandClosed(1000, "")) == "ended"
    assert ended_reason(SidebandClosed(1001, "max_duration")) == "limit"
    assert ended_reason(SidebandClosed(1001, "hangup")) == "hangup"
    assert ended_reason(SidebandClosed(1011, "internal")) is None  # broken: reconnect
    assert ended_reason(SidebandClosed(None, "")) is None


def test_sideband_url_escapes_the_call_id():
    assert (
        sideband_url("wss://r.openai.azure.com", "rtc_a b")
        == "wss://r.openai.azure.com/openai/v1/realtime?call_id=rtc_a%20b"
    )


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b'{"v": 2, "call_id": "x"}',
        b'{"v":1,"call_id":"a#b","started_at":1,"deadline":2}',
        b'{"v":1,"call_id":"ok","started_at":"x"}',
    ],
)
def test_malformed_messages_are_poisoned_without_raising(body, caplog):
    poisoned = []
    assert (
        handle_call_message(
            body,
            send_handover=pytest.fail,
            send_poison=poisoned.append,
            services=Services(Settings(endpoint="https://r.openai.azure.com", deployment="d")),
        )
        is None
    )
    assert poisoned == [body.decode()]
    assert "rejected malformed call message" in caplog.text


def test_continuation_message_round_trips():
    msg = CallMessage("rtc_1", 1.0, 2.0, continuation=2)
    assert CallMessage.from_json(msg.continued().to_json()).continuation == 3
