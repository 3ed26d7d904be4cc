"""The phone-call webhook's signature and body (realtime_gateway/phone/webhook.py), with the `openai`
package's `webhooks.verify_signature` / `unwrap` as the oracle: every case agrees with it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
from openai import InvalidWebhookSignatureError, OpenAI
from openai.types.webhooks import RealtimeCallIncomingWebhookEvent

from realtime_gateway.phone.caller import caller_key, number_of, screen, stored_caller
from realtime_gateway.phone.webhook import BadWebhook, incoming, verify
from realtime_gateway.settings import SettingsError, load_settings

KEY = b"0123456789abcdef0123456789abcdef"
SECRET = "whsec_" + base64.b64encode(KEY).decode()
OTHER = "whsec_" + base64.b64encode(b"another key, another endpoint..").decode()
ORACLE = OpenAI(api_key="unused", base_url="http://127.0.0.1:9").webhooks


def body(call_id: str = "rtc_abc123", sip_from: str = '"Ann" <sip:+15551230000@trunk.example>;tag=1') -> bytes:
    return json.dumps(
        {
            "object": "event",
            "id": "evt_1",
            "type": "realtime.call.incoming",
            "created_at": int(time.time()),
            "data": {
                "call_id": call_id,
                "sip_headers": [
                    {"name": "From", "value": sip_from},
                    {"name": "To", "value": "<sip:+15559870000@sip.example>"},
                    {"name": "Call-ID", "value": "a84b4c76e66710@pc33.example"},
                ],
            },
        }
    ).encode()


def sign(raw: bytes, key: bytes = KEY, msg_id: str = "wh_1", ts: int | None = None) -> str:
    ts = int(time.time()) if ts is None else ts
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + raw, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def headers(raw: bytes, *, signature: str | None = None, msg_id: str = "wh_1", ts: int | None = None) -> dict:
    ts = int(time.time()) if ts is None else ts
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": signature if signature is not None else sign(raw, msg_id=msg_id, ts=ts),
    }


def oracle_accepts(raw: bytes, hdrs: dict, secret: str = SECRET) -> bool:
    try:
        ORACLE.verify_signature(raw, hdrs, secret=secret, tolerance=300)
    except InvalidWebhookSignatureError:
        return False
    return True


def ours_accepts(raw: bytes, hdrs: dict, secret: str = SECRET) -> bool:
    try:
        verify(secret, hdrs, raw)
    except BadWebhook:
        return False
    return True


def test_a_valid_delivery_verifies_and_parses_like_the_oracle():
    raw = body()
    hdrs = headers(raw)
    assert oracle_accepts(raw, hdrs) and ours_accepts(raw, hdrs)
    event = verify(SECRET, hdrs, raw)
    typed = ORACLE.unwrap(raw, hdrs, secret=SECRET)
    assert isinstance(typed, RealtimeCallIncomingWebhookEvent)
    call = incoming(event, "wh_1")
    assert call is not None
    assert call.call_id == typed.data.call_id == "rtc_abc123"
    assert call.header("from") == typed.data.sip_headers[0].value  # names compare case-insensitively
    assert call.header("CALL-ID") == "a84b4c76e66710@pc33.example"


def test_header_names_are_case_insensitive_on_the_request():
    raw = body()
    hdrs = {k.title(): v for k, v in headers(raw).items()}
    assert ours_accepts(raw, hdrs)


@pytest.mark.parametrize(
    "case",
    ["wrong_secret", "stale", "future", "one_byte", "no_signature", "no_id", "id_changed", "unversioned_garbage"],
)
def test_refused_deliveries_are_refused_by_the_oracle_too(case):
    raw = body()
    now = int(time.time())
    hdrs = headers(raw)
    secret = SECRET
    if case == "wrong_secret":
        secret = OTHER
    elif case == "stale":
        hdrs = headers(raw, ts=now - 301)
    elif case == "future":
        hdrs = headers(raw, ts=now + 301)
    elif case == "one_byte":
        raw = raw.replace(b"rtc_abc123", b"rtc_abc124")
    elif case == "no_signature":
        hdrs.pop("webhook-signature")
    elif case == "no_id":
        hdrs.pop("webhook-id")
    elif case == "id_changed":
        hdrs["webhook-id"] = "wh_2"  # the id is signed: a replay under another id is refused
    elif case == "unversioned_garbage":
        hdrs["webhook-signature"] = "v1,AAAA"
    try:
        oracle = oracle_accepts(raw, hdrs, secret)
    except ValueError:  # the oracle raises for a missing header: a refusal
        oracle = False
    assert oracle is False
    assert ours_accepts(raw, hdrs, secret) is False


def test_within_the_tolerance_both_sides_accept():
    raw = body()
    now = int(time.time())
    for ts in (now - 290, now + 290):
        hdrs = headers(raw, ts=ts)
        assert oracle_accepts(raw, hdrs) and ours_accepts(raw, hdrs), ts


def test_several_signatures_any_one_valid_is_enough():
    raw = body()
    now = int(time.time())
    good = sign(raw, ts=now)
    bad = sign(raw, key=b"x" * 32, ts=now)
    for signature in (f"{bad} {good}", f"{good} {bad}", f"v1,AAAA {bad} {good}"):
        hdrs = headers(raw, signature=signature, ts=now)
        assert oracle_accepts(raw, hdrs) and ours_accepts(raw, hdrs), signature
    hdrs = headers(raw, signature=f"{bad} v1,AAAA", ts=now)
    assert not oracle_accepts(raw, hdrs) and not ours_accepts(raw, hdrs)


def test_the_whsec_prefix_is_base64_of_the_key():
    raw = body()
    hdrs = headers(raw)
    # the key is the base64 after whsec_: the prefix itself and the encoded text are not the key
    assert ours_accepts(raw, hdrs, SECRET)
    assert not ours_accepts(raw, headers(raw, signature=sign(raw, key=SECRET.encode())), SECRET)
    assert not ours_accepts(raw, headers(raw, signature=sign(raw, key=SECRET[6:].encode())), SECRET)
    assert oracle_accepts(raw, hdrs, SECRET)


def test_the_signature_is_over_the_raw_bytes_not_the_parsed_json():
    raw = body()
    hdrs = headers(raw)
    reformatted = json.dumps(json.loads(raw), indent=2).encode()  # the same JSON, other bytes
    assert not oracle_accepts(reformatted, hdrs) and not ours_accepts(reformatted, hdrs)


def test_other_event_types_are_not_calls_and_malformed_calls_are_refused():
    assert incoming({"type": "response.completed", "data": {}}, "wh") is None
    with pytest.raises(BadWebhook):
        incoming({"type": "realtime.call.incoming", "data": {"sip_headers": []}}, "wh")
    with pytest.raises(BadWebhook):
        incoming({"type": "realtime.call.incoming", "data": {"call_id": "rtc_1", "sip_headers": [{"name": 1}]}}, "wh")
    raw = b"[1, 2]"
    with pytest.raises(BadWebhook):
        verify(SECRET, headers(raw), raw)


# ---- the caller: numbers, privacy, lists ----------------------------------------------------------------


@pytest.mark.parametrize(
    "value,number",
    [
        ('"Ann" <sip:+15551230000@trunk.example;user=phone>;tag=abc', "+15551230000"),
        ("<tel:+1-555-123-0000>", "+15551230000"),
        ("sip:15551230000@10.0.0.1:5060", "15551230000"),
        ('"Anonymous" <sip:anonymous@anonymous.invalid>;tag=1', "anonymous"),
    ],
)
def test_number_of_a_sip_header(value, number):
    assert number_of(value) == number


def test_the_caller_is_stored_as_a_salted_hash_masked_or_kept():
    n = "+15551230000"
    hashed = stored_caller(n, "hash", "salt-one-16chars")
    assert hashed == caller_key(n, "salt-one-16chars") and n not in hashed and "5551230000" not in hashed
    assert hashed != caller_key(n, "salt-two-16chars")  # salted: another deployment, another key
    assert hashed.startswith("h-") and len(hashed) == 34
    masked = stored_caller(n, "mask", "s")
    assert masked == "+1********00" and len(masked) == len(n)
    assert stored_caller(n, "keep", "s") == n


def test_number_lists():
    caller, line = "+15551230000", "+15559870000"
    assert screen(caller, line, (), ()) is None
    assert screen(caller, line, (), ("+15551230000",)) == "number_blocked"
    assert screen(caller, line, (), ("from:+1555123*",)) == "number_blocked"
    assert screen(caller, line, (), ("to:+15551230000",)) is None  # the caller's number on the To side only
    assert screen(caller, line, ("to:+15559870000",), ()) is None  # the line this gateway answers
    assert screen(caller, "+15550000000", ("to:+15559870000",), ()) == "number_not_allowed"
    assert screen(caller, line, ("+1555987*",), ("from:+15551230000",)) == "number_blocked"  # block wins


BASE = {"AZURE_OPENAI_ENDPOINT": "http://127.0.0.1:9", "AZURE_OPENAI_DEPLOYMENT": "gpt-realtime"}


def test_sip_settings(tmp_path):
    s = load_settings(BASE)
    assert not s.sip.enabled
    policy = tmp_path / "phone.json"
    policy.write_text(json.dumps({"instructions": "You answer the phone.", "audio": {"output": {"voice": "cedar"}}}))
    s = load_settings(
        {
            **BASE,
            "REALTIME_INSTRUCTIONS": "browser instructions",
            "SIP_WEBHOOK_SECRET": SECRET,
            "SIP_CALLER_SALT": "a-salt-of-16-chars",
            "SIP_ALLOWED_NUMBERS": "to:+15559870000, +44 20*",
            "SIP_SESSION_POLICY_FILE": str(policy),
            "SIP_TRANSFER_TARGETS": "sales=tel:+15550001111,desk=sip:desk@pbx.example",
        }
    )
    assert s.sip.enabled and s.sip.caller_privacy == "hash"
    assert s.sip.allowed_numbers == ("to:+15559870000", "+4420*")
    assert s.sip.session_policy is not None
    assert s.sip.session_policy["instructions"] == "You answer the phone."  # not REALTIME_INSTRUCTIONS
    assert s.sip.session_policy["model"] == "gpt-realtime" and s.sip.session_policy["type"] == "realtime"
    assert s.sip.transfer_targets == {"sales": "tel:+15550001111", "desk": "sip:desk@pbx.example"}
    for bad, named in (
        ({"SIP_WEBHOOK_SECRET": "not-a-whsec", "SIP_CALLER_SALT": "a-salt-of-16-chars"}, "SIP_WEBHOOK_SECRET"),
        ({"SIP_WEBHOOK_SECRET": SECRET}, "SIP_CALLER_SALT"),
        ({"SIP_CALLER_PRIVACY": "plain"}, "SIP_CALLER_PRIVACY"),
        ({"SIP_BLOCKED_NUMBERS": "alice"}, "SIP_BLOCKED_NUMBERS"),
        ({"SIP_TRANSFER_TARGETS": "https://x"}, "SIP_TRANSFER_TARGETS"),
        ({"SIP_SESSION_POLICY_FILE": str(tmp_path / "missing.json")}, "SIP_SESSION_POLICY_FILE"),
    ):
        with pytest.raises(SettingsError, match=named):
            load_settings({**BASE, **bad})
