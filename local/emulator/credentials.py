"""Entra access tokens (issued by the identity endpoint) and ephemeral client secrets, with expiry."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass


@dataclass
class EphemeralKey:
    value: str
    expires_at: int
    session: dict


class CredentialStore:
    def __init__(self, token_lifetime: float, api_key: str | None) -> None:
        self.token_lifetime = token_lifetime
        self.api_key = api_key
        self._tokens: dict[str, float] = {}
        self._keys: dict[str, EphemeralKey] = {}

    def issue_token(self) -> tuple[str, int]:
        token = "entra_" + secrets.token_hex(24)
        expires_on = int(time.time() + self.token_lifetime)
        self._tokens[token] = expires_on
        return token, expires_on

    def issue_key(self, seconds: int, session: dict) -> EphemeralKey:
        key = EphemeralKey("ek_" + secrets.token_hex(24), int(time.time()) + seconds, session)
        self._keys[key.value] = key
        return key

    def check_service(self, headers) -> str | None:
        """None when the request carries a live Entra token or the api key; else why not."""
        api_key = headers.get("api-key")
        if api_key is not None:
            if self.api_key and secrets.compare_digest(api_key, self.api_key):
                return None
            return "invalid api-key"
        bearer = _bearer(headers)
        if bearer is None:
            return "missing Authorization bearer token or api-key"
        expires_on = self._tokens.get(bearer)
        if expires_on is None:
            return "unknown bearer token (not issued by this identity endpoint)"
        if expires_on <= time.time():
            return "bearer token expired"
        return None

    def check_ephemeral(self, headers) -> tuple[EphemeralKey | None, str | None]:
        bearer = _bearer(headers)
        if bearer is None:
            return None, "missing Authorization: Bearer <ephemeral key>"
        key = self._keys.get(bearer)
        if key is None:
            return None, "unknown ephemeral key"
        if key.expires_at <= time.time():
            return None, "ephemeral key expired"
        return key, None

    @property
    def tokens_issued(self) -> int:
        return len(self._tokens)

    @property
    def keys_issued(self) -> int:
        return len(self._keys)


def _bearer(headers) -> str | None:
    auth = headers.get("Authorization", "")
    if auth[:7].lower() == "bearer " and auth[7:].strip():
        return auth[7:].strip()
    return None
