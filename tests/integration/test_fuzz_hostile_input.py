"""Hostile input, property-based (hypothesis, derandomized: the same inputs every run).

Every HTTP route through `gateway.http.handle` (bodies, content types, headers, call ids in the
route), the listener's queue message (`CallMessage.from_json` and `handle_call_message`), the
archive's property split/join, the audit command's arguments against Azurite, and sideband frames
(odd types and ids, lone surrogates, invalid JSON, 200 KB payloads) through the archive writer into
Azurite with the chain verified. None may answer
a 5xx other than a documented upstream one, raise, or print a traceback.

Default: 10,100 inputs in total (printed). Long mode: FUZZ_EXAMPLES=<inputs per target>,
e.g. `FUZZ_EXAMPLES=50000 make test PYTEST_ARGS=tests/integration/test_fuzz_hostile_input.py`.
The upstream is a closed port (api-key auth), so inputs that pass validation fail fast with
502 upstream_unreachable instead of each making a real call.
"""

from __future__ import annotations

import io
import json
import logging
import os
import string
from collections import Counter
from contextlib import redirect_stderr, redirect_stdout

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from local.processes import free_port
from realtime_gateway import services as services_state
from realtime_gateway.archive.codec import join_property, split_property
from realtime_gateway.archive.writer import first_session_fields
from realtime_gateway.audit.cli import main as audit_main
from realtime_gateway.core.events import parse
from realtime_gateway.core.message import BadCallMessage, CallMessage
from realtime_gateway.gateway import routes
from realtime_gateway.gateway.http import Request, handle
from realtime_gateway.listener.handler import handle_call_message
from realtime_gateway.services import Services
from realtime_gateway.settings import load_settings

LONG = int(os.environ.get("FUZZ_EXAMPLES") or 0)
TRIED: Counter[str] = Counter()
TARGETS = 7


def budget(default: int):
    return settings(
        max_examples=LONG or default,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


# What a caller may get: the documented statuses and codes (README "Errors"), nothing else.
DOCUMENTED = {
    400: {"missing_sdp", "invalid_sdp", "invalid_form", "sdp_rejected", "invalid_call_id"},
    401: {"principal_required", "capability_required"},
    403: {"origin_not_allowed", "capability_invalid"},
    404: {"call_not_found", "token_route_disabled"},
    413: {"payload_too_large"},
    415: {"unsupported_media_type"},
    502: {"upstream_unreachable", "upstream_error", "upstream_bad_response", "upstream_auth"},
    504: {"upstream_timeout"},
}
ORIGIN = "https://app.example.com"


@pytest.fixture(scope="module")
def gw():
    closed = free_port()  # nothing listens: every upstream call is refused at once
    gateway = Services(
        load_settings(
            {
                "AZURE_OPENAI_ENDPOINT": f"http://127.0.0.1:{closed}",
                "AZURE_OPENAI_DEPLOYMENT": "gpt-realtime",
                "AZURE_OPENAI_API_KEY": "fuzz-api-key-0123456789",
                "ALLOWED_ORIGINS": ORIGIN,
                "HTTP_TIMEOUT_SECONDS": "2",
                # no storage here (env={}), and every try counted: limits and the secret pool are off
                "RATE_LIMIT_PER_MINUTE": "0",
                "MAX_ACTIVE_CALLS": "0",
                "DAILY_SPEND_LIMIT_USD": "0",
                "CONTROL_RATE_PER_MINUTE": "0",
                "SECRET_POOL_SIZE": "0",
            }
        ),
    )
    services_state.reset_services(gateway)
    logging.getLogger("realtime_gateway").setLevel(logging.CRITICAL)  # 10,000 error lines help nobody
    yield gateway
    logging.getLogger("realtime_gateway").setLevel(logging.NOTSET)
    services_state.reset_services()


def check(response, allowed_2xx: set[int] = frozenset()) -> None:  # type: ignore[assignment]
    if response.status in allowed_2xx:
        return
    assert response.status in DOCUMENTED, (response.status, response.body[:300])
    err = json.loads(response.body)["error"]
    assert err["code"] in DOCUMENTED[response.status], err
    assert err["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in err["message"] and "fuzz-api-key" not in err["message"]


SDP_LINES = st.sampled_from(
    ["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", "m=audio 9 UDP/TLS/RTP/SAVPF 111", "a=rtpmap:111 opus/48000/2"]
)
HOSTILE_LINES = st.one_of(
    SDP_LINES,
    st.text(max_size=40),
    st.sampled_from(["a=x\r\nAuthorization: Bearer ek_x", "\r\n\r\nHTTP/1.1 200 OK", "a=" + "x" * 70000, "\x00"]),
)
SDP_BODIES = st.one_of(
    st.binary(max_size=300),
    st.lists(HOSTILE_LINES, max_size=12).map(lambda ls: "\r\n".join(ls).encode("utf-8", "surrogatepass")),
    st.lists(HOSTILE_LINES, max_size=12).map(lambda ls: "\n".join(ls).encode("utf-16", "surrogatepass")),
    st.integers(1, 5000).map(lambda n: ("v=0\r\nm=audio 9 RTP 0\r\n" + "a=x:" + "[" * n + "\r\n").encode()),
)
CONTENT_TYPES = st.one_of(
    st.sampled_from(
        [
            "application/sdp",
            "application/SDP; charset=utf-16",
            "multipart/form-data",
            "multipart/form-data; boundary=",
            "multipart/form-data; boundary=b",
            "text/plain",
            "",
            "application/json",
        ]
    ),
    st.text(max_size=60),
)


def multipart(boundary: str, name: str, value: bytes, extra: bytes) -> bytes:
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        + value
        + f"\r\n--{boundary}".encode()
        + extra
    )


FORMS = st.builds(
    lambda b, n, v, e: ("multipart/form-data; boundary=" + b, multipart(b, n, v, e)),
    st.text(string.ascii_letters + "-'\" ", min_size=0, max_size=20),
    st.sampled_from(["sdp", "SDP", 'sdp"; filename="x', "other", ""]),
    SDP_BODIES,
    st.sampled_from([b"--\r\n", b"", b"\r\n", b"--\r\n--b--"]),
)
HEADER_VALUES = st.text(st.characters(codec="latin-1"), max_size=80)


@given(
    body_and_type=st.one_of(st.tuples(CONTENT_TYPES, SDP_BODIES), FORMS),
    origin=st.one_of(st.none(), st.just(ORIGIN), HEADER_VALUES),
    request_id=st.one_of(st.none(), HEADER_VALUES),
    principal=st.one_of(st.none(), HEADER_VALUES),
    method=st.sampled_from(["POST", "OPTIONS", "post"]),
)
@budget(2500)
def test_connect_bodies_headers_and_content_types(gw, body_and_type, origin, request_id, principal, method):
    TRIED["POST /api/connect"] += 1
    content_type, body = body_and_type
    headers = {"content-type": content_type}
    for name, value in (("origin", origin), ("x-request-id", request_id), ("x-ms-client-principal", principal)):
        if value is not None:
            headers[name] = value
    check(
        handle(routes.connect, services_state.get_services, Request(method, "http://x/api/connect", headers, body)),
        {204},
    )


@given(
    call_id=st.one_of(
        st.text(max_size=30),
        st.text(string.ascii_letters + "_-.", min_size=1, max_size=30),
        st.sampled_from(["..", ".", "rtc_" + "a" * 300, "a/b", "a%2Fb", "\u0661\u0662", "ǅ"]),
    ),
    route=st.sampled_from([routes.hangup, routes.token, routes.health]),
    origin=st.one_of(st.none(), st.just(ORIGIN), HEADER_VALUES),
)
@budget(2500)
def test_call_routes_with_odd_call_ids_and_origins(gw, call_id, route, origin):
    TRIED["hangup/token/health"] += 1
    headers = {"origin": origin} if origin is not None else {}
    kwargs = {"call_id": call_id} if route is routes.hangup else {}
    response = handle(route, services_state.get_services, Request("POST", "http://x/api/r", headers, b""), **kwargs)
    if route is routes.health:
        assert response.status in (200, 503, 403), response.body  # storage is not configured here
        return
    check(response)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
FIELDS = [
    "v",
    "call_id",
    "started_at",
    "deadline",
    "origin",
    "principal",
    "request_id",
    "model",
    "voice",
    "continuation",
]


def message_texts():
    good = {"v": 1, "call_id": "rtc_abc", "started_at": 1.7e9, "deadline": 1.7e9 + 600}
    mutated = st.builds(
        lambda changes: json.dumps({**good, **changes}, allow_nan=True),
        st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=4),
    )
    return st.one_of(
        mutated,
        st.text(max_size=200),
        st.binary(max_size=200),
        st.sampled_from(['{"v":1,"call_id":"' + "x" * 20000 + '"}', "[" * 20000, '{"v":1e999}']),
    )


@given(text=message_texts())
@budget(3000)
def test_queue_messages_parse_strictly_or_are_rejected(text):
    TRIED["queue message parse"] += 1
    try:
        msg = CallMessage.from_json(text)
    except BadCallMessage:
        return
    # Accepted means usable everywhere the listener uses it, and stable on the wire.
    first_session_fields(msg, strict=True)
    assert CallMessage.from_json(msg.to_json()) == msg


@given(text=message_texts())
@budget(800)
def test_malformed_queue_messages_go_to_poison_without_a_call(gw, text):
    TRIED["queue message handler"] += 1
    try:
        CallMessage.from_json(text)
        return  # valid ones would run a listener: covered by the listener tests
    except BadCallMessage:
        pass
    poisoned: list[str] = []
    result = handle_call_message(text, send_handover=lambda m: None, send_poison=poisoned.append, services=gw)
    assert result is None and len(poisoned) == 1


@given(
    text=st.text(max_size=2000)
    | st.builds(
        lambda head, pad, n, tail: head + pad * n + tail,  # around the 32K-unit cut, with surrogate pairs
        st.text(max_size=50),
        st.sampled_from(["a", "\U0001f600", "a\U0001f600", "\x00"]),
        st.integers(10_000, 33_000),
        st.text(max_size=50),
    )
)
@budget(1000)
def test_archive_property_split_and_join_never_corrupt(text):
    TRIED["archive split/join"] += 1
    row = split_property("event", text)
    assert join_property(row, "event") == text
    for piece in row.values():
        assert len(piece.encode("utf-16-le")) // 2 <= 32 * 1024


ARG_TOKENS = st.one_of(
    st.sampled_from(["list", "show", "verify", "timeline", "--day", "--json", "--events", "--help", "-h", "--x"]),
    st.sampled_from(["20260101", "2026-01-01", "99999999", "", "rtc_none", "..", "a/b", "'; DROP", "\x00"]),
    st.text(max_size=20),
)


@given(argv=st.lists(ARG_TOKENS, max_size=4))
@budget(300)
def test_audit_arguments_exit_cleanly(monkeypatch_module, argv):
    TRIED["audit arguments"] += 1
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = audit_main(argv)
        except SystemExit as exc:
            code = exc.code
    assert code in (0, 1, 2, 3, None), (argv, code)  # 3: unknown call (README: the audit command)
    assert "Traceback" not in out.getvalue() + err.getvalue()


@pytest.fixture(scope="module")
def monkeypatch_module(azurite, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("AzureWebJobsStorage", azurite.connection_string)
    mp.chdir(tmp_path_factory.mktemp("audit"))  # timeline pages land here
    yield mp
    mp.undo()


FRAME_TEXT = st.one_of(
    st.text(max_size=200),  # includes lone surrogates, as invalid UTF-8 in a binary frame decodes to
    st.binary(max_size=200).map(lambda b: b.decode("utf-8", "surrogateescape")),
    st.builds(
        lambda t, i, extra: json.dumps({"type": t, "event_id": i, **extra}),
        st.one_of(st.text(max_size=30), st.sampled_from(["response.done", "", "\udcff", "x" * 300])),
        st.one_of(st.text(max_size=30), st.integers(), st.none(), st.just("\ud800")),
        st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=3),
    ),
    st.integers(60_000, 200_000).map(lambda n: json.dumps({"type": "huge", "event_id": f"h{n}", "pad": "\u00e9" * n})),
    st.just("[" * 20_000),
)


@pytest.fixture(scope="module")
def fuzz_archive(azurite):
    from realtime_gateway.archive.store import Archive
    from realtime_gateway.archive.tables import table_service_from_env

    suffix = os.urandom(4).hex()
    archive = Archive(
        table_service_from_env({"AzureWebJobsStorage": azurite.connection_string}), "fe" + suffix, "fs" + suffix
    )
    archive.ensure_tables()
    return archive


@given(frames=st.lists(FRAME_TEXT, min_size=1, max_size=8))
@budget(40)
def test_sideband_frames_archive_whole_and_verify(fuzz_archive, frames):
    """Whatever the service sends, the writer archives every frame once, whole, in a chain that verifies."""
    import time
    import uuid

    from realtime_gateway.archive.writer import ArchiveWriter
    from realtime_gateway.audit.verify import verify_call

    TRIED["sideband frames"] += len(frames)
    call_id = "rtc_" + uuid.uuid4().hex
    writer = ArchiveWriter(fuzz_archive, call_id, "20260101", {"state": "attached"}, flush_interval=0.05).start()
    for frame in frames:
        writer.event(parse(frame), time.time())
    writer.close({"state": "ended"})
    events = list(fuzz_archive.read_events(call_id))
    assert len(events) + writer.duplicates == len(frames)
    kept = iter(frames)
    for event in events:  # each archived payload is one of the frames, in order, unchanged
        assert any(event.payload == frame for frame in kept)
    assert verify_call(fuzz_archive, call_id).ok


def test_the_total_number_of_inputs_tried():
    for name, count in sorted(TRIED.items()):
        print(f"\nfuzz {name}: {count} inputs", end="")
    total = sum(TRIED.values())
    print(f"\nfuzz total: {total} inputs across {len(TRIED)} targets")
    if len(TRIED) == TARGETS and not LONG:  # the whole module ran in its default mode
        assert total >= 10_000
