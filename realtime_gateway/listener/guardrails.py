"""The output policy on the assistant's words: blocked terms or patterns, and an optional hook.

Patterns are matched (case-insensitively) against everything a response item has said so far, so
a term split across transcript deltas is caught as soon as its last piece arrives. The hook, a
`module:function` the deployer names (a moderation call, say), gets the same text and returns a
reason (any true value) to block or a false value to let it pass; it runs off the socket's thread,
and a hook that raises lets the text pass (logged), so a broken hook never ends calls.
"""

from __future__ import annotations

import importlib
import logging
import re
from dataclasses import dataclass
from typing import Any, Callable

log = logging.getLogger(__name__)


def load_hook(spec: str) -> Callable[[str], Any]:
    module, _, name = spec.partition(":")
    fn = getattr(importlib.import_module(module), name)
    if not callable(fn):
        raise TypeError(f"{spec} is not callable")
    return fn


@dataclass
class Guardrail:
    patterns: list[re.Pattern[str]]
    hook: Callable[[str], Any] | None
    notice: str
    max_hits: int  # hang up at this many hits in a call; 0 never hangs up

    @classmethod
    def load(cls, terms: tuple[str, ...], hook: str, notice: str, max_hits: int) -> Guardrail | None:
        """The policy from the settings (already validated there); None when nothing is set."""
        if not terms and not hook:
            return None
        fn = None
        if hook:
            try:
                fn = load_hook(hook)
            except Exception as exc:  # the blocked terms still apply
                log.error("GUARDRAIL_HOOK %s cannot be loaded: %s", hook, type(exc).__name__)
        return cls([re.compile(t, re.IGNORECASE) for t in terms], fn, notice, max_hits)

    def match(self, text: str) -> tuple[str, str] | None:
        """(rule, matched words) of the first blocked pattern in text."""
        for pattern in self.patterns:
            m = pattern.search(text)
            if m:
                return pattern.pattern, m.group(0)
        return None

    def ask_hook(self, text: str) -> str | None:
        """The hook's reason to block, or None (also when it fails: logged, the text passes)."""
        if self.hook is None:
            return None
        try:
            verdict = self.hook(text)
        except Exception as exc:
            log.error("guardrail hook failed: %s", type(exc).__name__)
            return None
        return (verdict if isinstance(verdict, str) else "hook") if verdict else None
