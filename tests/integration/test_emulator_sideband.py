"""The sideband WebSocket: observers, client events, and how it closes (1000 / 1001)."""

import asyncio
import json

import aiohttp

from local.emulator import Emulator, reply_for
from local.emulator.peer import entra_token


async def _new_call(http, url):
    async with http.post(f"{url}/_emulator/calls") as r:
        assert r.status == 200
        return (await r.json())["call_id"]


async def _attach(http, url, token, call_id):
    return await http.ws_connect(
        f"{url}/openai/v1/realtime?call_id={call_id}", headers={"Authorization": f"Bearer {token}"}
    )


async def _drain(ws, timeout=10):
    """Every message until the server closes; returns (types, messages, close code)."""
    messages = []

    async def read():
        async for msg in ws:
            messages.append(json.loads(msg.data))

    await asyncio.wait_for(read(), timeout)
    return [m["type"] for m in messages], messages, ws.close_code


async def _until(ws, type_, timeout=10):
    seen = []

    async def read():
        async for msg in ws:
            seen.append(json.loads(msg.data))
            if seen[-1]["type"] == type_:
                return

    await asyncio.wait_for(read(), timeout)
    return seen


def test_observers_get_session_created_then_the_same_events_and_1000_on_end(emulator):
    async def run():
        async with aiohttp.ClientSession() as http:
            token = await entra_token(emulator.url, emulator.identity_header, http)
            call_id = await _new_call(http, emulator.url)
            observers = [await _attach(http, emulator.url, token, call_id) for _ in range(3)]
            async with http.get(f"{emulator.url}/_emulator/calls/{call_id}") as r:
                assert (await r.json())["observers"] == 3
            async with http.post(
                f"{emulator.url}/_emulator/calls/{call_id}/script", json={"responses": 2, "text": "What time is it?"}
            ) as r:
                info = await r.json()
                assert info["responses"] == 2
            async with http.post(f"{emulator.url}/_emulator/calls/{call_id}/end") as r:
                assert r.status == 200
            results = [await _drain(ws) for ws in observers]
            async with http.get(f"{emulator.url}/_emulator/calls/{call_id}") as r:
                info = await r.json()
            return results, info

    results, info = asyncio.run(run())
    assert info["state"] == "ended"
    for types, messages, code in results:
        assert code == 1000
        assert types[0] == "session.created"
        assert types.count("response.done") == 2
        done = [m for m in messages if m["type"] == "response.output_audio_transcript.done"]
        assert [m["transcript"] for m in done] == [reply_for("What time is it?")] * 2
        assert len(messages) - 1 == info["events"]
    ids = [[m["event_id"] for m in messages[1:]] for _, messages, _ in results]
    assert ids[0] == ids[1] == ids[2]
    assert len(set(ids[0])) == len(ids[0])


def test_client_events_on_the_sideband(emulator):
    async def run():
        async with aiohttp.ClientSession() as http:
            token = await entra_token(emulator.url, emulator.identity_header, http)
            call_id = await _new_call(http, emulator.url)
            ws = await _attach(http, emulator.url, token, call_id)
            first = json.loads((await ws.receive()).data)
            await ws.send_json(
                {
                    "type": "session.update",
                    "session": {"type": "realtime", "instructions": "Answer in French.", "output_modalities": ["text"]},
                }
            )
            updated = (await _until(ws, "session.updated"))[-1]
            await ws.send_json(
                {
                    "type": "conversation.item.create",
                    "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Bonjour"}]},
                }
            )
            await ws.send_json({"type": "response.create"})
            turn = await _until(ws, "response.done")
            await ws.send_json({"type": "session.update", "session": {"type": "transcription"}})
            error = (await _until(ws, "error"))[-1]
            await ws.close()
            return first, updated, turn, error

    first, updated, turn, error = asyncio.run(run())
    assert first["type"] == "session.created" and first["session"]["model"] == "gpt-realtime"
    assert updated["session"]["instructions"] == "Answer in French."
    assert updated["session"]["id"] == first["session"]["id"]
    types = [m["type"] for m in turn]
    assert types[:2] == ["conversation.item.added", "conversation.item.done"]
    assert "response.output_text.done" in types  # text modality after the update
    text_done = next(m for m in turn if m["type"] == "response.output_text.done")
    assert text_done["text"] == reply_for("Bonjour")
    assert error["error"]["param"] == "session.type"


def test_hangup_closes_sideband_1001_and_second_hangup_is_404(emulator):
    async def run():
        async with aiohttp.ClientSession() as http:
            token = await entra_token(emulator.url, emulator.identity_header, http)
            call_id = await _new_call(http, emulator.url)
            ws = await _attach(http, emulator.url, token, call_id)
            auth = {"Authorization": f"Bearer {token}"}
            hangup = f"{emulator.url}/openai/v1/realtime/calls/{call_id}/hangup"
            async with http.post(hangup, headers=auth) as r:
                first = r.status
            types, _, code = await _drain(ws)
            async with http.post(hangup, headers=auth) as r:
                second = r.status
            async with http.post(f"{emulator.url}/openai/v1/realtime/calls/rtc_nope/hangup", headers=auth) as r:
                unknown = r.status
            async with http.post(hangup) as r:
                unauthenticated = r.status
            async with http.get(f"{emulator.url}/openai/v1/realtime?call_id={call_id}", headers=auth) as r:
                ended_attach = r.status
            return first, second, unknown, unauthenticated, types, code, ended_attach

    first, second, unknown, unauthenticated, types, code, ended_attach = asyncio.run(run())
    assert (first, second, unknown) == (200, 404, 404)
    assert unauthenticated == 401
    assert types == ["session.created"] and code == 1001
    assert ended_attach == 404


def test_max_call_duration_closes_1001():
    emu = Emulator(port=0, session_max_seconds=0.6).start()
    try:

        async def run():
            async with aiohttp.ClientSession() as http:
                token = await entra_token(emu.url, emu.identity_header, http)
                call_id = await _new_call(http, emu.url)
                ws = await _attach(http, emu.url, token, call_id)
                loop = asyncio.get_running_loop()
                start = loop.time()
                types, messages, code = await _drain(ws, timeout=5)
                async with http.get(f"{emu.url}/_emulator/calls/{call_id}") as r:
                    return types, messages, code, loop.time() - start, await r.json()

        types, messages, code, elapsed, info = asyncio.run(run())
    finally:
        emu.stop()
    assert code == 1001
    assert elapsed < 2
    assert info["state"] == "ended" and info["end_reason"] == "max_duration"
    assert types == ["session.created", "error"]  # the service's last word before it closes
    assert messages[1]["error"]["code"] == "session_expired"


def test_sideband_rejects_bad_auth_unknown_call_and_plain_http(emulator):
    async def run():
        async with aiohttp.ClientSession() as http:
            token = await entra_token(emulator.url, emulator.identity_header, http)
            call_id = await _new_call(http, emulator.url)
            base = f"{emulator.url}/openai/v1/realtime"
            out = {}
            for name, url, headers in [
                ("no_auth", f"{base}?call_id={call_id}", {}),
                ("foreign_token", f"{base}?call_id={call_id}", {"Authorization": "Bearer entra_x"}),
                ("ephemeral_key", f"{base}?call_id={call_id}", {"Authorization": "Bearer ek_x"}),
                ("unknown_call", f"{base}?call_id=rtc_unknown", {"Authorization": f"Bearer {token}"}),
                ("no_call_id", base, {"Authorization": f"Bearer {token}"}),
                ("plain_http", f"{base}?call_id={call_id}", {"Authorization": f"Bearer {token}"}),
            ]:
                async with http.get(url, headers=headers) as r:
                    out[name] = (r.status, await r.text())
            return token, out

    token, out = asyncio.run(run())
    assert {k: v[0] for k, v in out.items()} == {
        "no_auth": 401,
        "foreign_token": 401,
        "ephemeral_key": 401,
        "unknown_call": 404,
        "no_call_id": 400,
        "plain_http": 400,
    }
    assert all(token not in body for _, body in out.values())


def test_script_pad_bytes_makes_one_event_larger(emulator):
    async def run():
        async with aiohttp.ClientSession() as http:
            token = await entra_token(emulator.url, emulator.identity_header, http)
            call_id = await _new_call(http, emulator.url)
            ws = await _attach(http, emulator.url, token, call_id)
            async with http.post(
                f"{emulator.url}/_emulator/calls/{call_id}/script", json={"responses": 1, "pad_bytes": 70000}
            ) as r:
                assert r.status == 200
            async with http.post(f"{emulator.url}/_emulator/calls/{call_id}/end"):
                pass
            return await _drain(ws)

    _, messages, _ = asyncio.run(run())
    sizes = {m["type"]: len(json.dumps(m)) for m in messages}
    assert sizes["response.output_audio_transcript.done"] > 70000
    assert sizes["response.done"] > 70000
