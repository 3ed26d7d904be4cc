"""Client secrets for /connect minted ahead, so the person waiting pays for one upstream round trip
(the SDP post) instead of two.

The secret never leaves the server on /connect, so it can be minted before it is needed. A few
background threads, started on the first `start_call`, keep up to `size` secrets for the current
session policy, each replaced once less than `lead` seconds of its lifetime remain. Every call
takes a fresh one (the service lets one secret start several sessions, but nothing promises that
a second call on a used secret gets the policy it was minted with). An empty pool (cold instance,
burst, upstream trouble) mints inline, as before. A 401 on the SDP post with a pooled secret (no
call started) empties the pool and retries once with a freshly minted secret. A different policy
fingerprint empties the pool. /api/token never uses it: its secret goes to the browser.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from typing import Callable

from .. import telemetry
from ..errors import ApiError
from ..retry import Backoff
from ..settings import Settings
from .answers import Answer, ClientSecret
from .realtime_api import RealtimeApi, SecretRefused

log = logging.getLogger(__name__)

MAX_REFILL_THREADS = 4  # parallel background mints after a burst; more would only queue upstream
REFILL_BACKOFF = (1.0, 60.0)  # seconds: first wait and cap after a failed background mint


def policy_fingerprint(settings: Settings) -> str:
    """What a pooled secret was minted for: a change of any of these makes it unusable."""
    what = [settings.endpoint, settings.deployment, dict(settings.session_policy), settings.secret_pool_ttl]
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


class SecretPool:
    def __init__(
        self,
        api: RealtimeApi,
        policy: Callable[[], str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.api = api
        settings = api.settings
        self.size, self.ttl, self.lead = settings.secret_pool_size, settings.secret_pool_ttl, settings.secret_pool_lead
        self._policy = policy or (lambda: policy_fingerprint(self.api.settings))
        self._clock = clock
        self._cond = threading.Condition()
        self._items: list[tuple[ClientSecret, str]] = []  # (secret, policy fingerprint), oldest first
        self._minting = 0
        self._threads: list[threading.Thread] = []
        self._closed = False
        self.stats = {"pooled": 0, "inline": 0, "background": 0, "expired": 0, "emptied": 0, "retried_401": 0}

    # --- what /connect calls --------------------------------------------------------------------
    def start_call(self, offer_sdp: str, deadline: float | None = None, request_id: str | None = None) -> Answer:
        with telemetry.span("secret"):  # one step of connect, whether pooled or minted
            pooled = self.take()
            telemetry.annotate(source="minted" if pooled is None else "pooled")
            secret = pooled if pooled is not None else self._mint_inline(deadline, request_id)
        if pooled is None:
            return self._post(secret, offer_sdp, deadline, request_id)
        try:
            return self._post(secret, offer_sdp, deadline, request_id)
        except SecretRefused:
            # Revoked, or the service no longer honours what the pool holds: none of it is worth trying.
            log.warning("a pooled client secret was refused (401); emptying the pool and minting one inline")
            self.empty()
            self.stats["retried_401"] += 1
            with telemetry.span("secret", source="minted", retry=True):
                secret = self._mint_inline(deadline, request_id)
            return self._post(secret, offer_sdp, deadline, request_id)

    def _post(self, secret: ClientSecret, offer_sdp: str, deadline: float | None, request_id: str | None) -> Answer:
        with telemetry.span("sdp"):
            return self.api.post_offer(secret, offer_sdp, deadline, request_id)

    def take(self) -> ClientSecret | None:
        """A fresh pooled secret for the current policy, or None (the caller mints inline)."""
        if self.size <= 0:
            return None
        policy = self._policy()
        with self._cond:
            self._start()
            self._drop_stale(policy)
            secret = self._items.pop(0)[0] if self._items else None  # the oldest: used before it goes stale
            if secret is not None:
                self.stats["pooled"] += 1
            self._cond.notify_all()  # one slot is free: a refill thread mints its replacement
            return secret

    def _mint_inline(self, deadline: float | None, request_id: str | None) -> ClientSecret:
        self.stats["inline"] += 1
        return self.api.mint_client_secret(deadline, request_id)

    # --- pool state ---------------------------------------------------------------------------
    def empty(self) -> None:
        with self._cond:
            self.stats["emptied"] += len(self._items)
            self._items.clear()
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._items.clear()
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)

    def _drop_stale(self, policy: str) -> None:
        """Under the lock: forget secrets of another policy or too close to expiry."""
        if any(p != policy for _, p in self._items):
            self.stats["emptied"] += len(self._items)
            self._items.clear()
        keep_after = self._clock() + self.lead
        fresh = [item for item in self._items if item[0].expires_at > keep_after]
        self.stats["expired"] += len(self._items) - len(fresh)
        self._items = fresh

    def _start(self) -> None:
        """Under the lock: the refill threads, once, on first use (a listener-only worker never mints)."""
        if self._threads or self._closed:
            return
        for i in range(min(MAX_REFILL_THREADS, self.size)):
            thread = threading.Thread(target=self._refill, name=f"secret-pool-{i}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _refill(self) -> None:
        backoff = Backoff(*REFILL_BACKOFF)
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    policy = self._policy()
                    self._drop_stale(policy)
                    if len(self._items) + self._minting < self.size:
                        break
                    # Sleep until the oldest secret reaches its lead time, or a take() frees a slot.
                    soonest = min(s.expires_at for s, _ in self._items) - self.lead if self._items else None
                    self._cond.wait(None if soonest is None else max(0.05, soonest - self._clock()))
                self._minting += 1
            secret = None
            try:
                secret = self.api.mint_client_secret(time.monotonic() + self.api.settings.http_timeout, ttl=self.ttl)
            except ApiError as exc:
                log.warning("secret pool: background mint failed (%s); /connect mints inline meanwhile", exc.code)
            except Exception as exc:  # the pool must never take the worker down
                log.warning("secret pool: background mint failed (%s)", type(exc).__name__)
            with self._cond:
                self._minting -= 1
                if secret is not None and not self._closed:
                    self._items.append((secret, policy))
                    self._items.sort(key=lambda item: item[0].expires_at)
                    self.stats["background"] += 1
            if secret is None:
                backoff.wait()  # failing upstream: don't hammer it from every thread
            else:
                backoff = Backoff(*REFILL_BACKOFF)
