"""The rollover's audio-gap reading (local/testing/audio_gaps.py), on samples built here: packets
every 20 ms on two peer connections, the page switching from one to the other."""

from __future__ import annotations

from local.testing.audio_gaps import audio_intervals, switch_gaps

OLD, NEW = "track-old", "track-new"


def received(start: float, end: float, silent: tuple[float, float] | None = None) -> list[float]:
    """Arrival times of 20 ms packets from `start` to `end`, none inside `silent`."""
    times, t = [], start
    while t <= end:
        if not (silent and silent[0] <= t < silent[1]):
            times.append(t)
        t += 20.0
    return times


def stats(track: str, arrivals: list[float], now: float) -> dict | None:
    got = [a for a in arrivals if a <= now]
    return {"track": track, "packets": len(got), "at": got[-1] if got else None, "t": now}


def samples(
    switch_at: float,
    old: list[float],
    new: list[float],
    sample_times: list[float],
    new_from: float = 0.0,
) -> list[dict]:
    """What the page's sampler records: the played track (old until `switch_at`) and both peers
    (the new one exists from `new_from`)."""
    rows = []
    for now in sample_times:
        rows.append(
            {
                "playing": OLD if now < switch_at else NEW,
                "pcs": [stats(OLD, old, now), stats(NEW, new, now) if now >= new_from else None],
            }
        )
    return rows


def every(ms: float, start: float, end: float) -> list[float]:
    return [start + i * ms for i in range(int((end - start) / ms) + 1)]


def test_a_switch_between_two_flowing_calls_is_about_a_packet():
    old, new = received(0, 3000), received(1000, 6000)
    (switch,) = switch_gaps(samples(2005, old, new, every(21, 3, 5000), new_from=900))
    assert (switch.from_track, switch.to_track) == (OLD, NEW)
    assert switch.gap_ms <= 45  # at most a packet and a sampling step
    assert switch.to_packets == 51  # the new call's packets from 1000 to 2000 ms, already flowing


def test_a_new_call_whose_audio_has_not_started_shows_its_gap():
    old, new = received(0, 3000), received(1000, 6000, silent=(1900, 2400))
    (switch,) = switch_gaps(samples(2005, old, new, every(21, 3, 5000), new_from=900))
    assert 400 <= switch.gap_ms <= 460, switch.gap_ms


def test_a_late_sample_is_not_a_gap_but_a_pause_in_the_packets_is():
    old, new = received(0, 3000), received(1000, 6000)
    late = [t for t in every(20, 3, 5000) if not 1800 < t < 2300]  # the page's timer ran late for 500 ms
    (switch,) = switch_gaps(samples(2005, old, new, late, new_from=900))
    assert switch.gap_ms <= 45, switch.gap_ms

    paused = received(1000, 6000, silent=(2100, 2400))  # the new call sent nothing for 300 ms
    (switch,) = switch_gaps(samples(2005, old, paused, late, new_from=900))
    assert 280 <= switch.gap_ms <= 340, switch.gap_ms


def test_gaps_far_from_a_switch_do_not_count_and_audio_that_never_comes_is_the_whole_window():
    old = received(0, 9000, silent=(500, 1500))  # a second without packets, long before the switch
    new = received(4000, 9000)
    rows = samples(7000, old, new, every(20, 3, 8000), new_from=3900)
    assert max(gap for _, gap in audio_intervals(rows)) >= 990
    (switch,) = switch_gaps(rows)
    assert switch.gap_ms <= 45

    mute = samples(2005, received(0, 3000), [], every(20, 3, 5000), new_from=900)
    (switch,) = switch_gaps(mute)
    assert switch.gap_ms >= 1950  # silence from the switch to the end of the 2 s window
    assert switch.to_packets == 0
