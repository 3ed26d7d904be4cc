"""Server-side tools: the functions a deployer's module provides for the tools the session declares.

A tool is a plain Python callable named like its declaration, taking the declared parameters as
keyword arguments and returning something JSON can encode. The runner validates the model's
arguments against the declared schema, runs the function on its own thread with a time limit, and
turns every failure (bad JSON, bad arguments, unknown tool, exception, timeout) into an error output
the model can read, so the call goes on.
"""

from __future__ import annotations

import importlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..core import schema
from ..redact import redact

log = logging.getLogger(__name__)

MAX_OUTPUT_CHARS = 16_000  # what the model gets back; a larger result is an error, not a cut one
ERROR_KINDS = (
    "module_error",
    "unknown_tool",
    "not_implemented",
    "bad_json",
    "not_an_object",
    "invalid_arguments",
    "timeout",
    "exception",
    "not_encodable",
    "too_long",
    # the built-in phone tools (call_tools.py)
    "not_a_phone_call",
    "unknown_target",
    "transfer_failed",
)


@dataclass
class ToolOutcome:
    """One finished tool call: what the model gets (`output`) and what the archive keeps."""

    name: str
    call_id: str
    arguments: str
    ok: bool
    output: str  # the function_call_output sent to the model
    error: str | None
    duration_ms: int
    error_kind: str | None = None  # one of ERROR_KINDS: what telemetry may say about a failure
    extra: dict[str, Any] = field(default_factory=dict)  # a built-in's own fields (call_tools.py)

    def record(self) -> dict[str, Any]:
        record = {
            "name": self.name,
            "call_id": self.call_id,
            "arguments": self.arguments,
            "ok": self.ok,
            "result" if self.ok else "error": self.output if self.ok else self.error,
            "duration_ms": self.duration_ms,
        }
        if not self.ok:
            record["error_kind"] = self.error_kind
        return {**record, **self.extra}


class ToolBox:
    def __init__(
        self,
        declared: Mapping[str, Mapping[str, Any]],
        functions: Mapping[str, Callable[..., Any]],
        timeout: float,
        load_error: str | None = None,
    ) -> None:
        self.declared, self.functions, self.timeout = declared, functions, timeout
        self.load_error = load_error  # the module could not be imported: every call answers this

    @classmethod
    def load(cls, tools: list[Any], module_name: str, timeout: float) -> ToolBox | None:
        """The box for a session policy's function tools; None when it declares none."""
        declared = {
            str(t["name"]): t.get("parameters") or {}
            for t in tools
            if isinstance(t, Mapping) and t.get("type", "function") == "function" and t.get("name")
        }
        if not declared:
            return None
        functions: dict[str, Callable[..., Any]] = {}
        load_error = None
        if module_name:
            try:
                module = importlib.import_module(module_name)
            except Exception as exc:  # a broken module must not stop the recording
                load_error = f"the tools module could not be loaded ({type(exc).__name__})"
                log.error("TOOLS_MODULE %s failed to import: %s", module_name, redact(str(exc))[:300])
            else:
                functions = {n: f for n in declared if callable(f := getattr(module, n, None))}
        return cls(declared, functions, timeout, load_error)

    def run(self, name: str, call_id: str, arguments: str) -> ToolOutcome:
        """Validate, run within the time limit, encode; blocks its (worker) thread at most `timeout`."""
        started = time.monotonic()
        kind, payload = self._run(name, arguments)
        duration_ms = round((time.monotonic() - started) * 1000)
        if kind is None:
            output = redact(payload)  # a second line: tools must not return secrets (README)
            if len(output) > MAX_OUTPUT_CHARS:
                kind, payload = "too_long", f"the result is longer than {MAX_OUTPUT_CHARS} characters"
        ok = kind is None
        if not ok:
            output = json.dumps({"error": payload})
        return ToolOutcome(name, call_id, arguments, ok, output, None if ok else payload, duration_ms, kind)

    def _run(self, name: str, arguments: str) -> tuple[str | None, str]:
        """(None, the result as JSON) or (an ERROR_KINDS kind, the error the model reads)."""
        if self.load_error:
            return "module_error", self.load_error
        if name not in self.declared:
            return "unknown_tool", f"unknown tool {name!r}"
        fn = self.functions.get(name)
        if fn is None:
            return "not_implemented", f"tool {name!r} has no implementation on the server"
        try:
            args = json.loads(arguments or "{}")
        except ValueError:
            return "bad_json", "the arguments are not valid JSON"
        if not isinstance(args, dict):
            return "not_an_object", "the arguments must be a JSON object"
        problems = schema.errors(args, dict(self.declared[name]) or {"type": "object"})
        if problems:
            return "invalid_arguments", "invalid arguments: " + "; ".join(problems[:5])
        box: dict[str, Any] = {}
        done = threading.Event()

        def call() -> None:
            try:
                box["result"] = fn(**args)
            except BaseException as exc:
                box["error"] = exc
            done.set()

        # A daemon thread of its own: a tool that never returns costs a thread, never the call.
        threading.Thread(target=call, name=f"tool-{name}", daemon=True).start()
        if not done.wait(self.timeout):
            return "timeout", f"tool {name!r} did not answer within {self.timeout:g} s"
        if "error" in box:
            exc = box["error"]
            return "exception", f"tool {name!r} failed: {type(exc).__name__}: {redact(str(exc))[:200]}"
        try:
            return None, json.dumps(box["result"], ensure_ascii=False)
        except (TypeError, ValueError):
            return "not_encodable", f"tool {name!r} returned something JSON cannot encode"
