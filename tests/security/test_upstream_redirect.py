"""A redirect from the upstream never carries the gateway's `api-key` to another host (requests
drops `Authorization` there, but not Azure's own key header); a same-host redirect keeps it."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from realtime_gateway.upstream.realtime_api import make_session


class Recorder(BaseHTTPRequestHandler):
    seen: list[tuple[str, str, str | None]] = []
    target = ""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        Recorder.seen.append((self.server.server_address[0], self.path, self.headers.get("api-key")))
        if self.path == "/away":
            self.send_response(307)
            self.send_header("Location", Recorder.target)
            self.end_headers()
        elif self.path == "/here":
            self.send_response(307)
            self.send_header("Location", "/landed")
            self.end_headers()
        else:
            self.send_response(200)
            self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def servers():
    started = [ThreadingHTTPServer((host, 0), Recorder) for host in ("127.0.0.1", "127.0.0.2")]
    for server in started:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    Recorder.seen = []
    yield started
    for server in started:
        server.shutdown()
        server.server_close()


def test_the_api_key_stays_with_its_host(servers):
    first, other = (f"http://{s.server_address[0]}:{s.server_address[1]}" for s in servers)
    Recorder.target = f"{other}/landed"
    session = make_session()
    assert session.get(f"{first}/away", headers={"api-key": "k-secret"}, timeout=5).status_code == 200
    assert session.get(f"{first}/here", headers={"api-key": "k-secret"}, timeout=5).status_code == 200
    assert Recorder.seen == [
        ("127.0.0.1", "/away", "k-secret"),
        ("127.0.0.2", "/landed", None),  # another host: the key is not sent
        ("127.0.0.1", "/here", "k-secret"),
        ("127.0.0.1", "/landed", "k-secret"),  # the same host keeps it
    ]
