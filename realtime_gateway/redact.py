"""Redaction of secrets (Entra tokens, ephemeral keys, api keys) from text and log records.

Our own code never formats a secret into a message; this filter is the second line, applied to
every handler the app's logging uses, so a library message cannot leak one either.
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


def redact(text: str, extra: tuple[str, ...] = ()) -> str:
    for secret in (*extra, *_known):
        if secret:
            text = text.replace(secret, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + REDACTED, text)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites each record's final message with secrets redacted; `extra` holds known values."""

    def __init__(self, extra: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.extra = tuple(s for s in extra if s)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not break logging
            return True
        cleaned = redact(message, self.extra)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.extra)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        return True


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
    flt = RedactingFilter()

    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        flt.filter(record)
        return record

    logging.setLogRecordFactory(factory)
    _installed = True


def install(logger: logging.Logger | None = None, extra: tuple[str, ...] = ()) -> RedactingFilter:
    """Attach the filter to `logger` (root by default) and to each of its handlers, once."""
    logger = logger or logging.getLogger()
    for existing in logger.filters:
        if isinstance(existing, RedactingFilter):
            return existing
    flt = RedactingFilter(extra)
    logger.addFilter(flt)
    for handler in logger.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(flt)
    return flt
