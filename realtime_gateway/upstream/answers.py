"""The service's answers, parsed once into typed values: a client secret, and an SDP answer with
the call id from its `Location`. Anything unusable is a 502 `upstream_bad_response`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..core.ids import valid_call_id
from ..errors import ApiError


@dataclass(frozen=True)
class ClientSecret:
    value: str
    expires_at: int

    def __repr__(self) -> str:  # never print the key
        return f"ClientSecret(expires_at={self.expires_at})"

    @classmethod
    def parse(cls, data: Any) -> ClientSecret:
        """From the client_secrets JSON: `{"value": "ek_...", "expires_at": <epoch s>, ...}`."""
        try:
            value, expires_at = data["value"], int(data["expires_at"])
        except (KeyError, TypeError, ValueError):
            raise ApiError(
                502, "upstream_bad_response", "Azure OpenAI's client secret answer has no usable key"
            ) from None
        if not isinstance(value, str) or not value:
            raise ApiError(502, "upstream_bad_response", "Azure OpenAI's client secret answer has no key")
        return cls(value, expires_at)


@dataclass(frozen=True)
class Answer:
    sdp: str
    call_id: str

    @classmethod
    def parse(cls, sdp: str, location: str | None) -> Answer:
        if not sdp.lstrip().startswith("v=0"):
            raise ApiError(502, "upstream_bad_response", "Azure OpenAI's answer is not SDP")
        call_id = call_id_from_location(location)
        if call_id is None:
            raise ApiError(
                502, "upstream_bad_response", "Azure OpenAI's answer has no usable Location header (no call id)"
            )
        return cls(sdp, call_id)


def call_id_from_location(location: str | None) -> str | None:
    """`.../realtime/calls/rtc_abc` -> rtc_abc; `...?call_id=rtc_abc` -> rtc_abc."""
    if not location:
        return None
    parts = urlsplit(location.strip())
    query = parse_qs(parts.query).get("call_id")
    candidate = query[0] if query and query[0] else parts.path.rstrip("/").rsplit("/", 1)[-1]
    if not candidate or candidate in ("calls", "realtime") or not valid_call_id(candidate):
        return None
    return candidate
