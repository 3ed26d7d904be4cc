"""An aiortc client peer for the emulator (tests and smoke checks): the browser's side of a call."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from .audio import ReplyAudioTrack, frame_rms


async def entra_token(base_url: str, identity_header: str, session: aiohttp.ClientSession) -> str:
    """A bearer token from the emulator's managed-identity endpoint, as the gateway gets one."""
    async with session.get(
        f"{base_url}/msi/token",
        headers={"X-IDENTITY-HEADER": identity_header},
        params={"api-version": "2019-08-01", "resource": "https://cognitiveservices.azure.com"},
    ) as r:
        r.raise_for_status()
        return (await r.json())["access_token"]


async def mint_ephemeral_key(
    base_url: str, identity_header: str, deployment: str, session: aiohttp.ClientSession, seconds: int = 600
) -> str:
    """What the gateway does server-side: an Entra token from the identity endpoint, then a secret."""
    token = await entra_token(base_url, identity_header, session)
    body = {
        "expires_after": {"anchor": "created_at", "seconds": seconds},
        "session": {
            "type": "realtime",
            "model": deployment,
            "instructions": "Be brief.",
            "audio": {"output": {"voice": "marin"}},
        },
    }
    async with session.post(
        f"{base_url}/openai/v1/realtime/client_secrets", json=body, headers={"Authorization": f"Bearer {token}"}
    ) as r:
        r.raise_for_status()
        return (await r.json())["value"]


class ClientPeer:
    """Data channel + microphone track (speech queued with `say`, silence otherwise) + remote audio."""

    def __init__(self, label: str = "oai-events") -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.channel = self.pc.createDataChannel(label)
        self.mic = ReplyAudioTrack()
        self.pc.addTrack(self.mic)
        self.messages: list[dict] = []
        self.opened = asyncio.Event()
        self.open_seconds: float | None = None
        self.remote_frames = 0
        self.remote_loud_frames = 0
        self.call_id: str | None = None
        self._new_message = asyncio.Event()
        self._started = 0.0
        self._reader: asyncio.Task | None = None
        self.channel.on("open", self._on_open)
        self.channel.on("message", self._on_message)
        self.pc.on("track", self._on_track)

    def _on_open(self) -> None:
        self.open_seconds = time.perf_counter() - self._started
        self.opened.set()

    def _on_message(self, message) -> None:
        self.messages.append(json.loads(message))
        self._new_message.set()

    def _on_track(self, track) -> None:
        self._reader = asyncio.ensure_future(self._read(track))

    async def _read(self, track) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.remote_frames += 1
            if frame_rms(frame) > 300:
                self.remote_loud_frames += 1

    async def connect(
        self,
        base_url: str,
        ephemeral_key: str,
        webrtc_filter: bool = True,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 10,
    ) -> str:
        self._started = time.perf_counter()
        await self.pc.setLocalDescription(await self.pc.createOffer())
        url = f"{base_url}/openai/v1/realtime/calls" + ("?webrtcfilter=on" if webrtc_filter else "")
        own = session is None
        session = session or aiohttp.ClientSession()
        try:
            async with session.post(
                url,
                data=self.pc.localDescription.sdp,
                headers={"Authorization": f"Bearer {ephemeral_key}", "Content-Type": "application/sdp"},
            ) as r:
                if r.status != 201:
                    raise RuntimeError(f"calls answered {r.status}: {await r.text()}")
                answer = await r.text()
                self.call_id = r.headers["Location"].rsplit("/", 1)[-1]
        finally:
            if own:
                await session.close()
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await asyncio.wait_for(self.opened.wait(), timeout)
        return self.call_id

    def send(self, event: dict) -> None:
        self.channel.send(json.dumps(event))

    def say(self, pcm) -> None:
        self.mic.play(pcm)

    def types(self) -> list[str]:
        return [m["type"] for m in self.messages]

    async def wait_for(self, type_: str, timeout: float = 10, count: int = 1) -> dict:
        end = time.monotonic() + timeout
        while True:
            found = [m for m in self.messages if m["type"] == type_]
            if len(found) >= count:
                return found[count - 1]
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {type_} (x{count}) on the data channel; got {self.types()}")
            self._new_message.clear()
            try:
                await asyncio.wait_for(self._new_message.wait(), left)
            except TimeoutError:
                pass

    async def close(self) -> None:
        if self._reader:
            self._reader.cancel()
        await self.pc.close()
