"""Who calls and which line: the numbers in the SIP headers, how the caller's is stored
(SIP_CALLER_PRIVACY), and the allow and block lists (SIP_ALLOWED_NUMBERS, SIP_BLOCKED_NUMBERS)."""

from __future__ import annotations

import hashlib
import hmac
import re

_URI = re.compile(r"<?\s*(?:sips?|tel):([^@;>\s]+)", re.I)


def number_of(header_value: str) -> str:
    """The user part of a From / To header (`"Ann" <sip:+1555...@host>;tag=x`, `tel:+1555...`):
    a number with its `+` and digits only (visual separators dropped), else the part lowercased."""
    m = _URI.search(header_value or "")
    user = m.group(1) if m else (header_value or "").strip()
    digits = re.sub(r"[\s().-]", "", user)
    if re.fullmatch(r"\+?[0-9]+", digits):
        return digits
    return user.lower()


def caller_key(number: str, salt: str) -> str:
    """The caller's salted hash: the limits' key and the archive's caller (never the number)."""
    return "h-" + hmac.new(salt.encode("utf-8"), number.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def stored_caller(number: str, privacy: str, salt: str) -> str:
    """What the archive keeps of the caller: the salted hash, a masked number or (keep) the number."""
    if privacy == "keep":
        return number
    if privacy == "mask":
        keep = 2 if len(number) > 6 else 0
        head = 2 if number.startswith("+") else 1
        return number[:head] + "*" * max(0, len(number) - head - keep) + (number[-keep:] if keep else "")
    return caller_key(number, salt)


def _matches(entry: str, number: str) -> bool:
    if entry.endswith("*"):
        return number.startswith(entry[:-1])
    return number == entry


def _listed(entries: tuple[str, ...], caller: str, called: str) -> bool:
    for entry in entries:
        side, _, pattern = entry.rpartition(":")
        if side in ("", "from") and _matches(pattern, caller):
            return True
        if side in ("", "to") and _matches(pattern, called):
            return True
    return False


def screen(caller: str, called: str, allowed: tuple[str, ...], blocked: tuple[str, ...]) -> str | None:
    """Why the call is declined by the number lists, or None: a blocked number (From or To) always
    declines; with an allow list, a call neither of whose numbers is on it is declined."""
    if _listed(blocked, caller, called):
        return "number_blocked"
    if allowed and not _listed(allowed, caller, called):
        return "number_not_allowed"
    return None
