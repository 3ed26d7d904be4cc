// Embedding the realtime gateway's client in a TypeScript page: every option, event and method.
// Type-checked by tests/e2e/test_embedding_kit.py (`tsc --noEmit -p static_web/examples`).
// Build it with any bundler, or copy realtime-client.js and realtime-client.d.ts next to your code.
import {
  DEFAULT_MESSAGES,
  EndReason,
  ErrorKind,
  RealtimeClient,
  RealtimeError,
  SEED_CHANNEL_LABEL,
  SERVICE_CHANNEL_LABEL,
  VERSION,
  formatDuration,
  formatMessage,
  gatewayBase,
  type EndReasonValue,
  type Messages,
  type RealtimeClientOptions,
} from "../realtime-client.js";

const $ = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T;

// Sentences in French: any subset of DEFAULT_MESSAGES; strings with {placeholders}, or functions.
const french: Partial<Messages> = {
  busy: "Le service vocal est occupé. Réessayez {wait}.",
  rateLimited: "Vous avez lancé trop d'appels en peu de temps. Réessayez {wait}.",
  budgetExhausted: "Le quota du jour est épuisé. Les appels reprennent {resetAt}.",
  resetToday: "à {time}",
  resetTomorrow: "demain à {time}",
  resetOn: (p) => `le ${p.date ?? ""} à ${p.time ?? ""}`,
  endedHangup: "Vous avez raccroché.",
  endedLimit: "La conversation a atteint sa durée maximale.",
  timeLeft: "{remaining} restantes",
  conversationEnds: "La conversation se termine {wait}.",
  reference: " Référence : {requestId}.",
};

const options: RealtimeClientOptions = {
  gateway: gatewayBase("https://my-func.azurewebsites.net/api/"),
  recorderWaitSeconds: 15,
  unrecordedPolicy: "continue",
  channelLabel: SERVICE_CHANNEL_LABEL,
  rtcConfiguration: { iceServers: [{ urls: "turn:turn.example.net:3478", username: "u", credential: "p" }] },
  audioElement: $<HTMLAudioElement>("voice"),
  connectTimeoutMs: 45_000,
  mediaTimeoutMs: 15_000,
  iceGatherMs: 0,
  endReasonWaitMs: 5_000,
  messages: french,
  locale: "fr-FR",
  fetch: (input, init) => fetch(input, { ...init, credentials: "omit" }),
  rollover: true,
  rolloverLeadSeconds: 90,
};
const client = new RealtimeClient(options);
const seedLabelled = new RealtimeClient({ channelLabel: SEED_CHANNEL_LABEL, unrecordedPolicy: "end" });
console.log(VERSION, seedLabelled.channelLabel, DEFAULT_MESSAGES.endedLimit, client.messages.busy);

client.addEventListener("state", (e) => {
  const { state, previous } = e.detail;
  document.body.dataset.state = state;
  console.log(`${previous} -> ${state}`, client.state, client.callId, client.recorder);
});
client.addEventListener("recorder", (e) => console.log(e.detail.state, e.detail.waitedMs));
client.addEventListener("transcript", ({ detail: t }) => {
  console.log(t.role, t.itemId, t.done ? t.text : t.delta, t.notice === true, t.typed === true);
});
client.addEventListener("speech", (e) => console.log(e.detail.who, e.detail.speaking));
client.addEventListener("timer", (e) => {
  const { remainingSeconds, expiresAt, oneMinuteLeft, text } = e.detail;
  $("time-left").textContent = text;
  if (oneMinuteLeft) console.log(client.text("oneMinuteLeft"), expiresAt, formatDuration(remainingSeconds));
});
client.addEventListener("ended", (e) => {
  const reason: EndReasonValue = e.detail.reason;
  $("status").textContent = e.detail.message;
  if (e.detail.announced) console.log("ended when announced", client.conversationId);
  if (reason === EndReason.BUDGET) console.log(e.detail.endReason, client.endMessage(EndReason.BUDGET));
  console.log(client.endReason, client.expiresAt, client.remainingSeconds);
});
client.addEventListener("rollover", (e) => {
  const { from, to, conversationId, gapMs } = e.detail;
  console.log(`${from} -> ${to}`, conversationId === client.conversationId, gapMs ?? "no figure", client.rollover);
});
client.addEventListener("rolloverfailed", (e) => {
  const { from, kind, code, status, remainingSeconds, willRetry, message } = e.detail;
  if (!willRetry) $("status").textContent = message;  // "La conversation se termine dans 45 secondes."
  console.log(from, kind, code, status, remainingSeconds, client.rolloverLeadSeconds);
});
client.addEventListener("autoplayblocked", (e) => {
  const button = $<HTMLButtonElement>("play");
  button.hidden = false;
  button.title = e.detail.message;
  console.log(e.detail.element.paused, client.audioBlocked);
  button.onclick = async () => { button.hidden = !(await client.playAudio()); };
});
client.addEventListener("audioplaying", () => { $("play").hidden = true; });
client.addEventListener("datachannel", (e) => console.log(e.detail.label));
client.addEventListener("localstream", (e) => console.log(e.detail.stream.getAudioTracks().length));
client.addEventListener("remotestream", (e) => console.log(e.detail.stream.id));
client.addEventListener("serverevent", (e) => console.log(e.detail.event.type));
client.addEventListener("error", (e) => {
  const d = e.detail;
  $("error").textContent = d.userMessage;
  if (d.kind === ErrorKind.THROTTLED) console.log(d.code, d.retryAfter, client.waitText(d.retryAfter));
  console.log(d.status, d.requestId, d.fatal, d.error instanceof RealtimeError, d.message);
});

async function demo(): Promise<void> {
  const callId: string | null = await client.connect();
  client.sendText("Bonjour");
  client.setMuted(true);
  console.log(callId, client.muted, client.url.connect, client.url.call("rtc_1"), client.url.hangup("rtc_1"));
  const status = await client.callStatus();
  console.log(status?.state, status?.end_reason, await client.callState(), await client.getStats());
  console.log(client.messageFor({ kind: ErrorKind.MIC_DENIED }), client.messageFor(new RealtimeError(ErrorKind.TIMEOUT, "slow")));
  console.log(client.resetText(Date.now() + 3_600_000), formatMessage(DEFAULT_MESSAGES.timeLeft, { remaining: "1:00" }));
  await client.hangup({ reason: "user" });
}

$("start").addEventListener("click", () => { demo().catch(() => { /* shown by the error event */ }); });
