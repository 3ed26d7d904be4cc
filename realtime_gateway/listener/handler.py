"""The listener's queue-message handling: parse, reject malformed messages, build and run a Listener.

function_app.py calls `handle_call_message` with the raw body and two senders (the hand-over and
poison output bindings); nothing here knows about azure.functions.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Callable, Protocol

from .. import telemetry
from ..archive.store import Archive
from ..core.message import BadCallMessage, CallMessage
from ..core.result import ListenerResult
from ..limits.limiter import Limiter
from ..settings import Settings
from .accounting import CallCharges
from .assembly import assemble
from .call_listener import Listener, ListenerConfig
from .call_tools import CallTools
from .guardrails import Guardrail
from .line import Upstream
from .memory import release_free_memory
from .tools import ToolBox

log = logging.getLogger(__name__)


class ListenerServices(Protocol):
    """What the listener takes from the process's shared objects (the composition root hands them in)."""

    settings: Settings
    api: Upstream
    limits: Limiter
    clock: Callable[[], float]

    @property
    def archive(self) -> Archive: ...


def make_listener(
    msg: CallMessage,
    services: ListenerServices,
    handover: Callable[[CallMessage], None] | None,
    redelivered: bool,
    hooks: CallCharges,
) -> Listener:
    s = services.settings
    config = ListenerConfig.from_settings(s)
    policy = s.session_policy
    if msg.channel == "sip" and s.sip.session_policy:  # a phone call holds the phone policy it was accepted with
        policy = s.sip.session_policy
        config = replace(config, policy=s.enforced_policy(policy) if s.policy_enforce else None, minted=policy)
    declared = list(policy.get("tools") or [])
    phone = msg.channel == "sip"
    # per listener: importlib caches the modules, so this costs little after the first call.
    # With the browser filtered, or on a phone call, only the server can answer: declared tools
    # without TOOLS_MODULE get "no implementation" rather than a model left waiting.
    tools = (
        ToolBox.load(declared, s.tools_module, s.tool_timeout) if s.tools_module or s.webrtc_filter or phone else None
    )
    # the built-in phone tools, wherever the server answers tools (a browser call gets an error output)
    calls = CallTools.load(declared, msg.call_id, phone, s.sip.transfer_targets, services.api) if tools else None
    if calls is not None and tools is not None and (shadowed := sorted(set(calls.declared) & set(tools.functions))):
        log.warning("TOOLS_MODULE defines %s: the built-in phone tools answer these names", ", ".join(shadowed))
    return assemble(
        msg,
        services.archive,
        services.api,
        s.websocket_endpoint,
        config,
        hooks=hooks,
        tools=tools,
        calls=calls,
        guardrail=Guardrail.load(s.guardrail_terms, s.guardrail_hook, s.guardrail_notice, s.guardrail_max_hits),
        handover=handover,
        redelivered=redelivered,
    )


def handle_call_message(
    body: str | bytes,
    *,
    send_handover: Callable[[str], None],
    send_poison: Callable[[str], None],
    services: ListenerServices,
    dequeue_count: int | None = None,
) -> ListenerResult | None:
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
        log.error(
            "rejected malformed call message (%s); moved to %s-poison without retry (dequeue count %s, %d bytes)",
            exc,
            services.settings.listener_queue,
            dequeue_count,
            len(text),
        )
        send_poison(text)
        return None
    redelivered = bool(dequeue_count and dequeue_count > 1)
    if redelivered:
        log.warning("call %s: message redelivered (try %d); resuming from the archive", msg.call_id, dequeue_count)
    with telemetry.listener_span(msg, redelivered):
        charges = CallCharges(services.limits, services.archive, services.clock, msg)
        listener = make_listener(msg, services, lambda nxt: send_handover(nxt.to_json()), redelivered, charges)
        try:
            result = listener.run()
        finally:
            charges.stop()
            release_free_memory()  # what this listener freed, back to the system (memory.py)
        charges.finished(result, listener.run_started)
        telemetry.annotate(
            outcome=result.outcome,
            end_reason=result.end_reason,
            events=result.events,
            gaps=result.gaps,
            attach_delay_ms=round(result.attach_delay * 1000) if result.attach_delay is not None else None,
        )
        # the chain head in the log is a copy outside the tables an auditor can compare against
        log.info(
            "call %s: listener %d done: %s (%s), %d events, %d duplicates skipped, %d gaps, chain head %s%s",
            msg.call_id,
            msg.continuation,
            result.outcome,
            result.end_reason,
            result.events,
            result.duplicates,
            result.gaps,
            result.head,
            f", attach delay {result.attach_delay * 1000:.0f} ms" if result.attach_delay is not None else "",
        )
    return result
