"""The session cap: `expires_at` in session.created, then at the cap an `error` (session_expired) to
the sideband, close 1001, and the peer connection and data channel closed."""

import asyncio
import time

import aiohttp

from local.emulator import Emulator
from local.emulator.peer import ClientPeer, entra_token, mint_ephemeral_key
from tests.fixtures.realtime_types import assert_server_event
from tests.fixtures.sideband import Sideband, admin_call


async def _webrtc_call(emu, http, webrtc_filter):
    """A WebRTC call (aiortc client) with a sideband observer; its start time."""
    started = time.time()
    ek = await mint_ephemeral_key(emu.url, emu.identity_header, emu.deployment, http)
    peer = ClientPeer()
    call_id = await peer.connect(emu.url, ek, webrtc_filter=webrtc_filter, session=http)
    token = await entra_token(emu.url, emu.identity_header, http)
    ws = await http.ws_connect(
        f"{emu.url}/openai/v1/realtime?call_id={call_id}", headers={"Authorization": f"Bearer {token}"}
    )
    return started, call_id, peer, Sideband(ws)


async def _until_closed(peer, timeout=5):
    end = time.monotonic() + timeout
    while peer.channel.readyState != "closed" or peer.pc.connectionState not in ("closed", "failed"):
        assert time.monotonic() < end, (peer.channel.readyState, peer.pc.connectionState)
        await asyncio.sleep(0.05)


def test_session_cap_expires_with_error_then_1001_and_closes_the_peer():
    cap = 3
    emu = Emulator(port=0, session_max_seconds=cap).start()
    try:

        async def one(http, webrtc_filter):
            started, call_id, peer, side = await _webrtc_call(emu, http, webrtc_filter)
            code = await side.closed(timeout=cap + 5)
            ended = time.time()
            await _until_closed(peer)
            await peer.close()
            return started, ended, code, peer.messages, side.messages, emu.call_info(call_id)

        async def run():
            async with aiohttp.ClientSession() as http:
                return await asyncio.gather(one(http, False), one(http, True))

        results = asyncio.run(run())
    finally:
        emu.stop()

    for webrtc_filter, (started, ended, code, channel, sideband, info) in zip((False, True), results, strict=True):
        for m in channel + sideband:
            assert_server_event(m)
        assert code == 1001
        assert info["state"] == "ended" and info["end_reason"] == "max_duration"
        created = sideband[0]
        assert created["type"] == "session.created"
        assert created["session"]["expires_at"] == info["expires_at"]
        assert started + cap - 1 <= info["expires_at"] <= started + cap + 1
        assert cap - 1 <= ended - started <= cap + 2
        last = sideband[-1]
        assert last["type"] == "error"
        assert last["error"] == {
            "type": "invalid_request_error",
            "code": "session_expired",
            "message": "Your session hit the maximum duration of 3 seconds.",
            "param": None,
            "event_id": None,
        }
        errors = [m for m in channel if m["type"] == "error"]
        if webrtc_filter:  # errors never reach a filtered data channel
            assert not errors and all(m["type"] != "session.created" for m in channel)
        else:
            assert channel[0]["session"]["expires_at"] == info["expires_at"]
            assert errors == [last]


def test_admin_sets_a_calls_cap(emulator):
    async def run():
        async with aiohttp.ClientSession() as http:
            # the default cap (1800 s: Azure's 30 minutes), then shortened on the live call
            call_id, side = await admin_call(http, emulator)
            expires_at = side.messages[0]["session"]["expires_at"]
            url = f"{emulator.url}/_emulator/calls/{call_id}/expiry"
            async with http.post(url, json={"session_max_seconds": -1}) as r:
                refused = r.status
            async with http.post(url, json={"session_max_seconds": 0.5}) as r:
                shortened = await r.json()
            code = await side.closed()
            async with http.post(url, json={"session_max_seconds": 10}) as r:
                ended_status = r.status
            # a call created with its own cap
            own_id, own = await admin_call(http, emulator, session_max_seconds=60)
            own_expires = own.messages[0]["session"]["expires_at"]
            async with http.post(f"{emulator.url}/_emulator/calls/{own_id}/end") as r:
                assert r.status == 200
            return expires_at, refused, shortened, code, ended_status, side.messages, own_expires

    now = time.time()
    expires_at, refused, shortened, code, ended_status, messages, own_expires = asyncio.run(run())
    for m in messages:
        assert_server_event(m)
    assert now + 1800 - 2 <= expires_at <= now + 1800 + 2
    assert now + 60 - 2 <= own_expires <= now + 60 + 2
    assert refused == 400 and ended_status == 404
    assert shortened["expires_at"] <= now + 2
    assert code == 1001
    assert messages[-1]["error"]["code"] == "session_expired"
    assert messages[-1]["error"]["message"] == "Your session hit the maximum duration of 0.5 seconds."
