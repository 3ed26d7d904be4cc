"""The built-in phone tools, `transfer_call` and `end_call` (docs/phone.md#transfer-and-hang-up).

A deployer declares them in the session policy like any function tool (TRANSFER_CALL and END_CALL
below are the documented declarations); the listener's control runs them with the gateway's own
credential. The names are reserved: a TOOLS_MODULE function of the same name is never called (the
listener logs a warning), so a module cannot quietly replace the allow-list or the fallback.

- `transfer_call {"target"}` moves the call (SIP REFER through `/refer`) to a target of
  SIP_TRANSFER_TARGETS, named or by its number; anything else is an error output, never a refer. A
  failed refer (the service has been seen answering 500) is tried once more after a short backoff,
  then the model is told the transfer failed and to offer a call-back. Once a refer is accepted the
  service takes the call away and the session ends.
- `end_call {}` answers that the call is ending; the control hangs up once the response that called
  it is done and its audio has played (docs/phone.md).

On a call that is not a phone call both answer an error output: there is nothing to refer or to end.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping, Protocol

from ..core import schema
from ..errors import ApiError
from ..retry import Backoff
from .tools import ToolOutcome

log = logging.getLogger(__name__)

TRANSFER_CALL: dict[str, Any] = {
    "type": "function",
    "name": "transfer_call",
    "description": "Transfer the caller to a person or another line. Tell the caller first.",
    "parameters": {
        "type": "object",
        "properties": {
            "target": {"type": "string", "description": "where to: a target's name (for example sales) or its number"}
        },
        "required": ["target"],
        "additionalProperties": False,
    },
}
END_CALL: dict[str, Any] = {
    "type": "function",
    "name": "end_call",
    "description": "Hang up. Say goodbye first: the call ends once that answer has played.",
    "parameters": {"type": "object", "properties": {}, "additionalProperties": False},
}
NAMES = ("transfer_call", "end_call")

REFER_ATTEMPTS = 2  # the first try and one more
REFER_BACKOFF = 0.5  # seconds before the second try
TRANSFER_SECONDS = 20.0  # both tries and the wait between them
# What a second try may fix: the service's own failures, not a call that is gone or a refused credential.
RETRIED = ("upstream_error", "upstream_timeout", "upstream_unreachable", "upstream_throttled")
ENDING = "The call ends as soon as your current answer has played. Say nothing more."

# After the output is sent: ask for the next response as usual, or not, because the call is leaving.
Then = Literal["respond", "transferred", "hang_up"]


class Refer(Protocol):
    def refer(self, call_id: str, target_uri: str, deadline: float | None = None) -> None: ...


@dataclass
class CallStep:
    """A built-in's outcome (the `listener.tool` row and the model's output) and what follows it."""

    outcome: ToolOutcome
    then: Then = "respond"
    detail: str = ""  # why the call ends, for the session row's end_detail


def _digits(number: str) -> str:
    return re.sub(r"[^0-9]", "", number)


class CallTools:
    def __init__(
        self,
        declared: Mapping[str, Mapping[str, Any]],
        call_id: str,
        phone: bool,
        targets: Mapping[str, str],
        api: Refer,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.declared, self.call_id, self.phone = declared, call_id, phone
        self.targets, self.api = targets, api
        self._sleep, self._clock = sleep, clock

    @classmethod
    def load(
        cls, tools: list[Any], call_id: str, phone: bool, targets: Mapping[str, str], api: Refer
    ) -> CallTools | None:
        """The built-ins a session policy declares; None when it declares neither."""
        declared = {
            str(t["name"]): t.get("parameters") or {}
            for t in tools
            if isinstance(t, Mapping) and t.get("type", "function") == "function" and t.get("name") in NAMES
        }
        return cls(declared, call_id, phone, targets, api) if declared else None

    @property
    def max_seconds(self) -> float:
        """How long a built-in may hold its worker (the listener waits that long for it at the end)."""
        return TRANSFER_SECONDS + 1

    def handles(self, name: str) -> bool:
        return name in self.declared

    def resolve(self, wanted: str) -> tuple[str, str] | None:
        """(name, URI) of the configured target the model asked for: by name, URI or number."""
        key = wanted.strip().lower()
        if key in self.targets:
            return key, self.targets[key]
        number = _digits(key.removeprefix("tel:")) if re.fullmatch(r"(tel:)?[+0-9 ().-]{2,30}", key) else ""
        for name, uri in self.targets.items():
            if uri.lower() == key or (number and uri.startswith("tel:") and _digits(uri) == number):
                return name, uri
        return None

    def run(self, name: str, call_id: str, arguments: str) -> CallStep:
        started = self._clock()
        step = self._run(name, arguments)
        step.outcome.call_id, step.outcome.duration_ms = call_id, round((self._clock() - started) * 1000)
        return step

    # ---- the tools ----------------------------------------------------------------------------------
    def _run(self, name: str, arguments: str) -> CallStep:
        if not self.phone:
            return self._refused(name, arguments, "not_a_phone_call", f"{name} works on phone calls only")
        try:
            args = json.loads(arguments or "{}")
        except ValueError:
            return self._refused(name, arguments, "bad_json", "the arguments are not valid JSON")
        if not isinstance(args, dict):
            return self._refused(name, arguments, "not_an_object", "the arguments must be a JSON object")
        problems = schema.errors(args, dict(self.declared[name]) or {"type": "object"})
        if name == "transfer_call" and not (isinstance(args.get("target"), str) and args["target"].strip()):
            problems.append("$.target is required")
        if problems:
            return self._refused(name, arguments, "invalid_arguments", "invalid arguments: " + "; ".join(problems[:5]))
        if name == "end_call":
            output = json.dumps({"status": "ending", "message": ENDING})
            outcome = ToolOutcome(name, "", arguments, True, output, None, 0, extra={"outcome": "hangup"})
            return CallStep(outcome, "hang_up", "the assistant ended the call (end_call)")
        return self._transfer(arguments, args["target"])

    def _transfer(self, arguments: str, wanted: str) -> CallStep:
        found = self.resolve(wanted)
        if found is None:
            names = ", ".join(sorted(self.targets)) or "none"
            return self._refused(
                "transfer_call",
                arguments,
                "unknown_target",
                f"{wanted[:60]!r} is not a transfer target; the targets are: {names}",
            )
        target, uri = found
        attempts: list[dict[str, Any]] = []
        deadline = self._clock() + TRANSFER_SECONDS
        backoff = Backoff(REFER_BACKOFF, REFER_BACKOFF * 4, deadline, clock=self._clock, sleep=self._sleep)
        while True:
            try:
                self.api.refer(self.call_id, uri, deadline)
            except ApiError as exc:
                attempts.append({"result": "failed", "error": exc.code, "detail": exc.message})
                retry = exc.code in RETRIED
            except Exception as exc:  # a bug or a transport surprise: the caller still gets the fallback
                attempts.append({"result": "failed", "error": type(exc).__name__})
                retry = True
            else:
                attempts.append({"result": "transferred"})
                log.info("call %s: transferred to %s", self.call_id, target)
                output = json.dumps({"status": "transferred", "target": target})
                extra = {"outcome": "transferred", "target": target, "attempts": attempts}
                outcome = ToolOutcome("transfer_call", "", arguments, True, output, None, 0, extra=extra)
                return CallStep(outcome, "transferred", f"transferred to {target}")
            if not retry or len(attempts) >= REFER_ATTEMPTS or not backoff.wait(reserve=1.0):
                break
        log.warning("call %s: transfer to %s failed %d times (%s)", self.call_id, target, len(attempts), attempts[-1])
        error = (
            f"the transfer to {target} did not go through. Tell the caller, and offer a call-back instead: "
            "ask when and on which number they would like to be called"
        )
        extra = {"outcome": "fallback", "target": target, "attempts": attempts}
        outcome = ToolOutcome("transfer_call", "", arguments, False, json.dumps({"error": error}), error, 0)
        outcome.error_kind, outcome.extra = "transfer_failed", extra
        return CallStep(outcome)

    @staticmethod
    def _refused(name: str, arguments: str, kind: str, error: str) -> CallStep:
        outcome = ToolOutcome(name, "", arguments, False, json.dumps({"error": error}), error, 0, kind)
        outcome.extra = {"outcome": "refused"}
        return CallStep(outcome)
