"""The `realtime.call.incoming` webhook: its signature (Standard Webhooks, checked by the maintained
`standardwebhooks` package over the raw bytes, 300 s either way) and its body, read strictly."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

TOLERANCE_SECONDS = 300  # the verifier's own window, which Azure documents too
INCOMING = "realtime.call.incoming"


class BadWebhook(Exception):
    """The delivery is not a webhook signed with our secret, within the tolerance."""


@dataclass(frozen=True)
class Incoming:
    """A verified incoming SIP call, as the webhook described it."""

    webhook_id: str
    event_id: str
    call_id: str
    sip_headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> str:
        """The first value of a SIP header (names compare case-insensitively); '' if absent."""
        wanted = name.lower()
        return next((value for key, value in self.sip_headers if key.lower() == wanted), "")


def verify(secret: str, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """The webhook's JSON body once its signature is checked; BadWebhook for anything else."""
    try:
        Webhook(secret).verify(body, {k.lower(): v for k, v in headers.items()}, json_parse=False)
        data = json.loads(body)
    except (WebhookVerificationError, ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadWebhook(str(exc) or type(exc).__name__) from None
    if not isinstance(data, dict):
        raise BadWebhook("the body is not a JSON object")
    return data


def incoming(event: Mapping[str, Any], webhook_id: str) -> Incoming | None:
    """The call an incoming-call event describes; None for another event type. BadWebhook if malformed."""
    if event.get("type") != INCOMING:
        return None
    data = event.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("call_id"), str) or not data["call_id"]:
        raise BadWebhook("data.call_id is missing")
    raw = data.get("sip_headers") or []
    if not isinstance(raw, list) or not all(
        isinstance(h, dict) and isinstance(h.get("name"), str) and isinstance(h.get("value"), str) for h in raw
    ):
        raise BadWebhook("data.sip_headers must be a list of {name, value} strings")
    return Incoming(
        webhook_id=webhook_id,
        event_id=str(event.get("id") or ""),
        call_id=data["call_id"],
        sip_headers=tuple((h["name"], h["value"]) for h in raw),
    )
