"""CORS for static-site callers: an exact-match origin allowlist (`*` only when configured),
preflight answers, and the response headers a browser needs to read the call id."""

from __future__ import annotations

from ..errors import ApiError
from ..settings import Settings

EXPOSED = "location, x-call-id, x-call-capability, x-call-expires-at, x-conversation-id, x-request-id, x-listener, retry-after"
ALLOWED_METHODS = "GET, POST, OPTIONS"
# the gateway's own, and what the OpenAI Agents SDK's WebRTC transport sends (its Bearer is ignored)
ALLOWED_HEADERS = ("content-type", "x-request-id", "x-call-capability", "authorization", "x-openai-agents-sdk")
MAX_AGE = "600"


def check_origin(settings: Settings, origin: str | None) -> None:
    if not settings.origin_allowed(origin):
        raise ApiError(403, "origin_not_allowed", f"origin {origin} is not in the allowlist (ALLOWED_ORIGINS)")


def response_headers(settings: Settings | None, origin: str | None) -> dict[str, str]:
    """Headers for an actual (non-preflight) response; none for a disallowed or absent origin."""
    headers = {"Vary": "Origin"}
    if origin and settings is not None and settings.origin_allowed(origin):
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Expose-Headers"] = EXPOSED
        if settings.cors_allow_credentials:
            headers["Access-Control-Allow-Credentials"] = "true"
    return headers


def preflight_headers(settings: Settings, origin: str | None) -> dict[str, str]:
    headers = response_headers(settings, origin)
    headers.update(
        {
            "Access-Control-Allow-Methods": ALLOWED_METHODS,
            "Access-Control-Allow-Headers": ", ".join(dict.fromkeys(ALLOWED_HEADERS + settings.cors_allowed_headers)),
            "Access-Control-Max-Age": MAX_AGE,
        }
    )
    return headers
