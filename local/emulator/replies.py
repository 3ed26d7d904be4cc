"""Deterministic assistant replies, so a test knows what the emulator will say.

There is no speech-to-text offline: any utterance the VAD detects is transcribed as
SPEECH_TRANSCRIPT, whatever was actually said, and answered with reply_for(SPEECH_TRANSCRIPT).
"""

from __future__ import annotations

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
