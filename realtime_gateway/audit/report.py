"""Render a call, or a conversation's calls stitched together, as one self-contained HTML page: the
summary, the verification, and the timeline (speech, audio, a phone caller's key presses, gaps; a
conversation's call boundaries marked on one clock)."""

from __future__ import annotations

import html
import json
from datetime import datetime
from typing import Any, Iterable, Mapping, Sequence

from ..archive.codec import EventRecord
from ..archive.turns import DTMF, TRUNCATED, truncation, turn_text
from ..core import usage as usage_
from ..settings import PRICES
from .sessions import duration_seconds, usage_fields
from .transcript import (
    Call,
    Line,
    Turn,
    boundary,
    clock,
    conversation_start,
    conversation_transcript,
    conversation_turns,
    key_pressed,
    spans,
    transcript,
    turns,
    when,
)
from .verify import VerifyReport

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d232a;background:#f6f7f9}
header{background:#1d3557;color:#fff;padding:16px 24px}header h1{margin:0 0 4px;font-size:20px}
main{max-width:1100px;margin:0 auto;padding:16px 24px}
.ok{color:#1b7f3b;font-weight:600}.bad{color:#b00020;font-weight:600}
table.kv{border-collapse:collapse;margin:8px 0 16px}table.kv td{padding:2px 12px 2px 0;vertical-align:top}
table.kv td:first-child{color:#56606b}
ol.tl{list-style:none;padding:0;margin:0;border-left:3px solid #c9d1da}
ol.tl li{position:relative;margin:0 0 6px 0;padding:4px 8px 4px 16px}
ol.tl li:before{content:"";position:absolute;left:-8px;top:10px;width:11px;height:11px;border-radius:50%;background:#c9d1da}
.t{color:#56606b;font-variant-numeric:tabular-nums;display:inline-block;width:78px;text-align:right;margin-right:8px}
.type{font-family:ui-monospace,monospace;font-size:12px}
li.user:before{background:#2a9d8f}li.assistant:before{background:#457b9d}
li.gap{background:#fff3cd}li.gap:before{background:#e9a100}li.error:before{background:#b00020}
li.control:before{background:#6c757d}li.key:before{background:#8e44ad}li.interrupted:before{background:#e76f51}
li.key .bubble{background:#f1e6f7;font-family:ui-monospace,monospace}li.interrupted .bubble{background:#fde8e1}
li.call{background:#1d3557;color:#fff;border-radius:4px;margin:14px 0 8px}li.call:before{background:#1d3557}
li.call .t{color:#d6e0ec}p.say.call{background:#1d3557;color:#fff;padding:2px 6px}p.say.key b{color:#8e44ad}p.say.interrupted b{color:#e76f51}
.bubble{display:block;margin:2px 0 0;padding:6px 10px;border-radius:8px;max-width:760px;white-space:pre-wrap}
li.user .bubble{background:#e0f2ef}li.assistant .bubble{background:#e3edf5}
li details{display:inline-block;margin-left:8px;font-size:12px}li details[open]{display:block;margin-left:0}
h2{font-size:17px;margin:22px 0 8px}svg.chart{background:#fff;border:1px solid #e1e5ea;width:100%;height:auto}
header .sub{color:#d6e0ec}p.cost{font-size:16px;margin:4px 0 2px}p.reprice{margin:0 0 10px;color:#56606b}table.grid td.n{text-align:right}
svg.chart text{font:11px system-ui,sans-serif;fill:#1d232a}
table.grid{border-collapse:collapse;margin:6px 0 12px}table.grid td,table.grid th{border:1px solid #e1e5ea;
padding:3px 10px;text-align:left;font-variant-numeric:tabular-nums}table.grid th{background:#eef1f4}
p.say{margin:3px 0}p.say b{display:inline-block;width:84px}p.say.user b{color:#2a9d8f}p.say.assistant b{color:#457b9d}
p.say.gap,p.say.handover{background:#fff3cd}
details pre{white-space:pre-wrap;word-break:break-all;font-size:12px;background:#fff;border:1px solid #e1e5ea;
padding:6px;max-height:320px;overflow:auto}
"""


def _t(received_at: str, start: datetime | None) -> str:
    try:
        at = datetime.fromisoformat(received_at)
    except ValueError:
        return ""
    if start is None:
        return at.strftime("%H:%M:%S")
    return f"+{(at - start).total_seconds():.3f} s"


def _kind(rec: EventRecord, event: Any) -> tuple[str, str | None]:
    """CSS class and the text worth showing as a bubble, if any."""
    t = rec.event_type
    if t == "listener.gap":
        return "gap", None
    if t.startswith("listener."):
        return "control", None
    if t == "error":
        return "error", None
    if t == DTMF:
        key = key_pressed(event)
        return "key", (f"key {key} pressed" if key else None)
    if t == TRUNCATED:
        cut = truncation(event)
        return "interrupted", (f"the person heard {cut[1] / 1000:.3f} s of this reply" if cut else None)
    turn = turn_text(t, event)
    return turn if turn is not None else ("", None)


def _groups(records: Iterable[EventRecord]) -> Iterable[tuple[EventRecord, int]]:
    """Runs of the same *.delta type fold into one line, so a long call stays readable."""
    run: list[EventRecord] = []
    for rec in records:
        if run and rec.event_type == run[0].event_type and rec.event_type.endswith(".delta"):
            run.append(rec)
            continue
        if run:
            yield run[0], len(run)
        run = [rec]
    if run:
        yield run[0], len(run)


LANE_COLOURS = {"user speech": "#2a9d8f", "assistant audio": "#457b9d", "gap": "#e9a100"}
KEYS_LANE = "key presses"
MAX_TYPE_LANES = 14


def _chart(records: list[EventRecord], boundaries: Sequence[tuple[str, str]] = ()) -> str:
    """An SVG: one lane per event type (the busiest ones) with a tick per event, lanes for user
    speech, assistant audio and gaps as bars, a phone caller's keys, and a conversation's call
    boundaries (`(when, what)`) as dashed lines, on one time axis. It scales to the page's width."""
    times = [t for t in map(when, records) if t is not None]
    if not times:
        return "<p>No events.</p>"
    start, total = times[0], max((times[-1] - times[0]).total_seconds(), 0.001)
    counts: dict[str, int] = {}
    for rec in records:
        counts[rec.event_type] = counts.get(rec.event_type, 0) + 1
    types = sorted(counts, key=lambda t: -counts[t])[:MAX_TYPE_LANES]
    keys = [(rec.received_at, key) for rec in records if rec.event_type == DTMF and (key := key_pressed(rec.event()))]
    lanes = ["user speech", "assistant audio", *([KEYS_LANE] if keys else []), "gap", *types]
    bars = spans(records)
    left, width, row, pad = 280, 760, 18, 24
    height = row * len(lanes) + 34

    def x(at: str) -> float:
        try:
            moment = datetime.fromisoformat(at)
        except ValueError:
            return float(left)
        return left + width * max(0.0, (moment - start).total_seconds()) / total

    e = html.escape
    full = left + width + pad
    parts = [
        f'<svg class="chart" viewBox="0 0 {full} {height}" width="{full}" height="{height}" role="img" '
        'aria-label="timeline">'
    ]
    for i, lane in enumerate(lanes):
        y = 10 + i * row
        if lane == KEYS_LANE:
            label = f"{lane} ({len(keys)})"
        elif lane in LANE_COLOURS:
            label = lane if any(b[0] == lane for b in bars) else f"{lane} (none)"
        else:
            label = f"{lane} ({counts[lane]})"
        parts.append(f'<text x="6" y="{y + 12}">{e(label)}</text>')
        parts.append(f'<line x1="{left}" x2="{left + width}" y1="{y + 9}" y2="{y + 9}" stroke="#eef1f4"/>')
    for lane, a, b in bars:
        y = 10 + lanes.index(lane) * row
        x1, x2 = x(a), x(b)
        parts.append(
            f'<rect x="{x1:.1f}" y="{y + 2}" width="{max(x2 - x1, 3):.1f}" height="14" fill="{LANE_COLOURS[lane]}">'
            f"<title>{e(lane)} {e(clock(a))} to {e(clock(b))}</title></rect>"
        )
    for rec in records:
        if rec.event_type in types:
            y = 10 + lanes.index(rec.event_type) * row
            xx = x(rec.received_at)
            parts.append(f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{y + 3}" y2="{y + 15}" stroke="#1d3557"/>')
    if keys:
        y = 10 + lanes.index(KEYS_LANE) * row
        for at, key in keys:
            parts.append(
                f'<text x="{x(at):.1f}" y="{y + 13}" text-anchor="middle" fill="#8e44ad">{e(key)}'
                f"<title>key {e(key)} at {e(clock(at))}</title></text>"
            )
    for at, what in boundaries:
        xx = x(at)
        parts.append(
            f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="4" y2="{10 + len(lanes) * row}" stroke="#b00020" '
            f'stroke-dasharray="4 3"><title>{e(what)} at {e(clock(at))}</title></line>'
        )
    axis = 10 + len(lanes) * row + 14
    for k in range(6):
        anchor = "start" if k == 0 else "end" if k == 5 else "middle"
        parts.append(
            f'<text x="{left + width * k / 5:.0f}" y="{axis}" text-anchor="{anchor}">+{total * k / 5:.1f} s</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _ms(value: float) -> str:
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def _usage_rows(session: dict[str, Any], records: list[EventRecord]) -> list[tuple[str, Any, float | None]]:
    """(what, the session row's value, the sum over the archived events) of every non-zero count."""
    stored = usage_.from_row(session)
    summed: dict[str, float] = {}
    for rec in records:
        event = rec.event()
        found = usage_.usage_of(rec.event_type, event) if isinstance(event, dict) else None
        if found:
            usage_.add(summed, found)
    out: list[tuple[str, Any, float | None]] = [
        (name.replace("_", " "), session.get("usage_" + name), summed.get(name, 0))
        for name in usage_.FIELDS
        if stored.get(name) or summed.get(name)
    ]
    known = {"usage_" + n for n in usage_.FIELDS} | {"cost_usd"}
    out += [(k, v, None) for k, v in usage_fields(session).items() if k not in known]  # other fields, as stored
    return out


def _sections(
    session: dict[str, Any],
    records: list[EventRecord],
    prices: Mapping[str, float] | None,
    lines: list[Line] | None = None,
    latency: list[Turn] | None = None,
    boundaries: list[tuple[str, str]] | None = None,
) -> str:
    """`session`: the call's row (a conversation's: its usage summed); `lines`, `latency` and
    `boundaries` are a conversation's, stitched (default: the one call's, from `records`)."""
    e = html.escape
    many = boundaries is not None
    out = ["<h2>Timeline</h2>", _chart(records, boundaries or [])]
    rows = "".join(
        (f"<tr><td class=n>{t.call}</td>" if many else "<tr>")
        + f"<td class=n>{t.n}</td><td>{e(clock(t.user_done_at))}</td><td>{e(t.basis)}</td>"
        f"<td>{e(clock(t.first_reply_at))}</td><td>{e(t.reply)}</td><td class=n>{_ms(t.latency_ms)}</td></tr>"
        for t in (latency if latency is not None else turns(records))
    )
    out.append("<h2>Response latency per turn</h2>")
    out.append(
        '<table class="grid turns"><tr>'
        + ("<th>call</th>" if many else "")
        + "<th>turn</th><th>user done (UTC)</th><th>measured from</th>"
        f"<th>first reply (UTC)</th><th>reply</th><th>latency</th></tr>{rows}</table>"
        if rows
        else "<p>No complete turns.</p>"
    )
    lines = lines if lines is not None else transcript(records)
    marks = [ln for ln in lines if ln.who in ("gap", "handover")]
    out.append("<h2>Gaps and hand-overs</h2>")
    out.append(
        '<table class="grid marks"><tr><th>at (UTC)</th><th>call time</th><th>what</th><th>detail</th></tr>'
        + "".join(
            f"<tr><td>{e(clock(m.at))}</td><td class=n>{e(_offset_text(m.offset))}</td><td>{e(m.who)}</td>"
            f"<td>{e(m.text)}</td></tr>"
            for m in marks
        )
        + "</table>"
        if marks
        else "<p>None: the listener observed the call without interruption.</p>"
    )
    out.append("<h2>Usage and cost</h2>")
    cost = session.get("cost_usd")
    again = usage_.cost_usd(usage_.from_row(session), prices or PRICES)
    out.append(
        (
            f'<p class="cost">Estimated cost: <b>{float(cost):.4f} USD</b> <small>(the session row, priced when '
            "the call ended)</small></p>"
            if isinstance(cost, (int, float))
            else '<p class="cost">No cost on the session row.</p>'
        )
        + f'<p class="reprice">Its tokens priced again: {again:.4f} USD <small>(PRICE_* settings where this '
        "report was made, list prices where unset)</small></p>"
    )
    usage = _usage_rows(session, records)
    out.append(
        '<table class="grid usage"><tr><th>tokens</th><th>session row</th><th>summed from the events</th></tr>'
        + "".join(
            f"<tr><td>{e(k)}</td><td class=n>{e(_num(v))}</td><td class=n>{e(_num(r))}</td></tr>" for k, v, r in usage
        )
        + "</table>"
        if usage
        else "<p>No usage recorded.</p>"
    )
    out.append('<h2>Transcript</h2><div class="transcript">')
    for ln in lines:
        if ln.who == "call":  # a conversation's next call begins
            text = ln.text[:1].upper() + ln.text[1:]
            out.append(f'<p class="say call"><small>{e(_offset_text(ln.offset))}</small> {e(text)}</p>')
            continue
        who = SAYS.get(ln.who, ln.who)
        out.append(
            f'<p class="say {e(ln.who)}"><b>{e(who)}</b> <small>{e(_offset_text(ln.offset))}</small> {e(ln.text)}</p>'
        )
    out.append("</div>")
    return "".join(out)


SAYS = {"user": "User", "assistant": "Assistant", "key": "Keypad", "interrupted": "Interrupted"}


def _offset_text(offset: float | None) -> str:
    return f"+{offset:.1f} s" if offset is not None else ""


def _num(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.3f}"
    return f"{int(value):,}" if isinstance(value, (int, float)) else str(value)


def render_timeline(
    session: dict[str, Any] | None,
    records: list[EventRecord],
    report: VerifyReport,
    prices: Mapping[str, float] | None = None,
) -> str:
    """`prices`: what to price the tokens again at (default: the list prices)."""
    session = session or {}
    call_id = report.call_id
    start = None
    if records:
        try:
            start = datetime.fromisoformat(records[0].received_at)
        except ValueError:
            start = None
    e = html.escape
    verdict = _verdict(report)
    keys = (
        "state",
        "created_at",
        "attached_at",
        "attach_delay_ms",
        "ended_at",
        "end_reason",
        "end_detail",
        "origin",
        "principal_name",
        "principal_id",
        "model",
        "voice",
        "events",
        "gaps",
        "continuations",
    )
    kv = "".join(
        f"<tr><td>{e(k)}</td><td>{e(str(session.get(k)))}</td></tr>" for k in keys if session.get(k) not in (None, "")
    )
    counts = session.get("counts") or {}
    if isinstance(counts, dict) and counts:
        kv += "<tr><td>counts</td><td>" + ", ".join(f"{e(k)} {v}" for k, v in sorted(counts.items())) + "</td></tr>"
    items = [_item(rec, n, start) for rec, n in _groups(records)]
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Call {e(call_id)}</title>'
        f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{CSS}</style></head>'
        f'<body><header><h1>Call {e(call_id)}</h1><span class="sub">{e(_subtitle(session))}</span></header><main>'
        f'<p>{verdict}</p><table class="kv">{kv}</table>{_sections(session, records, prices)}'
        f'<h2>Every event</h2><ol class="tl">{"".join(items)}</ol>'
        f"</main></body></html>"
    )


def _item(rec: EventRecord, n: int, start: datetime | None, seq_label: str = "") -> str:
    """One line of the every-event list (a run of n deltas folded into one)."""
    e = html.escape
    event = rec.event()
    cls, text = _kind(rec, event)
    label = f"{n} × {rec.event_type}" if n > 1 else rec.event_type
    bubble = f'<span class="bubble">{e(text)}</span>' if text else ""
    if rec.event_type == "listener.gap" and isinstance(event, dict):
        bubble = (
            f'<span class="bubble">not recorded: {e(str(event.get("reason")))} '
            f"{e(str(event.get('from') or ''))} → {e(str(event.get('until') or 'next listener'))}</span>"
        )
    payload = rec.payload if len(rec.payload) <= 20_000 else rec.payload[:20_000] + f"… ({len(rec.payload)} chars)"
    return (
        f'<li class="{cls}"><span class="t">{e(_t(rec.received_at, start))}</span> '
        f'<span class="type">{e(label)}</span> <small>#{seq_label}{rec.seq}</small>{bubble}'
        f"<details><summary>payload</summary><pre>{e(payload)}</pre></details></li>"
    )


def _verdict(report: VerifyReport) -> str:
    e = html.escape
    if report.ok:
        return f'<span class="ok">chain verified: {report.events} rows, head {e((report.head or "")[:16])}</span>'
    return (
        '<span class="bad">verification failed</span><ul>'
        + "".join(f"<li>{e(p)}</li>" for p in report.problems)
        + "</ul>"
    )


def _summed_usage(sessions: list[Mapping[str, Any]]) -> dict[str, Any]:
    """The usage and cost fields of several session rows, added up (a conversation's)."""
    out: dict[str, Any] = {}
    for row in sessions:
        for k, v in usage_fields(row).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[k] = out.get(k, 0) + v
    return out


def render_conversation(
    calls: list[tuple[dict[str, Any], list[EventRecord], VerifyReport]],
    prices: Mapping[str, float] | None = None,
) -> str:
    """A conversation's calls, first to last, as one page: each call's verification (its chain and
    its link to the call before), one timeline on one clock with each call's start marked, the
    turns, the gaps, the usage summed, and the stitched transcript."""
    e = html.escape
    parts: list[Call] = [(session, records) for session, records, _ in calls]
    first = str(calls[0][0].get("call_id") or calls[0][2].call_id) if calls else ""
    start = conversation_start(parts)
    records = [rec for _, recs in parts for rec in recs]
    marks = [boundary(n, parts) for n in range(1, len(parts) + 1)]
    rows = []
    for n, (session, recs, report) in enumerate(calls, 1):
        seconds = duration_seconds(session)
        rows.append(
            f"<tr><td class=n>{n}</td><td>{e(str(session.get('call_id') or report.call_id))}</td>"
            f"<td>{e(clock(session.get('created_at')))}</td>"
            f"<td class=n>{'' if seconds is None else f'{seconds:.1f} s'}</td>"
            f"<td>{e(str(session.get('end_reason') or session.get('state') or ''))}</td>"
            f"<td class=n>{len(recs)}</td><td>{_verdict(report)}</td></tr>"
        )
    table = (
        '<table class="grid calls"><tr><th>call</th><th>call id</th><th>started (UTC)</th><th>duration</th>'
        f"<th>ended by</th><th>events</th><th>verification</th></tr>{''.join(rows)}</table>"
    )
    ok = all(report.ok for _, _, report in calls)
    verdict = (
        f'<span class="ok">all {len(calls)} calls verified, and the links between them</span>'
        if ok
        else '<span class="bad">verification failed: see the calls below</span>'
    )
    items = []
    for n, (_row, recs, _report) in enumerate(calls, 1):
        at, what = marks[n - 1]
        items.append(
            f'<li class="call"><span class="t">{e(_t(at, start))}</span> <b>{e(what[:1].upper() + what[1:])}</b></li>'
        )
        items += [_item(rec, k, start, f"{n}.") for rec, k in _groups(recs)]
    sections = _sections(
        _summed_usage([session for session, _, _ in calls]),
        records,
        prices,
        conversation_transcript(parts),
        conversation_turns(parts),
        marks,
    )
    subtitle = f"{len(calls)} calls" + (f" · started {start.strftime('%Y-%m-%d %H:%M:%S UTC')}" if start else "")
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Conversation {e(first)}</title>'
        f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{CSS}</style></head>'
        f'<body><header><h1>Conversation {e(first)}</h1><span class="sub">{e(subtitle)}</span></header><main>'
        f"<p>{verdict}</p>{table}{sections}"
        f'<h2>Every event</h2><ol class="tl">{"".join(items)}</ol>'
        f"</main></body></html>"
    )


def _subtitle(session: dict[str, Any]) -> str:
    parts = []
    try:
        parts.append(
            "started " + datetime.fromisoformat(str(session.get("created_at"))).strftime("%Y-%m-%d %H:%M:%S UTC")
        )
    except ValueError:
        pass
    seconds = duration_seconds(session)
    if seconds is not None:
        parts.append(f"{seconds:.1f} s")
    if session.get("end_reason"):
        parts.append(f"end reason: {session['end_reason']}")
    for key in ("origin", "principal_name"):
        if session.get(key):
            parts.append(str(session[key]))
    return " · ".join(parts)


def dumps_row(row: dict[str, Any]) -> str:
    return json.dumps(row, indent=2, sort_keys=True, default=str)
