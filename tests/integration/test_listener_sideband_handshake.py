"""The sideband's handshake against a loopback server that answers one HTTP request: a redirect to
another origin is refused without sending the token there, and an unknown call is CallGone. The
rules that need no socket are in tests/unit/test_listener_sideband_rules.py."""

import socket
import threading

import pytest

from realtime_gateway.listener.sideband import CallGone, Sideband, SidebandError


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
