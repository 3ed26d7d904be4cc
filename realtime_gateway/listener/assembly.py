"""One call's listener and its parts, wired once, before it runs: the socket's dialer, the archive
writer, the line its threads share and the control acting on the call. Nothing is wired after."""

from __future__ import annotations

import time
from typing import Callable

from ..archive.store import Archive
from ..archive.writer import ArchiveWriter
from ..core.message import CallMessage
from .call_listener import CallHooks, Listener, ListenerConfig
from .call_tools import CallTools
from .control import Control
from .guardrails import Guardrail
from .line import CallLine, Upstream
from .sideband import Dialer, sideband_url
from .tools import ToolBox


def assemble(
    msg: CallMessage,
    archive: Archive,
    upstream: Upstream,
    websocket_endpoint: str,
    config: ListenerConfig,
    *,
    hooks: CallHooks | None = None,
    tools: ToolBox | None = None,
    calls: CallTools | None = None,
    guardrail: Guardrail | None = None,
    handover: Callable[[CallMessage], None] | None = None,
    redelivered: bool = False,
    clock: Callable[[], float] = time.time,
) -> Listener:
    url = sideband_url(websocket_endpoint, msg.call_id)
    dial = Dialer(url, upstream.headers, clock, msg.call_id, config.session_update)
    # built now, started once the socket is open: every millisecond before the socket is a missed event
    writer = ArchiveWriter.for_call(
        archive,
        msg,
        config.strict,
        flush_interval=config.flush_interval,
        on_commit=hooks.committed if hooks is not None else None,
    )
    line = CallLine(msg.call_id, upstream, writer, clock)
    acts = tools is not None or calls is not None or guardrail is not None or config.policy is not None
    control = (
        Control(
            tools,
            guardrail,
            line.send,
            line.mark,
            line.hang_up,
            config.policy,
            config.policy_max_violations,
            calls=calls,
            ended=line.ended_by,
            minted=config.minted,
        )
        if acts
        else None
    )
    return Listener(
        msg,
        archive,
        dial,
        writer,
        line,
        config,
        control=control,
        hooks=hooks,
        handover=handover,
        redelivered=redelivered,
        clock=clock,
    )
