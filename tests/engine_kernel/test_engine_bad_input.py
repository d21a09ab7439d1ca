"""Bad engine input gets a clear error naming the value and where it is; nothing is computed."""

import re

import numpy as np
import pytest

from backtest.engine import Account, EngineInputError, PerpBars, Policy, SettingsError, simulate_perp
from backtest.market import MarketSpecError, TierTable, load_market

HOUR = 3_600_000
T0 = 1_640_995_200_000  # 2022-01-01 00:00 UTC


def arrays(n=6):
    ts = T0 + np.arange(n, dtype=np.int64) * HOUR
    close = np.linspace(100.0, 105.0, n)
    return dict(timestamp=ts, open=close.copy(), high=close + 1.0, low=close - 1.0, close=close.copy())


def test_misaligned_arrays_name_the_array():
    a = arrays()
    a["high"] = a["high"][:-1]
    with pytest.raises(EngineInputError, match=r"high has shape \(5,\) but timestamp has 6 bars"):
        PerpBars.from_arrays(**a)


@pytest.mark.parametrize("bad", [np.nan, 0.0, -5.0, np.inf])
def test_bad_price_names_the_bar_and_time(bad):
    a = arrays()
    a["close"][3] = bad
    with pytest.raises(EngineInputError) as err:
        PerpBars.from_arrays(**a)
    msg = str(err.value)
    assert "close at bar 3" in msg and "2022-01-01T03:00:00+00:00" in msg and repr(bad) in msg


def test_nan_mark_price_is_refused_too():
    a = arrays()
    mark = a["close"].copy()
    mark[2] = np.nan
    with pytest.raises(EngineInputError, match=r"mark_close at bar 2 \(2022-01-01T02:00:00\+00:00\)"):
        PerpBars.from_arrays(**a, mark_close=mark)


def test_high_below_low_is_refused():
    a = arrays()
    a["high"][4], a["low"][4] = a["low"][4], a["high"][4]
    with pytest.raises(EngineInputError, match=r"high/low at bar 4 .* do not bracket"):
        PerpBars.from_arrays(**a)


def test_time_not_increasing_is_refused():
    a = arrays()
    a["timestamp"][2] = a["timestamp"][1]
    with pytest.raises(EngineInputError, match=r"not strictly increasing at bar 2"):
        PerpBars.from_arrays(**a)


def test_nan_funding_rate_names_the_print():
    a = arrays()
    with pytest.raises(EngineInputError, match=r"funding_rate at 2022-01-01T01:00:00\+00:00 is nan"):
        PerpBars.from_arrays(**a, funding_time=[T0, T0 + HOUR], funding_rate=[1e-4, np.nan])


@pytest.fixture(scope="module")
def spec():
    return load_market("binanceusdm", "BTC/USDT:USDT")


def test_target_not_aligned_to_bars(spec):
    bars = PerpBars.from_arrays(**arrays())
    with pytest.raises(EngineInputError, match=r"target has shape \(5, 2\); expected \(n_bars=6"):
        simulate_perp(bars, np.full((5, 2), -1.0), spec)


def test_infinite_target_names_bar_and_column(spec):
    bars = PerpBars.from_arrays(**arrays())
    tgt = np.full((6, 2), -1.0)
    tgt[4, 1] = -np.inf
    with pytest.raises(EngineInputError, match=r"infinite at bar 4 \(2022-01-01T04:00:00\+00:00\), column 1"):
        simulate_perp(bars, tgt, spec)


def test_leverage_above_the_tier_maximum(spec):
    bars = PerpBars.from_arrays(**arrays())
    with pytest.raises(SettingsError, match=r"Account.leverage=200.0 \(column 1\) exceeds the tier maximum 125"):
        simulate_perp(bars, np.full((6, 2), -1.0), spec, Account(leverage=[10.0, 200.0]))


@pytest.mark.parametrize("account, pattern", [
    (Account(margin_mode="isolate"), r"margin_mode='isolate' is not one of \['cross', 'isolated'\]"),
    (Account(initial_capital=-5.0), r"Account.initial_capital=-5.0 \(column 0\) must be a finite number > 0"),
    (Account(leverage=[5.0, 5.0, 5.0]), r"target has 2 columns but the settings give 3; give 1 or 3"),
    (Account(margin_call_response="reduce", margin_call_threshold=0.5, margin_call_target=0.6),
     r"margin_call_target=0.6 \(column 0\) must be below margin_call_threshold=0.5"),
    (Account(lag=-1), r"Account.lag=-1 must be an integer >= 0"),
])
def test_bad_account_settings(spec, account, pattern):
    bars = PerpBars.from_arrays(**arrays())
    with pytest.raises((SettingsError, EngineInputError), match=pattern):
        simulate_perp(bars, np.full((6, 2), -1.0), spec, account)


def test_bad_policy_settings(spec):
    bars = PerpBars.from_arrays(**arrays())
    with pytest.raises(SettingsError, match=r"Policy.max_drawdown=0.0 \(column 0\) must be in \(0, 1\]"):
        simulate_perp(bars, np.full((6, 1), -1.0), spec, policy=Policy(kind="drawdown", max_drawdown=0.0))
    with pytest.raises(SettingsError, match=r"Policy.floor=-0.1"):
        simulate_perp(bars, np.full((6, 1), -1.0), spec, policy=Policy(kind="cppi", floor=-0.1))


def test_unknown_series_is_refused(spec):
    bars = PerpBars.from_arrays(**arrays())
    with pytest.raises(EngineInputError, match=re.escape("unknown series ['equty']")):
        simulate_perp(bars, np.full((6, 1), -1.0), spec, series=("equty",))


def test_tier_table_with_a_hole_names_the_tier():
    rows = [{"minNotional": 0, "maxNotional": 50_000, "maintenanceMarginRate": 0.004, "maxLeverage": 125},
            {"minNotional": 60_000, "maxNotional": 1e9, "maintenanceMarginRate": 0.005, "maxLeverage": 100}]
    with pytest.raises(MarketSpecError, match=r"tiers\[1\]: hole or overlap .* starts at 60000.0 but tier 0 ends at 50000.0"):
        TierTable.from_ccxt(rows)
