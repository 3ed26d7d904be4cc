"""Holding the server's session policy against the browser's data channel.

`webrtcfilter` limits what the browser receives, not what it sends: a `session.update` with other
instructions or tools, or a `response.create` with its own instructions, reaches the service and is
applied. The sideband sees the result (`session.updated`, `response.created`), so the listener
compares each against the policy: a session that differs is restored (the policy's own
`session.update`) and every response that starts before it is restored is cancelled; a response
whose own settings differ is cancelled. Each is archived as a `listener.policy` row; at
POLICY_MAX_VIOLATIONS the call is hung up (`end_reason=policy`).
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any, Callable, Mapping

log = logging.getLogger(__name__)

TYPES = ("session.created", "session.updated", "response.created")


def _voice(session: Mapping[str, Any]) -> Any:
    return ((session.get("audio") or {}).get("output") or {}).get("voice")


def _tools(tools: Any) -> list[tuple[str, str, str, str]]:
    """Tools as (type, name, description, parameters): what the model may call and is told of them."""
    out = []
    for tool in tools or []:
        if isinstance(tool, Mapping):
            params = json.dumps(tool.get("parameters") or {}, sort_keys=True)
            out.append(
                (str(tool.get("type") or "function"), str(tool.get("name")), str(tool.get("description") or ""), params)
            )
    return sorted(out)


class PolicyGuard:
    def __init__(
        self,
        policy: Mapping[str, Any],
        send: Callable[[dict[str, Any]], bool],
        mark: Callable[[str, dict[str, Any]], None],
        hangup: Callable[[str], None],
        max_violations: int,
        minted: Mapping[str, Any] | None = None,
    ) -> None:
        self.policy = dict(policy)
        # The session as minted, before the listener's own session.update (LISTENER_SESSION_UPDATE)
        # is applied: what session.created shows. It stands until the service first shows the whole
        # policy; after that only the policy does.
        self._minted = dict(minted) if minted is not None and dict(minted) != self.policy else None
        self._send, self._mark, self._hangup = send, mark, hangup
        self.max_violations = max_violations
        self.violations = 0
        self._restoring = False  # a restore is on its way: responses started meanwhile follow the wrong session
        self._lock = threading.Lock()

    def restore_message(self) -> dict[str, Any]:
        """The policy's session.update (the model of a call cannot change: not sent). An update merges
        into the session, so tools the policy has none of are sent as an empty list, not left out."""
        session = {k: v for k, v in self.policy.items() if k != "model"}
        return {"type": "session.update", "session": {"tools": [], **session, "type": "realtime"}}

    def session_differences(self, session: Mapping[str, Any], policy: Mapping[str, Any] | None = None) -> list[str]:
        """The policy fields this session does not hold."""
        p = self.policy if policy is None else policy
        found = []
        if "instructions" in p and session.get("instructions") != p["instructions"]:
            found.append("instructions")
        if _tools(session.get("tools")) != _tools(p.get("tools")):
            found.append("tools")
        if p.get("model") and session.get("model") not in (None, p["model"]):
            found.append("model")
        if _voice(p) and _voice(session) not in (None, _voice(p)):
            found.append("voice")
        for name in ("max_output_tokens", "tool_choice", "output_modalities"):
            if name in p and session.get(name) not in (None, p[name]):
                found.append(name)
        return found

    def response_differences(self, response: Mapping[str, Any]) -> list[str]:
        """The response's own settings that the policy does not allow."""
        p = self.policy
        found = []
        if "instructions" in response and response.get("instructions") != p.get("instructions"):
            found.append("instructions")
        if _voice(p) and _voice(response) not in (None, _voice(p)):
            found.append("voice")
        limit, asked = p.get("max_output_tokens"), response.get("max_output_tokens")
        if isinstance(limit, int) and (asked == "inf" or (isinstance(asked, int) and asked > limit)):
            found.append("max_output_tokens")
        return found

    # ---- on the reader's thread: decide, send, mark; never waits on the network's answer -------
    def on_event(self, kind: str, event: Mapping[str, Any]) -> None:
        if kind in ("session.created", "session.updated"):
            self._on_session(kind, event.get("session") or {})
        elif kind == "response.created":
            self._on_response(event.get("response") or {})

    def _on_session(self, kind: str, session: Mapping[str, Any]) -> None:
        differences = self.session_differences(session)
        with self._lock:
            if not differences:
                self._restoring, self._minted = False, None
                return
            if self._minted is not None and not self.session_differences(session, self._minted):
                return  # the listener's own update is not applied yet
            self._restoring = True
        sent = self._send(self.restore_message())
        self._violation({"event": kind, "fields": differences, "action": "restored", "sent": sent})

    def _on_response(self, response: Mapping[str, Any]) -> None:
        differences = self.response_differences(response)
        with self._lock:
            restoring = self._restoring
        if not differences and not restoring:
            return
        rid = str(response.get("id") or "")
        sent = self._send({"type": "response.cancel", "response_id": rid})
        self._send({"type": "output_audio_buffer.clear"})  # audio already queued for the browser
        payload = {"event": "response.created", "response_id": rid, "action": "cancelled", "sent": sent}
        if differences:
            self._violation({**payload, "fields": differences})
        else:  # started under a session being restored: the violation is already counted
            self._mark("listener.policy", {**payload, "fields": ["session"], "violations": self.violations})

    def _violation(self, payload: dict[str, Any]) -> None:
        with self._lock:
            self.violations += 1
            count = self.violations
        hang_up = bool(self.max_violations) and count == self.max_violations
        if hang_up:
            payload["action"] += "+hangup"
        log.warning("policy: %s changed %s; %s", payload["event"], ",".join(payload["fields"]), payload["action"])
        self._mark("listener.policy", {**payload, "violations": count})
        if hang_up:
            self._hangup(f"session policy: {count} violations")
