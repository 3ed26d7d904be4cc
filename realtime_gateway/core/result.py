"""What one listener did with its call: the only thing the stages after it (limits, telemetry, logs) read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .message import CallMessage

Outcome = Literal["ended", "handed_over"]
# ended: the service closed (1000); limit: its session cap or MAX_CALL_SECONDS; hangup: a person hung
# up; guardrail, policy, budget: the listener hung up for that; error: the listener failed; time_box:
# handed over to the next listener; caller_hangup: the caller of a phone call (SIP) hung up;
# assistant_hangup: the model's end_call tool hung up; transferred: its transfer_call tool moved the call
EndReason = Literal[
    "ended",
    "limit",
    "hangup",
    "caller_hangup",
    "assistant_hangup",
    "transferred",
    "guardrail",
    "policy",
    "budget",
    "error",
    "time_box",
]


@dataclass
class ListenerResult:
    call_id: str
    outcome: Outcome
    end_reason: EndReason | None
    events: int = 0
    duplicates: int = 0
    gaps: int = 0
    attach_delay: float | None = None  # seconds from call created to sideband open (first attach)
    continuation: CallMessage | None = None
    head: str | None = None  # the hash chain's head after this listener (for external logs)
    usage: dict[str, float] = field(default_factory=dict)  # the call's usage sums after this listener
    usage_before: dict[str, float] = field(default_factory=dict)  # ... as earlier listeners left them
