"""The local host's timer triggers on the fixture app: the NCRONTAB schedule from `%SETTING%`,
runOnStartup, the admin API's manual run, and a missing setting stopping start-up."""

import pytest
import requests

from local.testing.host_process import FIXTURE_APP, fixture_settings, records, wait_until


def test_schedule_from_a_setting_and_run_on_startup(host_factory, azurite, tmp_path):
    settings = fixture_settings(azurite, tmp_path, TICK_SCHEDULE="*/1 * * * * *")
    host = host_factory(FIXTURE_APP, settings)
    assert "tick: timerTrigger '*/1 * * * * *'" in host.logs
    ticks = wait_until(lambda: len(records(settings, "tick")) >= 4 and records(settings, "tick"), 15, what="4 ticks")
    # the first is runOnStartup's; the scheduled ones land on whole seconds, one second apart
    scheduled = [t["at"] for t in ticks[1:4]]
    assert all(0.5 < b - a < 1.5 for a, b in zip(scheduled, scheduled[1:], strict=False)), scheduled
    assert all(t["past_due"] is False and t["next"] for t in ticks)


def test_admin_api_runs_a_timer_now(host_factory, azurite, tmp_path):
    settings = fixture_settings(azurite, tmp_path)  # once a year: only startup and manual runs
    host = host_factory(FIXTURE_APP, settings)
    wait_until(lambda: len(records(settings, "tick")) == 1, 10, what="the runOnStartup tick")
    url = f"{host.url}/admin/functions/tick"
    assert requests.post(url, json={"input": ""}, timeout=10).status_code == 401
    assert requests.post(url, headers={"x-functions-key": host.keys["host"]["default"]}, timeout=10).status_code == 401
    master = {"x-functions-key": host.keys["master"]}
    assert requests.post(f"{host.url}/admin/functions/nope", headers=master, timeout=10).status_code == 404
    assert requests.post(url, json={"input": ""}, headers=master, timeout=10).status_code == 202
    wait_until(lambda: len(records(settings, "tick")) == 2, 10, what="the manual tick")
    # the host's log line may reach our reader thread a moment after the tick's record is stored
    wait_until(lambda: "This function was programmatically called via the host APIs." in host.logs, 5, what="the log")


def test_missing_schedule_setting_stops_start_up(host_factory, azurite, tmp_path):
    settings = fixture_settings(azurite, tmp_path)
    del settings["TICK_SCHEDULE"]
    with pytest.raises(RuntimeError, match="TICK_SCHEDULE"):
        host_factory(FIXTURE_APP, settings)
