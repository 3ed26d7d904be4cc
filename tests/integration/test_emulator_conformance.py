"""Every message the emulator emits validates against the `openai` package's public types.

One real call (aiortc client in-process) exercises a text turn, a spoken turn (VAD), a session
update, a client error and a scripted turn; both channels (data channel unfiltered and filtered,
two sideband observers) are collected and each message is validated with extra fields forbidden.
"""

import asyncio

import aiohttp
import pytest

# The oracle: the openai package's public types (a test-only dependency, in requirements-dev).
from openai.types.realtime import ClientSecretCreateResponse

from local.emulator import SPEECH_TRANSCRIPT, reply_for
from local.emulator.audio import speech_pcm
from local.emulator.peer import ClientPeer, entra_token
from tests.fixtures.realtime_types import assert_server_event, extras


async def _sideband(session, url, token, call_id, sink):
    ws = await session.ws_connect(
        f"{url}/openai/v1/realtime?call_id={call_id}", headers={"Authorization": f"Bearer {token}"}
    )

    async def read():
        async for msg in ws:
            sink.append(msg.json())

    return ws, asyncio.ensure_future(read())


TOOL = {
    "type": "function",
    "name": "current_time",
    "description": "The time in a time zone",
    "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"]},
}


def user_text(text):
    return {
        "type": "conversation.item.create",
        "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
    }


async def wait_side(sink, event_type, where=lambda message: True, timeout=20):
    """The first sideband event of a type (that `where` accepts), once it has arrived."""
    end = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < end:
        for message in sink:
            if message["type"] == event_type and where(message):
                return message
        await asyncio.sleep(0.02)
    raise AssertionError(f"no {event_type} on the sideband")


async def _call_everything(emu, webrtc_filter):
    async with aiohttp.ClientSession() as http:
        token = await entra_token(emu.url, emu.identity_header, http)
        body = {
            "expires_after": {"anchor": "created_at", "seconds": 600},
            "session": {
                "type": "realtime",
                "model": emu.deployment,
                "instructions": "secret",
                "audio": {"output": {"voice": "marin"}},
                "tools": [TOOL],
            },
        }
        async with http.post(
            f"{emu.url}/openai/v1/realtime/client_secrets", json=body, headers={"Authorization": f"Bearer {token}"}
        ) as r:
            assert r.status == 200
            secret = await r.json()
        peer = ClientPeer(label="realtime-channel")
        call_id = await peer.connect(emu.url, secret["value"], webrtc_filter=webrtc_filter, session=http)
        side_a, side_b = [], []
        ws_a, task_a = await _sideband(http, emu.url, token, call_id, side_a)
        ws_b, task_b = await _sideband(http, emu.url, token, call_id, side_b)
        await ws_a.send_json({"type": "session.update", "session": {"type": "realtime", "instructions": "Be terse."}})
        peer.send(
            {
                "type": "conversation.item.create",
                "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "ping"}]},
            }
        )
        peer.send({"type": "response.create"})
        await peer.wait_for("output_audio_buffer.stopped", timeout=20)
        # the browser cuts the reply it played (its real audio is longer than 300 ms)
        first = await wait_side(side_a, "response.done")
        peer.send(
            {
                "type": "conversation.item.truncate",
                "item_id": first["response"]["output"][0]["id"],
                "content_index": 0,
                "audio_end_ms": 300,
            }
        )
        await wait_side(side_a, "conversation.item.truncated")
        peer.say(speech_pcm("Testing one two three, can you hear me?"))
        await peer.wait_for("output_audio_buffer.stopped", timeout=30, count=2)
        # a tool call answered over the sideband, then a response cancelled mid-way
        peer.send(user_text('call tool current_time {"timezone": "Europe/Paris"}'))
        peer.send({"type": "response.create"})
        call = await wait_side(side_a, "response.function_call_arguments.done")
        await ws_a.send_json(
            {
                "type": "conversation.item.create",
                "item": {"type": "function_call_output", "call_id": call["call_id"], "output": '{"time": "10:42"}'},
            }
        )
        await ws_a.send_json({"type": "response.create"})
        await peer.wait_for("output_audio_buffer.stopped", timeout=30, count=3)
        peer.send(user_text("a long answer " + " ".join(["la"] * 24)))
        peer.send({"type": "response.create"})
        delta = await wait_side(side_a, "response.output_audio_transcript.delta", lambda m: " la" in m["delta"])
        await ws_a.send_json({"type": "response.cancel", "response_id": delta["response_id"]})
        await peer.wait_for("output_audio_buffer.stopped", timeout=30, count=4)
        await ws_a.send_json({"type": "response.cancel"})  # nothing to cancel: an error
        # its error first: the data channel's next message could otherwise overtake the socket's
        await wait_side(side_a, "error", lambda m: m["error"]["code"] == "response_cancel_not_active")
        peer.send({"type": "no.such.event"})
        await ws_b.send_json({"type": "response.create", "response": {"output_modalities": ["text"]}})
        async with http.post(f"{emu.url}/_emulator/calls/{call_id}/script", json={"responses": 1}) as r:
            assert r.status == 200
        async with http.post(
            f"{emu.url}/openai/v1/realtime/calls/{call_id}/hangup", headers={"Authorization": f"Bearer {token}"}
        ) as r:
            assert r.status == 200
        await asyncio.wait_for(asyncio.gather(task_a, task_b), 15)
        await peer.close()
        return secret, peer.messages, side_a, side_b


@pytest.mark.parametrize("webrtc_filter", [False, True], ids=["unfiltered", "webrtcfilter"])
def test_every_emitted_message_validates(emulator, webrtc_filter):
    secret, channel, side_a, side_b = asyncio.run(_call_everything(emulator, webrtc_filter))

    parsed = ClientSecretCreateResponse.model_validate(secret)
    assert not extras(parsed), extras(parsed)
    assert parsed.value.startswith("ek_") and parsed.session.object == "realtime.session"

    for message in channel + side_a + side_b:
        assert_server_event(message)

    side_types = {m["type"] for m in side_a}
    # The run covered the events a real response and a spoken turn produce.
    for expected in (
        "session.created",
        "session.updated",
        "conversation.item.added",
        "conversation.item.done",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "response.output_item.added",
        "response.content_part.added",
        "output_audio_buffer.started",
        "output_audio_buffer.stopped",
        "response.output_audio_transcript.delta",
        "response.output_audio_transcript.done",
        "response.output_text.delta",
        "response.output_text.done",
        "response.done",
        "rate_limits.updated",
        "error",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "conversation.item.truncated",
    ):
        assert expected in side_types, expected
    assert side_a[0]["type"] == side_b[0]["type"] == "session.created"
    assert [m["event_id"] for m in side_a[1:]] == [m["event_id"] for m in side_b[1:]]
    transcripts = [m["transcript"] for m in side_a if m["type"] == "response.output_audio_transcript.done"]
    assert transcripts[:3] == [reply_for("ping"), reply_for(SPEECH_TRANSCRIPT), "From current_time: time is 10:42."]
    assert transcripts[3].startswith("You said: a long answer") and not transcripts[3].endswith("la la")
    statuses = [m["response"]["status"] for m in side_a if m["type"] == "response.done"]
    assert statuses[:5] == ["completed", "completed", "completed", "completed", "cancelled"]
    items = [m["item"]["type"] for m in side_a if m["type"] == "conversation.item.added"]
    assert "function_call" in items and "function_call_output" in items
    assert [m["error"]["code"] for m in side_a if m["type"] == "error"][0] == "response_cancel_not_active"
    assert any(m["type"] == "error" for m in side_a)
    # usage as the service reports it: each response's input is the conversation so far (so it
    # grows), audio replies are billed as audio plus their transcript, the parts add up
    usages = [m["response"]["usage"] for m in side_a if m["type"] == "response.done"]
    assert len(usages) >= 3
    assert all(b["input_tokens"] > a["input_tokens"] for a, b in zip(usages, usages[1:], strict=False))
    assert (
        usages[0]["output_token_details"]["audio_tokens"] > 0 and usages[1]["input_token_details"]["audio_tokens"] > 0
    )
    for usage in usages:
        inp, cached = usage["input_token_details"], usage["input_token_details"]["cached_tokens_details"]
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
        assert usage["input_tokens"] == inp["text_tokens"] + inp["audio_tokens"] + inp["image_tokens"]
        assert inp["cached_tokens"] == sum(cached.values()) <= usage["input_tokens"]
        assert usage["output_tokens"] == sum(usage["output_token_details"].values())
    assert len(channel) > 10
    if webrtc_filter:
        from local.emulator.events import BROWSER_EVENTS

        assert {m["type"] for m in channel} <= BROWSER_EVENTS
        assert "secret" not in str(channel) and "Be terse." not in str(channel)
        # tools stay on the sideband: no definition, call, arguments or raw output on the data channel
        # (the user's own typed words name the tool; those come back as the user's item)
        not_user = str([m for m in channel if (m.get("item") or {}).get("role") != "user"])
        assert "function_call" not in not_user and "Europe/Paris" not in not_user
        assert '{"time": "10:42"}' not in str(channel) and "call_" not in not_user
    else:
        assert channel[0]["type"] == "session.created"
        assert channel[0]["session"]["instructions"] == "secret"
