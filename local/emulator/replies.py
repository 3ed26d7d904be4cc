"""Deterministic assistant replies, so a test knows what the emulator will say.

There is no speech-to-text offline: any utterance the VAD detects is transcribed as
SPEECH_TRANSCRIPT, whatever was actually said, and answered with reply_for(SPEECH_TRANSCRIPT).
"""

from __future__ import annotations

import json
import re

SPEECH_TRANSCRIPT = "Hello, can you hear me?"


def reply_for(text: str | None) -> str:
    """The assistant's answer to a user text: a pure function of the text."""
    cleaned = " ".join((text or "").split())
    if not cleaned:
        return "I am listening."
    if cleaned == SPEECH_TRANSCRIPT:
        return "Yes, I can hear you clearly."
    return f"You said: {cleaned}"


def padded(text: str, size: int) -> str:
    """`text` repeated (whole words) until it is at least `size` characters long."""
    if size <= len(text):
        return text
    words = []
    total = 0
    while total < size:
        words.append(text)
        total += len(text) + 1
    return " ".join(words)


# The scripted tool trigger: a user text "call tool <name> <arguments>" makes the model call the
# declared function tool <name> with <arguments> passed verbatim (default "{}", even when not valid
# JSON, so a test can send bad arguments). A name the session does not declare is answered as text.
TOOL_TRIGGER = re.compile(r"^\s*call tool ([A-Za-z0-9_-]+)\s*(.*?)\s*$", re.IGNORECASE | re.DOTALL)


def tool_request(text: str | None, tools: list | None) -> tuple[str, str] | None:
    """(tool name, arguments) when the user's text triggers a declared function tool."""
    m = TOOL_TRIGGER.match(text or "")
    if not m:
        return None
    declared = {t.get("name") for t in tools or [] if isinstance(t, dict) and t.get("type", "function") == "function"}
    return (m.group(1), m.group(2) or "{}") if m.group(1) in declared else None


def tool_reply(name: str, output: str) -> str:
    """The answer after a tool: its result in words (not the raw JSON), or why it failed."""
    try:
        value = json.loads(output)
    except ValueError:
        return f"The {name} tool said: {output}"
    if isinstance(value, dict) and set(value) == {"error"}:
        return f"The {name} tool failed: {value['error']}"
    if isinstance(value, dict):
        return f"From {name}: " + ", ".join(f"{k} is {v}" for k, v in value.items()) + "."
    return f"From {name}: {value}."


# The history trigger: a user text "what did I say first?" (case-insensitive, the "?" optional,
# spaces ignored) is answered "You first said: <the first user text of this call's conversation>",
# not counting the question itself, or "Nothing yet." when there is none. So a test can prove that a
# history replayed with conversation.item.create reached the model.
HISTORY_QUESTION = re.compile(r"^\s*what\s+did\s+i\s+say\s+first\s*\??\s*$", re.IGNORECASE)


def asks_history(text: str | None) -> bool:
    return bool(HISTORY_QUESTION.match(text or ""))


def history_reply(first_user_text: str | None) -> str:
    return f"You first said: {first_user_text}" if first_user_text else "Nothing yet."


# A response.create whose own `instructions` differ from the session's answers visibly as told:
# its reply is prefixed "(as instructed: <the first 6 words of those instructions>) ". Instructions
# equal to the session's change nothing.
INSTRUCTED_WORDS = 6


def instructed(reply: str, instructions: str) -> str:
    words = " ".join(instructions.split()[:INSTRUCTED_WORDS])
    return f"(as instructed: {words}) {reply}"
