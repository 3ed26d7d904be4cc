"""The sideband WebSocket to a live call: open it (following same-origin redirects only, again with
bounded backoff when it fails) and read it.

The bearer token goes only to the origin it was meant for: a redirect to another origin is refused
rather than followed, so a token never leaks to a host we did not choose.
"""

from __future__ import annotations

import json
import logging
import struct
from typing import Any, Callable, Mapping
from urllib.parse import quote, urljoin, urlsplit

import websocket

from ..retry import Backoff

log = logging.getLogger(__name__)

BACKOFF_FIRST, BACKOFF_MAX = 0.2, 5.0
REDIRECTS = (301, 302, 303, 307, 308)
GONE = (404, 410)


class CallGone(Exception):
    """The service does not know the call (it ended or never existed)."""


class SidebandError(Exception):
    """The sideband could not be opened for a reason worth retrying."""


class SidebandClosed(Exception):
    """The service closed the socket with a close frame (the call or session ended)."""

    def __init__(self, code: int | None, reason: str = ""):
        super().__init__(f"closed by the service ({code} {reason})".strip())
        self.code, self.reason = code, reason


class SidebandLost(Exception):
    """The connection dropped without a close frame."""


def sideband_url(websocket_endpoint: str, call_id: str) -> str:
    return f"{websocket_endpoint}/openai/v1/realtime?call_id={quote(call_id, safe='')}"


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    port = parts.port or {"ws": 80, "wss": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


class Sideband:
    def __init__(self, ws: websocket.WebSocket):
        self.ws = ws

    @classmethod
    def open(cls, url: str, headers: Mapping[str, str], timeout: float = 10.0, max_redirects: int = 3) -> Sideband:
        target = url
        for _ in range(max_redirects + 1):
            ws = websocket.WebSocket(enable_multithread=True)
            try:
                ws.connect(
                    target,
                    header=[f"{k}: {v}" for k, v in headers.items()],
                    timeout=timeout,
                    redirect_limit=0,
                    suppress_origin=True,
                )
                ws.settimeout(timeout)
                return cls(ws)
            except websocket.WebSocketBadStatusException as exc:
                if exc.status_code in GONE:
                    raise CallGone(f"sideband answered {exc.status_code}") from None
                raise SidebandError(f"sideband handshake answered {exc.status_code}") from None
            except websocket.WebSocketException as exc:
                resp = getattr(ws, "handshake_response", None)
                if resp is None or resp.status not in REDIRECTS:
                    raise SidebandError(f"sideband handshake failed: {exc}") from None
                location = (resp.headers or {}).get("location")
                if not location:
                    raise SidebandError(f"sideband redirect {resp.status} without Location") from None
                nxt = urljoin(target, location)
                if _origin(nxt) != _origin(target):
                    raise SidebandError(
                        f"sideband redirect to another origin refused ({urlsplit(nxt).hostname})"
                    ) from None
                target = nxt
            except (TimeoutError, OSError) as exc:
                raise SidebandError(f"sideband connection failed: {type(exc).__name__}: {exc}") from None
        raise SidebandError(f"more than {max_redirects} sideband redirects")

    def recv(self, timeout: float) -> str | None:
        """The next text frame, None if nothing came within timeout; raises SidebandClosed/Lost."""
        self.ws.settimeout(timeout)
        try:
            opcode, data = self.ws.recv_data(control_frame=True)
        except websocket.WebSocketTimeoutException:
            return None
        except (websocket.WebSocketConnectionClosedException, OSError) as exc:
            raise SidebandLost(f"{type(exc).__name__}: {exc}") from None
        except websocket.WebSocketException as exc:
            raise SidebandLost(f"{type(exc).__name__}: {exc}") from None
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
            raise SidebandClosed(code, data[2:].decode("utf-8", "replace"))
        if opcode in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY):
            return data.decode("utf-8", "surrogateescape") if isinstance(data, bytes) else data
        return None  # ping/pong: the library answers pings itself

    def send_json(self, message: Mapping[str, Any]) -> None:
        self.ws.send(json.dumps(message))

    def close(self) -> None:
        try:
            self.ws.close(timeout=1)
        except Exception:
            pass


class Dialer:
    """Opens one call's sideband with a fresh credential each time, and again with bounded backoff.
    Every socket it opens starts with the listener's `session_update`: a new socket may follow a
    session reset."""

    def __init__(
        self,
        url: str,
        headers: Callable[[], Mapping[str, str]],
        clock: Callable[[], float],
        call_id: str,
        session_update: Mapping[str, Any] | None = None,
    ):
        self.url, self.headers, self.clock, self.call_id = url, headers, clock, call_id
        self.session_update = session_update

    def open(self) -> Sideband:
        try:
            headers = self.headers()
        except Exception as exc:  # identity endpoint down: retried like a failed handshake
            raise SidebandError(f"no credential for the sideband: {type(exc).__name__}") from None
        sb = Sideband.open(self.url, headers)
        if self.session_update:
            try:  # the GA schema requires session.type (openai's SessionUpdateEvent)
                sb.send_json({"type": "session.update", "session": {"type": "realtime", **self.session_update}})
            except Exception as exc:  # dropped at once: opened again like a failed handshake
                sb.close()
                raise SidebandError(f"session.update not sent: {type(exc).__name__}") from None
        return sb

    def reopen(
        self, deadline: float, why: str, stop: Callable[[], bool] = lambda: False
    ) -> tuple[Sideband | None, int, str]:
        """Open again until `deadline` or `stop()`: the socket (None if none opened), the waits taken
        and the last error. Raises CallGone: the service no longer knows the call."""
        backoff = Backoff(BACKOFF_FIRST, BACKOFF_MAX, deadline, clock=self.clock)
        while not stop() and backoff.wait():
            try:
                return self.open(), backoff.attempts, why
            except SidebandError as exc:
                why = str(exc)
                log.warning("call %s: sideband not open yet (%s)", self.call_id, why)
        return None, backoff.attempts, why
