// The page: wires RealtimeClient to the DOM (controls, meter, transcript, messages).
import { RealtimeClient, ErrorKind, gatewayBase } from "./realtime-client.js";

const $ = (id) => document.getElementById(id);
const ui = {
  start: $("start"), stop: $("stop"), mute: $("mute"), state: $("state"), recorder: $("recorder"),
  callId: $("call-id"), error: $("error"), notice: $("notice"), meter: $("mic-level"),
  speaking: $("speaking"), transcript: $("transcript"), empty: $("transcript-empty"),
  form: $("message-form"), message: $("message"), send: $("send"), audio: $("remote-audio"),
};

const STATE_TEXT = {
  idle: "Not connected", starting: "Asking for the microphone…", connecting: "Connecting…",
  "recorder-check": "Connected, starting the recorder…", live: "Connected", ending: "Hanging up…",
  ended: "Call ended", failed: "Not connected",
};
const RECORDER_TEXT = { waiting: "Waiting for the recorder…", attached: "Recorded", unrecorded: "Not recorded" };

function waitText(seconds) {
  if (seconds == null) return "in a minute";
  if (seconds < 120) return `in ${seconds} second${seconds === 1 ? "" : "s"}`;
  if (seconds < 7200) return `in ${Math.ceil(seconds / 60)} minutes`;
  return `in ${Math.ceil(seconds / 3600)} hours`;
}

/** A 429 says which limit it hit (`code`): tell the person which, and when to come back. */
function throttledMessage(detail, ref) {
  const when = waitText(detail.retryAfter);
  switch (detail.code) {
    case "rate_limited":
      return `You have started too many calls in a short time. Try again ${when}.${ref}`;
    case "too_many_active_calls":
      return `All lines are busy: the service is running as many calls as it allows. Try again ${when}.${ref}`;
    case "budget_exhausted":
      return `Today's allowance for voice calls is used up. Calls open again ${when} (at midnight UTC).${ref}`;
    default:
      return `The voice service is busy. Try again ${when}.${ref}`;
  }
}

/** A sentence a person can act on, for every error kind the client reports. */
export function messageFor(detail) {
  const ref = detail.requestId ? ` Reference: ${detail.requestId}.` : "";
  switch (detail.kind) {
    case ErrorKind.UNSUPPORTED:
      return "This browser cannot make voice calls. Use a current Chrome, Edge, Firefox or Safari over https.";
    case ErrorKind.MIC_DENIED:
      return "Microphone access was denied. Allow the microphone for this site in the browser's address bar or settings, then press Start again.";
    case ErrorKind.MIC_MISSING:
      return "No microphone was found. Connect a microphone (or headset) and press Start again.";
    case ErrorKind.MIC_BUSY:
      return "The microphone could not be started; another app may be using it. Close it and press Start again.";
    case ErrorKind.GATEWAY_UNREACHABLE:
      return "The voice service cannot be reached. Check your internet connection and try again in a moment.";
    case ErrorKind.ORIGIN_NOT_ALLOWED:
      return `This website is not allowed to use the voice service (its origin is not on the gateway's allowed list). The site owner must add ${location.origin} to the gateway's allowed origins.${ref}`;
    case ErrorKind.FORBIDDEN:
      return `You are not allowed to start a call here. Sign in and try again.${ref}`;
    case ErrorKind.THROTTLED:
      return throttledMessage(detail, ref);
    case ErrorKind.TIMEOUT:
      return `The voice service took too long to answer. Try again.${ref}`;
    case ErrorKind.SERVICE_ERROR:
      return `The voice service had a problem and could not start the call. Try again in a moment.${ref}`;
    case ErrorKind.BAD_REQUEST:
      return `The voice service rejected the call setup (${detail.message}).${ref}`;
    case ErrorKind.MEDIA_FAILED:
      return "The audio connection could not be set up. A firewall or VPN may be blocking real-time audio.";
    case ErrorKind.CONNECTION_LOST:
      if (detail.code === "policy") {
        return "The call was ended because this page tried to change the assistant's instructions or tools, which this service does not allow. Press Start to begin a new conversation.";
      }
      return "The connection was lost and the call has ended. Press Start to begin a new conversation.";
    case ErrorKind.NOT_RECORDED:
      return "The call was ended because it could not be recorded, and this service requires every call to be recorded. Try again in a moment.";
    case ErrorKind.NOT_CONNECTED:
      return "The message was not sent because the call is not connected.";
    default:
      return `Something went wrong: ${detail.message}${ref}`;
  }
}

/** Gateway base from config.json, overridden by ?gateway= (http/https URLs only). */
async function loadConfig() {
  let config = {};
  try {
    const response = await fetch("config.json", { cache: "no-store" });
    if (response.ok) config = await response.json();
  } catch { /* no config.json: same-origin defaults */ }
  const override = new URLSearchParams(location.search).get("gateway");
  if (override) {
    try {
      const url = new URL(override);
      if (url.protocol === "https:" || url.protocol === "http:") config.gatewayUrl = url.href;
    } catch { /* ignore a malformed override */ }
  }
  return {
    gateway: gatewayBase(config.gatewayUrl || ""),
    recorderWaitSeconds: Number(config.recorderWaitSeconds) > 0 ? Number(config.recorderWaitSeconds) : 15,
    unrecordedPolicy: config.unrecordedPolicy === "end" ? "end" : "continue",
  };
}

function showError(text) {
  ui.error.textContent = text;
  ui.error.hidden = !text;
}

function showNotice(text) {
  ui.notice.textContent = text;
  ui.notice.hidden = !text;
}

// --- microphone level meter (AnalyserNode on the local stream) -----------------------------
let meterStop = null;
function startMeter(stream) {
  stopMeter();
  const AudioCtx = window.AudioContext || window.webkitAudioContext;
  if (!AudioCtx) return;
  const ctx = new AudioCtx();
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 1024;
  ctx.createMediaStreamSource(stream).connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  let frame = 0;
  const tick = () => {
    analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const s of samples) sum += s * s;
    const rms = Math.sqrt(sum / samples.length);
    // Speech RMS sits around 0.02-0.3; a square root spreads that over the bar.
    ui.meter.value = Math.min(1, Math.sqrt(rms) * 1.5);
    ui.meter.textContent = `${Math.round(ui.meter.value * 100)}%`;
    frame = requestAnimationFrame(tick);
  };
  if (ctx.state === "suspended") ctx.resume();
  tick();
  meterStop = () => { cancelAnimationFrame(frame); ctx.close(); ui.meter.value = 0; ui.meter.textContent = "silent"; };
}
function stopMeter() { if (meterStop) meterStop(); meterStop = null; }

// --- transcript -----------------------------------------------------------------------------
const turns = new Map();
function turnFor(role, itemId) {
  const key = `${role}:${itemId}`;
  let li = turns.get(key);
  if (!li) {
    li = document.createElement("li");
    li.className = `turn ${role}`;
    li.dataset.role = role;
    li.dataset.itemId = itemId;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = role === "user" ? "You" : "Assistant";
    const text = document.createElement("span");
    text.className = "text";
    li.append(who, text);
    ui.transcript.append(li);
    ui.empty.hidden = true;
    turns.set(key, li);
  }
  return li;
}

function onTranscript({ role, itemId, delta, text, done, notice }) {
  const li = turnFor(role, itemId);
  if (notice) {  // said by the service, not the model: label it so (e.g. why an answer stopped)
    li.classList.add("notice");
    li.querySelector(".who").textContent = "Notice";
  }
  const span = li.querySelector(".text");
  if (done) span.textContent = text || span.textContent || (role === "user" ? "(inaudible)" : "");
  else if (delta) span.textContent += delta;
  else if (!span.textContent) span.textContent = "…";
  // aria-busy keeps screen readers from reading every streamed word; they read the finished turn.
  li.setAttribute("aria-busy", done ? "false" : "true");
  li.dataset.done = String(done);
  li.scrollIntoView({ block: "nearest" });
}

// --- controls -------------------------------------------------------------------------------
function setComposer(open) {
  ui.message.disabled = !open;
  ui.send.disabled = !open;
  ui.message.placeholder = open ? "Type a message and press Enter" : "Available once the call is recorded";
}

function render(state) {
  ui.state.textContent = STATE_TEXT[state] || state;
  ui.state.dataset.state = state;
  const busy = ["starting", "connecting", "recorder-check", "live"].includes(state);
  ui.start.disabled = busy || state === "ending";
  ui.stop.disabled = !busy;
  ui.mute.disabled = state !== "live";
  setComposer(state === "live");
  document.body.dataset.state = state;
}

async function main() {
  const config = await loadConfig();
  const client = new RealtimeClient({ ...config, audioElement: ui.audio });
  document.body.dataset.gateway = config.gateway || location.origin;

  client.addEventListener("state", (e) => {
    const { state } = e.detail;
    render(state);
    if (state === "recorder-check" && client.callId) ui.callId.textContent = client.callId;
    if (state === "ended" || state === "failed") { stopMeter(); ui.speaking.textContent = ""; }
    if (state === "live" && ui.message.disabled === false && document.activeElement === ui.start) ui.message.focus();
  });
  client.addEventListener("recorder", (e) => {
    const { state } = e.detail;
    ui.recorder.textContent = RECORDER_TEXT[state] || state;
    ui.recorder.dataset.recorder = state;
    if (state === "unrecorded" && config.unrecordedPolicy === "continue") {
      showNotice("This call is NOT being recorded: the recorder did not start in time. You can go on, or hang up and try again.");
    }
  });
  client.addEventListener("localstream", (e) => startMeter(e.detail.stream));
  client.addEventListener("datachannel", () => { ui.state.dataset.channel = "open"; });
  client.addEventListener("transcript", (e) => onTranscript(e.detail));
  client.addEventListener("speech", (e) => {
    const { who, speaking } = e.detail;
    ui.speaking.textContent = speaking ? (who === "user" ? "Listening…" : "Assistant is speaking…") : "";
  });
  client.addEventListener("error", (e) => showError(messageFor(e.detail)));

  ui.start.addEventListener("click", async () => {
    performance.mark("realtime:click");
    showError("");
    showNotice("");
    ui.callId.textContent = "—";
    ui.recorder.textContent = "—";
    ui.recorder.dataset.recorder = "none";
    delete ui.state.dataset.channel;
    try {
      await client.connect();
    } catch { /* the error event already showed the message */ }
  });
  ui.stop.addEventListener("click", () => client.hangup());
  ui.mute.addEventListener("click", () => {
    const muted = ui.mute.getAttribute("aria-pressed") !== "true";
    client.setMuted(muted);
    ui.mute.setAttribute("aria-pressed", String(muted));
    ui.mute.textContent = muted ? "Unmute" : "Mute";
  });
  ui.form.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = ui.message.value.trim();
    if (!text) return;
    try {
      client.sendText(text);
      ui.message.value = "";
    } catch (err) {
      showError(messageFor(err));
    }
  });
  // Leaving the page ends the call server-side too (keepalive POST survives the unload).
  window.addEventListener("pagehide", () => { if (client.state !== "idle") client.hangup({ reason: "pagehide" }); });
  render("idle");
  document.body.dataset.ready = "true";
}

main();
