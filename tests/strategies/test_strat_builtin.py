"""Built-in strategies on hand-made candle tables; expected signals worked out by hand in the
comments (moving averages, channels and funding sums computed from the listed numbers)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import strategies
from strategies import inverse_hold, long_put
from strategies.combine import apply_filter

NAN = np.nan
CLOSES = [10, 11, 12, 11, 9, 8, 10, 13]
# 3-bar SMA of CLOSES:         -,  -, 11, 11.333, 10.667, 9.333, 9, 10.333
# 2-bar SMA:                   -, 10.5, 11.5, 11.5, 10, 8.5, 9, 11.5
# close < SMA3 at bars 3, 4, 5; SMA2 < SMA3 at bars 4, 5.
# SMA3 falling (below its value 1 bar ago) at bars 4, 5, 6.


def sig(name, frame, **params):
    out = strategies.get(name).run(frame, params)
    assert out.shape == (len(frame), 1)
    return out.iloc[:, 0].to_numpy()


def test_trend_short_price_below_ma(make_bars):
    np.testing.assert_array_equal(sig("trend_short", make_bars(CLOSES), slow_days=3),
                                  [0, 0, 0, -1, -1, -1, 0, 0])


def test_trend_short_windows_are_in_days_whatever_the_bar_size(make_bars):
    # On hourly bars 3 bars are 3/24 days: the same signal.
    np.testing.assert_array_equal(sig("trend_short", make_bars(CLOSES, bar_hours=1), slow_days=3 / 24),
                                  [0, 0, 0, -1, -1, -1, 0, 0])
    # ... and 3 days are 72 hourly bars: all warm-up here.
    np.testing.assert_array_equal(sig("trend_short", make_bars(CLOSES, bar_hours=1), slow_days=3), np.zeros(8))


def test_trend_short_ma_cross(make_bars):
    np.testing.assert_array_equal(
        sig("trend_short", make_bars(CLOSES), rule="ma_cross", fast_days=2, slow_days=3),
        [0, 0, 0, 0, -1, -1, 0, 0])


def test_trend_short_ema(make_bars):
    # span 3 -> alpha 1/2: EMA 10, 10.5, 11.25, 11.125, 10.0625, 9.03125, 9.515625, 11.2578 (from bar 2)
    closes = [10, 11, 12, 11, 9, 8, 10, 13]
    np.testing.assert_array_equal(sig("trend_short", make_bars(closes), slow_days=3, ewm=True),
                                  [0, 0, 0, -1, -1, -1, 0, 0])
    # A close between the EMA and the SMA separates them: bar 3 close 11.4 < SMA 11.467 but
    # > EMA (11.4 + 11.25) / 2 = 11.325.
    closes = [10, 11, 12, 11.4]
    assert sig("trend_short", make_bars(closes), slow_days=3)[3] == -1
    assert sig("trend_short", make_bars(closes), slow_days=3, ewm=True)[3] == 0


def test_breakdown_short_donchian(make_bars):
    low = [10, 9, 9.5, 8, 7, 7.5, 9, 10, 8, 6]
    high = [11, 10, 10.5, 9.5, 8.5, 8.5, 10, 11.5, 9, 7]
    close = [10.5, 9.5, 10, 8.5, 7.5, 8, 9.8, 11, 8.5, 6.5]
    # Lowest low of the 2 previous bars from bar 2: 9, 9, 8, 7, 7, 7.5, 9, 8 -> entries at 3, 4, 8, 9.
    # Highest high of the 2 previous bars:          11, 10.5, 10.5, 9.5, 8.5, 10, 11.5, 11.5 -> exits at 6, 7.
    np.testing.assert_array_equal(
        sig("breakdown_short", make_bars(close, high, low), entry_days=2, exit_days=2),
        [0, 0, 0, -1, -1, -1, 0, 0, -1, -1])


FUNDING = [0.0001, NAN, NAN, NAN, -0.0002, NAN, NAN, NAN, 0.0003, NAN, NAN, NAN]
# 4-bar sums (hourly bars) from bar 3: 1e-4, then -2e-4 for bars 4..7, then 3e-4 for bars 8..11.
# Annualised: sum * 365 * 24 / 4.


def test_funding_carry_gate(make_bars):
    frame = make_bars(np.full(12, 100.0), bar_hours=1, funding=FUNDING)
    np.testing.assert_array_equal(sig("funding_carry", frame, window_days=4 / 24),
                                  [0, 0, 0, -1, 0, 0, 0, 0, -1, -1, -1, -1])
    # A threshold above 0.219/yr (1e-4 per 4 h) removes bar 3 but keeps 0.657/yr.
    np.testing.assert_array_equal(sig("funding_carry", frame, window_days=4 / 24, threshold=0.3),
                                  [0, 0, 0, 0, 0, 0, 0, 0, -1, -1, -1, -1])


def test_funding_carry_scale(make_bars):
    frame = make_bars(np.full(12, 100.0), bar_hours=1, funding=FUNDING)
    got = sig("funding_carry", frame, mode="scale", window_days=4 / 24, threshold=0.0, full_at=0.5)
    ann3 = 0.0001 * 365 * 24 / 4  # 0.219
    expected = [0, 0, 0, -ann3 / 0.5, 0, 0, 0, 0, -1, -1, -1, -1]
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_funding_carry_needs_prints(make_bars):
    with pytest.raises(strategies.StrategyError, match="no funding prints"):
        sig("funding_carry", make_bars(CLOSES))


def test_bear_regime(make_bars):
    np.testing.assert_array_equal(sig("bear_regime", make_bars(CLOSES), ma_days=3, slope_days=1),
                                  [0, 0, 0, 0, -1, -1, 0, 0])


def test_bear_regime_as_a_filter(make_bars):
    out = strategies.signals(make_bars(CLOSES), "trend_short", {"slow_days": 3}, filter="bear_regime",
                             filter_params={"ma_days": 3, "slope_days": [1, 2]})
    assert out.shape == (8, 2)
    assert list(out.columns.names) == ["rule", "slow_days", "fast_days", "ewm", "filter", "filter.ma_days",
                                       "filter.slope_days", "filter.ewm"]
    assert out.columns[0] == ("price_ma", 3.0, 10.0, False, "bear_regime", 3.0, 1.0, False)
    # trend: bars 3, 4, 5; regime (slope 1): bars 4, 5.
    np.testing.assert_array_equal(out.iloc[:, 0], [0, 0, 0, 0, -1, -1, 0, 0])
    # slope 2: SMA3 below its value 2 bars ago from bar 4 (10.667 < 11), 5, 6 (9 < 10.667), and
    # the close is below it at 4 and 5.
    np.testing.assert_array_equal(out.iloc[:, 1], [0, 0, 0, 0, -1, -1, 0, 0])


def test_filter_params_need_a_filter(make_bars):
    with pytest.raises(strategies.StrategyError, match="filter_params given without filter"):
        strategies.signals(make_bars(CLOSES), "trend_short", filter_params={"ma_days": 3})


def test_apply_filter_rules():
    base = np.array([-1.0, -1.0, 0.5, NAN, NAN, -0.3, 0.7])
    filt = np.array([-1.0, 0.0, -1.0, -1.0, 0.0, NAN, 1.0])
    np.testing.assert_array_equal(apply_filter(base, filt), [-1, 0, 0, NAN, 0, 0, 0.7])


def test_long_put_triggers_and_pass_through(make_bars):
    frame = make_bars(CLOSES)
    out = strategies.get("long_put").run(frame, {"trigger": ["always", "below_ma", "bear_regime"], "ma_days": 3,
                                                 "slope_days": 1, "moneyness": [0.9, 0.8], "min_days": 20})
    assert out.shape == (8, 6)
    cols = out.columns
    assert {"moneyness", "expiry", "min_days", "size_mode", "exposure", "budget", "purpose"} <= set(cols.names)
    np.testing.assert_array_equal(out.loc[:, cols.get_level_values("trigger") == "always"], -np.ones((8, 2)))
    below = out.loc[:, cols.get_level_values("trigger") == "below_ma"].to_numpy()
    np.testing.assert_array_equal(below[:, 0], [0, 0, 0, -1, -1, -1, 0, 0])
    regime = out.loc[:, cols.get_level_values("trigger") == "bear_regime"].to_numpy()
    np.testing.assert_array_equal(regime[:, 1], [0, 0, 0, 0, -1, -1, 0, 0])
    terms = long_put.settings_of(cols)
    assert terms["moneyness"] == [0.9, 0.8] * 3 and terms["min_days"] == [20.0] * 6
    assert terms["expiry"] == "monthly" and terms["size_mode"] == ["notional"] * 6


def test_long_put_terms_are_put_settings_fields(make_bars):
    from backtest.options.sim import PutSettings

    cols = strategies.get("long_put").run(make_bars(CLOSES), {"size_mode": ["notional", "budget"]}).columns
    terms = long_put.settings_of(cols)
    assert set(terms) <= {f.name for f in dataclasses.fields(PutSettings)}
    PutSettings(**terms)
    mixed = strategies.get("long_put").run(make_bars(CLOSES), {"expiry": ["monthly", "weekly"]}).columns
    with pytest.raises(strategies.StrategyError, match="one expiry for all columns"):
        long_put.settings_of(mixed)


def test_inverse_hold_every_bar_and_daily_reset(make_bars):
    frame = make_bars(np.full(50, 100.0), bar_hours=1)  # starts 2022-01-01 00:00 UTC
    np.testing.assert_array_equal(sig("inverse_hold", frame, leverage=-3, reset="bar"), -np.ones(50))
    np.testing.assert_array_equal(sig("inverse_hold", frame, leverage=2, reset="bar"), np.ones(50))
    got = sig("inverse_hold", frame, leverage=-3)
    # Bars opening at 23:00 close at the 00:00 reset: bars 23 and 47; bar 0 opens the position.
    assert np.flatnonzero(~np.isnan(got)).tolist() == [0, 23, 47] and (got[[0, 23, 47]] == -1).all()
    got = sig("inverse_hold", frame, leverage=-1, rebalance_hour=8)
    assert np.flatnonzero(~np.isnan(got)).tolist() == [0, 7, 31]
    # 4-hour bars: the bar opening at 20:00 closes at midnight.
    got = sig("inverse_hold", make_bars(np.full(12, 100.0), bar_hours=4), leverage=-2)
    assert np.flatnonzero(~np.isnan(got)).tolist() == [0, 5, 11]
    with pytest.raises(strategies.StrategyError, match="leverage=0"):
        sig("inverse_hold", frame, leverage=0)


def test_inverse_hold_terms_are_product_settings_fields(make_bars):
    from backtest.products.sim import ProductSettings

    cols = strategies.get("inverse_hold").run(make_bars(CLOSES), {"leverage": [-1, -3], "reset": ["daily", "bar"]}).columns
    terms = inverse_hold.settings_of(cols)
    assert terms == {"leverage": [-1.0, -1.0, -3.0, -3.0], "reset": ["daily", "bar"] * 2, "rebalance_hour": [0.0] * 4}
    assert set(terms) <= {f.name for f in dataclasses.fields(ProductSettings)}
    ProductSettings(**terms)


def test_short_hold(make_bars):
    frame = make_bars(CLOSES)
    got = sig("short_hold", frame)
    assert got[0] == -1 and np.isnan(got[1:]).all()
    np.testing.assert_array_equal(sig("short_hold", frame, rebalance=True), -np.ones(8))
