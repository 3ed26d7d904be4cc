"""One retry policy for the whole app: exponential backoff, optionally jittered, bounded by a deadline.

Every retry loop (the client-secret mint, the listener's attach and reconnect, the archive's
writes that the Tables SDK will not retry) asks a `Backoff` whether another try still fits.
"""

from __future__ import annotations

import random
import time
from typing import Callable


class Backoff:
    def __init__(
        self,
        first: float,
        maximum: float,
        deadline: float | None = None,
        *,
        jitter: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.first, self.maximum, self.deadline = first, maximum, deadline
        self.jitter, self.clock, self._sleep = jitter, clock, sleep
        self.attempts = 0  # waits taken so far
        self._next = first

    def next_delay(self) -> float:
        delay = self._next * ((0.5 + random.random()) if self.jitter else 1.0)
        return min(delay, self.maximum)

    def wait(self, hint: float | None = None, reserve: float = 0.0) -> bool:
        """Sleep before the next try and return True; return False at once when the wait (the
        server's `hint`, e.g. Retry-After, if given) is over `maximum` or would leave less than
        `reserve` seconds before the deadline."""
        delay = self.next_delay() if hint is None else hint
        if delay > self.maximum:
            return False
        if self.deadline is not None and self.clock() + delay + reserve >= self.deadline:
            return False
        self._sleep(delay)
        self.attempts += 1
        self._next = min(self._next * 2, self.maximum)
        return True
