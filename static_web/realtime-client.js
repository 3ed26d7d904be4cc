// Embeddable browser client for the realtime gateway (Azure Functions) over WebRTC.
//
//   import { RealtimeClient } from "./realtime-client.js";
//   const client = new RealtimeClient({ gateway: "https://my-func.azurewebsites.net" });
//   client.addEventListener("transcript", (e) => console.log(e.detail));
//   await client.connect();  client.sendText("Hello");  client.setMuted(true);  await client.hangup();
//
// The browser never holds a token: the gateway takes the SDP offer and returns the answer.
// Only events that pass `webrtcfilter=on` are relied upon (session.*, response.done and error
// never reach the data channel), so everything here is driven by that short list.

export const SERVICE_CHANNEL_LABEL = "oai-events";
export const SEED_CHANNEL_LABEL = "realtime-channel";
const ACCEPTED_LABELS = new Set([SERVICE_CHANNEL_LABEL, SEED_CHANNEL_LABEL]);

// Error kinds a page maps to messages. Kept as data so embedders can switch on them.
export const ErrorKind = Object.freeze({
  UNSUPPORTED: "unsupported",
  MIC_DENIED: "mic-denied",
  MIC_MISSING: "mic-missing",
  MIC_BUSY: "mic-busy",
  GATEWAY_UNREACHABLE: "gateway-unreachable",
  ORIGIN_NOT_ALLOWED: "origin-not-allowed",
  FORBIDDEN: "forbidden",
  THROTTLED: "throttled",
  SERVICE_ERROR: "service-error",
  TIMEOUT: "timeout",
  BAD_REQUEST: "bad-request",
  MEDIA_FAILED: "media-failed",
  CONNECTION_LOST: "connection-lost",
  NOT_RECORDED: "not-recorded",
  NOT_CONNECTED: "not-connected",
});

export class RealtimeError extends Error {
  constructor(kind, message, { status = 0, code = "", requestId = "", retryAfter = null, cause } = {}) {
    super(message, cause ? { cause } : undefined);
    this.name = "RealtimeError";
    this.kind = kind;
    this.status = status;
    this.code = code;
    this.requestId = requestId;
    this.retryAfter = retryAfter; // seconds, from the Retry-After header the gateway sends with 429
  }
}

/** Normalise a gateway base: "" means same origin; a trailing slash or "/api" is tolerated. */
export function gatewayBase(gateway) {
  let base = (gateway || "").trim().replace(/\/+$/, "");
  if (base.endsWith("/api")) base = base.slice(0, -4);
  return base;
}

function mark(name) {
  // performance marks: visible in DevTools and readable by tests without any test-only hook.
  try { performance.mark(`realtime:${name}`); } catch { /* marks are best effort */ }
}

/** Retry-After as the gateway sends it: whole seconds (null when absent or not exposed). */
function parseRetryAfter(value) {
  const seconds = value ? Number(value) : NaN;
  return Number.isFinite(seconds) ? Math.max(0, Math.round(seconds)) : null;
}

function kindForStatus(status, code) {
  // A refused origin's 403 is readable only same-origin (cross-origin it is a CORS failure).
  if (code === "origin_not_allowed") return ErrorKind.ORIGIN_NOT_ALLOWED;
  if (status === 401 || status === 403) return ErrorKind.FORBIDDEN;
  if (status === 429) return ErrorKind.THROTTLED;
  if (status === 504) return ErrorKind.TIMEOUT;
  if (status >= 400 && status < 500) return ErrorKind.BAD_REQUEST;
  return ErrorKind.SERVICE_ERROR;
}

/**
 * A non-2xx gateway response as a RealtimeError. The body is {"error": {code, message,
 * request_id}}; throttling's wait comes only as the Retry-After header.
 */
async function errorFromResponse(response, what) {
  let error = {};
  try {
    error = (await response.json()).error || {};
  } catch { /* not JSON (a proxy page, an empty body): the status alone decides */ }
  const code = String(error.code || "");
  return new RealtimeError(kindForStatus(response.status, code),
    String(error.message || `${what} failed with HTTP ${response.status}`), {
      status: response.status,
      code,
      requestId: String(error.request_id || response.headers.get("x-request-id") || ""),
      retryAfter: parseRetryAfter(response.headers.get("retry-after")),
    });
}

function micError(err) {
  const name = err && err.name;
  if (name === "NotAllowedError" || name === "SecurityError" || name === "PermissionDeniedError") {
    return new RealtimeError(ErrorKind.MIC_DENIED, "microphone permission denied", { cause: err });
  }
  if (name === "NotFoundError" || name === "OverconstrainedError" || name === "DevicesNotFoundError") {
    return new RealtimeError(ErrorKind.MIC_MISSING, "no microphone found", { cause: err });
  }
  if (name === "NotReadableError" || name === "AbortError" || name === "TrackStartError") {
    return new RealtimeError(ErrorKind.MIC_BUSY, "the microphone could not be started", { cause: err });
  }
  return new RealtimeError(ErrorKind.MIC_MISSING, `microphone unavailable: ${err && err.message}`, { cause: err });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * One conversation with the gateway. Events (CustomEvent, data in `detail`):
 *  state       {state, previous}   idle|starting|connecting|recorder-check|live|ending|ended|failed
 *  recorder    {state, waitedMs}   waiting|attached|unrecorded
 *  transcript  {role, itemId, delta, text, done}  role user|assistant; delta while streaming
 *  speech      {who, speaking}     who user (VAD) | assistant (audio playing)
 *  datachannel {label}             the data channel opened
 *  localstream {stream}            microphone stream (for a level meter)
 *  remotestream {stream}           the model's audio
 *  serverevent {event}             every data-channel event, for embedders that want more
 *  error       RealtimeError fields + {fatal}
 */
export class RealtimeClient extends EventTarget {
  constructor(options = {}) {
    super();
    this.gateway = gatewayBase(options.gateway);
    this.recorderWaitSeconds = options.recorderWaitSeconds ?? 15;
    this.unrecordedPolicy = options.unrecordedPolicy === "end" ? "end" : "continue";
    this.channelLabel = ACCEPTED_LABELS.has(options.channelLabel) ? options.channelLabel : SERVICE_CHANNEL_LABEL;
    this.rtcConfiguration = options.rtcConfiguration || {};
    this.audioElement = options.audioElement || null;
    // The gateway gives /connect 2 x HTTP_TIMEOUT_SECONDS + 5 s (45 s with the default 20 s).
    this.connectTimeoutMs = options.connectTimeoutMs ?? 45000;
    this.mediaTimeoutMs = options.mediaTimeoutMs ?? 15000;
    // 0: post the offer at once, as Microsoft's sample does (the service's ICE finds the browser from
    // its connectivity checks); a few hundred ms puts host candidates in the offer for a peer that needs them.
    this.iceGatherMs = options.iceGatherMs ?? 0;
    this.fetch = options.fetch || ((...args) => fetch(...args));
    this._reset();
  }

  _reset() {
    this.state = "idle";
    this.callId = null;
    this._capability = null;  // x-call-capability: proves to the gateway that this page started the call
    this._losing = false;
    this.recorder = null;
    this.muted = this.muted || false;
    this._pc = null;
    this._channels = new Set();
    this._stream = null;
    this._firstTranscript = false;
    this._assistantText = new Map();  // item id -> the assistant's text streamed so far
    this._disconnectTimer = null;
    this._abort = null;
    this._openChannel = null;
    this._localTurns = 0;
  }

  get url() {
    return {
      connect: `${this.gateway}/api/connect`,
      call: (id) => `${this.gateway}/api/calls/${encodeURIComponent(id)}`,
      hangup: (id) => `${this.gateway}/api/calls/${encodeURIComponent(id)}/hangup`,
    };
  }

  _emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }

  _setState(state) {
    if (state === this.state) return;
    const previous = this.state;
    this.state = state;
    mark(`state-${state}`);
    this._emit("state", { state, previous });
  }

  _fail(error, { fatal = true } = {}) {
    const e = error instanceof RealtimeError ? error
      : new RealtimeError(ErrorKind.SERVICE_ERROR, String((error && error.message) || error), { cause: error });
    this._emit("error", { kind: e.kind, message: e.message, status: e.status, code: e.code,
      requestId: e.requestId, retryAfter: e.retryAfter, fatal, error: e });
    return e;
  }

  /** Start a call. Resolves with the call id once the call is live (recorded, or unrecorded by policy). */
  async connect({ stream } = {}) {
    if (!["idle", "ended", "failed"].includes(this.state)) throw new Error(`already ${this.state}`);
    this._reset();
    this._abort = new AbortController();
    mark("connect");
    try {
      this._checkSupport();
      this._setState("starting");
      const track = await this._getMicrophone(stream);
      this._setState("connecting");
      const pc = this._createPeer(track);
      const channelOpen = this._openDataChannel(pc);
      await this._exchangeOffer(pc);
      this._setState("recorder-check");
      const [recorder] = await Promise.all([this._waitForRecorder(), this._waitForChannel(channelOpen)]);
      if (this.state !== "recorder-check") throw this._cancelled();
      if (recorder === "unrecorded" && this.unrecordedPolicy === "end") await this._endUnrecorded();
      this._applyMute();
      this._setState("live");
      return this.callId;
    } catch (err) {
      throw await this._connectFailed(err);
    }
  }

  _checkSupport() {
    if (typeof RTCPeerConnection === "undefined" || !navigator.mediaDevices) {
      throw new RealtimeError(ErrorKind.UNSUPPORTED, "this browser has no WebRTC (or the page is not on https)");
    }
  }

  /** The microphone's track, switched off: recorded from the first word, nothing leaves it before. */
  async _getMicrophone(stream) {
    try {
      this._stream = stream || await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
    } catch (err) {
      throw micError(err);
    }
    const track = this._stream.getAudioTracks()[0];
    if (!track) throw new RealtimeError(ErrorKind.MIC_MISSING, "the microphone stream has no audio track");
    track.enabled = false;
    this._emit("localstream", { stream: this._stream });
    return track;
  }

  _createPeer(track) {
    const pc = new RTCPeerConnection(this.rtcConfiguration);
    this._pc = pc;
    pc.addTrack(track, this._stream);
    pc.ontrack = (ev) => this._onTrack(ev);
    pc.ondatachannel = (ev) => this._adoptChannel(ev.channel);
    pc.onconnectionstatechange = () => this._onConnectionState();
    return pc;
  }

  /** Our data channel (created before the offer so the offer carries it); resolves once open. */
  _openDataChannel(pc) {
    return this._adoptChannel(pc.createDataChannel(this.channelLabel));
  }

  /** Offer to the gateway, answer from it; sets `callId`. */
  async _exchangeOffer(pc) {
    await pc.setLocalDescription(await pc.createOffer());
    await this._gatherCandidates(pc);
    const answer = await this._postOffer(pc.localDescription.sdp);
    if (this.state !== "connecting") throw this._cancelled();
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
    mark("answer");
  }

  /** The channel opening is the first proof that media flows; the clock starts at the answer. */
  _waitForChannel(channelOpen) {
    return this._withTimeout(channelOpen, this.mediaTimeoutMs, () => new RealtimeError(ErrorKind.MEDIA_FAILED,
      "the audio connection could not be established (WebRTC blocked by the network?)"));
  }

  /** The "end" policy: hang the unrecorded call up through the gateway, then fail. */
  async _endUnrecorded() {
    this._setState("ending");  // so the channel closing under the hang-up is not "connection lost"
    await this._tellGatewayHangup();
    await this._teardown();
    this._setState("failed");
    throw new RealtimeError(ErrorKind.NOT_RECORDED,
      "the call could not be recorded and this deployment does not allow unrecorded calls");
  }

  /** Report and clean up a failed connect; a hang-up that cancelled it has already done both. */
  async _connectFailed(err) {
    const cancelled = err && err.name === "AbortError" && this.state === "ending";
    if (cancelled || this.state === "ended") return err;
    const e = this._fail(err);
    await this._teardown();
    this._setState("failed");
    return e;
  }

  _cancelled() {
    const e = new Error("connect cancelled by hang-up");
    e.name = "AbortError";
    return e;
  }

  async _gatherCandidates(pc) {
    // Host candidates in the offer (no trickle over HTTP), without waiting long for slow ones.
    if (this.iceGatherMs <= 0 || pc.iceGatheringState === "complete") return;
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, this.iceGatherMs);
      pc.addEventListener("icegatheringstatechange", () => {
        if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
      });
    });
  }

  async _postOffer(sdp) {
    const timer = setTimeout(() => this._abort.abort(new DOMException("timeout", "TimeoutError")),
      this.connectTimeoutMs);
    let response;
    try {
      response = await this.fetch(this.url.connect, {
        method: "POST",
        body: sdp,
        headers: { "Content-Type": "application/sdp", Accept: "application/sdp, application/json" },
        signal: this._abort.signal,
      });
    } catch (err) {
      if (this.state === "ending") throw this._cancelled();
      if (this._abort.signal.reason && this._abort.signal.reason.name === "TimeoutError") {
        throw new RealtimeError(ErrorKind.TIMEOUT, "the gateway did not answer in time", { cause: err });
      }
      throw await this._networkError(err);
    } finally {
      clearTimeout(timer);
    }
    if (!response.ok) throw await errorFromResponse(response, "connect");
    this.callId = response.headers.get("x-call-id");
    this._capability = response.headers.get("x-call-capability");
    mark("call-id");
    return response.text();
  }

  /**
   * fetch() gives the same TypeError for "nothing listening" and "CORS refused this origin".
   * A no-cors probe tells them apart: it succeeds (opaque) whenever the server answers at all.
   */
  async _networkError(err) {
    try {
      await this.fetch(this.url.connect, { method: "GET", mode: "no-cors", cache: "no-store" });
      return new RealtimeError(ErrorKind.ORIGIN_NOT_ALLOWED,
        "the gateway answered but refused this page's origin (CORS)", { cause: err });
    } catch {
      return new RealtimeError(ErrorKind.GATEWAY_UNREACHABLE, "the gateway could not be reached", { cause: err });
    }
  }

  _adoptChannel(channel) {
    if (!ACCEPTED_LABELS.has(channel.label) || this._channels.has(channel)) return Promise.resolve();
    this._channels.add(channel);
    channel.addEventListener("message", (ev) => this._onMessage(ev));
    channel.addEventListener("close", () => {
      this._channels.delete(channel);
      if (this._channels.size === 0) this._lost("the data channel closed");
    });
    return new Promise((resolve) => {
      if (channel.readyState === "open") { this._channelOpened(channel); resolve(); return; }
      channel.addEventListener("open", () => { this._channelOpened(channel); resolve(); }, { once: true });
    });
  }

  _channelOpened(channel) {
    if (!this._openChannel) mark("datachannel-open");
    this._openChannel = this._openChannel && this._openChannel.readyState === "open" ? this._openChannel : channel;
    this._emit("datachannel", { label: channel.label });
  }

  _onTrack(ev) {
    const stream = ev.streams[0] || new MediaStream([ev.track]);
    if (this.audioElement) {
      this.audioElement.srcObject = stream;
      const played = this.audioElement.play && this.audioElement.play();
      if (played && played.catch) played.catch(() => { /* autoplay blocked: the page shows controls */ });
    }
    this._emit("remotestream", { stream });
  }

  _onConnectionState() {
    const s = this._pc && this._pc.connectionState;
    if (s === "failed") this._lost("the network path failed");
    else if (s === "disconnected") {
      // Often transient (Wi-Fi hand-over); give ICE a few seconds to recover.
      clearTimeout(this._disconnectTimer);
      this._disconnectTimer = setTimeout(() => {
        if (this._pc && this._pc.connectionState === "disconnected") this._lost("the network path dropped");
      }, 4000);
    } else if (s === "connected") clearTimeout(this._disconnectTimer);
  }

  async _lost(reason) {
    if (!["live", "recorder-check"].includes(this.state) || this._losing) return;
    this._losing = true;
    // A call the server ended (its policy, a limit) is ended in the archive a moment later: ask why.
    const endReason = await this._endReason(1500);
    this._fail(new RealtimeError(ErrorKind.CONNECTION_LOST, `connection lost: ${reason}`, { code: endReason }));
    // Tell the gateway too (the service may already have ended it); the archive records how it ended.
    this.hangup({ reason: "lost" });
  }

  /** The gateway's `end_reason` for this call, polled for up to `waitMs`; "" when it has none. */
  async _endReason(waitMs) {
    const until = performance.now() + waitMs;
    while (this.callId && performance.now() < until) {
      try {
        const response = await this.fetch(this.url.call(this.callId), { cache: "no-store" });
        const state = response.ok ? await response.json() : {};
        if (state.state === "ended") return state.end_reason || "";
      } catch { /* asked again until the wait ends */ }
      await sleep(200);
    }
    return "";
  }

  /** Poll the call's state until the recorder is attached, or give up after recorderWaitSeconds. */
  async _waitForRecorder() {
    if (!this.callId) {
      // x-call-id not exposed (a CORS layer in front dropped it): we cannot ask; the policy decides.
      this._setRecorder("unrecorded", 0);
      return "unrecorded";
    }
    const started = performance.now();
    this._setRecorder("waiting", 0);
    let delay = 150;
    while (performance.now() - started < this.recorderWaitSeconds * 1000) {
      if (this.state !== "recorder-check") return "cancelled";
      // A failed poll (archive unreadable: 503, or a network blip) is asked again until the wait ends.
      const state = await this.callState().catch(() => null);
      if (state === "attached") {
        mark("recorder-attached");
        this._setRecorder("attached", performance.now() - started);
        return "attached";
      }
      if (state === "ended") {
        throw new RealtimeError(ErrorKind.CONNECTION_LOST, "the call ended before it started");
      }
      await sleep(delay);
      delay = Math.min(delay * 1.5, 1000);
    }
    mark("recorder-timeout");
    this._setRecorder("unrecorded", performance.now() - started);
    return "unrecorded";
  }

  _setRecorder(state, waitedMs) {
    this.recorder = state;
    this._emit("recorder", { state, waitedMs: Math.round(waitedMs) });
  }

  /**
   * The gateway's view of this call (`GET /api/calls/{id}`): "waiting" (also for a call the
   * listener has not written yet), "attached" or "ended"; null before there is a call id.
   */
  async callState() {
    if (!this.callId) return null;
    const response = await this.fetch(this.url.call(this.callId), { cache: "no-store" });
    if (!response.ok) throw await errorFromResponse(response, "call status");
    return (await response.json()).state;
  }

  _onMessage(ev) {
    let event;
    try { event = JSON.parse(ev.data); } catch { return; }
    if (!event || typeof event.type !== "string") return;
    this._emit("serverevent", { event });
    switch (event.type) {
      case "input_audio_buffer.speech_started":
        this._emit("speech", { who: "user", speaking: true }); break;
      case "input_audio_buffer.speech_stopped":
        this._emit("speech", { who: "user", speaking: false }); break;
      case "output_audio_buffer.started":
        this._emit("speech", { who: "assistant", speaking: true }); break;
      case "output_audio_buffer.stopped":
        this._emit("speech", { who: "assistant", speaking: false }); break;
      case "conversation.item.added":
      case "conversation.item.created": {
        // A spoken user turn appears here before its transcription: reserve its place in order.
        const item = event.item || {};
        const audio = (item.content || []).some((c) => c && c.type === "input_audio");
        if (item.role === "user" && audio && item.id) this._userTurn(item.id, "", false);
        // An assistant item that arrives finished was never streamed by a response: the server put
        // it in the conversation (the gateway's guardrail notice after it cancelled an answer).
        if (item.role === "assistant" && item.status === "completed" && item.id) {
          const text = (item.content || []).map((c) => (c && (c.text || c.transcript)) || "").join(" ").trim();
          if (text) this._transcript({ role: "assistant", itemId: item.id, delta: "", text, done: true, notice: true });
        }
        break;
      }
      case "conversation.item.input_audio_transcription.completed":
        this._userTurn(event.item_id, event.transcript || "", true); break;
      case "response.output_audio_transcript.delta":
      case "response.output_text.delta":
        this._assistantDelta(event.item_id, event.delta || ""); break;
      case "response.output_audio_transcript.done":
        this._assistantDone(event.item_id, event.transcript); break;
      case "response.output_text.done":
        this._assistantDone(event.item_id, event.text); break;
      default: break;
    }
  }

  /** A spoken user turn is never streamed: its place first (empty), then its whole transcription. */
  _userTurn(itemId, text, done) {
    this._transcript({ role: "user", itemId, delta: "", text, done });
  }

  _assistantDelta(itemId, delta) {
    const text = (this._assistantText.get(itemId) || "") + delta;
    this._assistantText.set(itemId, text);
    this._transcript({ role: "assistant", itemId, delta, text, done: false });
  }

  _assistantDone(itemId, text) {
    const streamed = this._assistantText.get(itemId) || "";
    this._assistantText.delete(itemId);
    this._transcript({ role: "assistant", itemId, delta: "", text: text ?? streamed, done: true });
  }

  _transcript(detail) {
    if ((detail.delta || detail.text) && !this._firstTranscript) { this._firstTranscript = true; mark("first-transcript"); }
    this._emit("transcript", detail);
  }

  /** Send a typed message and ask for a reply. */
  sendText(text) {
    const message = String(text || "").trim();
    if (!message) return;
    const channel = this._openChannel;
    if (this.state !== "live" || !channel || channel.readyState !== "open") {
      throw new RealtimeError(ErrorKind.NOT_CONNECTED, "not connected");
    }
    channel.send(JSON.stringify({
      type: "conversation.item.create",
      item: { type: "message", role: "user", content: [{ type: "input_text", text: message }] },
    }));
    channel.send(JSON.stringify({ type: "response.create" }));
    mark("text-sent");
    this._localTurns += 1;
    this._emit("transcript", { role: "user", itemId: `local-${this._localTurns}`, delta: "", text: message, done: true, typed: true });
  }

  /** Mute or unmute the microphone; while the recorder is not confirmed it stays off regardless. */
  setMuted(muted) {
    this.muted = Boolean(muted);
    this._applyMute();
  }

  _applyMute() {
    const track = this._stream && this._stream.getAudioTracks()[0];
    if (!track) return;
    const cleared = this.recorder === "attached" || (this.recorder === "unrecorded" && this.unrecordedPolicy === "continue");
    track.enabled = cleared && !this.muted && ["live", "recorder-check"].includes(this.state);
  }

  /** End the call: tell the gateway (so the archive records it), then close media. */
  async hangup({ reason = "user" } = {}) {
    if (["idle", "ended", "ending"].includes(this.state)) return;
    const failed = this.state === "failed";
    this._setState("ending");
    if (this._abort) this._abort.abort();
    if (!failed) await this._tellGatewayHangup();
    await this._teardown();
    mark(`ended-${reason}`);
    this._setState("ended");
  }

  async _tellGatewayHangup() {
    const id = this.callId;
    if (!id) return;
    // keepalive lets the POST outlive the page (pagehide); 404 means the call had already ended.
    const headers = this._capability ? { "x-call-capability": this._capability } : {};
    const told = this.fetch(this.url.hangup(id), { method: "POST", keepalive: true, headers })
      .then((r) => (r.ok || r.status === 404 ? null : errorFromResponse(r, "hang up")))
      .then((e) => { if (e) this._fail(e, { fatal: false }); })
      .catch(() => { /* closing media ends the call service-side anyway */ });
    await Promise.race([told, sleep(3000)]);
  }

  async _teardown() {
    clearTimeout(this._disconnectTimer);
    for (const ch of this._channels) { try { ch.close(); } catch { /* already closed */ } }
    this._channels.clear();
    this._openChannel = null;
    if (this._pc) { try { this._pc.close(); } catch { /* already closed */ } }
    this._pc = null;
    if (this._stream) this._stream.getTracks().forEach((t) => t.stop());
    this._stream = null;
    if (this.audioElement) this.audioElement.srcObject = null;
  }

  /** Stats of the peer connection (inbound-rtp bytes, round-trip time), for diagnostics. */
  async getStats() {
    return this._pc ? this._pc.getStats() : null;
  }

  _withTimeout(promise, ms, makeError) {
    let timer;
    return Promise.race([promise, new Promise((_, reject) => {
      timer = setTimeout(() => reject(makeError()), ms);
    })]).finally(() => clearTimeout(timer));
  }
}
