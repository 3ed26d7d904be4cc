"""A response.create's own parameters, a replayed history the model sees, and truncation.

Each test drives an admin call over the sideband and validates every message it received against
the `openai` package's types (the conformance test's oracle).
"""

import asyncio

import aiohttp

from local.emulator import reply_for
from local.emulator.conversation import cut_transcript
from local.emulator.replies import instructed
from tests.fixtures.realtime_types import assert_server_event
from tests.fixtures.sideband import Sideband, admin_call

SESSION_INSTRUCTIONS = "Be brief."
OVERRIDE = "Answer like a pirate, never mention the weather, and be kind."


async def end_call(http: aiohttp.ClientSession, emu, call_id: str, side: Sideband) -> None:
    async with http.post(f"{emu.url}/_emulator/calls/{call_id}/end") as r:
        assert r.status == 200
    assert await side.closed() == 1000


def message(role: str, part: str, text: str) -> dict:
    return {
        "type": "conversation.item.create",
        "item": {"type": "message", "role": role, "content": [{"type": part, "text": text}]},
    }


def said(done: dict) -> str:
    """A response's words, from its response.done."""
    content = done["response"]["output"][0]["content"][0]
    return content.get("transcript") or content.get("text") or ""


def test_response_create_parameters_change_that_response(emulator):
    bad = [
        ({"metadata": {"n": 1}}, "response.metadata"),
        ({"max_output_tokens": 0}, "response.max_output_tokens"),
        ({"output_modalities": ["text", "audio"]}, "response.output_modalities"),
        ({"audio": {"output": {"voice": 7}}}, "response.audio.output.voice"),
        ({"conversation": "none"}, "response.conversation"),
    ]

    async def run():
        async with aiohttp.ClientSession() as http:
            session = {"instructions": SESSION_INSTRUCTIONS, "audio": {"output": {"voice": "marin"}}}
            call_id, side = await admin_call(http, emulator, session=session)
            await side.send(message("user", "input_text", "Bonjour"))
            own = {
                "instructions": OVERRIDE,
                "metadata": {"turn": "override"},
                "output_modalities": ["text"],
                "audio": {"output": {"voice": "cedar"}},
                "max_output_tokens": 300,
            }
            for n, params in enumerate(
                [
                    own,
                    {"instructions": SESSION_INSTRUCTIONS},
                    None,
                    {"output_modalities": ["text"], "max_output_tokens": 3},
                ]
            ):
                await side.send({"type": "response.create", **({"response": params} if params else {})})
                await side.wait("response.done", count=n + 1)
            for n, (params, _) in enumerate(bad):
                await side.send({"type": "response.create", "event_id": f"bad_{n}", "response": params})
            await side.wait("error", count=len(bad))
            await end_call(http, emulator, call_id, side)
            return side.messages

    messages = asyncio.run(run())
    for m in messages:
        assert_server_event(m)
    created = [m["response"] for m in messages if m["type"] == "response.created"]
    done = [m for m in messages if m["type"] == "response.done"]
    assert len(created) == len(done) == 4  # the refused ones never started

    # 1. its own parameters: in response.created and response.done, and in what it says
    for response in (created[0], done[0]["response"]):
        assert response["instructions"] == OVERRIDE
        assert response["metadata"] == {"turn": "override"}
        assert response["output_modalities"] == ["text"]
        assert response["audio"]["output"]["voice"] == "cedar"
        assert response["max_output_tokens"] == 300
    assert said(done[0]) == "(as instructed: Answer like a pirate, never mention) You said: Bonjour"
    assert said(done[0]) == instructed(reply_for("Bonjour"), OVERRIDE)
    assert any(m["type"] == "response.output_text.done" for m in messages)
    # 2. instructions equal to the session's change nothing; 3. none given: the session's
    for d in done[1:3]:
        response = d["response"]
        assert said(d) == reply_for("Bonjour")
        assert response["instructions"] == SESSION_INSTRUCTIONS and response["metadata"] is None
        assert response["output_modalities"] == ["audio"] and response["audio"]["output"]["voice"] == "marin"
        assert response["max_output_tokens"] == "inf" and response["status"] == "completed"
    # 4. max_output_tokens: the reply stops within the limit, the response is incomplete
    cut = done[3]["response"]
    assert said(done[3]) == "You said:" and reply_for("Bonjour").startswith(said(done[3]))
    assert cut["status"] == "incomplete"
    assert cut["status_details"] == {"type": "incomplete", "reason": "max_output_tokens"}
    assert cut["output"][0]["status"] == "incomplete" and cut["usage"]["output_tokens"] <= 3
    errors = {m["error"]["event_id"]: m["error"] for m in messages if m["type"] == "error"}
    for n, (_, param) in enumerate(bad):
        assert errors[f"bad_{n}"]["param"] == param
    assert errors[f"bad_{len(bad) - 1}"]["code"] == "unsupported"


def test_replayed_history_reaches_the_model(emulator):
    question = "What did I say first?"
    history = [
        ("user", "input_text", "My name is Ada."),
        ("assistant", "output_text", "Nice to meet you, Ada."),
        ("system", "input_text", "The user is a mathematician."),
        ("user", "input_text", "I like green tea."),
    ]

    async def ask(side, n):
        await side.send(message("user", "input_text", question))
        await side.send({"type": "response.create"})
        return said(await side.wait("response.done", count=n))

    async def run():
        async with aiohttp.ClientSession() as http:
            call_id, side = await admin_call(http, emulator)
            before = await ask(side, 1)
            for role, part, text in history:
                await side.send(message(role, part, text))
            # the GA schema has no "text" part (the beta's name); a user cannot send output_text
            await side.send({**message("assistant", "text", "Hi."), "event_id": "beta_part"})
            await side.send({**message("user", "output_text", "Hi."), "event_id": "wrong_role"})
            after = await ask(side, 2)
            async with http.get(f"{emulator.url}/_emulator/calls/{call_id}/conversation") as r:
                conversation = await r.json()
            await end_call(http, emulator, call_id, side)
            return before, after, conversation, side.messages

    before, after, conversation, messages = asyncio.run(run())
    for m in messages:
        assert_server_event(m)
    assert before == "Nothing yet."
    assert after == "You first said: My name is Ada."
    errors = {m["error"]["event_id"]: m["error"] for m in messages if m["type"] == "error"}
    assert errors["beta_part"]["param"] == errors["wrong_role"]["param"] == "item.content[0].type"
    rows = [(i["role"], i["text"]) for i in conversation["items"]]
    assert rows == [
        ("user", question),
        ("assistant", "Nothing yet."),
        *[(role, text) for role, _, text in history],
        ("user", question),
        ("assistant", "You first said: My name is Ada."),
    ]
    added = [m["item"]["id"] for m in messages if m["type"] == "conversation.item.done"]
    assert [i["id"] for i in conversation["items"]] == added


def test_truncate_cuts_the_assistant_transcript(emulator):
    async def run():
        async with aiohttp.ClientSession() as http:
            call_id, side = await admin_call(http, emulator)
            await side.send(message("user", "input_text", "Tell me about the sea and the sky above it, slowly."))
            await side.send({"type": "response.create"})
            spoken = (await side.wait("response.done"))["response"]["output"][0]
            await side.send(message("user", "input_text", "And now in writing."))
            await side.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
            written = (await side.wait("response.done", count=2))["response"]["output"][0]
            url = f"{emulator.url}/_emulator/calls/{call_id}/conversation"
            async with http.get(url) as r:
                before = {i["id"]: i for i in (await r.json())["items"]}
            half = before[spoken["id"]]["audio_ms"] // 2
            truncate = {"type": "conversation.item.truncate", "item_id": spoken["id"], "content_index": 0}
            await side.send({**truncate, "audio_end_ms": half})
            truncated = await side.wait("conversation.item.truncated")
            user_item = next(i for i in before.values() if i["role"] == "user")
            refused = {
                "unknown": {**truncate, "item_id": "item_nope", "audio_end_ms": 0},
                "user": {**truncate, "item_id": user_item["id"], "audio_end_ms": 0},
                "text_only": {**truncate, "item_id": written["id"], "audio_end_ms": 0},
                "index": {**truncate, "content_index": 1, "audio_end_ms": 0},
                "beyond": {**truncate, "audio_end_ms": half + 1},  # the item's audio is now `half` long
                "negative": {**truncate, "audio_end_ms": -1},
            }
            for name, event in refused.items():
                await side.send({**event, "event_id": name})
            await side.wait("error", count=len(refused))
            async with http.get(url) as r:
                after = {i["id"]: i for i in (await r.json())["items"]}
            await end_call(http, emulator, call_id, side)
            return before, after, spoken, half, truncated, side.messages

    before, after, spoken, half, truncated, messages = asyncio.run(run())
    for m in messages:
        assert_server_event(m)
    assert {k: truncated[k] for k in ("item_id", "content_index", "audio_end_ms")} == {
        "item_id": spoken["id"],
        "content_index": 0,
        "audio_end_ms": half,
    }
    full = spoken["content"][0]["transcript"]
    entry = before[spoken["id"]]
    assert entry["text"] == full and entry["audio_ms"] > 1000
    cut = after[spoken["id"]]["text"]
    assert cut == cut_transcript(full, half, entry["audio_ms"])
    assert 0 < len(cut) < len(full) and full.startswith(cut) and full[len(cut)] == " "
    assert abs(len(cut) - len(full) / 2) <= max(len(w) for w in full.split()) + 1
    assert after[spoken["id"]]["audio_ms"] == half
    errors = {m["error"]["event_id"]: m["error"]["param"] for m in messages if m["type"] == "error"}
    assert errors == {
        "unknown": "item_id",
        "user": "item_id",
        "text_only": "item_id",
        "index": "content_index",
        "beyond": "audio_end_ms",
        "negative": "audio_end_ms",
    }
    assert [m["type"] for m in messages].count("conversation.item.truncated") == 1
