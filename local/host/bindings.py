"""Output bindings: `func.Out` values collected during an invocation, written after success."""

from __future__ import annotations

import base64
import json
from typing import Any

import azure.functions as func

from .app_loader import FunctionSpec


class OutValue(func.Out):
    def __init__(self) -> None:
        self.value: Any = None

    def set(self, val: Any) -> None:
        self.value = val

    def get(self) -> Any:
        return self.value


def out_values(spec: FunctionSpec) -> dict[str, OutValue]:
    """A `func.Out` for each output binding the function takes as a parameter (not `$return`)."""
    return {b["name"]: OutValue() for b in spec.outputs if b["name"] != "$return"}


def queue_messages(value: Any) -> list[bytes]:
    """The messages one queue output value stands for (a list means one message per item)."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for item in items:
        if isinstance(item, bytes):
            out.append(item)
        elif isinstance(item, str):
            out.append(item.encode("utf-8"))
        else:  # the worker serialises other values as JSON
            out.append(json.dumps(item).encode("utf-8"))
    return out


def encode_message(data: bytes, encoding: str) -> str:
    """Queue text as the storage extension writes it: base64 unless messageEncoding is none."""
    if encoding == "base64":
        return base64.b64encode(data).decode("ascii")
    return data.decode("utf-8")
