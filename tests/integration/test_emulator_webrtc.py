"""Real WebRTC calls with an in-process aiortc peer: data channel, filtering, audio both ways, VAD."""

import asyncio
import json
import statistics

import aiohttp
import numpy as np

from local.emulator import SPEECH_TRANSCRIPT, reply_for
from local.emulator.audio import FRAME_SAMPLES, RATE, speech_pcm, tone
from local.emulator.events import BROWSER_EVENTS
from local.emulator.peer import ClientPeer, entra_token, mint_ephemeral_key


async def _connect(emu, http, webrtc_filter=True, label="oai-events"):
    ek = await mint_ephemeral_key(emu.url, emu.identity_header, emu.deployment, http)
    peer = ClientPeer(label=label)
    await peer.connect(emu.url, ek, webrtc_filter=webrtc_filter, session=http)
    return peer


def _info(emu, call_id):
    return emu.call_info(call_id)


def test_text_turn_filtered_channel_and_audio_back(emulator):
    async def run():
        async with aiohttp.ClientSession() as http:
            peer = await _connect(emulator, http, label="realtime-channel")
            peer.send(
                {
                    "type": "conversation.item.create",
                    "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi!"}]},
                }
            )
            peer.send({"type": "response.create"})
            done = await peer.wait_for("response.output_audio_transcript.done", timeout=10)
            await peer.wait_for("output_audio_buffer.stopped", timeout=15)
            # the reply's audio frames reach the client, the client's microphone frames the emulator
            end = asyncio.get_running_loop().time() + 5
            while True:
                info = _info(emulator, peer.call_id)
                if peer.remote_loud_frames > 20 and info["audio_frames_in"] > 20:
                    break
                assert asyncio.get_running_loop().time() < end, (peer.remote_loud_frames, info)
                await asyncio.sleep(0.05)
            await peer.close()
            return peer, done, info

    peer, done, info = asyncio.run(run())
    assert info["channel_label"] == "realtime-channel"
    assert set(peer.types()) <= BROWSER_EVENTS
    assert "session.created" not in peer.types()  # filtered: instructions stay private
    assert done["transcript"] == reply_for("Hi!")
    deltas = "".join(m["delta"] for m in peer.messages if m["type"] == "response.output_audio_transcript.delta")
    assert deltas == done["transcript"]
    # audio both ways: spoken reply frames reached the client, the client's mic reached the emulator
    assert peer.remote_loud_frames > 20
    assert info["speech_frames_out"] > 20 and info["audio_frames_in"] > 20


def test_unfiltered_channel_gets_session_created_first(emulator):
    async def run():
        async with aiohttp.ClientSession() as http:
            peer = await _connect(emulator, http, webrtc_filter=False)
            first = await peer.wait_for("session.created", timeout=5)
            await peer.close()
            return peer, first

    peer, first = asyncio.run(run())
    assert peer.messages[0] is first
    assert first["session"]["instructions"] == "Be brief."


def test_speech_triggers_vad_transcript_and_reply(emulator):
    async def run():
        async with aiohttp.ClientSession() as http:
            peer = await _connect(emulator, http)
            peer.say(speech_pcm("Good morning, what is the weather like today?"))
            transcript = await peer.wait_for("conversation.item.input_audio_transcription.completed", timeout=15)
            done = await peer.wait_for("response.output_audio_transcript.done", timeout=10)
            await peer.wait_for("output_audio_buffer.stopped", timeout=15)
            await peer.close()
            return peer, transcript, done

    peer, transcript, done = asyncio.run(run())
    types = peer.types()
    assert types.index("input_audio_buffer.speech_started") < types.index("input_audio_buffer.speech_stopped")
    started = next(m for m in peer.messages if m["type"] == "input_audio_buffer.speech_started")
    stopped = next(m for m in peer.messages if m["type"] == "input_audio_buffer.speech_stopped")
    assert started["item_id"] == stopped["item_id"] == transcript["item_id"]
    assert stopped["audio_end_ms"] - started["audio_start_ms"] >= 1500  # a ~3 s sentence
    assert transcript["transcript"] == SPEECH_TRANSCRIPT
    assert done["transcript"] == reply_for(SPEECH_TRANSCRIPT)


def test_short_beeps_are_not_speech(emulator):
    """Chromium's fake microphone beeps; a beep must not count as an utterance."""
    beep = tone(0.04, 1000)
    gap = np.zeros(int(0.46 * RATE), dtype=np.int16)
    pattern = np.concatenate([np.concatenate([beep, gap]) for _ in range(6)])

    async def run():
        async with aiohttp.ClientSession() as http:
            peer = await _connect(emulator, http, webrtc_filter=False)
            received = _info(emulator, peer.call_id)["audio_frames_in"]
            peer.say(pattern)
            # until the whole pattern (~3 s, played in real time) and 10 frames of the silence after it
            # have reached the emulator's VAD
            through = received + -(-len(pattern) // FRAME_SAMPLES) + 10
            end = asyncio.get_running_loop().time() + 15
            while (info := _info(emulator, peer.call_id))["audio_frames_in"] < through:
                assert asyncio.get_running_loop().time() < end, info
                await asyncio.sleep(0.1)
            await peer.close()
            return peer, info

    peer, info = asyncio.run(run())
    assert info["max_rms_in"] > 1000  # the beeps did arrive, loud
    assert "input_audio_buffer.speech_started" not in peer.types()
    assert info["speech_segments"] == 0


def test_peer_close_ends_call_and_sideband_1000(emulator):
    async def run():
        async with aiohttp.ClientSession() as http:
            peer = await _connect(emulator, http)
            token = await entra_token(emulator.url, emulator.identity_header, http)
            ws = await http.ws_connect(
                f"{emulator.url}/openai/v1/realtime?call_id={peer.call_id}",
                headers={"Authorization": f"Bearer {token}"},
            )
            first = json.loads((await ws.receive()).data)
            await peer.close()

            async def drain():
                async for _ in ws:
                    pass

            await asyncio.wait_for(drain(), 15)
            return first, ws.close_code, _info(emulator, peer.call_id)

    first, code, info = asyncio.run(run())
    assert first["type"] == "session.created"
    assert code == 1000
    assert info["state"] == "ended" and info["end_reason"] == "peer_closed"


def test_hangup_closes_the_peer_connection(emulator):
    async def run():
        async with aiohttp.ClientSession() as http:
            peer = await _connect(emulator, http)
            token = await entra_token(emulator.url, emulator.identity_header, http)
            closed = asyncio.Event()

            @peer.pc.on("connectionstatechange")
            def changed():
                if peer.pc.connectionState in ("closed", "failed"):
                    closed.set()

            peer.channel.on("close", closed.set)
            async with http.post(
                f"{emulator.url}/openai/v1/realtime/calls/{peer.call_id}/hangup",
                headers={"Authorization": f"Bearer {token}"},
            ) as r:
                status = r.status
            await asyncio.wait_for(closed.wait(), 15)
            await peer.close()
            return status

    assert asyncio.run(run()) == 200


def test_data_channel_open_time(emulator):
    """From createOffer to an open channel, aiortc to aiortc on this machine."""

    async def run():
        times = []
        async with aiohttp.ClientSession() as http:
            ek = await mint_ephemeral_key(emulator.url, emulator.identity_header, emulator.deployment, http)
            for _ in range(5):
                peer = ClientPeer()
                await peer.connect(emulator.url, ek, session=http)
                times.append(peer.open_seconds)
                await peer.close()
        return times

    times = asyncio.run(run())
    median = statistics.median(times)
    print(
        f"\naiortc data channel open: median {median * 1000:.0f} ms of {len(times)} "
        f"({', '.join(f'{t * 1000:.0f}' for t in times)} ms)"
    )
    assert median < 2.0
