"""Switchable faults: per-target specs that the next requests consume."""

from __future__ import annotations

import threading
from dataclasses import dataclass

TARGETS = ("client_secrets", "calls", "hangup", "identity", "sideband", "accept", "reject", "refer")
_FIELDS = ("status", "retry_after", "delay", "body", "content_type", "no_location", "drop_after", "redirect", "times")


@dataclass
class Fault:
    target: str
    status: int | None = None
    retry_after: int | None = None
    delay: float = 0.0
    body: str | None = None
    content_type: str | None = None
    no_location: bool = False
    drop_after: int | None = None
    redirect: bool = False
    times: int = 1  # 0 = until cleared


class FaultRegistry:
    """Thread-safe: tests set faults from their thread, the server consumes them on its loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: dict[str, Fault] = {}
        self.applied = 0

    def set(self, target: str, **spec) -> Fault:
        if target not in TARGETS:
            raise ValueError(f"unknown fault target {target!r}; one of {', '.join(TARGETS)}")
        unknown = set(spec) - set(_FIELDS)
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
        fault = Fault(target=target, **{k: v for k, v in spec.items() if v is not None})
        if fault.times < 0:
            raise ValueError("times must be >= 0")
        with self._lock:
            self._faults[target] = fault
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, target: str) -> Fault | None:
        """The fault for this request, if any; counts one use of it."""
        with self._lock:
            fault = self._faults.get(target)
            if fault is None:
                return None
            if fault.times == 1:
                del self._faults[target]
            elif fault.times > 1:
                fault.times -= 1
            self.applied += 1
            return fault

    def active(self) -> list[dict]:
        with self._lock:
            return [dict(vars(f)) for f in self._faults.values()]
