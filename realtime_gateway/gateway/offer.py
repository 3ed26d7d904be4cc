"""Reading the browser's SDP offer from a request body: raw `application/sdp` or the seed page's
multipart form field `sdp`, with the checks that decide 400 / 413 / 415."""

from __future__ import annotations

from email.parser import BytesParser
from email.policy import HTTP

from ..errors import ApiError

MAX_OFFER_BYTES = 64 * 1024  # a browser offer is 2-8 KB; anything near this is not an offer
RAW_TYPES = ("application/sdp",)
FORM_TYPE = "multipart/form-data"


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def check_size(body: bytes) -> None:
    if len(body) > MAX_OFFER_BYTES:
        raise ApiError(
            413, "payload_too_large", f"the request body is {len(body)} bytes; the limit is {MAX_OFFER_BYTES} bytes"
        )


def offer_from_body(content_type: str | None, body: bytes) -> str:
    """Return the offer SDP text or raise ApiError(400/413/415)."""
    check_size(body)
    kind = media_type(content_type)
    if kind in RAW_TYPES:
        raw = body
    elif kind == FORM_TYPE:
        raw = _form_field(content_type or "", body, "sdp")
    else:
        raise ApiError(
            415,
            "unsupported_media_type",
            "send the offer as application/sdp or as the multipart/form-data field 'sdp'"
            + (f", not {kind}" if kind else ""),
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_sdp", "the SDP offer is not UTF-8 text") from None
    check_offer(text)
    return text


def check_offer(text: str) -> None:
    if not text.strip():
        raise ApiError(400, "missing_sdp", "the SDP offer is empty")
    lines = text.lstrip().splitlines()
    if lines[0].strip() != "v=0":
        raise ApiError(400, "invalid_sdp", "the SDP offer must start with v=0")
    if not any(line.startswith("m=audio ") for line in lines):
        raise ApiError(400, "invalid_sdp", "the SDP offer has no audio media line (m=audio)")


def _form_field(content_type: str, body: bytes, name: str) -> bytes:
    if "boundary=" not in content_type.lower():
        raise ApiError(400, "invalid_form", "the multipart body has no boundary")
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise ApiError(400, "invalid_form", "the multipart body cannot be parsed")
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == name:
            payload = part.get_payload(decode=True)
            return payload if isinstance(payload, bytes) else b""
    raise ApiError(400, "missing_sdp", f"the multipart form has no '{name}' field")
