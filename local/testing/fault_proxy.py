"""An HTTP proxy in front of a real service (Azurite's tables) that injects one fault at a time:
the storage-side faults the emulator cannot make (its faults are the realtime service's).

    proxy = FaultProxy("http://127.0.0.1:10002").start()
    proxy.set("status", status=503, match="$batch")  # the next event write answers 503
    proxy.set("refuse", seconds=2)                    # nothing listens on the port for 2 s

Every response closes its connection, so a client's pool never keeps a socket past a fault (and
"refuse" really refuses: the port is closed, not an idle connection kept).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from yarl import URL

KINDS = ("status", "delay", "malformed", "redirect", "reset", "refuse")
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


@dataclass
class ProxyFault:
    kind: str
    match: str = ""  # only requests whose path and query contain this
    status: int = 503
    retry_after: int | None = None
    seconds: float = 0.0  # delay, or how long "refuse" keeps the port closed
    times: int = 1  # requests it applies to (0: until cleared)


class FaultProxy:
    def __init__(self, target: str, host: str = "127.0.0.1") -> None:
        self.target, self.host = target.rstrip("/"), host
        self.port = 0
        self.faulted = 0  # requests a fault was applied to
        self.forwarded = 0
        self._fault: ProxyFault | None = None
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> FaultProxy:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._listen())
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._close())
            self._loop.close()

        self._thread = threading.Thread(target=run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(15):
            raise RuntimeError("fault proxy did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(15)
            self._loop = None

    def set(self, kind: str, **spec) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown proxy fault {kind!r}; one of {', '.join(KINDS)}")
        fault = ProxyFault(kind, **spec)
        if kind == "refuse":  # the port itself goes away, so no request ever reaches the handler
            assert self._loop is not None
            asyncio.run_coroutine_threadsafe(self._refuse(fault.seconds), self._loop).result(10)
            with self._lock:
                self.faulted += 1
            return
        with self._lock:
            self._fault = fault

    def clear(self) -> None:
        with self._lock:
            self._fault = None

    def _take(self, path_qs: str) -> ProxyFault | None:
        with self._lock:
            fault = self._fault
            if fault is None or fault.match not in path_qs:
                return None
            if fault.times == 1:
                self._fault = None
            elif fault.times > 1:
                fault.times -= 1
            self.faulted += 1
            return fault

    async def _listen(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, keepalive_timeout=0)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await self._site.start()
        self.port = self._runner.addresses[0][1]

    async def _refuse(self, seconds: float) -> None:
        assert self._site is not None and self._runner is not None
        await self._site.stop()

        async def reopen() -> None:
            await asyncio.sleep(seconds)
            self._site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)  # type: ignore[arg-type]
            await self._site.start()

        asyncio.ensure_future(reopen())

    async def _close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        fault = self._take(request.raw_path)
        if fault is not None:
            if fault.kind == "reset":
                assert request.transport is not None
                request.transport.abort()  # the connection drops with no answer
                return web.Response(status=500)
            if fault.kind == "delay":
                await asyncio.sleep(fault.seconds)
            elif fault.kind == "status":
                headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                text = f'{{"odata.error":{{"code":"Injected","message":{{"value":"injected {fault.status}"}}}}}}'
                return web.Response(status=fault.status, text=text, content_type="application/json", headers=headers)
            elif fault.kind == "malformed":
                return web.Response(status=202, text="<html>a proxy's error page</html>", content_type="text/html")
            elif fault.kind == "redirect":
                return web.Response(status=307, headers={"Location": str(request.url)})
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        async with self._session.request(
            request.method,
            URL(self.target + request.raw_path, encoded=True),  # as sent: the signature covers the path
            headers=headers,
            data=body or None,
            allow_redirects=False,
            skip_auto_headers=("Content-Type",),  # signed by the client: add none of aiohttp's own
        ) as upstream:
            payload = await upstream.read()
            self.forwarded += 1
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS}
            return web.Response(status=upstream.status, body=payload, headers=out)
