"""`Emulator`: the app on its own thread and asyncio loop, for tests and the launcher."""

from __future__ import annotations

import asyncio
import os
import threading

from aiohttp import web

from .app import EmulatorState, build_app
from .calls import CLOSE_GOING_AWAY
from .faults import FaultRegistry
from .sip import SipLine, add_sip_routes


class Emulator:
    def __init__(
        self,
        port: int = 0,
        deployment: str = "gpt-realtime",
        identity_header: str = "local-identity-header",
        token_lifetime: float = 3600,
        session_max_seconds: float = 1800,
        api_key: str | None = None,
        host: str = "127.0.0.1",
        faults: list[dict] | None = None,
        max_call_seconds: float | None = None,
    ) -> None:
        # session_max_seconds: each call's session cap (Azure's 30 minutes by default; OpenAI's is 60).
        # max_call_seconds is its older name, still accepted.
        if max_call_seconds is not None:
            session_max_seconds = max_call_seconds
        self.host = host
        self.port = port
        self.identity_header = identity_header
        self.faults = FaultRegistry()
        for spec in faults or ():  # constructor option: faults active from the first request
            spec = dict(spec)
            self.faults.set(spec.pop("target"), **spec)
        self.state = EmulatorState(
            deployment, identity_header, token_lifetime, session_max_seconds, api_key, self.faults
        )
        # phone calls (sip.py): where the signed webhooks go; tests and the launcher set these
        self.sip = SipLine(os.environ.get("SIP_WEBHOOK_URL", ""), os.environ.get("SIP_WEBHOOK_SECRET", ""))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def identity_endpoint(self) -> str:
        return self.url + "/msi/token"

    @property
    def deployment(self) -> str:
        return self.state.deployment

    def start(self) -> Emulator:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._listen())
            except BaseException as exc:  # reported to the caller of start()
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._close())
            loop.close()

        self._thread = threading.Thread(target=run, name="realtime-emulator", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            raise failure[0]
        return self

    async def _listen(self) -> None:
        app = build_app(self.state)
        add_sip_routes(app, self.sip)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _close(self) -> None:
        calls = list(self.state.calls.values())
        for call in calls:
            await call.end(CLOSE_GOING_AWAY, "emulator_stopped")
        closing = [c.closing for c in calls if c.closing is not None]
        if closing:
            await asyncio.wait(closing, timeout=5)
        await asyncio.sleep(0.05)  # let close frames out
        if self._runner is not None:
            await self._runner.cleanup()

    def run_sync(self, coro, timeout: float = 30):
        """Run a coroutine on the emulator's loop from another thread."""
        if self._loop is None:
            raise RuntimeError("the emulator is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def set_fault(self, target: str, **spec) -> None:
        self.faults.set(target, **spec)

    def clear_faults(self) -> None:
        self.faults.clear()

    def stats(self) -> dict:
        async def snapshot():
            return self.state.stats()

        return self.run_sync(snapshot())

    def call_info(self, call_id: str) -> dict | None:
        async def snapshot():
            call = self.state.calls.get(call_id)
            return call.info() if call else None

        return self.run_sync(snapshot())

    def conversation(self, call_id: str) -> dict | None:
        """`{"items": [{id, type, role, text, audio_ms}]}`: what the call's model has seen."""

        async def snapshot():
            call = self.state.calls.get(call_id)
            return call.conversation.view() if call else None

        return self.run_sync(snapshot())

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(15)
        self._loop = None
