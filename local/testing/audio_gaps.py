"""The audio a page receives across a rollover (the browser client switching a conversation to a
successor call): sampled in the page from `getStats` of every peer connection, and the longest
stretch without a new audio packet on the path the page plays, around each switch.

Shared by tests/e2e/test_browser_rollover.py and bench/bench_rollover.py. The page must have a
peer-connection probe (`window.__pcs`: RECORD_PEERS here, or the tests' TRACK_PEER_CONNECTIONS)
installed before its scripts.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Any

# The emulator (and the service) send one Opus packet per 20 ms, silence included, while a call is up.
PACKET_MS = 20.0

# An init script: every RTCPeerConnection the page makes, in `window.__pcs` (kept if a probe set it).
RECORD_PEERS = """
(() => {
  if (window.__pcs) return;
  const Native = window.RTCPeerConnection;
  window.__pcs = [];
  window.RTCPeerConnection = class extends Native {
    constructor(...args) { super(...args); window.__pcs.push(this); }
  };
})();
"""

# Every ~20 ms, what the <audio> element plays (its track id) and each open peer connection's
# inbound audio: its track, packets so far, the last packet's arrival and the stats' own time
# (both on the browser's stats clock, so a late timer does not move them).
START_SAMPLING = """
(audioSelector) => {
  const audio = document.querySelector(audioSelector);
  window.__audioSamples = [];
  window.__sampling = true;
  (async () => {
    while (window.__sampling) {
      const src = audio.srcObject;
      const track = src && src.getAudioTracks()[0];
      const row = { playing: track ? track.id : null, pcs: [] };
      for (const pc of window.__pcs) {
        let seen = null;
        if (pc.connectionState !== 'closed') {
          try {
            (await pc.getStats()).forEach((s) => {
              if (s.type === 'inbound-rtp' && s.kind === 'audio') {
                seen = { track: s.trackIdentifier, packets: s.packetsReceived || 0,
                         at: s.lastPacketReceivedTimestamp ?? null, t: s.timestamp };
              }
            });
          } catch { /* closed meanwhile */ }
        }
        row.pcs.push(seen);
      }
      window.__audioSamples.push(row);
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
}
"""

STOP_SAMPLING = """
async () => { window.__sampling = false; await new Promise((r) => setTimeout(r, 100)); return window.__audioSamples; }
"""


@dataclass(frozen=True)
class Switch:
    """One change of the played track: when (stats clock, ms), the longest gap around it, and how
    many packets the new track had received when the page began to play it (0: it switched to a
    call whose audio had not started)."""

    at: float
    gap_ms: float
    from_track: str | None
    to_track: str
    to_packets: int


def _played(row: dict[str, Any]) -> int | None:
    """Index of the peer connection whose track the page plays in this sample."""
    return next(
        (i for i, s in enumerate(row["pcs"]) if s and row["playing"] and s["track"] == row["playing"]),
        None,
    )


def _stats_time(row: dict[str, Any]) -> float | None:
    return next((s["t"] for s in row["pcs"] if s and s.get("t") is not None), None)


def audio_intervals(samples: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(time, ms without audio) on the played path: at each sample that brought new packets, the
    interval before the first of them; at each that brought none, the silence so far (so audio that
    never comes back reads as a growing gap). A sample that brought n packets is taken to have
    received its first one (n - 1) x 20 ms before its last: so a late sample (a busy page) does not
    read as a gap, while a real pause in the packets still does. At a switch the previous packet is
    the old call's last one sampled, so the figure errs on the long side."""
    out: list[tuple[float, float]] = []
    last_audio: float | None = None
    for before, row in pairwise(samples):
        i = _played(row)
        if i is None:
            continue
        now = row["pcs"][i]
        prior = before["pcs"][i] if i < len(before["pcs"]) else None
        new = now["packets"] - (prior["packets"] if prior else 0)
        if new <= 0 or now["at"] is None:
            if last_audio is not None and now.get("t") is not None:
                out.append((now["t"], max(0.0, now["t"] - last_audio)))
            continue
        first = now["at"] - (new - 1) * PACKET_MS
        if prior and prior["at"] is not None:
            first = max(first, prior["at"])
        if last_audio is not None:
            out.append((now["at"], max(0.0, first - last_audio)))
        last_audio = now["at"]
    return out


def switch_gaps(samples: list[dict[str, Any]], window_ms: float = 2000.0) -> list[Switch]:
    """Each switch of the played track, with the longest interval without new audio on the played
    path within `window_ms` of it."""
    intervals = audio_intervals(samples)
    switches: list[Switch] = []
    previous: str | None = None
    for row in samples:
        playing = row["playing"]
        if playing and previous and playing != previous:
            at = _stats_time(row)
            if at is not None:
                near = [gap for t, gap in intervals if abs(t - at) <= window_ms]
                i = _played(row)
                packets = row["pcs"][i]["packets"] if i is not None else 0
                switches.append(Switch(at, max(near, default=float("inf")), previous, playing, packets))
        if playing:
            previous = playing
    return switches
