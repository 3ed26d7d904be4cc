"""The managed identity's bearer token for Azure OpenAI: one credential per process, the token
cached and refreshed ahead of expiry under a lock, so the identity endpoint is asked once per
token lifetime rather than once per call."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from ..errors import ApiError
from ..settings import COGNITIVE_SCOPE, Settings

log = logging.getLogger(__name__)

REFRESH_MARGIN = 300.0  # seconds before expiry to fetch a new token (as the seed did)


def make_credential(settings: Settings) -> Any:
    """ManagedIdentityCredential for a user-assigned identity, else DefaultAzureCredential."""
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if settings.managed_identity_client_id:
        return ManagedIdentityCredential(client_id=settings.managed_identity_client_id)
    return DefaultAzureCredential()


class BearerTokenProvider:
    """`token()` returns a valid Entra token for Cognitive Services, or raises ApiError(503)."""

    def __init__(
        self,
        settings: Settings,
        credential: Any = None,
        scope: str = COGNITIVE_SCOPE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._credential = credential
        self._own_credential = credential is None
        self._scope = scope
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_on = 0.0
        self._refresh_at = 0.0

    @property
    def credential(self) -> Any:
        if self._credential is None:
            self._credential = make_credential(self._settings)
        return self._credential

    def token(self) -> str:
        if self._token and self._clock() < self._refresh_at:
            return self._token
        with self._lock:  # one thread fetches; the others wait and reuse its token
            now = self._clock()
            if self._token and now < self._refresh_at:
                return self._token
            try:
                access = self.credential.get_token(self._scope)
            except Exception as exc:  # CredentialUnavailableError, ClientAuthenticationError, network
                log.warning("managed identity could not get a token: %s", type(exc).__name__)
                if self._own_credential:
                    # DefaultAzureCredential stays failed after one managed-identity error;
                    # a fresh one next time lets the process recover from a transient fault.
                    self._credential = None
                if self._token and now < self._expires_on - 5:
                    return self._token  # still valid: keep serving it and retry next call
                raise ApiError(
                    503,
                    "identity_unavailable",
                    "the function's managed identity could not get a token for Azure OpenAI",
                ) from None
            lifetime = max(0.0, access.expires_on - now)
            # Short-lived tokens (tests, odd issuers) refresh at half-life instead of going stale.
            margin = min(REFRESH_MARGIN, lifetime / 2)
            self._token, self._expires_on = access.token, float(access.expires_on)
            self._refresh_at = self._expires_on - margin
            log.info("acquired a bearer token, valid for %.0f s", lifetime)
            return self._token

    @property
    def expires_on(self) -> float:
        return self._expires_on


def auth_headers(settings: Settings, provider: BearerTokenProvider | None) -> dict[str, str]:
    """The header that authenticates the gateway (not the browser) to Azure OpenAI."""
    if settings.api_key:
        return {"api-key": settings.api_key}
    if provider is None:
        raise ValueError("a BearerTokenProvider is needed when no api key is configured")
    return {"Authorization": f"Bearer {provider.token()}"}
