"""Timeframe and instant parsing (epoch constants: 2021-01-01T00:00Z = 1_609_459_200 s)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from backtest.data.timeutil import iso, is_calendar, parse_time, parse_timeframe

JAN1 = 1_609_459_200_000


@pytest.mark.parametrize("tf, ms", [("1m", 60_000), ("15m", 900_000), ("1h", 3_600_000), ("4h", 14_400_000),
                                    ("1d", 86_400_000), ("1w", 604_800_000), ("1M", 2_592_000_000), ("1s", 1000)])
def test_parse_timeframe_matches_ccxt(tf, ms):
    import ccxt

    assert parse_timeframe(tf) == ms == ccxt.Exchange.parse_timeframe(tf) * 1000


@pytest.mark.parametrize("bad", ["1H", "0h", "h", "1.5h", "", "60"])
def test_bad_timeframes(bad):
    with pytest.raises(ValueError, match="not a ccxt timeframe"):
        parse_timeframe(bad)


@pytest.mark.parametrize("value, ms", [
    ("2021-01-01", JAN1), ("2021-01-01T08:00", JAN1 + 8 * 3_600_000), ("2021-01-01T08:00:00Z", JAN1 + 8 * 3_600_000),
    ("2021-01-01T10:00:00+02:00", JAN1 + 8 * 3_600_000), (str(JAN1), JAN1), (JAN1, JAN1), (float(JAN1), JAN1),
    (datetime(2021, 1, 1), JAN1), (datetime(2021, 1, 1, 1, tzinfo=timezone(timedelta(hours=1))), JAN1), (None, None),
])
def test_parse_time(value, ms):
    assert parse_time(value) == ms


@pytest.mark.parametrize("bad", ["yesterday", "2021-13-01", 1.5, True])
def test_bad_times_name_the_argument(bad):
    with pytest.raises(ValueError, match="since"):
        parse_time(bad, name="since")


def test_iso_and_calendar():
    assert iso(JAN1) == "2021-01-01T00:00:00+00:00"
    assert iso(JAN1 + 2) == "2021-01-01T00:00:00.002+00:00"
    assert is_calendar("1M") and is_calendar("1y") and not is_calendar("1w")
