"""A real WebRTC offer from an in-process aiortc peer, shared by the gateway tests and the bench."""

from __future__ import annotations

import asyncio
import threading
from typing import Self

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack


class OfferPeer:
    """An aiortc peer on its own event loop thread: `.offer` is its SDP; `.accept(answer)` applies
    the answer and returns once the data channel opens (or raises on timeout)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.opened: asyncio.Event | None = None  # made on the peer's loop
        self.offer = self._run(self._make_offer(), 20)

    def _run(self, coro, timeout):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _make_offer(self) -> str:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTrack(AudioStreamTrack())
        self.opened = asyncio.Event()
        channel = self.channel = self.pc.createDataChannel("realtime-channel")
        channel.on("open", self.opened.set)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    def accept(self, answer_sdp: str, wait_open: float | None = 15.0) -> None:
        async def go():
            await self.pc.setRemoteDescription(RTCSessionDescription(answer_sdp, "answer"))
            if wait_open and self.opened is not None:
                await asyncio.wait_for(self.opened.wait(), wait_open)

        self._run(go(), (wait_open or 0) + 20)

    def send(self, event: dict) -> None:
        """A client event on the data channel, as a browser (or an attacker holding the page) sends it."""
        import json

        async def go():
            self.channel.send(json.dumps(event))

        self._run(go(), 10)

    def close(self) -> None:
        try:
            self._run(self.pc.close(), 10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
