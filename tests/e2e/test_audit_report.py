"""The audit report of a call recorded by the real listener (with a time-box hand-over), opened in
Chromium: it renders offline (no request leaves the file), shows the timeline chart, each turn's
latency, the gap and hand-over, usage and the transcript. Screenshot: artifacts/audit-report.png."""

from local.testing.calls import end_and_wait, script, start_recorded_call
from local.testing.host_process import wait_until
from realtime_gateway.archive.store import Archive
from realtime_gateway.archive.tables import table_service_from_env
from realtime_gateway.audit import main as audit_main
from realtime_gateway.core import usage as u
from realtime_gateway.settings import PRICES
from tests.e2e.browser_support import ARTIFACTS


def test_report_opens_in_chromium(gateway_stack_factory, browser, tmp_path, capsys):
    stack = gateway_stack_factory(LISTENER_TIME_BOX_SECONDS=10)
    conn, emu = stack.azurite.connection_string, stack.emulator.url
    archive = Archive(
        table_service_from_env({"AzureWebJobsStorage": conn}),
        stack.settings["ARCHIVE_EVENTS_TABLE"],
        stack.settings["ARCHIVE_SESSIONS_TABLE"],
    )
    call_id = start_recorded_call(emu, conn, stack.settings["LISTENER_QUEUE"], archive, origin="https://a.example")
    script(emu, call_id, 2)
    # the next listener's gap mark says it is attached: a turn scripted before that would fall in the gap
    wait_until(lambda: any(r.event_type == "listener.gap" for r in archive.read_events(call_id)), 30, 0.1, "hand-over")
    script(emu, call_id, 1)
    end_and_wait(emu, call_id, archive)
    # the last listener writes the call's cost just after it marks the call ended
    session = wait_until(lambda: (s := archive.find_session(call_id)) and s.get("cost_usd") and s, 30, 0.1, "cost")
    cost_usd = u.cost_usd(u.from_row(session), PRICES)
    assert cost_usd > 0
    wait_until(lambda: archive.find_session(call_id)["cost_usd"] == cost_usd, 30, 0.1, "the whole call's cost")

    page_file = tmp_path / "call.html"
    tables = ["--events-table", stack.settings["ARCHIVE_EVENTS_TABLE"]]
    tables += ["--sessions-table", stack.settings["ARCHIVE_SESSIONS_TABLE"]]
    assert audit_main(["--connection-string", conn, *tables, "report", call_id, "-o", str(page_file)]) == 0
    assert "chain verified" in capsys.readouterr().out

    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.goto(page_file.as_uri())
    assert requested == [page_file.as_uri()]  # self-contained: nothing else is fetched
    assert page.locator("h1").inner_text() == f"Call {call_id}"
    assert "chain verified" in page.locator(".ok").inner_text()
    chart = page.locator("svg.chart")
    box = chart.bounding_box()
    assert chart.is_visible() and box["width"] > 800
    for label in page.locator("svg.chart text").all():  # every lane and axis label inside the chart
        t = label.bounding_box()
        assert box["x"] <= t["x"] and t["x"] + t["width"] <= box["x"] + box["width"] + 0.5, label.inner_html()
    assert page.locator("svg.chart rect").count() >= 3  # assistant audio of each turn, and the gap
    gap = page.locator("svg.chart rect[fill='#e9a100']")
    assert gap.count() == 1 and gap.bounding_box()["width"] > 2  # from the hand-over to the next attach
    assert page.locator("table.turns tr").count() == 1 + 3  # header and the three turns
    latencies = [float(c.split()[0]) for c in page.locator("table.turns tr td:last-child").all_inner_texts()]
    assert all(0 <= ms < 5000 for ms in latencies), latencies
    marks = page.locator("table.marks tr td:nth-child(3)").all_inner_texts()
    assert marks == ["handover", "gap"], marks
    assert "handed over to listener 1" in page.locator("table.marks").inner_text()
    assert f"Estimated cost: {cost_usd:.4f} USD" in page.locator("p.cost").inner_text()
    assert f"priced again: {cost_usd:.4f} USD" in page.locator("p.reprice").inner_text()
    usage = {
        r.locator("td").nth(0).inner_text(): (r.locator("td").nth(1).inner_text(), r.locator("td").nth(2).inner_text())
        for r in page.locator("table.usage tr").all()[1:]
    }
    # the session row's sums are the sums over the archived events, both listeners' included
    assert int(usage["total tokens"][0].replace(",", "")) > 0 and all(a == b for a, b in usage.values()), usage
    said = page.locator(".transcript p.say").all_inner_texts()
    assert sum("User" in s for s in said) == 3 and sum("You said: Scripted question" in s for s in said) == 3
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "audit-report.png"), full_page=True)
    context.close()
