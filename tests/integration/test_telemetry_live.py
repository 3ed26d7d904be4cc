"""Telemetry that needs more than the process it runs in: the off path's import cost, measured in a
fresh interpreter (a child process), and connect's secret step as spans (the `otel` fixture's
in-memory exporters, tests/fixtures/otel.py) against the realtime emulator, pooled or minted.
The in-process rest is tests/unit/test_telemetry.py; the whole path through the host is
tests/integration/test_telemetry_host.py."""

from __future__ import annotations

import os
import subprocess
import sys

from local.testing.offer import OfferPeer
from realtime_gateway import services as services_state
from tests.fixtures.secret_pool import connect, hangup, make_gateway, warm

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


PROBE = """
import sys, function_app
from realtime_gateway import telemetry
loaded = sorted({m.split(".")[0] for m in sys.modules if m.startswith(("opentelemetry", "azure.monitor"))})
frameworks = sorted(m for m in ("django", "flask", "fastapi", "msrest") if m in sys.modules)
print(telemetry.setup(), telemetry.enabled(), loaded, frameworks)
"""


def _probe(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "APPLICATIONINSIGHTS_"))}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_off_imports_nothing_of_opentelemetry_and_a_bad_setting_leaves_it_off():
    assert _probe() == "off False [] []"
    assert _probe(OTEL_TRACE_SUMMARY="maybe") == "off False [] []"
    assert _probe(OTEL_TRACE_SUMMARY="true").startswith("on True ['opentelemetry']")


def test_azure_monitor_takes_the_exporters_alone_without_web_framework_instrumentations():
    conn = "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=http://127.0.0.1:9/"
    out = _probe(
        APPLICATIONINSIGHTS_CONNECTION_STRING=conn, APPLICATIONINSIGHTS_AUTHENTICATION_STRING="Authorization=AAD"
    )
    assert out == "on True ['azure', 'opentelemetry'] []", out  # function_app set it up; no framework loaded


# ---- connect's secret step: a span whether pooled or minted -------------------------------------------
def test_the_secret_step_is_a_span_whether_pooled_or_minted_and_a_refused_pooled_one_is_retried(
    otel, emulator, monkeypatch
):
    gw = make_gateway(emulator, monkeypatch, SECRET_POOL_SIZE="1")
    try:
        with OfferPeer() as peer:
            offer = peer.offer.encode()
        for fault in (None, None, "calls"):  # cold pool (minted), warm pool (pooled), a 401 on the SDP post
            if fault:
                emulator.set_fault(fault, status=401, times=1)
            resp = connect(offer)
            assert resp.status == 201, resp.body
            hangup(resp.headers["x-call-id"])
            warm(gw)
    finally:
        services_state.reset_services()
    spans = otel.spans.get_finished_spans()

    def steps(parent):
        kids = sorted((s for s in spans if s.parent and s.parent.span_id == parent.context.span_id), key=_start)
        return [(s.name, s.attributes.get("source"), s.status.description) for s in kids]

    cold, warm_, refused = sorted(otel.by_name("connect"), key=_start)
    assert steps(cold) == [("limiter", None, None), ("secret", "minted", None), ("sdp", None, None)]
    assert steps(warm_) == [("limiter", None, None), ("secret", "pooled", None), ("sdp", None, None)]
    assert steps(refused) == [
        ("limiter", None, None),
        ("secret", "pooled", None),
        ("sdp", None, "upstream_auth"),  # the pooled secret refused: no call started
        ("secret", "minted", None),
        ("sdp", None, None),
    ]
    (retried,) = [s for s in otel.by_name("secret") if s.attributes.get("retry")]
    assert retried.parent.span_id == refused.context.span_id
    assert all(not steps(s) for s in otel.by_name("secret"))  # the SDP post is connect's step, not the secret's


def _start(sp):
    return sp.start_time
