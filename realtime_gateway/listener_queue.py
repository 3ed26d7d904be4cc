"""The listener's queue-message handling: parse, reject malformed messages, build and run a Listener.

function_app.py calls `handle_call_message` with the raw body and two senders (the hand-over and
poison output bindings); nothing here knows about azure.functions.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable, Mapping

from .archive import Archive
from .call_message import BadCallMessage, CallMessage
from .http_api import get_gateway
from .identity import BearerTokenProvider, auth_headers
from .listener import Listener, ListenerResult
from .realtime_api import RealtimeApi
from .settings import Settings

log = logging.getLogger(__name__)

class ServiceUpstream:
    """The listener's access to the service: the gateway's token cache and hang-up call."""

    def __init__(self, settings: Settings, tokens: BearerTokenProvider | None = None,
                 api: RealtimeApi | None = None):
        self.settings = settings
        self.tokens = tokens if tokens is not None or settings.api_key else BearerTokenProvider(settings)
        self.api = api or RealtimeApi(settings, self.tokens)

    def headers(self) -> Mapping[str, str]:
        return auth_headers(self.settings, self.tokens)

    def hangup(self, call_id: str) -> None:
        self.api.hangup(call_id)


def shared_deps() -> tuple[Settings, Archive, ServiceUpstream]:
    """The worker process's settings, archive, token cache and HTTP session: the same objects the
    HTTP routes use, so the identity endpoint is asked once per token lifetime per process."""
    gateway = get_gateway()
    return gateway.settings, gateway.archive, ServiceUpstream(gateway.settings, gateway.tokens, gateway.api)


def make_listener(msg: CallMessage, settings: Settings, archive: Archive, upstream: Any,
                  handover: Callable[[CallMessage], None] | None, redelivered: bool = False) -> Listener:
    return Listener(msg, archive, upstream, settings.websocket_endpoint,
                    time_box=settings.listener_time_box, strict=settings.strict_recording,
                    attach_limit=settings.attach_limit_seconds,
                    session_update=settings.sideband_session_update,
                    handover=handover, redelivered=redelivered)


def handle_call_message(body: str | bytes, *, send_handover: Callable[[str], None],
                        send_poison: Callable[[str], None], dequeue_count: int | None = None,
                        queue_name: str = "call-listener",
                        deps: tuple[Settings, Archive, Any] | None = None) -> ListenerResult | None:
    """Run the listener for one queue message.

    A malformed message is logged once and moved to `<queue>-poison` through the output binding,
    and the invocation succeeds: raising would only make the host try it maxDequeueCount times
    (visibilityTimeout apart) before poisoning the same bytes. Any other failure raises, so the
    host retries (archive rows are idempotent) and poisons after maxDequeueCount.
    """
    try:
        msg = CallMessage.from_json(body)
    except BadCallMessage as exc:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        log.error("rejected malformed call message (%s); moved to %s-poison without retry "
                  "(dequeue count %s, %d bytes)", exc, queue_name, dequeue_count, len(text))
        send_poison(text)
        return None
    settings, archive, upstream = deps or shared_deps()
    if dequeue_count and dequeue_count > 1:
        log.warning("call %s: message redelivered (try %d); resuming from the archive", msg.call_id, dequeue_count)
    listener = make_listener(msg, settings, archive, upstream, lambda nxt: send_handover(nxt.to_json()),
                             redelivered=bool(dequeue_count and dequeue_count > 1))
    result = listener.run()
    # the chain head in the log is a copy outside the tables an auditor can compare against
    log.info("call %s: listener %d done: %s (%s), %d events, %d duplicates skipped, %d gaps, chain head %s%s",
             msg.call_id, msg.continuation, result.outcome, result.end_reason, result.events,
             result.duplicates, result.gaps, result.head,
             f", attach delay {result.attach_delay * 1000:.0f} ms" if result.attach_delay is not None else "")
    return result


def queue_name_from_env(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return env.get("LISTENER_QUEUE", "call-listener")
