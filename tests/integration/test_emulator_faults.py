"""Each switchable fault does what it says, through the Python API and the admin route."""

import asyncio
import json
import time

import pytest
import requests
import websocket
from aiortc import RTCConfiguration, RTCPeerConnection

from local.emulator import Emulator
from local.emulator.audio import ReplyAudioTrack

RESOURCE = "https://cognitiveservices.azure.com"


def token(emu):
    r = requests.get(
        emu.identity_endpoint,
        headers={"X-IDENTITY-HEADER": emu.identity_header},
        params={"api-version": "2019-08-01", "resource": RESOURCE},
        timeout=10,
    )
    r.raise_for_status()
    return r.json()["access_token"]


def secret_body(emu):
    return {"session": {"type": "realtime", "model": emu.deployment}}


def mint(emu, tok):
    return requests.post(
        f"{emu.url}/openai/v1/realtime/client_secrets",
        json=secret_body(emu),
        headers={"Authorization": f"Bearer {tok}"},
        timeout=10,
    )


def offer_sdp() -> str:
    async def make():
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.createDataChannel("oai-events")
        pc.addTrack(ReplyAudioTrack())
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        await pc.close()
        return sdp

    return asyncio.run(make())


def post_call(emu, ek, sdp):
    return requests.post(
        f"{emu.url}/openai/v1/realtime/calls?webrtcfilter=on",
        data=sdp,
        timeout=15,
        headers={"Authorization": f"Bearer {ek}", "Content-Type": "application/sdp"},
    )


def new_call(emu):
    return requests.post(f"{emu.url}/_emulator/calls", timeout=10).json()["call_id"]


def request_target(emu, target, tok):
    """One ordinary request to a fault target; returns the response."""
    if target == "identity":
        return requests.get(
            emu.identity_endpoint,
            headers={"X-IDENTITY-HEADER": emu.identity_header},
            params={"api-version": "2019-08-01", "resource": RESOURCE},
            timeout=10,
        )
    if target == "client_secrets":
        return mint(emu, tok)
    if target == "calls":
        return post_call(emu, mint(emu, tok).json()["value"], offer_sdp())
    if target == "hangup":
        return requests.post(
            f"{emu.url}/openai/v1/realtime/calls/{new_call(emu)}/hangup",
            headers={"Authorization": f"Bearer {tok}"},
            timeout=10,
        )
    if target == "sideband":  # the handshake as plain HTTP: a fault answers before any upgrade
        return requests.get(
            f"{emu.url}/openai/v1/realtime?call_id={new_call(emu)}",
            headers={"Authorization": f"Bearer {tok}"},
            timeout=10,
        )
    raise AssertionError(target)


OK = {"identity": 200, "client_secrets": 200, "calls": 201, "hangup": 200, "sideband": 400}


@pytest.mark.parametrize("target", ["identity", "client_secrets", "calls", "hangup", "sideband"])
def test_status_with_retry_after_then_recovers(emulator, target):
    tok = token(emulator)
    emulator.set_fault(target, status=429, retry_after=7)
    failed = request_target(emulator, target, tok)
    assert failed.status_code == 429
    assert failed.headers["Retry-After"] == "7"
    assert failed.json()["error"]["code"] == "too_many_requests"
    # times defaults to 1: the next request is served normally (sideband: 400 = "not an upgrade").
    assert request_target(emulator, target, tok).status_code == OK[target]


def test_times_counts_and_zero_means_until_cleared(emulator):
    tok = token(emulator)
    emulator.set_fault("client_secrets", status=503, times=2)
    assert [mint(emulator, tok).status_code for _ in range(3)] == [503, 503, 200]
    emulator.set_fault("client_secrets", status=500, times=0)
    assert [mint(emulator, tok).status_code for _ in range(4)] == [500] * 4
    emulator.clear_faults()
    assert mint(emulator, tok).status_code == 200


def test_delay_then_normal_answer(emulator):
    tok = token(emulator)
    emulator.set_fault("client_secrets", delay=0.6)
    start = time.perf_counter()
    r = mint(emulator, tok)
    assert r.status_code == 200 and r.json()["value"].startswith("ek_")
    assert time.perf_counter() - start >= 0.6
    start = time.perf_counter()
    assert mint(emulator, tok).status_code == 200
    assert time.perf_counter() - start < 0.5


def test_malformed_body_keeps_success_status(emulator):
    tok = token(emulator)
    emulator.set_fault("client_secrets", body='{"value": "ek_trunc')
    r = mint(emulator, tok)
    assert r.status_code == 200
    with pytest.raises(ValueError):
        r.json()
    emulator.set_fault("identity", body="<html>gateway</html>", content_type="text/html")
    r = requests.get(
        emulator.identity_endpoint,
        headers={"X-IDENTITY-HEADER": emulator.identity_header},
        params={"api-version": "2019-08-01", "resource": RESOURCE},
        timeout=10,
    )
    assert (r.status_code, r.text) == (200, "<html>gateway</html>")
    assert r.headers["Content-Type"].startswith("text/html")


def test_calls_without_location_and_with_wrong_content_type(emulator):
    tok = token(emulator)
    ek = mint(emulator, tok).json()["value"]
    emulator.set_fault("calls", no_location=True)
    r = post_call(emulator, ek, offer_sdp())
    assert r.status_code == 201 and r.text.startswith("v=0")
    assert "Location" not in r.headers
    emulator.set_fault("calls", content_type="application/json", body="{}")
    r = post_call(emulator, ek, offer_sdp())
    assert r.status_code == 201 and r.headers["Content-Type"].startswith("application/json")
    assert r.text == "{}"
    r = post_call(emulator, ek, offer_sdp())
    assert r.status_code == 201 and r.headers["Location"].split("/")[-1].startswith("rtc_")


def test_error_status_with_custom_body(emulator):
    emulator.set_fault("calls", status=502, body="upstream connect error", content_type="text/plain")
    r = requests.post(f"{emulator.url}/openai/v1/realtime/calls", data="v=0", timeout=10)
    assert (r.status_code, r.text) == (502, "upstream connect error")
    assert r.headers["Content-Type"].startswith("text/plain")


def test_sideband_dropped_after_n_events(emulator):
    tok = token(emulator)
    call_id = new_call(emulator)
    emulator.set_fault("sideband", drop_after=3)
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{emulator.port}/openai/v1/realtime?call_id={call_id}",
        header=[f"Authorization: Bearer {tok}"],
        timeout=10,
    )
    requests.post(f"{emulator.url}/_emulator/calls/{call_id}/script", json={"responses": 1}, timeout=30)
    received = []
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
        while True:
            frame = ws.recv_data_frame(control_frame=True)[1]
            if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
                pytest.fail("a dropped socket must not send a close frame")
            received.append(json.loads(frame.data))
    assert len(received) == 3 and received[0]["type"] == "session.created"
    # the call itself goes on: a new observer attaches fine
    info = requests.get(f"{emulator.url}/_emulator/calls/{call_id}", timeout=10).json()
    assert info["state"] == "live"


def test_sideband_redirect_is_same_origin_and_followable(emulator):
    tok = token(emulator)
    call_id = new_call(emulator)
    url = f"ws://127.0.0.1:{emulator.port}/openai/v1/realtime?call_id={call_id}"
    emulator.set_fault("sideband", redirect=True)
    raw = requests.get(
        url.replace("ws://", "http://"), allow_redirects=False, timeout=10, headers={"Authorization": f"Bearer {tok}"}
    )
    assert raw.status_code == 307
    assert raw.headers["Location"].startswith(f"ws://127.0.0.1:{emulator.port}/openai/v1/realtime")
    assert f"call_id={call_id}" in raw.headers["Location"]
    emulator.set_fault("sideband", redirect=True)
    ws = websocket.create_connection(url, header=[f"Authorization: Bearer {tok}"], timeout=10)
    assert json.loads(ws.recv())["type"] == "session.created"
    ws.close()
    assert emulator.stats()["faults"] == []


def test_admin_route_sets_validates_and_clears(emulator):
    tok = token(emulator)
    r = requests.post(f"{emulator.url}/_emulator/faults", json={"target": "nope", "status": 500}, timeout=10)
    assert r.status_code == 400
    r = requests.post(
        f"{emulator.url}/_emulator/faults", json={"target": "client_secrets", "status": 500, "times": 0}, timeout=10
    )
    assert r.status_code == 200
    assert mint(emulator, tok).status_code == 500
    assert requests.delete(f"{emulator.url}/_emulator/faults", timeout=10).status_code == 200
    assert mint(emulator, tok).status_code == 200
    stats = requests.get(f"{emulator.url}/_emulator/stats", timeout=10).json()
    assert stats["faults"] == [] and stats["faults_applied"] >= 1


def test_constructor_faults_apply_from_the_first_request():
    emu = Emulator(port=0, faults=[{"target": "identity", "status": 500, "times": 1}]).start()
    try:
        first = requests.get(
            emu.identity_endpoint,
            headers={"X-IDENTITY-HEADER": emu.identity_header},
            params={"api-version": "2019-08-01", "resource": RESOURCE},
            timeout=10,
        )
        assert first.status_code == 500
        assert token(emu).startswith("entra_")
    finally:
        emu.stop()
