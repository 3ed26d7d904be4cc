"""Token usage the way the service reports it in `response.done`: every response's input is the
instructions plus the whole conversation so far (text and audio), the part an earlier response
already sent counts as cached, and an audio reply is billed as audio tokens plus its transcript.

Rates are the documented ones (user audio 1 token per 100 ms, assistant audio 1 per 50 ms); text
is ~4 characters a token, not a tokenizer. The service caches in 64-token steps; its 1024-token
minimum is left out so that short test calls show cached tokens too.
"""

from __future__ import annotations

from dataclasses import dataclass

USER_AUDIO_TOKENS_PER_SECOND = 10
ASSISTANT_AUDIO_TOKENS_PER_SECOND = 20
SPEECH_CHARS_PER_SECOND = 15  # how long the emulator's reply takes to say


def text_tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


def output_tokens(text: str, audio: bool) -> tuple[int, int]:
    """(text, audio) output tokens of a reply that says `text` (aloud when `audio`)."""
    seconds = len(text) / SPEECH_CHARS_PER_SECOND if audio else 0
    return text_tokens(text), round(seconds * ASSISTANT_AUDIO_TOKENS_PER_SECOND)


def fit(text: str, audio: bool, limit: int | str) -> str:
    """The longest whole-word start of `text` within `limit` output tokens ("inf": all of it): where
    a response with max_output_tokens stops."""
    if limit == "inf" or sum(output_tokens(text, audio)) <= int(limit):
        return text
    words = text.split(" ")
    kept = ""
    for i in range(1, len(words) + 1):
        candidate = " ".join(words[:i])
        if sum(output_tokens(candidate, audio)) > int(limit):
            break
        kept = candidate
    return kept


@dataclass
class UsageMeter:
    context_text: int = 0  # conversation tokens so far, beyond the instructions
    context_audio: int = 0
    previous_input: tuple[int, int] = (0, 0)  # (text, audio) input of the previous response

    def user_text(self, text: str) -> None:
        self.context_text += text_tokens(text)

    def user_audio(self, seconds: float) -> None:
        self.context_audio += round(seconds * USER_AUDIO_TOKENS_PER_SECOND)

    def response(self, instructions: str, text: str, audio: bool) -> dict:
        """The `usage` of a response that says `text` (aloud when `audio`)."""
        in_text = text_tokens(instructions) + self.context_text
        in_audio = self.context_audio
        # what the previous response already sent is a cached prefix (text first, as it comes first)
        prev_text, prev_audio = self.previous_input
        cached_text = (min(prev_text, in_text) // 64) * 64
        cached_audio = (min(prev_audio, in_audio) // 64) * 64
        out_text, out_audio = output_tokens(text, audio)
        self.previous_input = (in_text, in_audio)
        self.context_text += out_text
        self.context_audio += out_audio
        inp, out = in_text + in_audio, out_text + out_audio
        return {
            "total_tokens": inp + out,
            "input_tokens": inp,
            "output_tokens": out,
            "input_token_details": {
                "text_tokens": in_text,
                "audio_tokens": in_audio,
                "image_tokens": 0,
                "cached_tokens": cached_text + cached_audio,
                "cached_tokens_details": {"text_tokens": cached_text, "audio_tokens": cached_audio, "image_tokens": 0},
            },
            "output_token_details": {"text_tokens": out_text, "audio_tokens": out_audio},
        }
