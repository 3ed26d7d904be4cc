"""Calls to the Azure OpenAI Realtime service over one pooled `requests` session: mint a client
secret (retried on 429/5xx within the deadline), post the SDP offer (never retried: the service
may already have started the call), hang up a call. Upstream problems become ApiError."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Mapping

import requests
from requests.adapters import HTTPAdapter

from ..core.ids import valid_call_id
from ..errors import ApiError
from ..retry import Backoff
from ..settings import Settings
from .answers import Answer, ClientSecret
from .identity import BearerTokenProvider, auth_headers

log = logging.getLogger(__name__)

MINT_ATTEMPTS = 3
BACKOFF_BASE = 0.25  # seconds, doubled per attempt, with jitter, when there is no Retry-After
MAX_RETRY_AFTER = 30.0  # beyond this we give the 429 back to the caller instead of waiting
RETRYABLE = {429, 500, 502, 503, 504}


class SecretRefused(ApiError):
    """The service answered 401 to the SDP post: the client secret was not accepted and no call
    started, so the caller may try once more with a freshly minted one."""


class _Session(requests.Session):
    """requests drops `Authorization` when a redirect leaves the host, but not Azure's `api-key`."""

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        super().rebuild_auth(prepared_request, response)
        if prepared_request.url and self.should_strip_auth(response.request.url or "", prepared_request.url):
            prepared_request.headers.pop("api-key", None)


def make_session(pool_size: int = 32) -> requests.Session:
    session = _Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.trust_env = False  # no proxy or netrc surprises from the worker's environment
    return session


def retry_after_seconds(response: requests.Response) -> float | None:
    raw = response.headers.get("Retry-After")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None  # HTTP-date form: treat as unknown and back off normally


class RealtimeApi:
    def __init__(
        self,
        settings: Settings,
        token_provider: BearerTokenProvider | None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.tokens = token_provider
        self.session = session or make_session()
        self._sleep = sleep
        self.base = f"{settings.endpoint}/openai/v1/realtime"

    # --- helpers ---------------------------------------------------------------------------
    def _timeout(self, deadline: float | None) -> float:
        budget = self.settings.http_timeout
        if deadline is not None:
            budget = min(budget, deadline - time.monotonic())
        if budget <= 0.05:
            raise ApiError(504, "upstream_timeout", "the request ran out of time before Azure OpenAI answered")
        return budget

    def _send(self, what: str, method: str, url: str, deadline: float | None, **kw: Any) -> requests.Response:
        timeout = self._timeout(deadline)
        try:
            return self.session.request(method, url, timeout=(min(5.0, timeout), timeout), **kw)
        except requests.Timeout:
            log.warning("%s: Azure OpenAI did not answer within %.1f s", what, timeout)
            raise ApiError(504, "upstream_timeout", f"Azure OpenAI did not answer the {what} request in time") from None
        except requests.RequestException as exc:
            log.warning("%s: cannot reach Azure OpenAI (%s)", what, type(exc).__name__)
            raise ApiError(502, "upstream_unreachable", f"cannot reach Azure OpenAI for the {what} request") from None

    @staticmethod
    def _throttled(what: str, response: requests.Response) -> ApiError:
        wait = retry_after_seconds(response)
        seconds = str(int(wait + 0.999)) if wait is not None else "1"
        return ApiError(
            429,
            "upstream_throttled",
            f"Azure OpenAI is throttling {what} requests; retry after {seconds} s",
            headers={"Retry-After": seconds},
        )

    @staticmethod
    def _upstream_status(what: str, response: requests.Response) -> ApiError:
        if response.status_code in (401, 403):
            return ApiError(
                502,
                "upstream_auth",
                f"Azure OpenAI refused the gateway's credentials for {what} "
                f"({response.status_code}); check the identity's role assignment",
            )
        return ApiError(
            502, "upstream_error", f"Azure OpenAI answered the {what} request with status {response.status_code}"
        )

    # --- operations ------------------------------------------------------------------------
    def headers(self) -> Mapping[str, str]:
        """The gateway's own credential for the service (what the listener's sideband sends too)."""
        return auth_headers(self.settings, self.tokens)

    def mint_client_secret(
        self, deadline: float | None = None, request_id: str | None = None, ttl: int | None = None
    ) -> ClientSecret:
        body = {
            "expires_after": {"anchor": "created_at", "seconds": ttl or self.settings.client_secret_ttl},
            "session": dict(self.settings.session_policy),
        }
        # Retry only while the deadline still leaves room for the SDP post that follows.
        backoff = Backoff(BACKOFF_BASE, MAX_RETRY_AFTER, deadline, jitter=True, sleep=self._sleep)
        while True:
            headers = {**self.headers(), "Content-Type": "application/json"}
            if request_id:
                headers["x-ms-client-request-id"] = request_id
            response = self._send(
                "client secret", "POST", f"{self.base}/client_secrets", deadline, json=body, headers=headers
            )
            if response.status_code == 200:
                try:
                    return ClientSecret.parse(response.json())
                except ValueError:
                    raise ApiError(
                        502, "upstream_bad_response", "Azure OpenAI's client secret answer is not JSON"
                    ) from None
            if (
                response.status_code not in RETRYABLE
                or backoff.attempts + 1 >= MINT_ATTEMPTS
                or not backoff.wait(retry_after_seconds(response), reserve=self.settings.http_timeout)
            ):
                break
            log.info("client secret: status %s, retry %d", response.status_code, backoff.attempts)
            response.close()
        log.warning("client secret: giving up with status %s", response.status_code)
        if response.status_code == 429:
            raise self._throttled("client secret", response)
        raise self._upstream_status("client secret", response)

    def post_offer(
        self, secret: ClientSecret, offer_sdp: str, deadline: float | None = None, request_id: str | None = None
    ) -> Answer:
        url = f"{self.base}/calls" + ("?webrtcfilter=on" if self.settings.webrtc_filter else "")
        headers = {"Authorization": f"Bearer {secret.value}", "Content-Type": "application/sdp"}
        if request_id:
            headers["x-ms-client-request-id"] = request_id
        response = self._send("SDP offer", "POST", url, deadline, data=offer_sdp.encode("utf-8"), headers=headers)
        if response.status_code == 429:
            raise self._throttled("call", response)
        if response.status_code == 400:
            raise ApiError(400, "sdp_rejected", "Azure OpenAI rejected the SDP offer")
        if response.status_code == 401:
            error = self._upstream_status("SDP offer", response)
            raise SecretRefused(error.status, error.code, error.message)
        if response.status_code not in (200, 201):
            raise self._upstream_status("SDP offer", response)
        return Answer.parse(response.text, response.headers.get("Location"))

    def hangup(self, call_id: str, deadline: float | None = None) -> None:
        if not valid_call_id(call_id):
            raise ApiError(400, "invalid_call_id", "the call id is malformed")
        headers = dict(self.headers())
        response = self._send("hang-up", "POST", f"{self.base}/calls/{call_id}/hangup", deadline, headers=headers)
        if response.status_code in (200, 204):
            return
        if response.status_code == 404:
            raise ApiError(404, "call_not_found", "no live call with this id")
        if response.status_code == 429:
            raise self._throttled("hang-up", response)
        raise self._upstream_status("hang-up", response)

    # --- phone calls (SIP): answer or refuse an incoming call, transfer it -------------------
    def _control(self, what: str, call_id: str, action: str, body: Mapping[str, Any], deadline: float | None) -> None:
        if not valid_call_id(call_id):
            raise ApiError(400, "invalid_call_id", "the call id is malformed")
        headers = {**self.headers(), "Content-Type": "application/json"}
        url = f"{self.base}/calls/{call_id}/{action}"
        response = self._send(what, "POST", url, deadline, json=dict(body), headers=headers)
        if response.status_code in (200, 201, 204):
            return
        if response.status_code == 404:
            raise ApiError(404, "call_not_found", "no pending or live call with this id")
        if response.status_code == 429:
            raise self._throttled(what, response)
        raise self._upstream_status(what, response)

    def accept(self, call_id: str, session: Mapping[str, Any], deadline: float | None = None) -> None:
        """Answer an incoming SIP call with the session configuration (type, model, instructions, ...)."""
        self._control("accept", call_id, "accept", session, deadline)

    def reject(self, call_id: str, status_code: int, deadline: float | None = None) -> None:
        """Refuse an incoming SIP call with a SIP status (486 busy, 603 declined)."""
        self._control("reject", call_id, "reject", {"status_code": status_code}, deadline)

    def refer(self, call_id: str, target_uri: str, deadline: float | None = None) -> None:
        """Transfer a live SIP call to `tel:` / `sip:` target (SIP REFER)."""
        self._control("refer", call_id, "refer", {"target_uri": target_uri}, deadline)
