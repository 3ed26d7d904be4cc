"""Acting on a call from the sideband: run the model's tool calls and apply the output guardrail.

The socket's reader hands every frame to `on_event` and never waits on it: tools and the
guardrail hook run on a small pool; their results go back over the same socket (websocket-client
sends from any thread) and into the archive as `listener.tool` / `listener.guardrail` rows, chained
with the events. A response's tool outputs are sent as each tool finishes; `response.create` follows
once the response is done and all its tools have answered (the service refuses a second response
while one is active). The built-in phone tools (call_tools.py) are answered the same way, except
that a call leaving (transferred, or ended by `end_call`) gets no further response: `end_call` hangs
up once that response is done and its audio has played.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, Callable, Mapping

from .. import telemetry
from ..core.events import ASSISTANT_DELTAS, ASSISTANT_DONES, Event
from ..core.result import EndReason
from .call_tools import CallTools, Then
from .guardrails import Guardrail
from .policy import TYPES as POLICY_TYPES
from .policy import PolicyGuard
from .tools import ToolBox

log = logging.getLogger(__name__)

TOOL_WORKERS = 4
END_AUDIO_WAIT = 15.0  # end_call: the longest wait for the goodbye's audio to play out before hanging up


class Control:
    def __init__(
        self,
        tools: ToolBox | None,
        guardrail: Guardrail | None,
        send: Callable[[dict[str, Any]], None],
        mark: Callable[[str, dict[str, Any]], None],
        hangup: Callable[[EndReason, str], None],
        policy: Mapping[str, Any] | None = None,
        max_violations: int = 0,
        calls: CallTools | None = None,
        ended: Callable[[EndReason, str], None] | None = None,
        minted: Mapping[str, Any] | None = None,
    ) -> None:
        self.tools, self.guardrail, self.calls = tools, guardrail, calls
        self._send, self._mark, self._hangup = send, mark, hangup
        self._ended = ended  # the call left without a hang-up of ours (a transfer): its reason
        self._lock = threading.Lock()
        # Built inside the listener's span: its workers make it current, so tool and guardrail marks
        # (and a guardrail's hang-up) are events on the listener span.
        self._pool = ThreadPoolExecutor(
            TOOL_WORKERS,
            thread_name_prefix="call-control",
            initializer=telemetry.attach,
            initargs=(telemetry.current(),),
        )
        self._futures: set[Future] = set()
        self._waiting: dict[str, set[str]] = {}  # response id -> call ids whose tool still runs
        self._done: set[str] = set()  # responses whose response.done came while tools ran
        self._text: dict[str, str] = {}  # item id -> the assistant's words so far
        self._hooked: dict[str, int] = {}  # item id -> length of text the hook is checking
        self._blocked: set[str] = set()  # responses already cancelled
        self._started: set[str] = set()  # call ids already run (an event seen twice runs nothing twice)
        self._leaving: dict[str, tuple[Then, str]] = {}  # response id -> how the call leaves after it
        self._playing: set[str] = set()  # responses whose audio the service is still playing (SIP/WebRTC)
        self._quiet = threading.Event()  # set while nothing plays
        self._quiet.set()
        self._closing = False
        self.hits = 0
        self.policy = (
            PolicyGuard(policy, self._try_send, mark, self._policy_hang_up, max_violations, minted)
            if policy is not None
            else None
        )

    def _policy_hang_up(self, why: str) -> None:
        """The policy's hang-up, off the reader's thread like every other step that may wait."""
        self._submit(self._hangup, "policy", why)

    # ---- the reader's side: never blocks ---------------------------------------------------------
    def on_event(self, ev: Event) -> None:
        kind, event = ev.type, ev.fields
        if self.policy is not None and kind in POLICY_TYPES:
            self.policy.on_event(kind, event)
        runs_tools = self.tools is not None or self.calls is not None
        if self.calls is not None and kind.startswith("output_audio_buffer."):
            self._audio(kind, str(event.get("response_id") or ""))
        if runs_tools and kind == "response.output_item.done":
            item = event.get("item") or {}
            if item.get("type") == "function_call" and item.get("status", "completed") == "completed":
                self._start_tool(str(event.get("response_id") or ""), item)
        elif runs_tools and kind == "response.done":
            self._response_done(str((event.get("response") or {}).get("id") or ""))
        elif self.guardrail is not None and (kind in ASSISTANT_DELTAS or kind in ASSISTANT_DONES):
            item_id, rid = str(event.get("item_id") or ""), str(event.get("response_id") or "")
            if kind in ASSISTANT_DELTAS:
                text = self._text[item_id] = self._text.get(item_id, "") + str(event.get("delta") or "")
            else:
                text = str(event.get(ASSISTANT_DONES[kind]) or self._text.get(item_id, ""))
                self._text.pop(item_id, None)
            self._check(rid, item_id, text, final=kind in ASSISTANT_DONES)

    def close(self, timeout: float | None = None) -> None:
        """Let tools in flight finish (each is bounded by its own time limit, the default wait) so their
        rows are kept."""
        if timeout is None:
            timeout = max(self.tools.timeout + 1 if self.tools else 0, self.calls.max_seconds if self.calls else 0)
        with self._lock:
            self._closing = True  # the call is over: an end_call waiting on the audio hangs up nothing
            pending = set(self._futures)
        self._quiet.set()
        if pending:
            wait(pending, timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ---- tools ------------------------------------------------------------------------------------
    def _start_tool(self, response_id: str, item: dict[str, Any]) -> None:
        call_id = str(item.get("call_id") or "")
        with self._lock:
            if call_id in self._started:
                return
            self._started.add(call_id)
            self._waiting.setdefault(response_id, set()).add(call_id)
        self._submit(self._tool, response_id, call_id, str(item.get("name") or ""), str(item.get("arguments") or ""))

    def _tool(self, response_id: str, call_id: str, name: str, arguments: str) -> None:
        then: Then = "respond"
        detail = ""
        if self.calls is not None and self.calls.handles(name):
            step = self.calls.run(name, call_id, arguments)
            outcome, then, detail = step.outcome, step.then, step.detail
        else:
            assert self.tools is not None
            outcome = self.tools.run(name, call_id, arguments)
        sent = self._try_send(
            {
                "type": "conversation.item.create",
                "item": {"type": "function_call_output", "call_id": call_id, "output": outcome.output},
            }
        )
        self._mark("listener.tool", {**outcome.record(), "response_id": response_id, "sent": sent})
        if then == "transferred" and self._ended is not None:
            self._ended("transferred", detail)  # the service ends the session; its close means this
        with self._lock:
            if then != "respond":
                self._leaving[response_id] = (then, detail)
            waiting = self._waiting.get(response_id, set())
            waiting.discard(call_id)
            ready = not waiting and response_id in self._done
            if ready:
                self._waiting.pop(response_id, None)
                self._done.discard(response_id)
        if ready:
            self._after(response_id)

    def _response_done(self, response_id: str) -> None:
        with self._lock:
            if response_id not in self._waiting:
                return  # a response without tool calls
            ready = not self._waiting[response_id]
            if ready:
                del self._waiting[response_id]
            else:
                self._done.add(response_id)
        if ready:
            self._after(response_id)

    def _after(self, response_id: str) -> None:
        """A response is done and its tools have answered: the next response, or the call's end."""
        with self._lock:
            then, detail = self._leaving.pop(response_id, ("respond", ""))
        if then == "respond":
            self._try_send({"type": "response.create"})
        elif then == "hang_up":
            self._submit(self._end_call, detail)

    # ---- the built-in end_call: hang up after the goodbye has played ------------------------------
    def _audio(self, kind: str, response_id: str) -> None:
        with self._lock:
            if kind == "output_audio_buffer.started":
                self._playing.add(response_id)
                self._quiet.clear()
            elif kind in ("output_audio_buffer.stopped", "output_audio_buffer.cleared"):
                self._playing.discard(response_id)
                if not self._playing:
                    self._quiet.set()

    def _end_call(self, detail: str) -> None:
        # output_audio_buffer.stopped comes once the service has played a response's audio out
        self._quiet.wait(END_AUDIO_WAIT)
        with self._lock:
            if self._closing:
                return
        self._hangup("assistant_hangup", detail)

    # ---- guardrail ----------------------------------------------------------------------------------
    def _check(self, response_id: str, item_id: str, text: str, final: bool) -> None:
        assert self.guardrail is not None
        if response_id in self._blocked:
            return
        hit = self.guardrail.match(text)
        if hit is not None:  # acted on off the reader's thread: a hang-up is an HTTP request
            self._submit(self._hit, response_id, item_id, hit[0], hit[1])
            return
        if self.guardrail.hook is not None:
            with self._lock:
                busy = item_id in self._hooked
                if not busy:
                    self._hooked[item_id] = len(text)
            if not busy or final:  # one hook call at a time per item; the final text always gets one
                self._submit(self._ask_hook, response_id, item_id, text, final)

    def _ask_hook(self, response_id: str, item_id: str, text: str, final: bool) -> None:
        assert self.guardrail is not None
        reason = self.guardrail.ask_hook(text)
        with self._lock:
            self._hooked.pop(item_id, None)
        if reason is not None:
            self._hit(response_id, item_id, f"hook: {reason}"[:200], None)

    def _hit(self, response_id: str, item_id: str, rule: str, matched: str | None) -> None:
        assert self.guardrail is not None
        with self._lock:
            if response_id in self._blocked:
                return
            self._blocked.add(response_id)
            self.hits += 1
            hits = self.hits
        hang_up = hits == self.guardrail.max_hits  # once; 0 never
        # Cancel the words, then the audio already queued for the browser (WebRTC only).
        cancelled = self._try_send({"type": "response.cancel", "response_id": response_id})
        self._try_send({"type": "output_audio_buffer.clear"})
        notice = self.guardrail.notice
        if notice:
            self._try_send(
                {
                    "type": "conversation.item.create",
                    "item": {
                        "type": "message",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": notice}],
                    },
                }
            )
        self._mark(
            "listener.guardrail",
            {
                "response_id": response_id,
                "item_id": item_id,
                "rule": rule,
                "matched": matched,
                "hits": hits,
                "action": "cancel+hangup" if hang_up else "cancel",
                "sent": cancelled,
                "notice": notice or None,
            },
        )
        if hang_up:
            self._hangup("guardrail", f"output guardrail: {hits} hits")

    # ---- plumbing -------------------------------------------------------------------------------------
    def _submit(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            future = self._pool.submit(self._guarded, fn, *args)
        except RuntimeError:  # closed: the listener is finishing
            return
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._forget)

    def _forget(self, future: Future) -> None:
        with self._lock:
            self._futures.discard(future)

    @staticmethod
    def _guarded(fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:  # a control step must never take the listener down
            log.exception("call control step failed")

    def _try_send(self, message: dict[str, Any]) -> bool:
        try:
            self._send(message)
            return True
        except Exception as exc:  # the socket dropped: the archive row says the message was not sent
            log.warning("sideband send of %s failed: %s", message.get("type"), type(exc).__name__)
            return False
