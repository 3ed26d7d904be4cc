"""The gateway's error type and its JSON body: {"error": {"code", "message", "request_id"}}.

Messages are written for the caller and never carry a token, key or upstream body.
"""

from __future__ import annotations

import json
from typing import Mapping


class ApiError(Exception):
    """An error the gateway answers with `status` and a stable machine-readable `code`."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def __repr__(self) -> str:
        return f"ApiError({self.status}, {self.code!r}, {self.message!r})"


def error_body(code: str, message: str, request_id: str | None) -> bytes:
    return json.dumps(
        {"error": {"code": code, "message": message, "request_id": request_id}}, separators=(",", ":")
    ).encode("utf-8")
