// realtime-client.js v2.1.0: the embeddable browser client for the realtime gateway (Azure Functions)
// over WebRTC. Types: realtime-client.d.ts; how to embed it: README.md (this folder).
//
//   import { RealtimeClient } from "./realtime-client.js";
//   const client = new RealtimeClient({ gateway: "https://my-func.azurewebsites.net" });
//   client.addEventListener("transcript", (e) => console.log(e.detail));
//   client.addEventListener("ended", (e) => console.log(e.detail.message));
//   await client.connect();  client.sendText("Hello");  client.setMuted(true);  await client.hangup();
//
// A conversation outlives the service's session cap (30 minutes on Azure): before a call's end the
// client rolls it over to a successor call of the same conversation (`rollover` event), unnoticed.
//
// The browser never holds a token: the gateway takes the SDP offer and returns the answer.
// Only events that pass `webrtcfilter=on` are relied upon (session.*, response.done and error
// never reach the data channel), so everything here is driven by that short list; why a call
// ended comes from the gateway (`GET /api/calls/{id}` -> end_reason), not from the channel.

/** This module's version (semver); the header comment above and realtime-client.d.ts say the same. */
export const VERSION = "2.1.0";

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

// Why a call that was up has ended, as the `ended` event says it (from the gateway's end_reason).
export const EndReason = Object.freeze({
  HANGUP: "hangup",        // this page hung up (hangup())
  LIMIT: "limit",          // its time limit: MAX_CALL_SECONDS, or the service's own session cap
  BUDGET: "budget",        // the day's budget is spent (BUDGET_HANGUP_RUNNING)
  GUARDRAIL: "guardrail",  // the output guardrail hung up (GUARDRAIL_MAX_HITS)
  POLICY: "policy",        // the page tried to change the session policy (POLICY_MAX_VIOLATIONS)
  REMOTE: "remote",        // the gateway hung up for another reason (strict recording, another caller)
  LOST: "lost",            // the connection dropped and the gateway knows no reason
});

/**
 * Every sentence the client produces, in English. Override any of them (another language, another
 * tone) with the `messages` option: a string with `{name}` placeholders, or a function that gets
 * the same parameters and returns the string. Placeholders: `{wait}` ("in 7 seconds", worded by
 * Intl.RelativeTimeFormat in the client's `locale`), `{resetAt}` (a clock time in the person's own
 * time zone, worded by the `reset*` messages), `{origin}`, `{detail}`, `{requestId}`, `{time}`,
 * `{date}`, `{remaining}`.
 */
export const DEFAULT_MESSAGES = Object.freeze({
  unsupported: "This browser cannot make voice calls. Use a current Chrome, Edge, Firefox or Safari over https.",
  micDenied: "Microphone access was denied. Allow the microphone for this site in the browser's address bar or settings, then press Start again.",
  micMissing: "No microphone was found. Connect a microphone (or headset) and press Start again.",
  micBusy: "The microphone could not be started; another app may be using it. Close it and press Start again.",
  gatewayUnreachable: "The voice service cannot be reached. Check your internet connection and try again in a moment.",
  originNotAllowed: "This website is not allowed to use the voice service (its origin is not on the gateway's allowed list). The site owner must add {origin} to the gateway's allowed origins.",
  forbidden: "You are not allowed to start a call here. Sign in and try again.",
  rateLimited: "You have started too many calls in a short time. Try again {wait}.",
  tooManyActiveCalls: "All lines are busy: the service is running as many calls as it allows. Try again {wait}.",
  budgetExhausted: "Today's allowance for voice calls is used up. Calls open again {resetAt} (midnight UTC).",
  busy: "The voice service is busy. Try again {wait}.",
  timeout: "The voice service took too long to answer. Try again.",
  serviceError: "The voice service had a problem and could not start the call. Try again in a moment.",
  badRequest: "The voice service rejected the call setup ({detail}).",
  mediaFailed: "The audio connection could not be set up. A firewall or VPN may be blocking real-time audio.",
  notRecorded: "The call was ended because it could not be recorded, and this service requires every call to be recorded. Try again in a moment.",
  notConnected: "The message was not sent because the call is not connected.",
  unknown: "Something went wrong: {detail}",
  reference: " Reference: {requestId}.",
  soon: "in a minute",
  resetToday: "at {time}",
  resetTomorrow: "tomorrow at {time}",
  resetOn: "on {date} at {time}",
  endedHangup: "You hung up. Press Start to begin a new conversation.",
  endedLimit: "The conversation reached its time limit and has ended. Press Start to begin a new one.",
  endedBudget: "The call was ended because today's allowance for voice calls is used up. Calls open again {resetAt} (midnight UTC).",
  endedGuardrail: "The call was ended because the assistant's answers broke this service's content rules. Press Start to begin a new conversation.",
  endedPolicy: "The call was ended because this page tried to change the assistant's instructions or tools, which this service does not allow. Press Start to begin a new conversation.",
  endedRemote: "The voice service ended the call. Press Start to begin a new conversation.",
  endedLost: "The connection was lost and the call has ended. Press Start to begin a new conversation.",
  timeLeft: "{remaining} left",
  oneMinuteLeft: "One minute left in this call.",
  autoplayBlocked: "Your browser did not let the assistant's voice play by itself. Press \u201cPlay the assistant's voice\u201d to hear it.",
  conversationEnds: "The conversation ends {wait}.",
});

const END_MESSAGE = {
  hangup: "endedHangup", limit: "endedLimit", budget: "endedBudget", guardrail: "endedGuardrail",
  policy: "endedPolicy", remote: "endedRemote", lost: "endedLost",
};
// Kinds whose message names the gateway's request id (the gateway answered, and logged it).
const WITH_REFERENCE = new Set([ErrorKind.ORIGIN_NOT_ALLOWED, ErrorKind.FORBIDDEN, ErrorKind.THROTTLED,
  ErrorKind.TIMEOUT, ErrorKind.SERVICE_ERROR, ErrorKind.BAD_REQUEST]);
const DAY_MS = 86400000;

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

/** `template` with its `{name}` placeholders filled from `params` (or the function's result). */
export function formatMessage(template, params = {}) {
  if (typeof template === "function") return String(template(params));
  return String(template ?? "").replace(/\{(\w+)\}/g, (_, name) => (params[name] == null ? "" : String(params[name])));
}

/** Whole seconds as m:ss (h:mm:ss from an hour on). */
export function formatDuration(seconds) {
  const s = Math.max(0, Math.ceil(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

function mark(name, detail) {
  // performance marks: visible in DevTools and readable by tests without any test-only hook.
  try { performance.mark(`realtime:${name}`, detail === undefined ? undefined : { detail }); } catch { /* best effort */ }
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

/** The call id from the connect answer: x-call-id, else the last segment of Location. */
function callIdFrom(headers) {
  const id = headers.get("x-call-id");
  if (id) return id;
  const location = headers.get("location") || "";
  return location ? decodeURIComponent(location.split("?")[0].replace(/\/+$/, "").split("/").pop() || "") || null : null;
}

/** What the connect answer says about the call: its id, conversation, capability and latest end. */
function callFrom(headers) {
  const callId = callIdFrom(headers);
  const expires = Number(headers.get("x-call-expires-at"));
  return {
    callId,
    conversationId: headers.get("x-conversation-id") || callId,
    capability: headers.get("x-call-capability"),
    expiresAt: Number.isFinite(expires) && expires > 0 ? expires : null,
  };
}

/** The peer connection's received audio (getStats): packets so far and when the last one came. */
async function inboundAudio(pc) {
  if (!pc) return null;
  try {
    let out = null;
    (await pc.getStats()).forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "audio") {
        out = { packets: s.packetsReceived || 0, at: s.lastPacketReceivedTimestamp ?? null };
      }
    });
    return out;
  } catch {
    return null;  // a closed peer connection
  }
}

/** Resolves once the peer connection has received audio, or after `ms` (a service may send none while quiet). */
async function receivingAudio(pc, ms) {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    const audio = await inboundAudio(pc);
    if (audio && audio.packets > 0) return true;
    await sleep(20);
  }
  return false;
}

function sameDay(a, b) {
  return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Rollover timing. A natural pause: nobody speaking, no answer in flight, and nothing on the data
// channel for this long (an answer follows a turn within a few hundred ms).
const PAUSE_QUIET_MS = 1000;
const SWITCH_QUIET_MS = 250;  // at the switch itself: only not in the middle of a turn
// Flags that never got their closing event (an interrupted answer's audio clears with an event
// the filter drops) stop counting after this much silence on the channel.
const STALE_ACTIVITY_MS = 10000;
const HARD_DEADLINE_SECONDS = 20;  // before the end, roll over without a pause (at most half the lead)
const HISTORY_WAIT_MS = 30000;     // the successor's replayed history, at most (and 10 s past the old end)
const RETRY_DELAY_MS = 5000;       // one more attempt after a failure that left no successor behind

/**
 * One conversation with the gateway. Events (CustomEvent, data in `detail`; see realtime-client.d.ts):
 *  state       {state, previous}   idle|starting|connecting|recorder-check|live|ending|ended|failed
 *  recorder    {state, waitedMs}   waiting|attached|unrecorded
 *  transcript  {role, itemId, delta, text, done}  role user|assistant; delta while streaming
 *  speech      {who, speaking}     who user (VAD) | assistant (audio playing)
 *  timer       {remainingSeconds, expiresAt, text}  every second while a call with a known end is up
 *  ended       {reason, endReason, message, announced}  once per conversation that was started, when it is over
 *  rollover    {from, to, conversationId, gapMs?}  the conversation moved to a successor call
 *  rolloverfailed {from, kind, code, status, remainingSeconds, willRetry, message}  it could not (yet)
 *  autoplayblocked {element, message}  the browser refused to play the voice: call playAudio() on a click
 *  audioplaying {}                 the voice is playing (after autoplay or playAudio())
 *  datachannel {label}             the data channel opened
 *  localstream {stream}            microphone stream (for a level meter)
 *  remotestream {stream}           the model's audio
 *  serverevent {event}             every data-channel event, for embedders that want more
 *  error       RealtimeError fields + {fatal, userMessage}
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
    // How long to ask the gateway why a call ended before calling it a lost connection.
    this.endReasonWaitMs = options.endReasonWaitMs ?? 5000;
    this.messages = Object.freeze({ ...DEFAULT_MESSAGES, ...(options.messages || {}) });
    this.locale = options.locale || undefined;  // undefined: the browser's own language
    this.fetch = options.fetch || ((...args) => fetch(...args));
    // Roll the conversation over to a successor call before the call's end; it takes effect when
    // the gateway gives the call a capability and an end (x-call-capability, x-call-expires-at).
    this.rollover = options.rollover !== false;
    const lead = Number(options.rolloverLeadSeconds ?? 90);
    this.rolloverLeadSeconds = Number.isFinite(lead) && lead > 0 ? lead : 90;
    this.muted = false;
    this._reset();
  }

  _reset() {
    this.state = "idle";
    this.callId = null;
    this.conversationId = null;  // x-conversation-id: the first call's id, kept across rollovers
    this.expiresAt = null;    // epoch seconds when the call ends at the latest (x-call-expires-at)
    this.endReason = null;    // EndReason of the last call, once it has ended
    this.audioBlocked = false;
    this._capability = null;  // x-call-capability: proves to the gateway that this page started the call
    this._losing = false;
    this.recorder = null;
    this._pc = null;
    this._channels = new Set();
    this._stream = null;
    this._firstTranscript = false;
    this._assistantText = new Map();  // item id -> the assistant's text streamed so far
    this._disconnectTimer = null;
    this._timer = null;
    this._abort = null;
    this._openChannel = null;
    this._localTurns = 0;
    this._resetActivity();
    this._roll = null;           // the rollover in progress: {abort, pc, channel, callId, ...}
    this._rollTimer = null;
    this._rollArmed = false;     // a rollover is planned for this call (the one-minute warning waits)
    this._endAnnounced = false;  // a rollover failed and the client said when the conversation ends
  }

  /** What the data channel says is going on: a rollover waits for a natural pause. */
  _resetActivity() {
    this._userSpeaking = false;
    this._assistantAudio = false;
    this._responding = false;      // response.created .. response.done (when the filter lets them by)
    this._streaming = new Set();   // assistant items whose transcript is still streaming
    this._lastActivity = typeof performance !== "undefined" ? performance.now() : 0;
  }

  get url() {
    return {
      connect: `${this.gateway}/api/connect`,
      call: (id) => `${this.gateway}/api/calls/${encodeURIComponent(id)}`,
      hangup: (id) => `${this.gateway}/api/calls/${encodeURIComponent(id)}/hangup`,
    };
  }

  /** Seconds until the call ends at the latest (null while unknown). */
  get remainingSeconds() {
    return this.expiresAt == null ? null : Math.max(0, Math.ceil(this.expiresAt - Date.now() / 1000));
  }

  // ---- words --------------------------------------------------------------------------------

  /** One of `messages` (DEFAULT_MESSAGES with the `messages` option on top), filled in. */
  text(key, params = {}) {
    return formatMessage(this.messages[key] ?? DEFAULT_MESSAGES[key] ?? key, params);
  }

  /** "in 7 seconds" / "in 3 minutes" in the client's locale; the `soon` message when unknown. */
  waitText(seconds) {
    if (seconds == null) return this.text("soon");
    const words = new Intl.RelativeTimeFormat(this.locale, { numeric: "always" });
    if (seconds < 120) return words.format(seconds, "second");
    if (seconds < 7200) return words.format(Math.ceil(seconds / 60), "minute");
    return words.format(Math.ceil(seconds / 3600), "hour");
  }

  /** A moment (epoch ms) as the person reads it in their own time zone: "at 5:30 AM", "tomorrow at …". */
  resetText(epochMs) {
    const when = new Date(epochMs);
    const now = new Date();
    const time = new Intl.DateTimeFormat(this.locale, { hour: "numeric", minute: "2-digit" }).format(when);
    if (sameDay(when, now)) return this.text("resetToday", { time });
    const tomorrow = new Date(now.getFullYear(), now.getMonth(), now.getDate() + 1);
    if (sameDay(when, tomorrow)) return this.text("resetTomorrow", { time });
    const date = new Intl.DateTimeFormat(this.locale, { weekday: "long", month: "long", day: "numeric" }).format(when);
    return this.text("resetOn", { time, date });
  }

  /** The budgets' day ends at midnight UTC: from Retry-After when the gateway sent it, else the clock. */
  _budgetReset(retryAfter) {
    if (retryAfter != null) return Math.round((Date.now() + retryAfter * 1000) / 60000) * 60000;
    return Math.floor(Date.now() / DAY_MS) * DAY_MS + DAY_MS;
  }

  /** A sentence a person can act on, for an `error` event's detail (or a RealtimeError). */
  messageFor(detail) {
    const kind = detail && detail.kind;
    const params = {
      detail: detail && detail.message,
      requestId: (detail && detail.requestId) || "",
      origin: typeof location !== "undefined" ? location.origin : "",
      wait: this.waitText(detail ? detail.retryAfter : null),
    };
    const ref = params.requestId && WITH_REFERENCE.has(kind) ? this.text("reference", params) : "";
    switch (kind) {
      case ErrorKind.UNSUPPORTED: return this.text("unsupported", params);
      case ErrorKind.MIC_DENIED: return this.text("micDenied", params);
      case ErrorKind.MIC_MISSING: return this.text("micMissing", params);
      case ErrorKind.MIC_BUSY: return this.text("micBusy", params);
      case ErrorKind.GATEWAY_UNREACHABLE: return this.text("gatewayUnreachable", params);
      case ErrorKind.ORIGIN_NOT_ALLOWED: return this.text("originNotAllowed", params) + ref;
      case ErrorKind.FORBIDDEN: return this.text("forbidden", params) + ref;
      case ErrorKind.THROTTLED: return this._throttled(detail, params) + ref;
      case ErrorKind.TIMEOUT: return this.text("timeout", params) + ref;
      case ErrorKind.SERVICE_ERROR: return this.text("serviceError", params) + ref;
      case ErrorKind.BAD_REQUEST: return this.text("badRequest", params) + ref;
      case ErrorKind.MEDIA_FAILED: return this.text("mediaFailed", params);
      case ErrorKind.CONNECTION_LOST: return this.endMessage(this._classifyEnd(detail.code || ""));
      case ErrorKind.NOT_RECORDED: return this.text("notRecorded", params);
      case ErrorKind.NOT_CONNECTED: return this.text("notConnected", params);
      default: return this.text("unknown", params) + (params.requestId ? this.text("reference", params) : "");
    }
  }

  /** A 429 says which limit it hit (`code`): which, and when to come back. */
  _throttled(detail, params) {
    switch (detail.code) {
      case "rate_limited": return this.text("rateLimited", params);
      case "too_many_active_calls": return this.text("tooManyActiveCalls", params);
      case "budget_exhausted":
        return this.text("budgetExhausted", { ...params, resetAt: this.resetText(this._budgetReset(detail.retryAfter)) });
      default: return this.text("busy", params);
    }
  }

  /** The sentence for an EndReason (what the `ended` event carries as `message`). */
  endMessage(reason) {
    const resetAt = reason === EndReason.BUDGET ? this.resetText(this._budgetReset(null)) : "";
    return this.text(END_MESSAGE[reason] || END_MESSAGE.lost, { resetAt });
  }

  /** The gateway's end_reason as an EndReason; a drop at the known end of the call is its time limit. */
  _classifyEnd(endReason) {
    switch (endReason) {
      case "limit": case "budget": case "guardrail": case "policy": return endReason;
      case "hangup": return EndReason.REMOTE;
      default: {
        const left = this.remainingSeconds;
        return left != null && left <= 2 ? EndReason.LIMIT : EndReason.LOST;
      }
    }
  }

  // ---- events -------------------------------------------------------------------------------

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
      requestId: e.requestId, retryAfter: e.retryAfter, fatal, error: e, userMessage: this.messageFor(e) });
    return e;
  }

  _ended(reason, endReason) {
    this.endReason = reason;
    // announced: the end came when the client had said it would (a rollover that failed)
    const announced = reason === EndReason.LIMIT && this._endAnnounced;
    this._emit("ended", { reason, endReason: endReason || "", message: this.endMessage(reason), announced });
  }

  // ---- connecting -------------------------------------------------------------------------

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
      this._startTimer();
      this._setState("recorder-check");
      const [recorder] = await Promise.all([this._waitForRecorder(), this._waitForChannel(channelOpen)]);
      if (this.state !== "recorder-check") throw this._cancelled();
      if (recorder === "unrecorded" && this.unrecordedPolicy === "end") await this._endUnrecorded();
      this._applyMute();
      this._setState("live");
      this._armRollover(false);
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

  /** Offer to the gateway, answer from it; sets `callId` and `expiresAt`. */
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

  /** Report and clean up a failed connect; a hang-up or a lost call that cancelled it has done both. */
  async _connectFailed(err) {
    const cancelled = err && err.name === "AbortError" && this.state === "ending";
    if (cancelled || this._losing || this.state === "ended") return err;
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
    const call = callFrom(response.headers);
    this.callId = call.callId;
    this.conversationId = call.conversationId;
    this._capability = call.capability;
    this.expiresAt = call.expiresAt;
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

  // ---- the call -----------------------------------------------------------------------------

  /** The `timer` event, now and every second, while the call's latest end is known. */
  _startTimer() {
    clearInterval(this._timer);
    if (this.expiresAt == null) return;
    let before = null;
    const tick = () => {
      const remainingSeconds = this.remainingSeconds;
      // once, as the last minute starts (not for a call that is shorter than a minute to begin with)
      // (not while a rollover is planned: the conversation goes on in the next call)
      const oneMinuteLeft = before !== null && before > 60 && remainingSeconds <= 60 && remainingSeconds > 0
        && !this._rollArmed;
      before = remainingSeconds;
      this._emit("timer", { remainingSeconds, expiresAt: this.expiresAt, oneMinuteLeft,
        text: this.text("timeLeft", { remaining: formatDuration(remainingSeconds) }) });
    };
    tick();
    this._timer = setInterval(tick, 1000);
  }

  _adoptChannel(channel) {
    if (!ACCEPTED_LABELS.has(channel.label) || this._channels.has(channel)) return Promise.resolve();
    this._channels.add(channel);
    // only the current call's channels speak: a call rolled over from says nothing more
    channel.addEventListener("message", (ev) => { if (this._channels.has(channel)) this._onMessage(ev); });
    channel.addEventListener("close", () => {
      if (!this._channels.delete(channel)) return;  // closed by _teardown, or a call before this one
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
      this._autoplay();
    }
    this._emit("remotestream", { stream });
  }

  /** Play the voice; a browser that wants a gesture first (iOS, strict autoplay) says so by an event. */
  _autoplay() {
    const element = this.audioElement;
    let played;
    try { played = element.play && element.play(); } catch (err) { played = Promise.reject(err); }
    if (!played || !played.then) return;
    played.then(() => this._playing(), (err) => {
      if (!err || err.name !== "NotAllowedError" || !element.srcObject) return;  // AbortError: a newer source
      this.audioBlocked = true;
      mark("autoplay-blocked");
      this._emit("autoplayblocked", { element, message: this.text("autoplayBlocked") });
    });
  }

  _playing() {
    this.audioBlocked = false;
    this._emit("audioplaying", {});
  }

  /** Start the voice after autoplay was blocked: call it from a click (a user gesture). */
  async playAudio() {
    const element = this.audioElement;
    if (!element || !element.srcObject) return false;
    try {
      await element.play();
    } catch {
      return false;
    }
    this._playing();
    return true;
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

  /**
   * The media went away without this page hanging up: the service ended the call (a limit, the
   * budget, the guardrail, the policy) or the network dropped. Release the microphone at once,
   * then ask the gateway why before saying so.
   */
  async _lost(why) {
    if (!["live", "recorder-check"].includes(this.state) || this._losing) return;
    if (this._roll) {
      // the call being rolled over from went (its cap came first): the successor decides
      if (!this._roll.oldGone) mark("rollover-old-gone");
      this._roll.oldGone = this._roll.oldGone || why;
      return;
    }
    this._losing = true;
    this._setState("ending");
    if (this._abort) this._abort.abort();
    await this._teardown();
    const endReason = await this._endReason(this.endReasonWaitMs);
    const reason = this._classifyEnd(endReason);
    // Tell the gateway too when it knows nothing (the service may still hold the call); the archive
    // records how it ended.
    if (!endReason) await this._tellGatewayHangup();
    // An end the client announced (a rollover failed) is no error: the `ended` event says it.
    if (!(reason === EndReason.LIMIT && this._endAnnounced)) {
      this._fail(new RealtimeError(ErrorKind.CONNECTION_LOST, `connection lost: ${why}`,
        { code: endReason || (reason === EndReason.LIMIT ? "limit" : "") }));
    }
    mark("ended-lost");
    this._setState("ended");
    this._ended(reason, endReason);
  }

  /** The gateway's `end_reason` for this call, polled for up to `waitMs`; "" when it has none. */
  async _endReason(waitMs) {
    const until = performance.now() + waitMs;
    while (this.callId && performance.now() < until) {
      const status = await this.callStatus().catch(() => null);  // asked again until the wait ends
      if (status && status.state === "ended") return String(status.end_reason || "");
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
      // Each look after a wait, the first too: the listener's queue message was written just before
      // the answer, so it cannot have attached yet, and a poll then only competes with the media setup.
      await sleep(delay);
      delay = Math.min(delay * 1.5, 1000);
      if (this.state !== "recorder-check") return "cancelled";
      // A failed poll (archive unreadable: 503, or a network blip) is asked again until the wait ends.
      const status = await this.callStatus().catch(() => null);
      const state = status && status.state;
      if (state === "attached") {
        mark("recorder-attached");
        this._setRecorder("attached", performance.now() - started);
        return "attached";
      }
      if (state === "ended") {
        throw new RealtimeError(ErrorKind.CONNECTION_LOST, "the call ended before it started",
          { code: String(status.end_reason || "") });
      }
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
   * The gateway's view of this call (`GET /api/calls/{id}`): `{state, end_reason, ...}` with state
   * "waiting" (also for a call the listener has not written yet), "attached" or "ended"; null
   * before there is a call id.
   */
  async callStatus() {
    return this.callId ? this._status(this.callId) : null;
  }

  async _status(callId) {
    const response = await this.fetch(this.url.call(callId), { cache: "no-store" });
    if (!response.ok) throw await errorFromResponse(response, "call status");
    return response.json();
  }

  /** Just the state of callStatus(). */
  async callState() {
    const status = await this.callStatus();
    return status ? status.state : null;
  }

  _onMessage(ev) {
    let event;
    try { event = JSON.parse(ev.data); } catch { return; }
    if (!event || typeof event.type !== "string") return;
    this._activity(event);
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
        // the history a successor call's listener replayed (ids replay_NNNN): already on the page
        if (String(item.id || "").startsWith("replay_")) break;
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

  /** Who is speaking and whether an answer is on its way, for the rollover's natural pause. */
  _activity(event) {
    this._lastActivity = performance.now();
    switch (event.type) {
      case "input_audio_buffer.speech_started": this._userSpeaking = true; break;
      case "input_audio_buffer.speech_stopped": this._userSpeaking = false; break;
      case "output_audio_buffer.started": this._assistantAudio = true; break;
      case "output_audio_buffer.stopped": this._assistantAudio = false; break;
      // not under webrtcfilter=on, but a service without the filter sends them
      case "response.created": this._responding = true; break;
      case "response.done": this._responding = false; break;
      case "response.output_audio_transcript.delta":
      case "response.output_text.delta": this._streaming.add(event.item_id); break;
      case "response.output_audio_transcript.done":
      case "response.output_text.done": this._streaming.delete(event.item_id); break;
      default: break;
    }
  }

  /** Nobody speaking, no answer in flight, and the channel quiet for `quietMs`. */
  _paused(quietMs) {
    const quiet = performance.now() - this._lastActivity;
    if (quiet >= STALE_ACTIVITY_MS) return true;
    const busy = this._userSpeaking || this._assistantAudio || this._responding || this._streaming.size > 0;
    return !busy && quiet >= quietMs;
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
    this._lastActivity = performance.now();  // an answer is on its way
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
    await this._cancelRollover();
    if (!failed) await this._tellGatewayHangup();
    await this._teardown();
    mark(`ended-${reason}`);
    this._setState("ended");
    if (!failed) this._ended(EndReason.HANGUP, "");
  }

  async _tellGatewayHangup() {
    await this._hangupCall(this.callId, this._capability, true);
  }

  /** `POST /api/calls/{id}/hangup` with the call's capability; `report`: a refusal is an error event. */
  async _hangupCall(id, capability, report) {
    if (!id) return;
    // keepalive lets the POST outlive the page (pagehide); 404 means the call had already ended.
    const headers = capability ? { "x-call-capability": capability } : {};
    const told = this.fetch(this.url.hangup(id), { method: "POST", keepalive: true, headers })
      .then((r) => (r.ok || r.status === 404 || !report ? null : errorFromResponse(r, "hang up")))
      .then((e) => { if (e) this._fail(e, { fatal: false }); })
      .catch(() => { /* closing media ends the call service-side anyway */ });
    await Promise.race([told, sleep(3000)]);
  }

  async _teardown() {
    clearTimeout(this._disconnectTimer);
    clearInterval(this._timer);
    this._timer = null;
    clearTimeout(this._rollTimer);
    this._rollArmed = false;
    if (this._roll) this._roll.abort.abort();  // its own cleanup closes the successor
    for (const ch of this._channels) { try { ch.close(); } catch { /* already closed */ } }
    this._channels.clear();
    this._openChannel = null;
    if (this._pc) { try { this._pc.close(); } catch { /* already closed */ } }
    this._pc = null;
    if (this._stream) this._stream.getTracks().forEach((t) => t.stop());
    this._stream = null;
    if (this.audioElement) this.audioElement.srcObject = null;
  }

  // ---- rollover: the conversation goes on in a successor call ----------------------------------

  /**
   * Plan the rollover of the call now live: from `expiresAt - rolloverLeadSeconds`, at a natural
   * pause. A first call that is not longer than the lead was made short on purpose (a small
   * MAX_CALL_SECONDS) and ends there; a successor is rolled over even then, and the gateway says
   * whether the conversation may go on (409 at MAX_CONVERSATION_SECONDS).
   */
  _armRollover(successor) {
    clearTimeout(this._rollTimer);
    this._rollArmed = false;
    if (!this.rollover || !this._capability || !this.callId || this.expiresAt == null || this.state !== "live") return;
    const leadMs = this.rolloverLeadSeconds * 1000;
    const leftMs = this.expiresAt * 1000 - Date.now();
    if (!successor && leftMs <= leadMs) return;
    this._rollArmed = true;
    this._rollAttempt = 0;
    this._rollTimer = setTimeout(() => this._rollWhenPaused(PAUSE_QUIET_MS), Math.max(0, leftMs - leadMs));
  }

  /** Epoch ms from which a rollover starts (and switches) without waiting for a pause. */
  _hardDeadlineMs() {
    return (this.expiresAt - Math.min(HARD_DEADLINE_SECONDS, this.rolloverLeadSeconds / 2)) * 1000;
  }

  _rollWhenPaused(quietMs) {
    clearTimeout(this._rollTimer);
    if (this.state !== "live" || this._roll) return;
    if (this._paused(quietMs) || Date.now() >= this._hardDeadlineMs()) {
      this._rollPromise = this._rollOver();
      return;
    }
    this._rollTimer = setTimeout(() => this._rollWhenPaused(quietMs), 100);
  }

  /**
   * One attempt: a second peer connection with the same microphone track, `POST
   * /api/connect?continue=<call>` with the call's capability, the successor's replayed history
   * (`history_ready_at`), then the switch. A failure closes only the new peer; the call goes on.
   */
  async _rollOver() {
    this._rollAttempt += 1;
    const from = this.callId;
    const roll = { abort: new AbortController(), pc: null, sender: null, channel: null, stream: null, call: null, oldGone: null };
    roll.cancelled = new Promise((_, reject) => {
      roll.abort.signal.addEventListener("abort", () => reject(this._cancelled()), { once: true });
    });
    roll.failed = new Promise((_, reject) => { roll.fail = reject; });
    roll.cancelled.catch(() => {});
    roll.failed.catch(() => {});
    this._roll = roll;
    mark("rollover-start");
    try {
      await this._prepareSuccessor(roll);
      await this._switchTo(roll);
    } catch (err) {
      if (this._roll === roll) this._roll = null;
      const track = this._stream && this._stream.getAudioTracks()[0];
      if (roll.oldSender && track) roll.oldSender.replaceTrack(track).catch(() => { /* closed meanwhile */ });
      await this._dropSuccessor(roll);
      if (roll.abort.signal.aborted) return;  // hung up meanwhile: nothing to say
      this._rolloverFailed(from, err, roll);
    }
  }

  /** `promise`, unless the rollover is cancelled (hang-up) or its peer connection fails first. */
  _rollWait(roll, promise) {
    promise.catch(() => { /* the race below reports it; a loser's rejection is not "unhandled" */ });
    return Promise.race([promise, roll.cancelled, roll.failed]);
  }

  async _prepareSuccessor(roll) {
    const track = this._stream && this._stream.getAudioTracks()[0];
    if (!track) throw new RealtimeError(ErrorKind.MIC_MISSING, "no microphone track to carry over");
    const pc = new RTCPeerConnection(this.rtcConfiguration);
    roll.pc = pc;
    // The same microphone track (the person is not asked again). The new call hears it only from
    // the switch on, so that one call at a time hears the person.
    roll.sender = pc.addTrack(track, this._stream);
    await roll.sender.replaceTrack(null);
    const remote = new Promise((resolve) => {
      pc.ontrack = (ev) => resolve(ev.streams[0] || new MediaStream([ev.track]));
    });
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed") roll.fail(new RealtimeError(ErrorKind.MEDIA_FAILED, "the new call's network path failed"));
    };
    roll.channel = pc.createDataChannel(this.channelLabel);
    const opened = new Promise((resolve) => roll.channel.addEventListener("open", resolve, { once: true }));
    await this._rollWait(roll, pc.setLocalDescription(await pc.createOffer()));
    await this._rollWait(roll, this._gatherCandidates(pc));
    const answer = await this._rollWait(roll, this._postContinue(pc.localDescription.sdp, roll));
    await this._rollWait(roll, pc.setRemoteDescription({ type: "answer", sdp: answer }));
    const media = this._withTimeout(Promise.all([opened, remote]), this.mediaTimeoutMs,
      () => new RealtimeError(ErrorKind.MEDIA_FAILED, "the new call's audio did not start"));
    roll.stream = (await this._rollWait(roll, media))[1];
    // the history in place, and the new call's audio arriving (a switch before it would be heard)
    await this._rollWait(roll, Promise.all([this._waitForHistory(roll), receivingAudio(pc, 2000)]));
  }

  /** The offer of the successor call; sets `roll.call` (its id, capability and end). */
  async _postContinue(sdp, roll) {
    const abort = new AbortController();
    roll.abort.signal.addEventListener("abort", () => abort.abort(), { once: true });
    const timer = setTimeout(() => abort.abort(new DOMException("timeout", "TimeoutError")), this.connectTimeoutMs);
    let response;
    try {
      response = await this.fetch(`${this.url.connect}?continue=${encodeURIComponent(this.callId)}`, {
        method: "POST",
        body: sdp,
        headers: {
          "Content-Type": "application/sdp",
          Accept: "application/sdp, application/json",
          "x-call-capability": this._capability,
        },
        signal: abort.signal,
      });
    } catch (err) {
      if (roll.abort.signal.aborted) throw this._cancelled();
      if (abort.signal.reason && abort.signal.reason.name === "TimeoutError") {
        throw new RealtimeError(ErrorKind.TIMEOUT, "the gateway did not answer the rollover in time", { cause: err });
      }
      throw new RealtimeError(ErrorKind.GATEWAY_UNREACHABLE, "the gateway could not be reached", { cause: err });
    } finally {
      clearTimeout(timer);
    }
    if (!response.ok) throw await errorFromResponse(response, "continue");
    const call = callFrom(response.headers);
    if (!call.callId || !call.capability) {
      throw new RealtimeError(ErrorKind.SERVICE_ERROR, "the gateway's answer named no successor call");
    }
    roll.call = call;
    mark("rollover-answer");
    return response.text();
  }

  /** Poll the successor's state until its listener has replayed the conversation into it. */
  async _waitForHistory(roll) {
    // bounded, and a little past the old call's end: once that went, a late successor still helps
    const until = Date.now() + Math.min(HISTORY_WAIT_MS, Math.max(3000, this.expiresAt * 1000 + 10000 - Date.now()));
    let delay = 150;
    while (Date.now() < until) {
      if (roll.abort.signal.aborted) throw this._cancelled();
      const status = await this._status(roll.call.callId).catch(() => null);  // asked again until the wait ends
      if (status && status.history_ready_at) {
        mark("rollover-history-ready");
        return;
      }
      if (status && status.state === "ended") {
        throw new RealtimeError(ErrorKind.CONNECTION_LOST, "the new call ended before its history was in place",
          { code: String(status.end_reason || "") });
      }
      await sleep(delay);
      delay = Math.min(delay * 1.5, 1000);
    }
    throw new RealtimeError(ErrorKind.TIMEOUT, "the new call's history was not in place in time");
  }

  /**
   * The switch, at a pause (or at once past the hard deadline, or when the old call went): the
   * microphone, the voice and the data channel move to the new call; the old one is hung up with
   * its own capability. The page's transcript and events go on from the new channel.
   */
  async _switchTo(roll) {
    while (!roll.oldGone && !this._paused(SWITCH_QUIET_MS) && Date.now() < this._hardDeadlineMs()) {
      await this._rollWait(roll, sleep(50));
    }
    const track = this._stream && this._stream.getAudioTracks()[0];
    if (this.state !== "live" || !track) throw this._cancelled();
    const from = { callId: this.callId, capability: this._capability, pc: this._pc, channels: [...this._channels] };
    // The microphone first (only one call hears the person at a time), then the voice at once.
    await this._rollWait(roll, roll.sender.replaceTrack(track));
    const oldSender = from.pc && from.pc.getSenders().find((s) => s.track === track);
    roll.oldSender = oldSender;  // given the track back should the switch not happen after all
    if (oldSender) await oldSender.replaceTrack(null).catch(() => { /* the old call is closing anyway */ });
    const before = await Promise.all([inboundAudio(from.pc), inboundAudio(roll.pc)]);
    if (roll.abort.signal.aborted || this.state !== "live") throw this._cancelled();

    // From here the old call's channels and media are not this client's: their closing is no loss.
    this._channels.clear();
    this._openChannel = null;
    if (from.pc) { from.pc.onconnectionstatechange = null; from.pc.ontrack = null; from.pc.ondatachannel = null; }
    clearTimeout(this._disconnectTimer);
    const pc = roll.pc;
    this._pc = pc;
    pc.ontrack = (ev) => this._onTrack(ev);
    pc.ondatachannel = (ev) => this._adoptChannel(ev.channel);
    pc.onconnectionstatechange = () => this._onConnectionState();
    if (this.audioElement) {
      this.audioElement.srcObject = roll.stream;
      this._autoplay();
    }
    this._emit("remotestream", { stream: roll.stream });
    this.callId = roll.call.callId;
    this._capability = roll.call.capability;
    this.expiresAt = roll.call.expiresAt;
    this.conversationId = roll.call.conversationId || this.conversationId;
    this._resetActivity();
    this._roll = null;
    this._adoptChannel(roll.channel);
    mark("rollover-switch");
    this._startTimer();

    const gap = this._switchGap(before, pc);
    await this._hangupCall(from.callId, from.capability, false);
    for (const ch of from.channels) { try { ch.close(); } catch { /* already closed */ } }
    if (from.pc) { try { from.pc.close(); } catch { /* already closed */ } }
    const gapMs = await gap;
    const detail = { from: from.callId, to: this.callId, conversationId: this.conversationId,
      ...(gapMs == null ? {} : { gapMs }) };
    mark("rollover", detail);
    this._emit("rollover", detail);
    if (this.state === "live") this._armRollover(true);
  }

  /**
   * From the old call's last received audio packet to the new call's first one after the switch,
   * in ms (getStats: inbound-rtp `lastPacketReceivedTimestamp`); null when the browser does not say.
   */
  async _switchGap([old, fresh], pc) {
    if (!old || old.at == null) return null;
    const until = performance.now() + 2000;
    while (performance.now() < until) {
      const now = await inboundAudio(pc);
      if (now && now.packets > (fresh ? fresh.packets : 0) && now.at != null) return Math.max(0, Math.round(now.at - old.at));
      await sleep(20);
    }
    return null;
  }

  /** Close the successor's peer; a successor the gateway started is hung up with its capability. */
  async _dropSuccessor(roll) {
    if (roll.channel) { try { roll.channel.close(); } catch { /* already closed */ } }
    if (roll.pc) {
      roll.pc.onconnectionstatechange = null;
      try { roll.pc.close(); } catch { /* already closed */ }
    }
    if (roll.call) await this._hangupCall(roll.call.callId, roll.call.capability, false);
  }

  /**
   * The call goes on to its end. One more attempt after a short delay when the first left no
   * successor behind (a refusal, 401/403/404/409, would only come again) and would still start
   * before the hard deadline;
   * otherwise the conversation ends with this call, and the `rolloverfailed` event says when.
   */
  _rolloverFailed(from, err, roll) {
    const e = err instanceof RealtimeError ? err
      : new RealtimeError(ErrorKind.SERVICE_ERROR, String((err && err.message) || err), { cause: err });
    mark("rollover-failed");
    const remainingSeconds = this.remainingSeconds ?? 0;
    const retry = !roll.oldGone && !roll.call && this._rollAttempt < 2 && ![401, 403, 404, 409].includes(e.status)
      && Date.now() + RETRY_DELAY_MS < this._hardDeadlineMs();  // it would start in time
    this._emit("rolloverfailed", { from, kind: e.kind, code: e.code, status: e.status, remainingSeconds,
      willRetry: retry, message: this.text("conversationEnds", { wait: this.waitText(remainingSeconds) }) });
    if (roll.oldGone) {  // the call had already ended: so has the conversation
      this._rollArmed = false;
      this._lost(roll.oldGone);
      return;
    }
    if (retry) {
      this._rollTimer = setTimeout(() => this._rollWhenPaused(PAUSE_QUIET_MS), RETRY_DELAY_MS);
      return;
    }
    this._rollArmed = false;
    this._endAnnounced = true;
  }

  /** A hang-up during a rollover: the successor is closed (and hung up) before the call is. */
  async _cancelRollover() {
    clearTimeout(this._rollTimer);
    this._rollArmed = false;
    if (!this._roll) return;
    this._roll.abort.abort();
    await this._rollPromise;
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
