// The page: wires RealtimeClient to the DOM (controls, meter, transcript, timer, messages).
import { RealtimeClient, EndReason, formatDuration, gatewayBase } from "./realtime-client.js";

const $ = (id) => document.getElementById(id);
const ui = {
  start: $("start"), stop: $("stop"), mute: $("mute"), state: $("state"), recorder: $("recorder"),
  callId: $("call-id"), error: $("error"), notice: $("notice"), meter: $("mic-level"),
  speaking: $("speaking"), transcript: $("transcript"), empty: $("transcript-empty"),
  form: $("message-form"), message: $("message"), send: $("send"), audio: $("remote-audio"),
  timeLeft: $("time-left"), outcome: $("outcome"), play: $("play-audio"),
};

const STATE_TEXT = {
  idle: "Not connected", starting: "Asking for the microphone…", connecting: "Connecting…",
  "recorder-check": "Connected, starting the recorder…", live: "Connected", ending: "Ending the call…",
  ended: "Call ended", failed: "Not connected",
};
const RECORDER_TEXT = { waiting: "Waiting for the recorder…", attached: "Recorded", unrecorded: "Not recorded" };

/**
 * Gateway base from config.json, overridden by ?gateway= (http/https URLs only); config.json may
 * also carry `locale` and `messages` (the client's sentences in another language).
 */
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
    locale: typeof config.locale === "string" && config.locale ? config.locale : undefined,
    // the conversation goes on past a call's end (the service's session cap) unless switched off
    rollover: config.rollover !== false,
    rolloverLeadSeconds: Number(config.rolloverLeadSeconds) > 0 ? Number(config.rolloverLeadSeconds) : undefined,
    messages: config.messages && typeof config.messages === "object" ? config.messages : undefined,
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

function showOutcome(text) {
  ui.outcome.textContent = text;
  ui.outcome.hidden = !text;
}

function showTimeLeft(seconds) {
  ui.timeLeft.textContent = seconds == null ? "—" : formatDuration(seconds);
  if (seconds == null) delete ui.timeLeft.dataset.seconds;
  else ui.timeLeft.dataset.seconds = String(seconds);
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
    if (state === "ended" || state === "failed") {
      stopMeter();
      ui.speaking.textContent = "";
      showTimeLeft(null);
      ui.play.hidden = true;
    }
    if (state === "live" && ui.message.disabled === false && document.activeElement === ui.start) ui.message.focus();
    if (state === "live" && localStream) startMeter(localStream);
  });
  client.addEventListener("recorder", (e) => {
    const { state } = e.detail;
    ui.recorder.textContent = RECORDER_TEXT[state] || state;
    ui.recorder.dataset.recorder = state;
    if (state === "unrecorded" && config.unrecordedPolicy === "continue") {
      showNotice("This call is NOT being recorded: the recorder did not start in time. You can go on, or hang up and try again.");
    }
  });
  client.addEventListener("timer", (e) => {
    const { remainingSeconds, oneMinuteLeft } = e.detail;
    showTimeLeft(remainingSeconds);
    if (oneMinuteLeft && ui.notice.hidden) showNotice(client.text("oneMinuteLeft"));
  });
  // The meter starts when the call goes live: until then the client keeps the microphone's track
  // off (the recorder gate), so it could only show silence, and its AudioContext (a few ms to make,
  // then an audio thread) would compete with setting the call up.
  let localStream = null;
  client.addEventListener("localstream", (e) => { localStream = e.detail.stream; });
  client.addEventListener("datachannel", () => { ui.state.dataset.channel = "open"; });
  client.addEventListener("transcript", (e) => onTranscript(e.detail));
  client.addEventListener("speech", (e) => {
    const { who, speaking } = e.detail;
    ui.speaking.textContent = speaking ? (who === "user" ? "Listening…" : "Assistant is speaking…") : "";
  });
  // Blocked autoplay (iOS, strict browser settings): a visible control that plays on a tap.
  client.addEventListener("autoplayblocked", (e) => {
    ui.play.hidden = false;
    showNotice(e.detail.message);
  });
  client.addEventListener("audioplaying", () => {
    if (!ui.play.hidden) showNotice("");
    ui.play.hidden = true;
  });
  // Errors, and calls that ended without the person's hang-up, are alerts; a hang-up is a status.
  client.addEventListener("error", (e) => showError(e.detail.userMessage || client.messageFor(e.detail)));
  client.addEventListener("ended", (e) => {
    const { reason, message, announced } = e.detail;
    document.body.dataset.endReason = reason;
    // an end the page announced ("The conversation ends in N seconds") is a status, not an alert
    if (announced) showNotice("");
    if (reason === EndReason.HANGUP || announced) showOutcome(message);
  });
  // The conversation moved to its next call (before the service's session cap): nothing to tell
  // the person; the call id shown follows it.
  client.addEventListener("rollover", (e) => {
    ui.callId.textContent = e.detail.to;
    document.body.dataset.rollovers = String(Number(document.body.dataset.rollovers || 0) + 1);
  });
  client.addEventListener("rolloverfailed", (e) => {
    if (!e.detail.willRetry) showNotice(e.detail.message);  // "The conversation ends in 45 seconds."
  });

  ui.start.addEventListener("click", async () => {
    performance.mark("realtime:click");
    showError("");
    showNotice("");
    showOutcome("");
    delete document.body.dataset.endReason;
    delete document.body.dataset.rollovers;
    ui.callId.textContent = "—";
    ui.recorder.textContent = "—";
    ui.recorder.dataset.recorder = "none";
    delete ui.state.dataset.channel;
    try {
      await client.connect();
    } catch { /* the error event already showed the message */ }
  });
  ui.stop.addEventListener("click", () => client.hangup());
  // A toggle button: its name stays "Mute", aria-pressed says whether it is on.
  ui.mute.addEventListener("click", () => {
    const muted = ui.mute.getAttribute("aria-pressed") !== "true";
    client.setMuted(muted);
    ui.mute.setAttribute("aria-pressed", String(muted));
  });
  ui.play.addEventListener("click", () => client.playAudio());
  ui.form.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = ui.message.value.trim();
    if (!text) return;
    try {
      client.sendText(text);
      ui.message.value = "";
    } catch (err) {
      showError(client.messageFor(err));
    }
  });
  // Leaving the page ends the call server-side too (keepalive POST survives the unload).
  window.addEventListener("pagehide", () => { if (client.state !== "idle") client.hangup({ reason: "pagehide" }); });
  render("idle");
  document.body.dataset.ready = "true";
}

main();
