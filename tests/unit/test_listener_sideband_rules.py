"""Sideband rules that need no service: redirects stay on one origin, close codes map to endings."""

import socket
import threading

import pytest

from realtime_gateway.listener.call_listener import ended_reason
from realtime_gateway.listener.handler import handle_call_message
from realtime_gateway.listener.message import CallMessage
from realtime_gateway.listener.sideband import CallGone, Sideband, SidebandClosed, SidebandError, sideband_url
from realtime_gateway.process import Process
from realtime_gateway.settings import Settings


def _one_shot_server(response: bytes):
    """A loopback socket that answers one HTTP request with `response` and records the request."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    seen = {}

    def serve():
        conn, _ = srv.accept()
        seen["request"] = conn.recv(65536).decode("latin-1")
        conn.sendall(response)
        conn.close()
        srv.close()

    threading.Thread(target=serve, daemon=True).start()
    return srv.getsockname()[1], seen


def test_redirect_to_another_origin_is_refused_and_the_token_not_sent_there():
    port, seen = _one_shot_server(
        b"HTTP/1.1 307 Temporary Redirect\r\nLocation: ws://evil.example/steal\r\nContent-Length: 0\r\n\r\n"
    )
    with pytest.raises(SidebandError, match="another origin refused"):
        Sideband.open(f"ws://127.0.0.1:{port}/openai/v1/realtime?call_id=rtc_1", {"Authorization": "Bearer t0k"})
    assert "Authorization: Bearer t0k" in seen["request"]


def test_unknown_call_is_call_gone():
    port, _ = _one_shot_server(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(CallGone):
        Sideband.open(f"ws://127.0.0.1:{port}/openai/v1/realtime?call_id=rtc_1", {})


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
            process=Process(Settings(endpoint="https://r.openai.azure.com", deployment="d"), env={}),
        )
        is None
    )
    assert poisoned == [body.decode()]
    assert "rejected malformed call message" in caplog.text


def test_continuation_message_round_trips():
    msg = CallMessage("rtc_1", 1.0, 2.0, continuation=2)
    assert CallMessage.from_json(msg.continued().to_json()).continuation == 3
