"""Client identity from the platform's headers, usage sums and cost: the parts of the limits that
need no storage (the shared state is tested against Azurite in tests/integration/test_limits_*)."""

from __future__ import annotations

import pytest

from realtime_gateway.archive.summary import CallSummary
from realtime_gateway.core import usage as u
from realtime_gateway.limits.client_key import client_address, client_key
from realtime_gateway.settings import PRICES, SettingsError, load_settings

XFF = "x-forwarded-for"


@pytest.mark.parametrize(
    "header, hop, expected",
    [
        ("203.0.113.7:52311", 1, "203.0.113.7"),  # the App Service front end's own entry (ip:port)
        ("6.6.6.6, 203.0.113.7:52311", 1, "203.0.113.7"),  # a forged entry in front is ignored
        ("6.6.6.6, 198.51.100.2, 10.0.0.4:443", 2, "198.51.100.2"),  # behind Front Door: one more hop
        ("[2001:db8:1:2::9]:5000", 1, "2001:db8:1:2::9"),
        ("2001:db8::9", 1, "2001:db8::9"),
        ("", 1, None),
        ("203.0.113.7", 2, None),  # fewer entries than trusted hops: nothing is the platform's
        ("not-an-address", 1, None),
    ],
)
def test_client_address_takes_only_the_platform_part(header, hop, expected):
    assert client_address({XFF: header} if header else {}, XFF, hop) == expected


def test_client_key_prefers_the_principal_and_groups_ipv6_by_64():
    assert client_key({XFF: "1.2.3.4:1"}, {"id": "u/1#x"}, XFF, 1) == "p-u_1_x"  # table-key safe
    assert client_key({XFF: "1.2.3.4:1"}, None, XFF, 1) == "ip-1.2.3.4"
    a = client_key({XFF: "[2001:db8:1:2::9]:1"}, None, XFF, 1)
    b = client_key({XFF: "[2001:db8:1:2:ffff::1]:1"}, None, XFF, 1)
    assert a == b == "ip-2001:db8:1:2::/64"
    assert client_key({XFF: "[::ffff:1.2.3.4]:1"}, None, XFF, 1) == "ip-1.2.3.4"
    assert client_key({}, None, XFF, 1) == "unknown"


def done(inp_text, inp_audio, cached_text, cached_audio, out_text, out_audio):
    return {
        "type": "response.done",
        "response": {
            "usage": {
                "total_tokens": inp_text + inp_audio + out_text + out_audio,
                "input_tokens": inp_text + inp_audio,
                "output_tokens": out_text + out_audio,
                "input_token_details": {
                    "text_tokens": inp_text,
                    "audio_tokens": inp_audio,
                    "cached_tokens": cached_text + cached_audio,
                    "cached_tokens_details": {"text_tokens": cached_text, "audio_tokens": cached_audio},
                },
                "output_token_details": {"text_tokens": out_text, "audio_tokens": out_audio},
            }
        },
    }


def test_summary_sums_usage_and_round_trips_through_the_session_row():
    summary = CallSummary()
    for event in (done(100, 50, 0, 0, 10, 200), done(320, 260, 64, 128, 12, 300)):
        summary.apply("response.done", event)
    summary.apply(
        "conversation.item.input_audio_transcription.completed", {"usage": {"type": "duration", "seconds": 2.5}}
    )
    summary.apply(
        "conversation.item.input_audio_transcription.completed",
        {"usage": {"type": "tokens", "input_tokens": 30, "output_tokens": 8, "total_tokens": 38}},
    )
    summary.apply("response.done", {"response": {"usage": None}})  # a cancelled response: no usage
    assert summary.usage["responses"] == 2
    assert summary.usage["input_tokens"] == 730 and summary.usage["output_audio_tokens"] == 500
    assert summary.usage["input_cached_audio_tokens"] == 128 and summary.usage["transcription_seconds"] == 2.5
    fields = summary.to_fields()
    assert fields["usage_total_tokens"] == 730 + 522 and fields["usage_transcription_input_tokens"] == 30
    assert CallSummary.from_fields(fields).usage == summary.usage
    assert u.budget_tokens(summary.usage) == 730 + 522 + 38


def test_cost_prices_cached_input_apart_and_transcription_by_minute():
    usage = u.usage_of("response.done", done(1000, 2000, 200, 500, 100, 3000))
    assert usage is not None
    expected = (800 * 4 + 1500 * 32 + 700 * 0.4 + 100 * 16 + 3000 * 64) / 1e6
    assert u.cost_usd(usage, PRICES) == pytest.approx(expected)
    assert u.cost_usd({"transcription_seconds": 90}, PRICES) == pytest.approx(1.5 * 0.006)
    # no detail reported: input counts as text and the cached prefix as text first
    assert u.cost_usd({"input_tokens": 1000, "input_cached_tokens": 600}, PRICES) == pytest.approx(
        (400 * 4 + 600 * 0.4) / 1e6
    )


def test_limit_settings_are_validated_and_prices_overridable():
    base = {"AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com", "AZURE_OPENAI_DEPLOYMENT": "d"}
    limits = load_settings({**base, "PRICE_OUTPUT_AUDIO_PER_MTOK": "80", "MAX_ACTIVE_CALLS": "0"}).limits
    assert limits.prices["output_audio"] == 80 and limits.max_active_calls == 0 and limits.rate_per_minute == 10
    with pytest.raises(SettingsError) as err:
        load_settings(
            {**base, "MAX_ACTIVE_CALLS": "10001", "PRICE_INPUT_TEXT_PER_MTOK": "-1", "CLIENT_IP_HEADER": "x y"}
        )
    for name in ("MAX_ACTIVE_CALLS", "PRICE_INPUT_TEXT_PER_MTOK", "CLIENT_IP_HEADER"):
        assert name in str(err.value)


def test_table_key_filter_covers_c1_controls():
    from realtime_gateway.limits.client_key import principal_key

    assert principal_key({"id": "a\x7fb\x85c\x9fd/e"}) == "p-a_b_c_d_e"


def test_slot_ids_name_their_shard_and_foreign_ids_are_ignored():
    from realtime_gateway.limits.limiter import principal_digest, shard_of

    assert shard_of("007.0a1b2c3d4e5f") == 7
    assert shard_of("fixed-id-1234") is None and shard_of(None) is None and shard_of("x.y") is None
    assert len(principal_digest("p-alice")) == 12 and principal_digest(None) == ""


def test_the_cap_needs_enough_shards_and_a_principal_needs_the_platform():
    from realtime_gateway.settings import SettingsError

    base = {"AZURE_OPENAI_ENDPOINT": "https://r.openai.azure.com", "AZURE_OPENAI_DEPLOYMENT": "d"}
    assert load_settings({**base, "MAX_ACTIVE_CALLS": "6400"}).limits.slot_shards == 16
    with pytest.raises(SettingsError) as err:
        load_settings({**base, "MAX_ACTIVE_CALLS": "6401"})
    assert "LIMIT_SLOT_SHARDS of at least 17" in str(err.value)
    with pytest.raises(SettingsError) as err:
        load_settings({**base, "REQUIRE_PRINCIPAL": "true"})
    assert "WEBSITE_AUTH_ENABLED" in str(err.value)
    s = load_settings({**base, "REQUIRE_PRINCIPAL": "true", "WEBSITE_AUTH_ENABLED": "True"})
    assert s.require_principal and s.platform_auth
    defaults = load_settings(base)
    assert not defaults.token_route_enabled and defaults.limits.hangup_running
    assert defaults.limits.daily_spend_usd == 20 and defaults.policy_enforce
