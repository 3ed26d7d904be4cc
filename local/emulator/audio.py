"""Audio both ways: a spoken reply (espeak-ng, or a tone) sent as RTP frames, and an energy VAD."""

from __future__ import annotations

import asyncio
import fractions
import os
import shutil
import subprocess
import tempfile
import time
import wave
from functools import lru_cache

import numpy as np
from aiortc.mediastreams import MediaStreamTrack
from av import AudioFrame

RATE = 48000
FRAME_SAMPLES = 960  # 20 ms at 48 kHz, what Opus carries per packet
FRAME_SECONDS = FRAME_SAMPLES / RATE


def _resample(samples: np.ndarray, src_rate: int) -> np.ndarray:
    if src_rate == RATE or samples.size == 0:
        return samples.astype(np.int16)
    n = round(samples.size * RATE / src_rate)
    x = np.linspace(0, samples.size - 1, n)
    return np.interp(x, np.arange(samples.size), samples.astype(np.float32)).astype(np.int16)


def tone(seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (np.sin(2 * np.pi * freq * t) * 8000).astype(np.int16)


@lru_cache(maxsize=64)
def speech_pcm(text: str) -> np.ndarray:
    """`text` spoken by espeak-ng as 48 kHz mono int16; a tone as long as the text when it is missing."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        return tone(min(5.0, 0.3 + 0.06 * len(text)))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "reply.wav")
        # Long texts (padding tests) are cut: the transcript carries them, audio need not.
        subprocess.run([espeak, "-w", path, text[:400]], check=True, capture_output=True, timeout=30)
        with wave.open(path, "rb") as w:
            rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
            raw = w.readframes(w.getnframes())
    samples = np.frombuffer(raw, dtype=np.int16 if width == 2 else np.uint8)
    if channels > 1:
        samples = samples.reshape(-1, channels)[:, 0]
    return _resample(samples, rate)


class ReplyAudioTrack(MediaStreamTrack):
    """The assistant's voice: queued speech in real time, silence when idle."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._pending = np.zeros(0, dtype=np.int16)
        self._pts = 0
        self._start: float | None = None
        self._drained = asyncio.Event()
        self._drained.set()
        self.frames_sent = 0
        self.speech_frames_sent = 0

    def play(self, pcm: np.ndarray) -> None:
        self._pending = np.concatenate([self._pending, pcm.astype(np.int16)])
        self._drained.clear()

    def clear(self) -> None:
        self._pending = np.zeros(0, dtype=np.int16)
        self._drained.set()

    async def drained(self) -> None:
        await self._drained.wait()

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            from aiortc.mediastreams import MediaStreamError

            raise MediaStreamError
        # Pace frames on the wall clock, as a live source does.
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._pts / RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        chunk = self._pending[:FRAME_SAMPLES]
        self._pending = self._pending[FRAME_SAMPLES:]
        if chunk.size:
            self.speech_frames_sent += 1
        if chunk.size < FRAME_SAMPLES:
            chunk = np.concatenate([chunk, np.zeros(FRAME_SAMPLES - chunk.size, dtype=np.int16)])
            if not self._pending.size:
                self._drained.set()
        frame = AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, RATE)
        self._pts += FRAME_SAMPLES
        self.frames_sent += 1
        return frame


def frame_rms(frame: AudioFrame) -> float:
    """RMS level (int16 scale) of a decoded frame, all channels together."""
    raw = frame.to_ndarray()
    data = raw.astype(np.float32)
    if raw.dtype.kind == "f":
        data = data * 32767.0
    return float(np.sqrt(np.mean(data * data))) if data.size else 0.0


class EnergyVad:
    """Speech = enough loud frames in a short window; end = a run of quiet frames.

    The window rejects Chromium's fake-microphone beeps (a few tens of ms each) while a
    spoken word (hundreds of ms of voiced audio) starts a segment.
    """

    def __init__(
        self, threshold: float = 600.0, window_frames: int = 15, min_voiced: int = 8, silence_ms: int = 500
    ) -> None:
        self.threshold = threshold
        self.window_frames = window_frames
        self.min_voiced = min_voiced
        self.silence_frames = max(1, silence_ms // 20)
        self._window: list[bool] = []
        self._quiet = 0
        self.speaking = False
        self.ms = 0  # audio time seen so far

    def feed(self, rms: float, frame_ms: int = 20) -> str | None:
        """Returns "start", "stop" or None for one frame."""
        self.ms += frame_ms
        voiced = rms >= self.threshold
        self._window = (self._window + [voiced])[-self.window_frames :]
        if not self.speaking:
            if sum(self._window) >= self.min_voiced:
                self.speaking = True
                self._quiet = 0
                return "start"
            return None
        self._quiet = 0 if voiced else self._quiet + 1
        if self._quiet >= self.silence_frames:
            self.speaking = False
            self._window = []
            return "stop"
        return None
