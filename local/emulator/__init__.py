"""Offline stand-in for the Azure OpenAI GPT Realtime service over WebRTC (never deployed)."""

from .emulator import Emulator
from .replies import SPEECH_TRANSCRIPT, reply_for

__all__ = ["SPEECH_TRANSCRIPT", "Emulator", "reply_for"]
