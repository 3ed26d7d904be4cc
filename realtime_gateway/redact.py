"""Redaction of secrets (Entra tokens, ephemeral keys, api keys) from text and log records.

Our own code never formats a secret into a message; this is the second line, applied to every log
record the process creates, so a library message cannot leak one either.
"""

from __future__ import annotations

import logging
import re

_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"(?i)((?:api-key|x-identity-header|access_token|client_secret)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"),
    re.compile(r"(?i)((?:accountkey|sharedaccesskey|sig)=)[^;&\s\"']+"),
    re.compile(r"\bek_[A-Za-z0-9_-]+"),
    re.compile(r"\bentra_[A-Za-z0-9_-]+"),
    re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"),  # JWTs
]
REDACTED = "[redacted]"


def redact(text: str) -> str:
    for secret in _known:
        if secret:
            text = text.replace(secret, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + REDACTED, text)
    return text


def redact_record(record: logging.LogRecord) -> None:
    """Rewrite the record's final message and traceback text with secrets redacted."""
    try:
        message = record.getMessage()
    except Exception:  # a broken format string must not break logging
        return
    cleaned = redact(message)
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if cleaned != message or record.args:
        record.msg, record.args = cleaned, None


_installed = False
_known: set[str] = set()  # configured secrets (the api key) redacted verbatim wherever they appear


def add_known_secret(value: str | None) -> None:
    if value and len(value) >= 8:
        _known.add(value)


def install_record_factory() -> None:
    """Redact every log record of the process at creation, whatever logger or handler it meets
    (logger filters do not see records propagated from child loggers; handlers come and go)."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        redact_record(record)
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
