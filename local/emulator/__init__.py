"""Offline stand-in for the Azure OpenAI GPT Realtime service over WebRTC (never deployed)."""
from .emulator import Emulator
from .replies import SPEECH_TRANSCRIPT, reply_for

__all__ = ["Emulator", "reply_for", "SPEECH_TRANSCRIPT"]
