"""NCRONTAB schedules as the local host reads them (six fields, seconds first, UTC)."""

from datetime import UTC, datetime

import pytest

from local.host.timer import BadSchedule, Schedule

T = datetime(2026, 11, 23, 14, 7, 31, 500_000, tzinfo=UTC)  # a Monday


@pytest.mark.parametrize(
    "expression, expected",
    [
        ("*/1 * * * * *", datetime(2026, 11, 23, 14, 7, 32, tzinfo=UTC)),
        ("*/15 * * * * *", datetime(2026, 11, 23, 14, 7, 45, tzinfo=UTC)),
        ("0 */5 * * * *", datetime(2026, 11, 23, 14, 10, 0, tzinfo=UTC)),
        ("0 30 2 * * *", datetime(2026, 11, 24, 2, 30, 0, tzinfo=UTC)),
        ("0 0 9 * * Sat", datetime(2026, 11, 28, 9, 0, 0, tzinfo=UTC)),
        ("0 0 9-17 * * mon-fri", datetime(2026, 11, 23, 15, 0, 0, tzinfo=UTC)),
        ("0 0 0 1 Jan *", datetime(2027, 1, 1, 0, 0, 0, tzinfo=UTC)),
        ("5,40 7 14 23 11 *", datetime(2026, 11, 23, 14, 7, 40, tzinfo=UTC)),
        ("00:00:05", datetime(2026, 11, 23, 14, 7, 36, 500_000, tzinfo=UTC)),
    ],
)
def test_next_occurrence(expression, expected):
    assert Schedule(expression).next_after(T) == expected


@pytest.mark.parametrize("expression", ["* * * * *", "61 * * * * *", "0 0 25 * * *", "x * * * * *", "0 0 0 31 2 *"])
def test_bad_schedules_are_refused_with_the_reason(expression):
    with pytest.raises(BadSchedule):
        Schedule(expression).next_after(T)
