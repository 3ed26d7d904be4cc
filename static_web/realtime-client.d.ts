// Type declarations for realtime-client.js v2.1.0 (the embeddable browser client of the realtime
// gateway). How to embed it: README.md in this folder; an example that uses every option:
// examples/embed.ts (checked with `tsc --noEmit` by tests/e2e/test_embedding_kit.py).

/** This module's version (semver). */
export declare const VERSION: "2.1.0";

/** The data channel label the service uses (the default). */
export declare const SERVICE_CHANNEL_LABEL: "oai-events";
/** The data channel label of Microsoft's seed page; accepted as well. */
export declare const SEED_CHANNEL_LABEL: "realtime-channel";

/** What went wrong, as the `error` event's `kind` says it. */
export declare const ErrorKind: Readonly<{
  /** No WebRTC in this browser, or the page is not on https. */
  UNSUPPORTED: "unsupported";
  /** The person (or the browser's settings) refused the microphone. */
  MIC_DENIED: "mic-denied";
  /** No microphone was found. */
  MIC_MISSING: "mic-missing";
  /** The microphone exists but could not be started (another app holds it). */
  MIC_BUSY: "mic-busy";
  /** Nothing answered at the gateway's address (network down, wrong URL, or a CSP that blocks it). */
  GATEWAY_UNREACHABLE: "gateway-unreachable";
  /** The gateway answered but its CORS refused this page's origin (ALLOWED_ORIGINS). */
  ORIGIN_NOT_ALLOWED: "origin-not-allowed";
  /** 401/403: a sign-in is required (REQUIRE_PRINCIPAL), or this caller may not do that. */
  FORBIDDEN: "forbidden";
  /** 429: a limit refused the call; `code` says which one and `retryAfter` for how long. */
  THROTTLED: "throttled";
  /** 5xx from the gateway or the service behind it. */
  SERVICE_ERROR: "service-error";
  /** The gateway did not answer within `connectTimeoutMs` (or answered 504). */
  TIMEOUT: "timeout";
  /** Another 4xx: the gateway refused the request as malformed. */
  BAD_REQUEST: "bad-request";
  /** The answer came but audio never flowed (`mediaTimeoutMs`): WebRTC blocked by the network. */
  MEDIA_FAILED: "media-failed";
  /** A call that was up ended without hangup(); `code` is the gateway's end_reason ("" if unknown). */
  CONNECTION_LOST: "connection-lost";
  /** The recorder did not attach and `unrecordedPolicy` is "end". */
  NOT_RECORDED: "not-recorded";
  /** sendText() while no call is live. */
  NOT_CONNECTED: "not-connected";
}>;
export type ErrorKindValue = (typeof ErrorKind)[keyof typeof ErrorKind];

/** Why a call that was up has ended, as the `ended` event's `reason` says it. */
export declare const EndReason: Readonly<{
  /** This page hung up (hangup(), or the page was left). */
  HANGUP: "hangup";
  /** The call's time limit: MAX_CALL_SECONDS, or the service's own session cap. */
  LIMIT: "limit";
  /** The day's budget is spent (BUDGET_HANGUP_RUNNING); calls open again at midnight UTC. */
  BUDGET: "budget";
  /** The output guardrail hung up (GUARDRAIL_MAX_HITS). */
  GUARDRAIL: "guardrail";
  /** The page tried to change the session policy too often (POLICY_MAX_VIOLATIONS). */
  POLICY: "policy";
  /** The gateway hung up for another reason (strict recording, another holder of the call). */
  REMOTE: "remote";
  /** The connection dropped and the gateway knows no reason. */
  LOST: "lost";
}>;
export type EndReasonValue = (typeof EndReason)[keyof typeof EndReason];

/** The gateway's own `end_reason` values (`GET /api/calls/{id}`); the last three end only phone calls. */
export type GatewayEndReason =
  | "ended"
  | "limit"
  | "hangup"
  | "guardrail"
  | "policy"
  | "budget"
  | "error"
  | "time_box"
  | "caller_hangup"
  | "assistant_hangup"
  | "transferred";

/** The client's states, in order: idle → starting → connecting → recorder-check → live → ending → ended (or failed). */
export type CallState = "idle" | "starting" | "connecting" | "recorder-check" | "live" | "ending" | "ended" | "failed";

/** The recorder (the gateway's listener): waiting for it, attached, or given up on. */
export type RecorderState = "waiting" | "attached" | "unrecorded";

/**
 * Parameters a message may use as `{name}` placeholders (or read, when the message is a function).
 * Each message gets the ones that make sense for it.
 */
export interface MessageParams {
  /** When to try again, worded in `locale`: "in 7 seconds", "in 3 minutes" (or the `soon` message). */
  wait?: string;
  /** When the budgets open again, in the person's time zone: "at 5:30 AM", "tomorrow at 5:30 AM". */
  resetAt?: string;
  /** This page's origin (originNotAllowed). */
  origin?: string;
  /** The error's technical message (badRequest, unknown). */
  detail?: string;
  /** The gateway's request id (reference). */
  requestId?: string;
  /** A clock time (resetToday, resetTomorrow, resetOn). */
  time?: string;
  /** A date (resetOn). */
  date?: string;
  /** Time left as m:ss (timeLeft). */
  remaining?: string;
}

/** A message: a string with `{name}` placeholders, or a function of the parameters. */
export type Message = string | ((params: MessageParams) => string);

/** Every sentence the client says. The English defaults are DEFAULT_MESSAGES. */
export interface Messages {
  /** ErrorKind.UNSUPPORTED. */
  unsupported: Message;
  /** ErrorKind.MIC_DENIED. */
  micDenied: Message;
  /** ErrorKind.MIC_MISSING. */
  micMissing: Message;
  /** ErrorKind.MIC_BUSY. */
  micBusy: Message;
  /** ErrorKind.GATEWAY_UNREACHABLE. */
  gatewayUnreachable: Message;
  /** ErrorKind.ORIGIN_NOT_ALLOWED; `{origin}`. */
  originNotAllowed: Message;
  /** ErrorKind.FORBIDDEN. */
  forbidden: Message;
  /** 429 `rate_limited` (RATE_LIMIT_PER_MINUTE); `{wait}`. */
  rateLimited: Message;
  /** 429 `too_many_active_calls` (MAX_ACTIVE_CALLS); `{wait}`. */
  tooManyActiveCalls: Message;
  /** 429 `budget_exhausted` (the day's budgets); `{resetAt}`, `{wait}`. */
  budgetExhausted: Message;
  /** Any other 429 (the service throttled); `{wait}`. */
  busy: Message;
  /** ErrorKind.TIMEOUT. */
  timeout: Message;
  /** ErrorKind.SERVICE_ERROR. */
  serviceError: Message;
  /** ErrorKind.BAD_REQUEST; `{detail}`. */
  badRequest: Message;
  /** ErrorKind.MEDIA_FAILED. */
  mediaFailed: Message;
  /** ErrorKind.NOT_RECORDED. */
  notRecorded: Message;
  /** ErrorKind.NOT_CONNECTED. */
  notConnected: Message;
  /** Anything else; `{detail}`. */
  unknown: Message;
  /** Appended to messages about an answer of the gateway; `{requestId}`. */
  reference: Message;
  /** `{wait}` when the gateway gave no Retry-After. */
  soon: Message;
  /** `{resetAt}` for a moment later today; `{time}`. */
  resetToday: Message;
  /** `{resetAt}` for tomorrow; `{time}`. */
  resetTomorrow: Message;
  /** `{resetAt}` for a later day; `{date}`, `{time}`. */
  resetOn: Message;
  /** The `ended` event's message for EndReason.HANGUP. */
  endedHangup: Message;
  /** … for EndReason.LIMIT. */
  endedLimit: Message;
  /** … for EndReason.BUDGET; `{resetAt}`. */
  endedBudget: Message;
  /** … for EndReason.GUARDRAIL. */
  endedGuardrail: Message;
  /** … for EndReason.POLICY. */
  endedPolicy: Message;
  /** … for EndReason.REMOTE. */
  endedRemote: Message;
  /** … for EndReason.LOST. */
  endedLost: Message;
  /** The `timer` event's text; `{remaining}`. */
  timeLeft: Message;
  /** For a page to show when the `timer` event says `oneMinuteLeft`. */
  oneMinuteLeft: Message;
  /** The `autoplayblocked` event's message. */
  autoplayBlocked: Message;
  /** The `rolloverfailed` event's message: "The conversation ends {wait}." (`{wait}`: "in 45 seconds"). */
  conversationEnds: Message;
}

/** The English sentences; `messages` overrides any of them. */
export declare const DEFAULT_MESSAGES: Readonly<Messages>;

/** Options of `new RealtimeClient(options)`; every one is optional. */
export interface RealtimeClientOptions {
  /**
   * The function app's base URL, e.g. "https://my-func.azurewebsites.net" ("" or absent: this
   * page's own origin). A trailing "/" or "/api" is ignored. Its origin must be in the page's CSP
   * `connect-src`, and this page's origin in the gateway's ALLOWED_ORIGINS.
   */
  gateway?: string;
  /** Seconds to wait for the recorder to attach before `unrecordedPolicy` applies (default 15). */
  recorderWaitSeconds?: number;
  /**
   * What to do with a call the recorder did not attach to in time: "continue" (default; the
   * `recorder` event says "unrecorded" and the microphone opens) or "end" (hang up, NOT_RECORDED).
   */
  unrecordedPolicy?: "continue" | "end";
  /** The data channel's label: "oai-events" (default) or the seed page's "realtime-channel". */
  channelLabel?: "oai-events" | "realtime-channel";
  /** RTCPeerConnection configuration, e.g. TURN servers for networks that block UDP (default {}). */
  rtcConfiguration?: RTCConfiguration;
  /** Where the assistant's voice plays; without one, use the `remotestream` event yourself. */
  audioElement?: HTMLAudioElement | null;
  /** Milliseconds to wait for `POST /api/connect` (default 45000: the gateway's own bound). */
  connectTimeoutMs?: number;
  /** Milliseconds from the answer to the data channel opening before MEDIA_FAILED (default 15000). */
  mediaTimeoutMs?: number;
  /** Milliseconds to gather ICE candidates into the offer before posting it (default 0: at once). */
  iceGatherMs?: number;
  /**
   * Milliseconds to ask the gateway why a call ended (`GET /api/calls/{id}`) before calling it a
   * lost connection (default 5000; the answer usually comes within a second).
   */
  endReasonWaitMs?: number;
  /** Sentences to use instead of the English ones (any subset of DEFAULT_MESSAGES). */
  messages?: Partial<Messages>;
  /** BCP 47 locale(s) for numbers, waits and clock times (default: the browser's language). */
  locale?: string | string[];
  /** The fetch to use (default: the global fetch), e.g. to add a header for a front door. */
  fetch?: typeof fetch;
  /**
   * Roll the conversation over to a successor call before the call's end (the service's session
   * cap: 30 minutes on Azure), so it goes on unnoticed (default true). It takes effect when the
   * gateway gives the call a capability and an end (`x-call-capability`, `x-call-expires-at`).
   */
  rollover?: boolean;
  /**
   * Seconds before the call's end from which the rollover starts, at a natural pause (default 90;
   * without a pause it starts at min(20 s, half this) before the end). A first call not longer than
   * this is not rolled over (a deliberately short MAX_CALL_SECONDS ends there).
   */
  rolloverLeadSeconds?: number;
}

/** `state`: the client moved from `previous` to `state`. */
export interface StateEventDetail {
  state: CallState;
  previous: CallState;
}

/** `recorder`: the recorder's state, and how long the client waited for it. */
export interface RecorderEventDetail {
  state: RecorderState;
  waitedMs: number;
}

/** `transcript`: a turn of the conversation, streamed (`delta`) and then whole (`done`). */
export interface TranscriptEventDetail {
  role: "user" | "assistant";
  /** The conversation item's id (`local-<n>` for a typed message). */
  itemId: string;
  /** The text added by this event (assistant turns stream). */
  delta: string;
  /** The turn's text so far (the whole text once `done`). */
  text: string;
  done: boolean;
  /** Said by the service rather than the model (the guardrail's notice after it stopped an answer). */
  notice?: boolean;
  /** A message typed on this page (sendText). */
  typed?: boolean;
}

/** `speech`: someone started or stopped speaking. */
export interface SpeechEventDetail {
  /** "user": the service's voice activity detection; "assistant": its audio playing. */
  who: "user" | "assistant";
  speaking: boolean;
}

/** `timer`: now and every second while a call whose latest end is known is up. */
export interface TimerEventDetail {
  /** Whole seconds left (by this device's clock). */
  remainingSeconds: number;
  /** Epoch seconds when the call ends at the latest (the gateway's `x-call-expires-at`). */
  expiresAt: number;
  /**
   * True once, on the tick where the last minute starts (never for a call shorter than a minute,
   * nor while a rollover is planned: the conversation goes on in the next call).
   */
  oneMinuteLeft: boolean;
  /** The `timeLeft` message, e.g. "4:59 left". */
  text: string;
}

/** `ended`: a conversation that was started is over (once; its rollovers do not end it). */
export interface EndedEventDetail {
  reason: EndReasonValue;
  /** The gateway's end_reason ("" when it had none, or the page hung up). */
  endReason: GatewayEndReason | "";
  /** The sentence for `reason` (the `ended*` messages). */
  message: string;
  /**
   * The end came when the client had said it would (`rolloverfailed`): a status to show, not an
   * alert; no `error` event comes with it.
   */
  announced: boolean;
}

/** `rollover`: the conversation moved to a successor call; the old call is hung up. */
export interface RolloverEventDetail {
  /** The call rolled over from. */
  from: string;
  /** The successor, now `callId`. */
  to: string;
  /** The conversation's id (its first call's), the same before and after. */
  conversationId: string;
  /**
   * Milliseconds from the old call's last received audio packet to the new call's first after the
   * switch (getStats), an upper bound of what the person could hear missing; absent when the
   * browser does not say.
   */
  gapMs?: number;
}

/** `rolloverfailed`: a rollover did not happen; the call goes on to its end. */
export interface RolloverFailedEventDetail {
  /** The call that could not be rolled over (it goes on). */
  from: string;
  /** Why, as ErrorKind (a refusal of the gateway: `code` and `status` say which). */
  kind: ErrorKindValue;
  /** The gateway's error code, e.g. "conversation_too_long", "capability_invalid" ("" otherwise). */
  code: string;
  /** The gateway's HTTP status (0 when it did not answer). */
  status: number;
  /** Seconds until the call, and so the conversation, ends. */
  remainingSeconds: number;
  /** One more attempt comes after a short delay; when false, the conversation ends with this call. */
  willRetry: boolean;
  /** The `conversationEnds` message: "The conversation ends in 45 seconds." */
  message: string;
}

/** `autoplayblocked`: the browser refused to play the voice; call playAudio() from a click. */
export interface AutoplayBlockedEventDetail {
  element: HTMLAudioElement;
  /** The `autoplayBlocked` message. */
  message: string;
}

/** `error`: something failed; `fatal` errors end the call (or its start). */
export interface ErrorEventDetail {
  kind: ErrorKindValue;
  /** A technical message (English), for logs. */
  message: string;
  /** The gateway's HTTP status (0 when it did not answer). */
  status: number;
  /** The gateway's error code (e.g. "rate_limited"), or for CONNECTION_LOST its end_reason. */
  code: string;
  /** The gateway's request id, to quote to the site owner. */
  requestId: string;
  /** Seconds to wait before trying again (429), when the gateway said. */
  retryAfter: number | null;
  fatal: boolean;
  error: RealtimeError;
  /** The sentence for a person (`messageFor`), in the client's messages. */
  userMessage: string;
}

/** The events of RealtimeClient; each is a CustomEvent whose `detail` is the type shown. */
export interface RealtimeClientEventMap {
  state: CustomEvent<StateEventDetail>;
  recorder: CustomEvent<RecorderEventDetail>;
  transcript: CustomEvent<TranscriptEventDetail>;
  speech: CustomEvent<SpeechEventDetail>;
  timer: CustomEvent<TimerEventDetail>;
  ended: CustomEvent<EndedEventDetail>;
  rollover: CustomEvent<RolloverEventDetail>;
  rolloverfailed: CustomEvent<RolloverFailedEventDetail>;
  autoplayblocked: CustomEvent<AutoplayBlockedEventDetail>;
  /** The voice is playing (after autoplay, or after playAudio()). */
  audioplaying: CustomEvent<Record<string, never>>;
  /** The data channel opened. */
  datachannel: CustomEvent<{ label: string }>;
  /** The microphone's stream (for a level meter); its track stays off until the recorder is there. */
  localstream: CustomEvent<{ stream: MediaStream }>;
  /** The assistant's audio stream. */
  remotestream: CustomEvent<{ stream: MediaStream }>;
  /** Every event the data channel carried (those `webrtcfilter` lets through), parsed. */
  serverevent: CustomEvent<{ event: { type: string; [key: string]: unknown } }>;
  error: CustomEvent<ErrorEventDetail>;
}

/** An error of the client, with what the gateway said. */
export declare class RealtimeError extends Error {
  constructor(
    kind: ErrorKindValue,
    message: string,
    details?: { status?: number; code?: string; requestId?: string; retryAfter?: number | null; cause?: unknown },
  );
  readonly name: "RealtimeError";
  kind: ErrorKindValue;
  status: number;
  code: string;
  requestId: string;
  retryAfter: number | null;
}

/** "" for the same origin; a trailing "/" or "/api" removed. */
export declare function gatewayBase(gateway?: string | null): string;
/** A message with its `{name}` placeholders filled (or the function's result). */
export declare function formatMessage(template: Message, params?: MessageParams): string;
/** Seconds as m:ss (h:mm:ss from an hour on). */
export declare function formatDuration(seconds: number): string;

/** One conversation at a time with the gateway: connect, talk, type, mute, hang up. */
export declare class RealtimeClient extends EventTarget {
  constructor(options?: RealtimeClientOptions);

  /** The gateway base in use ("" for this origin). */
  readonly gateway: string;
  readonly recorderWaitSeconds: number;
  readonly unrecordedPolicy: "continue" | "end";
  readonly channelLabel: "oai-events" | "realtime-channel";
  readonly rtcConfiguration: RTCConfiguration;
  audioElement: HTMLAudioElement | null;
  readonly connectTimeoutMs: number;
  readonly mediaTimeoutMs: number;
  readonly iceGatherMs: number;
  readonly endReasonWaitMs: number;
  readonly rollover: boolean;
  readonly rolloverLeadSeconds: number;
  /** DEFAULT_MESSAGES with the `messages` option on top. */
  readonly messages: Readonly<Messages>;
  readonly locale: string | string[] | undefined;

  /** Where the client is now. */
  readonly state: CallState;
  /**
   * The call's id (from `x-call-id`, or the last segment of `Location`), once the gateway answered;
   * after a rollover, the successor's.
   */
  readonly callId: string | null;
  /** The conversation's id (`x-conversation-id`: its first call's), the same across rollovers. */
  readonly conversationId: string | null;
  /** Epoch seconds when the call ends at the latest (`x-call-expires-at`), once known; a rollover moves it. */
  readonly expiresAt: number | null;
  /** Seconds left until `expiresAt` (null while unknown). */
  readonly remainingSeconds: number | null;
  /** Why the last call ended, once it has. */
  readonly endReason: EndReasonValue | null;
  /** The recorder's state for this call. */
  readonly recorder: RecorderState | null;
  /** Whether setMuted(true) is in force. */
  readonly muted: boolean;
  /** The browser refused to play the voice and playAudio() has not succeeded since. */
  readonly audioBlocked: boolean;
  /** The gateway's routes this client uses. */
  readonly url: { connect: string; call(id: string): string; hangup(id: string): string };

  /**
   * Start a call: microphone, peer connection, `POST /api/connect`, the recorder check. Resolves
   * with the call id once the call is live; rejects with a RealtimeError (also sent as `error`).
   * `stream`: a microphone stream of your own (the client stops its tracks at the end).
   */
  connect(options?: { stream?: MediaStream }): Promise<string | null>;
  /** Send a typed message and ask for the answer; throws RealtimeError(NOT_CONNECTED) when not live. */
  sendText(text: string): void;
  /** Mute or unmute the microphone (it stays off anyway until the recorder is there). */
  setMuted(muted: boolean): void;
  /**
   * End the call: `POST /api/calls/{id}/hangup` with the call's capability, then close the media.
   * `reason` is only recorded as a performance mark (`realtime:ended-<reason>`).
   */
  hangup(options?: { reason?: string }): Promise<void>;
  /** Play the voice after `autoplayblocked`; call it from a click. Resolves true if it plays. */
  playAudio(): Promise<boolean>;
  /** The gateway's view of the call: `{state, end_reason, ...}` (null before there is a call id). */
  callStatus(): Promise<{ call_id: string; state: "waiting" | "attached" | "ended"; end_reason?: GatewayEndReason; [key: string]: unknown } | null>;
  /** Just `state` of callStatus(). */
  callState(): Promise<"waiting" | "attached" | "ended" | null>;
  /** Peer connection statistics, for diagnostics (null without a call). */
  getStats(): Promise<RTCStatsReport | null>;

  /** The sentence for an `error` event's detail (or a RealtimeError), in the client's messages. */
  messageFor(detail: Pick<ErrorEventDetail, "kind"> & Partial<ErrorEventDetail> | RealtimeError): string;
  /** The sentence for an EndReason (what `ended` carries). */
  endMessage(reason: EndReasonValue): string;
  /** One of the client's messages, filled in. */
  text(key: keyof Messages, params?: MessageParams): string;
  /** "in 7 seconds" in the client's locale (the `soon` message for null). */
  waitText(seconds: number | null): string;
  /** A moment (epoch ms) in the person's time zone, worded by the `reset*` messages. */
  resetText(epochMs: number): string;

  addEventListener<K extends keyof RealtimeClientEventMap>(
    type: K,
    listener: (this: RealtimeClient, ev: RealtimeClientEventMap[K]) => unknown,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof RealtimeClientEventMap>(
    type: K,
    listener: (this: RealtimeClient, ev: RealtimeClientEventMap[K]) => unknown,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void;
}
