"""One realtime call: its session, peer connection, data channel, sideband observers and turns."""

from __future__ import annotations

import asyncio
import json
import logging
import time

from aiohttp import web
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError

from . import events as ev
from .audio import RATE, EnergyVad, ReplyAudioTrack, frame_rms, speech_pcm
from .conversation import Conversation, content_problem, item_text
from .ids import new_id
from .meter import SPEECH_CHARS_PER_SECOND, UsageMeter, fit
from .overrides import Problem, ResponseSpec, check, resolve
from .replies import (
    SPEECH_TRANSCRIPT,
    asks_history,
    history_reply,
    instructed,
    padded,
    reply_for,
    tool_reply,
    tool_request,
)

log = logging.getLogger("realtime-emulator")

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001


class Observer:
    """A sideband WebSocket: its own queue keeps events in order and lets close follow them."""

    def __init__(self, ws: web.WebSocketResponse, transport, drop_after: int | None) -> None:
        self.ws = ws
        self.transport = transport
        self.drop_after = drop_after
        self.sent = 0
        self.queue: asyncio.Queue = asyncio.Queue()
        self.task: asyncio.Task | None = None
        self.close_code: int | None = None

    async def pump(self) -> None:
        while True:
            item = await self.queue.get()
            if isinstance(item, int):  # a close code: everything before it has been sent
                self.close_code = item  # the handler closes, once it no longer reads
                return
            try:
                await self.ws.send_str(json.dumps(item))
            except (ConnectionError, RuntimeError):
                return
            self.sent += 1
            if self.drop_after is not None and self.sent >= self.drop_after:
                # A dropped connection, not a close handshake: the peer sees an abnormal end.
                if self.transport is not None:
                    self.transport.abort()
                return


class Call:
    def __init__(self, call_id: str, session: dict, webrtc_filter: bool, session_max_seconds: float) -> None:
        self.call_id = call_id
        self.session = session
        self.session_id = new_id("sess")
        self.webrtc_filter = webrtc_filter
        self.conversation_id = new_id("conv")
        self.state = "live"
        self.end_reason: str | None = None
        self.started = time.time()
        self.events = 0
        self.channel_messages = 0
        self.client_events = 0
        self.observers: list[Observer] = []
        self.pc: RTCPeerConnection | None = None
        self.track: ReplyAudioTrack | None = None
        self.channel = None
        self.channel_label: str | None = None
        self._channel_pending: list[dict] = []
        self._last_item_id: str | None = None
        self._last_user_text: str | None = None
        self.meter = UsageMeter()
        self.conversation = Conversation()
        self._turn_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()
        self.audio_frames_in = 0
        self.speech_segments = 0
        self.max_rms_in = 0.0
        self.responses = 0
        self._vad = EnergyVad()
        self._speech_item: str | None = None
        self._speech_started_ms = 0
        self.closing: asyncio.Future | None = None  # the peer connection's close, once ended
        self.delta_interval = 0.0  # seconds between transcript deltas when there is no audio to pace them
        self._tool_names: dict[str, str] = {}  # call_id -> the tool the model called, until its output comes
        self._tool_output: tuple[str, str] | None = None  # (tool, output) the next response answers with
        self._active: str | None = None  # the response in progress (response.cancel stops it)
        self._cancelled = False
        self.tool_calls = 0
        self.cancelled_responses = 0
        self.expires_at = 0
        self._deadline: asyncio.TimerHandle | None = None
        self.set_session_max(session_max_seconds)

    # -- plumbing -------------------------------------------------------------------------
    def spawn(self, coro) -> asyncio.Task:
        """A task that belongs to the call: cancelled when the call ends, failures logged."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)
        return task

    # -- the session cap (the service's 30 or 60 minutes) -----------------------------------
    def set_session_max(self, seconds: float) -> None:
        """The session ends `seconds` after it started (at once if that is past): `expires_at`."""
        self.session_max_seconds = seconds
        self.expires_at = int(self.started + seconds)
        if self._deadline is not None:
            self._deadline.cancel()
        delay = max(0.0, self.started + seconds - time.time())
        self._deadline = asyncio.get_running_loop().call_later(delay, lambda: self.spawn(self._expire()))

    async def _expire(self) -> None:
        """As the service does at its cap: an `error` (session_expired), then the end (sideband 1001)."""
        if self.state != "live":
            return
        self.emit(ev.session_expired_event(self.session_max_seconds))
        if self.channel is not None and self.channel.readyState == "open":
            # an unfiltered data channel carries the error too: let it out before the peer connection closes
            for _ in range(50):
                if self.channel.bufferedAmount == 0:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.1)
        await self.end(CLOSE_GOING_AWAY, "max_duration")

    def info(self) -> dict:
        return {
            "call_id": self.call_id,
            "state": self.state,
            "expires_at": self.expires_at,
            "events": self.events,
            "observers": len(self.observers),
            "end_reason": self.end_reason,
            "channel_label": self.channel_label,
            "channel_messages": self.channel_messages,
            "client_events": self.client_events,
            "responses": self.responses,
            "audio_frames_in": self.audio_frames_in,
            "speech_segments": self.speech_segments,
            "max_rms_in": round(self.max_rms_in, 1),
            "audio_frames_out": self.track.frames_sent if self.track else 0,
            "speech_frames_out": self.track.speech_frames_sent if self.track else 0,
            "tool_calls": self.tool_calls,
            "cancelled_responses": self.cancelled_responses,
            "instructions": self.session.get("instructions"),  # what the model follows now
        }

    def session_view(self) -> dict:
        return ev.session_object(self.session, self.session_id, self.expires_at)

    def emit(self, event: dict) -> None:
        """Every server event: all sideband observers, and the data channel (filtered)."""
        if self.state != "live":
            return
        self.events += 1
        for obs in self.observers:
            obs.queue.put_nowait(event)
        self._to_channel(event)

    def _to_channel(self, event: dict) -> None:
        if self.webrtc_filter and not ev.browser_sees(event):
            return
        if self.channel is None or self.channel.readyState != "open":
            if self.pc is not None:
                self._channel_pending.append(event)
            return
        self.channel.send(json.dumps(event))
        self.channel_messages += 1

    # -- sideband -------------------------------------------------------------------------
    def attach(self, ws: web.WebSocketResponse, transport, drop_after: int | None) -> Observer:
        obs = Observer(ws, transport, drop_after)
        self.observers.append(obs)
        obs.queue.put_nowait(ev.event("session.created", session=self.session_view()))
        obs.task = asyncio.ensure_future(obs.pump())
        return obs

    def detach(self, obs: Observer) -> None:
        if obs in self.observers:
            self.observers.remove(obs)
        if obs.task and not obs.task.done():
            obs.task.cancel()

    # -- WebRTC ---------------------------------------------------------------------------
    def attach_peer(self, pc: RTCPeerConnection, track: ReplyAudioTrack) -> None:
        self.pc, self.track = pc, track

        @pc.on("datachannel")
        def on_datachannel(channel) -> None:
            # Whatever its label: the service uses the browser's channel ("oai-events" or another).
            self.channel = channel
            self.channel_label = channel.label

            @channel.on("message")
            def on_message(message) -> None:
                if isinstance(message, str):
                    self.handle_client_event(message)

            if channel.readyState == "open":
                self._channel_open()
            else:
                channel.on("open", self._channel_open)

        # aiortc announced the remote tracks during setRemoteDescription, before this call existed.
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "audio" and transceiver.receiver.track is not None:
                self.spawn(self._listen(transceiver.receiver.track))

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed") and self.state == "live":
                await self.end(CLOSE_NORMAL, "peer_closed")

    def _channel_open(self) -> None:
        self._to_channel(ev.event("session.created", session=self.session_view()))
        pending, self._channel_pending = self._channel_pending, []
        for event in pending:
            self._to_channel(event)

    async def _listen(self, remote) -> None:
        while self.state == "live":
            try:
                frame = await remote.recv()
            except MediaStreamError:
                return
            self.audio_frames_in += 1
            rms = frame_rms(frame)
            self.max_rms_in = max(self.max_rms_in, rms)
            if self.session.get("audio", {}).get("input", {}).get("turn_detection") is None:
                continue  # turn detection off: the service waits for the client to commit
            ms = round(frame.samples * 1000 / frame.sample_rate)
            change = self._vad.feed(rms, ms)
            if change == "start":
                self._speech_item = new_id("item")
                self._speech_started_ms = max(0, self._vad.ms - 300)
                self.emit(
                    ev.event(
                        "input_audio_buffer.speech_started",
                        audio_start_ms=self._speech_started_ms,
                        item_id=self._speech_item,
                    )
                )
            elif change == "stop" and self._speech_item:
                item_id, self._speech_item = self._speech_item, None
                self.speech_segments += 1
                self.spawn(self.speech_turn(item_id, self._speech_started_ms, self._vad.ms))

    async def speech_turn(self, item_id: str, start_ms: int, end_ms: int, words: str = SPEECH_TRANSCRIPT) -> None:
        """A spoken turn from speech_stopped on: the item, its transcript (`words`), the answer."""
        self.emit(ev.event("input_audio_buffer.speech_stopped", audio_end_ms=end_ms, item_id=item_id))
        self.emit(ev.event("input_audio_buffer.committed", item_id=item_id, previous_item_id=self._last_item_id))
        self._add_item(ev.user_audio_item(item_id, None))
        self.emit(
            ev.event(
                "conversation.item.input_audio_transcription.completed",
                item_id=item_id,
                content_index=0,
                transcript=words,
                usage={"type": "duration", "seconds": round((end_ms - start_ms) / 1000, 3)},
            )
        )
        self.meter.user_audio((end_ms - start_ms) / 1000)
        self.conversation.add(ev.user_audio_item(item_id, words))  # the model hears the words
        self._last_user_text = words
        td = self.session.get("audio", {}).get("input", {}).get("turn_detection") or {}
        if td.get("create_response", True):
            await self.respond(about=words)  # this turn's words, whatever is typed meanwhile

    # -- client events (data channel and sideband) ----------------------------------------
    def handle_client_event(self, raw: str) -> None:
        if self.state != "live":
            return
        self.client_events += 1
        try:
            msg = json.loads(raw)
            kind = msg["type"]
        except (ValueError, KeyError, TypeError):
            self.emit(ev.error_event("The client event is not valid JSON with a type.", "invalid_json"))
            return
        client_event_id = msg.get("event_id")
        if kind == "session.update":
            update = msg.get("session") or {}
            if not isinstance(update, dict) or update.get("type", "realtime") != "realtime":
                self.emit(
                    ev.error_event(
                        "session.type must be 'realtime'.",
                        "invalid_value",
                        client_event_id=client_event_id,
                        param="session.type",
                    )
                )
                return
            update.pop("model", None)  # the model of a call cannot change
            self.session = ev.merge(self.session, update)
            self.emit(ev.event("session.updated", session=self.session_view()))
        elif kind == "conversation.item.create":
            item = msg.get("item") or {}
            if item.get("type") == "function_call_output":
                self._tool_result(item, client_event_id)
                return
            if item.get("type") != "message" or item.get("role") not in ("user", "system", "assistant"):
                self.emit(
                    ev.error_event(
                        "The emulator accepts message items only.",
                        "unsupported",
                        client_event_id=client_event_id,
                        param="item.type",
                    )
                )
                return
            problem = content_problem(item)
            if problem is not None:
                self._refuse(problem, client_event_id)
                return
            item = dict(item, id=item.get("id") or new_id("item"), object="realtime.item", status="completed")
            self._add_item(item)
            if item["role"] == "user":
                self._last_user_text = item_text(item)
        elif kind == "conversation.item.truncate":
            item_id, index, end_ms = msg.get("item_id"), msg.get("content_index"), msg.get("audio_end_ms")
            problem = self.conversation.truncate(item_id, index, end_ms)
            if problem is not None:
                self._refuse(problem, client_event_id)
                return
            self.emit(
                ev.event("conversation.item.truncated", item_id=item_id, content_index=index, audio_end_ms=end_ms)
            )
        elif kind == "response.create":
            params = msg.get("response") or {}
            problem = check(params)
            if problem is not None:
                self._refuse(problem, client_event_id)
                return
            self.spawn(self.respond(params=params, about=self._last_user_text))
        elif kind == "response.cancel":
            rid = msg.get("response_id")
            if self._active is None or (rid and rid != self._active):
                self.emit(
                    ev.error_event(
                        "There is no active response to cancel.",
                        "response_cancel_not_active",
                        client_event_id=client_event_id,
                    )
                )
            else:
                self._cancelled = True  # the response loop stops at its next delta
        elif kind in (
            "input_audio_buffer.clear",
            "input_audio_buffer.commit",
            "output_audio_buffer.clear",
        ):
            if kind == "output_audio_buffer.clear" and self.track:
                self.track.clear()
        else:
            self.emit(
                ev.error_event(
                    f"The emulator does not implement client event {kind!r}.",
                    "unsupported_event",
                    client_event_id=client_event_id,
                    param="type",
                )
            )

    def _refuse(self, problem: Problem, client_event_id: str | None) -> None:
        self.emit(ev.error_event(problem.message, problem.code, client_event_id=client_event_id, param=problem.param))

    def _tool_result(self, item: dict, client_event_id: str | None) -> None:
        call_id = item.get("call_id")
        if call_id not in self._tool_names:
            self.emit(
                ev.error_event(
                    "No function call with this call_id awaits an output.",
                    "invalid_value",
                    client_event_id=client_event_id,
                    param="item.call_id",
                )
            )
            return
        output = str(item.get("output") or "")
        self._add_item(ev.function_call_output_item(item.get("id") or new_id("item"), call_id, output))
        self._tool_output = (self._tool_names.pop(call_id), output)

    def _add_item(self, item: dict) -> None:
        if item.get("role") == "user":
            for part in item.get("content") or []:
                if isinstance(part, dict) and part.get("type") == "input_text":
                    self.meter.user_text(str(part.get("text") or ""))
        self.conversation.add(item)
        previous, self._last_item_id = self._last_item_id, item["id"]
        self.emit(ev.event("conversation.item.added", previous_item_id=previous, item=item))
        self.emit(ev.event("conversation.item.done", previous_item_id=previous, item=item))

    # -- responses ------------------------------------------------------------------------
    async def script(self, responses: int, text: str | None, pad_bytes: int | None) -> None:
        """Admin: n turns, each a user text item and the response to it."""
        for n in range(responses):
            user_text = text or f"Scripted question {n + 1}"
            self._add_item(ev.user_text_item(new_id("item"), user_text))
            self._last_user_text = user_text
            # a tool trigger is answered by the model's function call, not by a scripted reply
            reply = None if tool_request(user_text, self.session.get("tools")) else self._answer(user_text)
            if reply is not None and pad_bytes and n == 0:
                reply = padded(reply, pad_bytes)
            await self.respond(reply=reply)

    def _answer(self, user_text: str | None) -> str:
        """The reply to the user's last text: the history trigger sees the conversation."""
        if asks_history(user_text):
            return history_reply(self.conversation.first_user_text(unless=asks_history))
        return reply_for(user_text)

    async def respond(self, reply: str | None = None, params: dict | None = None, about: str | None = None) -> None:
        """One response; `params` are a response.create's own (already checked). It answers `about`:
        the user's last words when it was asked for (a spoken turn's, or the text before a client's
        response.create), not whatever came while it waited for the response before it."""
        async with self._turn_lock:
            if self.state != "live":
                return
            text = self._last_user_text if about is None else about
            spec = resolve(self.session, params or {})
            call = tool_request(text, self.session.get("tools")) if reply is None else None
            if reply is None and self._tool_output is not None:
                reply = tool_reply(*self._tool_output)
                self._tool_output = None
            elif call is not None:
                self._last_user_text = None  # one call per user turn; the next response uses its output
                await self._call_tool(*call, spec)
                return
            elif reply is None:
                reply = self._answer(text)
            await self._respond(instructed(reply, spec.instructions) if spec.overridden else reply, spec)

    async def _call_tool(self, name: str, arguments: str, spec: ResponseSpec) -> None:
        """A response whose only output is a function call, in the service's order."""
        rid, item_id, call_id = new_id("resp"), new_id("item"), new_id("call")
        self.responses += 1
        self.tool_calls += 1
        self._tool_names[call_id] = name
        self.emit(
            ev.event(
                "response.created",
                response=ev.response_object(rid, self.conversation_id, "in_progress", spec, [], None),
            )
        )
        item = ev.function_call_item(item_id, call_id, name, "", "in_progress")
        self.emit(ev.event("response.output_item.added", response_id=rid, output_index=0, item=item))
        self.conversation.add(item)
        previous, self._last_item_id = self._last_item_id, item_id
        self.emit(ev.event("conversation.item.added", previous_item_id=previous, item=item))
        common = {"response_id": rid, "item_id": item_id, "output_index": 0, "call_id": call_id}
        for i in range(0, max(1, len(arguments)), 16):
            self.emit(ev.event("response.function_call_arguments.delta", **common, delta=arguments[i : i + 16]))
            await asyncio.sleep(0)
        self.emit(ev.event("response.function_call_arguments.done", **common, name=name, arguments=arguments))
        done_item = ev.function_call_item(item_id, call_id, name, arguments, "completed")
        self.emit(ev.event("response.output_item.done", response_id=rid, output_index=0, item=done_item))
        self.emit(ev.event("conversation.item.done", previous_item_id=previous, item=done_item))
        self.conversation.add(done_item)
        # a function call is a text response: its arguments are the output text it is billed for
        usage = self.meter.response(spec.instructions, arguments, False)
        self.emit(
            ev.event(
                "response.done",
                response=ev.response_object(rid, self.conversation_id, "completed", spec, [done_item], usage),
            )
        )
        self.emit(ev.event("rate_limits.updated", rate_limits=ev.rate_limits(usage["total_tokens"])))

    async def _respond(self, text: str, spec: ResponseSpec) -> None:
        audio = "audio" in spec.modalities
        full = text
        text = fit(full, audio, spec.max_output_tokens)  # the model stops at max_output_tokens
        rid, item_id = new_id("resp"), new_id("item")
        common = {"response_id": rid, "item_id": item_id, "output_index": 0, "content_index": 0}
        self.responses += 1
        self._active, self._cancelled = rid, False
        self.emit(
            ev.event(
                "response.created",
                response=ev.response_object(rid, self.conversation_id, "in_progress", spec, [], None),
            )
        )
        item = ev.assistant_item(item_id, "in_progress", audio, None)
        self.emit(ev.event("response.output_item.added", response_id=rid, output_index=0, item=item))
        self.conversation.add(item)
        previous, self._last_item_id = self._last_item_id, item_id
        self.emit(ev.event("conversation.item.added", previous_item_id=previous, item=item))
        part_type = "audio" if audio else "text"
        self.emit(
            ev.event(
                "response.content_part.added",
                **common,
                part={"type": part_type, "transcript": ""} if audio else {"type": "text", "text": ""},
            )
        )
        deltas = _deltas(text)
        interval = self.delta_interval
        spoken_ms = round(len(text) * 1000 / SPEECH_CHARS_PER_SECOND)  # as usage bills it, without media
        if audio:
            if self.track is not None:  # a call without media (admin) has nobody to speak to
                pcm = await asyncio.get_running_loop().run_in_executor(None, speech_pcm, text)
                self.track.play(pcm)
                spoken_ms = len(pcm) * 1000 // RATE
                # the words stream ahead of the audio (over half its length), as a generating model's do
                interval = min(0.1, len(pcm) / RATE / 2 / len(deltas))
            self.emit(ev.event("output_audio_buffer.started", response_id=rid))
        delta_type = "response.output_audio_transcript.delta" if audio else "response.output_text.delta"
        said = ""
        for delta in deltas:
            if self._cancelled:
                break
            self.emit(ev.event(delta_type, **common, delta=delta))
            said += delta
            await asyncio.sleep(interval)
        cancelled = self._cancelled
        if cancelled:  # what was said so far is all there is; the audio stops with it
            spoken_ms = round(spoken_ms * len(said) / len(text)) if text else 0
            text = said
            self.cancelled_responses += 1
            if self.track is not None:
                self.track.clear()
        if audio:
            self.emit(ev.event("response.output_audio_transcript.done", **common, transcript=text))
        else:
            self.emit(ev.event("response.output_text.done", **common, text=text))
        self.emit(
            ev.event(
                "response.content_part.done",
                **common,
                part={"type": "audio", "transcript": text} if audio else {"type": "text", "text": text},
            )
        )
        status = "cancelled" if cancelled else "incomplete" if text != full else "completed"
        done_item = ev.assistant_item(item_id, "completed" if status == "completed" else "incomplete", audio, text)
        self.emit(ev.event("response.output_item.done", response_id=rid, output_index=0, item=done_item))
        self.emit(ev.event("conversation.item.done", previous_item_id=previous, item=done_item))
        self.conversation.add(done_item, spoken_ms if audio else None)
        usage = self.meter.response(spec.instructions, text, audio)
        self._active = None
        self.emit(
            ev.event(
                "response.done",
                response=ev.response_object(rid, self.conversation_id, status, spec, [done_item], usage),
            )
        )
        self.emit(ev.event("rate_limits.updated", rate_limits=ev.rate_limits(usage["total_tokens"])))
        if audio:
            if self.track is not None:
                await self.track.drained()
            self.emit(ev.event("output_audio_buffer.stopped", response_id=rid))

    # -- end ------------------------------------------------------------------------------
    async def end(self, code: int, reason: str) -> bool:
        """End the call once: sideband observers get `code` after their pending events."""
        if self.state != "live":
            return False
        self.state = "ended"
        self.end_reason = reason
        if self._deadline is not None:
            self._deadline.cancel()
        for obs in list(self.observers):
            obs.queue.put_nowait(code)
        if self.track is not None:
            self.track.stop()
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        if self.pc is not None:
            # Closing the peer connection takes a while; the caller (hang-up) need not wait.
            self.closing = asyncio.ensure_future(self.pc.close())
            self.closing.add_done_callback(_log_failure)
        return True


def _deltas(text: str, max_deltas: int = 24) -> list[str]:
    """Split a reply into word-aligned deltas whose concatenation is the text."""
    words = text.split(" ")
    per = max(1, -(-len(words) // max_deltas))
    chunks = [" ".join(words[i : i + per]) for i in range(0, len(words), per)]
    return [c if i == 0 else " " + c for i, c in enumerate(chunks)]


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("call task failed", exc_info=task.exception())
