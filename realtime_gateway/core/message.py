"""The message the gateway puts on the listener queue for each call (and a listener's hand-over).

It is the only contract between `/api/connect` and the queue-triggered listener, so it is
versioned and parsed strictly: a malformed message is rejected with a clear reason.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from typing import Any

VERSION = 1
LAST_SECOND = 253402300799  # 9999-12-31T23:59:59Z, the last instant an ISO timestamp can show


class BadCallMessage(ValueError):
    """The queue message is not a call message this code understands."""


@dataclass(frozen=True)
class CallMessage:
    call_id: str
    started_at: float  # epoch seconds, when the gateway got the call's answer
    deadline: float  # epoch seconds, when the listener hangs up (max call duration)
    origin: str | None = None  # the browser's Origin header
    principal: dict[str, Any] | None = None  # Easy Auth / SWA principal (id, name, provider)
    request_id: str | None = None
    model: str | None = None
    voice: str | None = None
    continuation: int = 0  # 0 for the first listener, +1 at each time-box hand-over
    traceparent: str | None = None  # W3C trace context of /connect (absent in older messages)
    slot: str | None = None  # the call's active-call slot (limits), released when it ends
    capability_sha256: str | None = None  # hash of the x-call-capability its creator holds
    conversation_id: str | None = None  # the first call's id, shared by every call of a conversation
    continues: str | None = None  # the call this one continues (its history is replayed first)
    conversation_started_at: float | None = None  # epoch seconds, the conversation's first call
    channel: str | None = None  # how the call came: None or "webrtc" (a browser), "sip" (a phone call)
    caller: str | None = None  # a phone call's From number as stored (SIP_CALLER_PRIVACY: a salted hash by default)
    called: str | None = None  # a phone call's To number (the line the caller dialled)
    sip_call_id: str | None = None  # the SIP Call-ID header of a phone call

    def to_json(self) -> str:
        return json.dumps({"v": VERSION, **asdict(self)}, separators=(",", ":"))

    def continued(self) -> CallMessage:
        return replace(self, continuation=self.continuation + 1)

    @classmethod
    def from_json(cls, text: str | bytes) -> CallMessage:
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # deep nesting: RecursionError
            raise BadCallMessage(f"not JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("v") != VERSION:
            raise BadCallMessage(f"expected an object with v={VERSION}")
        call_id = data.get("call_id")
        if (
            not isinstance(call_id, str)
            or not call_id
            or any(c in call_id for c in "/\\#?")
            or any(ord(c) < 32 for c in call_id)
            or len(call_id) > 200
        ):
            raise BadCallMessage("call_id is missing or not a valid table key")
        for key in ("started_at", "deadline"):
            value = data.get(key)
            if (
                not isinstance(value, (int, float))
                or isinstance(value, bool)
                or not math.isfinite(value)
                or not 0 <= value <= LAST_SECOND
            ):
                raise BadCallMessage(f"{key} must be epoch seconds")
        # The optional fields reach the archive's session row: a wrong type would fail there, on every retry.
        for key in (
            "origin",
            "request_id",
            "model",
            "voice",
            "slot",
            "capability_sha256",
            "conversation_id",
            "continues",
            "channel",
            "caller",
            "called",
            "sip_call_id",
        ):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise BadCallMessage(f"{key} must be a string")
        if data.get("principal") is not None and not isinstance(data["principal"], dict):
            raise BadCallMessage("principal must be an object")
        continuation = data.get("continuation", 0)
        if not isinstance(continuation, int) or isinstance(continuation, bool) or continuation < 0:
            raise BadCallMessage("continuation must be a whole number")
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)
