"""call_id from the service's Location header: path form and ?call_id= form."""

import pytest

from realtime_gateway.upstream.answers import call_id_from_location


@pytest.mark.parametrize(
    "location,call_id",
    [
        ("https://r.openai.azure.com/openai/v1/realtime/calls/rtc_abc123", "rtc_abc123"),
        ("/openai/v1/realtime/calls/rtc_abc123/", "rtc_abc123"),
        ("https://r.openai.azure.com/openai/v1/realtime?call_id=rtc_q1", "rtc_q1"),
        ("/v1/realtime/calls?call_id=rtc_q2&x=1", "rtc_q2"),
        ("rtc_bare", "rtc_bare"),
    ],
)
def test_call_id_forms(location, call_id):
    assert call_id_from_location(location) == call_id


@pytest.mark.parametrize(
    "location",
    [
        None,
        "",
        "https://r/openai/v1/realtime/calls",
        "/calls/a%2Fb",
        "/calls/a b",
        "https://r/realtime/calls/" + "x" * 201,
    ],
)
def test_unusable_locations(location):
    assert call_id_from_location(location) is None
