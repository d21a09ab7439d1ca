"""The liquidation-cascade model: hand-computed rounds on a small crowd, the identities (no crowd or
no impact adds nothing), monotonicity of the fixed point in the shock (hypothesis), the path on
hand candles and on the sample, and the order of magnitude of the 2021-12-04 BTC crash."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backtest.data import load_market_data
from backtest.engine import Account, simulate_perp
from backtest.stress import Cascade, CascadeError, CascadeModel, Crowd, Gap, solve_cascade
from backtest.stress.cascade import DEFAULT_LEVERAGE_MIX, apply_cascade_move, crowd_from_history
from tests.stress.kit import HOUR, T0, btc_spec, hand, same_data, sample

MMR = 0.004
TRADE = ["open", "high", "low", "close"]
MARK = ["mark_open", "mark_high", "mark_low", "mark_close"]


# ------------------------------------------------------------------------------ hand-computed rounds

def small_crowd() -> Crowd:
    """Four long buckets and one short (untouched by a drop)."""
    return Crowd(side=[1, 1, 1, 1, -1], entry=[100, 100, 102, 98, 100], leverage=[20, 10, 5, 2, 10],
                 qty=[1000, 500, 800, 2000, 700], mmr=MMR)


def test_liquidation_and_bankruptcy_prices_are_the_isolated_closed_forms():
    c = small_crowd()
    # long EP (1 - 1/L) / (1 - mmr); short EP (1 + 1/L) / (1 + mmr); bankruptcy EP (1 -+ 1/L)
    np.testing.assert_allclose(c.liq, [95 / 0.996, 90 / 0.996, 81.6 / 0.996, 49 / 0.996, 110 / 1.004], rtol=1e-15)
    np.testing.assert_allclose(c.bankrupt, [95, 90, 81.6, 49, 110], rtol=1e-15)


def test_a_hand_computed_linear_cascade_takes_three_rounds():
    depth = 10_000.0  # USD of forced notional per 1 %
    sol = solve_cascade(small_crowd(), 100.0, -0.05, depth, "linear")
    ps = 95.0
    lp0, lp1, lp2 = 95 / 0.996, 90 / 0.996, 81.6 / 0.996
    # round 1: P_s = 95 <= lp0 = 95.38: bucket 0 (1000 units) is sold at its liquidation price
    f1 = 1000 * lp0
    p1 = ps * (1 - 0.01 * f1 / depth)                  # 85.94 <= lp1 = 90.36
    f2 = f1 + 500 * lp1
    p2 = ps * (1 - 0.01 * f2 / depth)                  # 81.65 <= lp2 = 81.93
    f3 = f2 + 800 * lp2
    p3 = ps * (1 - 0.01 * f3 / depth)                  # 75.42 > 49.20: the 2x bucket survives
    assert p1 < lp1 and p2 < lp2 and p3 > 49 / 0.996 and p1 > lp2
    np.testing.assert_allclose(sol.prices, [ps, p1, p2, p3], rtol=1e-14)
    np.testing.assert_allclose(sol.forced, [0, f1, f2, f3], rtol=1e-14)
    assert sol.iterations == 3
    np.testing.assert_array_equal(sol.closed_round, [1, 2, 3, 0, 0])
    np.testing.assert_allclose(sol.exec_price[:3], [p1, p2, p3], rtol=1e-14)
    assert np.isnan(sol.exec_price[3:]).all()
    assert sol.total_move == pytest.approx(p3 / 100 - 1, rel=1e-14)
    assert sol.cascade_move == pytest.approx(p3 / ps - 1, rel=1e-14)


def test_a_hand_computed_sqrt_cascade_stops_after_one_round():
    depth = 10_000.0
    sol = solve_cascade(small_crowd(), 100.0, -0.05, depth, "sqrt")
    f1 = 1000 * 95 / 0.996
    p1 = 95 * (1 - 0.01 * math.sqrt(f1 / depth))       # 92.07 > lp1 = 90.36: stops
    np.testing.assert_allclose(sol.prices, [95, p1], rtol=1e-14)
    np.testing.assert_array_equal(sol.closed_round, [1, 0, 0, 0, 0])


def test_a_squeeze_liquidates_the_shorts_and_lifts_the_price():
    # the short bucket: liquidation price 110 / 1.004 = 109.56; a 10 % squeeze reaches it
    depth = 7_000.0
    sol = solve_cascade(small_crowd(), 100.0, 0.10, depth, "linear")
    f1 = 700 * 110 / 1.004
    np.testing.assert_allclose(sol.prices, [110, 110 * (1 + 0.01 * f1 / depth)], rtol=1e-14)
    np.testing.assert_array_equal(sol.closed_round, [0, 0, 0, 0, 1])


# ------------------------------------------------------------------------------ identities

@pytest.mark.parametrize("model", [CascadeModel(open_interest=0.0, lookback_bars=240),
                                   CascadeModel(depth=math.inf, lookback_bars=240),
                                   CascadeModel(long_share=0.0, lookback_bars=240)],
                         ids=["no open interest", "infinite depth", "no leveraged longs"])
def test_no_crowd_or_no_impact_gives_the_plain_gap_bit_for_bit(model):
    md = sample()
    res = Cascade("2022-06-13", -0.08, model).run(md)
    plain = Gap("2022-06-13", -0.08).apply(md)
    assert same_data(res.data, plain) and res.data.fingerprint == plain.fingerprint
    assert res.solution.final == res.solution.shocked


def test_with_infinite_depth_only_the_shock_s_own_liquidations_happen():
    sol = solve_cascade(small_crowd(), 100.0, -0.05, math.inf)
    np.testing.assert_array_equal(sol.closed_round, [1, 0, 0, 0, 0])
    assert sol.final == 95.0 and sol.forced_notional == 1000 * 95 / 0.996


def test_a_zero_shock_changes_nothing():
    md = sample()
    res = Cascade("2022-06-13", 0.0, CascadeModel(lookback_bars=240)).run(md)
    assert res.data is md and res.solution.iterations == 0


# ------------------------------------------------------------------------------ monotone fixed point

buckets = st.lists(st.tuples(st.floats(60, 140), st.sampled_from([1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 125.0]),
                             st.floats(0.1, 1e4)), min_size=1, max_size=10)


@settings(max_examples=200, deadline=None)
@given(buckets, st.floats(-0.6, -1e-6), st.floats(-0.6, -1e-6), st.floats(1e2, 1e7), st.sampled_from(["linear", "sqrt"]))
def test_the_fixed_point_is_monotone_in_the_shock(rows, s1, s2, depth, law):
    small, large = max(s1, s2), min(s1, s2)
    e, lev, q = (np.array(x) for x in zip(*rows))
    crowd = Crowd(np.ones(e.size), e, lev, q, MMR)
    # keep the price above zero even if every bucket is sold (I(F) < 1; the guard is tested apart)
    total = float((q * crowd.liq).sum())
    depth = max(depth, 1.01 * (0.01 * total if law == "linear" else 1e-4 * total))
    a = solve_cascade(crowd, 100.0, small, depth, law)
    b = solve_cascade(crowd, 100.0, large, depth, law)
    assert b.final <= a.final
    assert b.forced_notional >= a.forced_notional
    assert not (a.closed & ~b.closed).any()
    # a fixed point: nothing left above the final price, the price is what the forced flow gives
    assert not (~a.closed & (crowd.liq >= a.final)).any()
    assert a.iterations <= crowd.n


def test_a_depth_too_thin_for_the_linear_law_is_refused():
    with pytest.raises(CascadeError, match=r"depth=.*price would reach zero; give a larger depth"):
        solve_cascade(small_crowd(), 100.0, -0.05, 100.0, "linear")


# ------------------------------------------------------------------------------ the path

def test_the_cascade_move_over_two_bars_by_hand():
    md = hand()
    out = apply_cascade_move(md, 2, 0.25, 2, "test")   # g = 1, 0.5, 0.25
    want = np.array([
        (100, 102, 99, 101, 100, 101.5, 99.5, 101),
        (101, 104, 100, 103, 101, 103.5, 100.5, 103),
        (100, 101, 48, 48.5, 100, 100.5, 48.25, 48.5),          # open/high x 1, low/close x 0.5
        (48.5, 49, 23.5, 23.75, 48.5, 48.75, 23.625, 23.75),     # open/high x 0.5, low/close x 0.25
        (23.75, 24.75, 23.75, 24.5, 23.75, 24.625, 23.75, 24.5),  # x 0.25
        (24.5, 25, 24.25, 24.75, 24.5, 24.875, 24.375, 24.75),
    ])
    np.testing.assert_array_equal(out.frame[TRADE + MARK].to_numpy(), want)
    # prints: bar 1 unchanged, bar 3's (a cascade bar) x its start factor 0.5, bar 4's x 0.25
    np.testing.assert_array_equal(out.funding["mark_price"], [101.0, 48.5, 24.0])


def test_an_upward_cascade_lifts_highs_and_closes_by_the_end_factor():
    out = apply_cascade_move(hand(), 2, 4.0, 2, "test")  # g = 1, 2, 4
    np.testing.assert_array_equal(out.frame[TRADE].to_numpy()[2:4], [(100, 202, 96, 194), (194, 392, 188, 380)])


def test_the_path_on_the_sample_is_the_gap_then_the_cascade_factor():
    md = sample()
    res = Cascade("2022-06-13", -0.05, CascadeModel(lookback_bars=240)).run(md)
    k, sol = res.bar, res.solution
    assert sol.iterations >= 2 and sol.final < sol.shocked          # the sample's crowd does cascade
    plain = Gap("2022-06-13", -0.05).apply(md)
    new, old = res.data.frame[TRADE + MARK].to_numpy(), plain.frame[TRADE + MARK].to_numpy()
    assert new[:k].tobytes() == old[:k].tobytes()
    c = sol.final / sol.shocked
    np.testing.assert_allclose(new[k + 1:] / old[k + 1:], c, rtol=4e-16)
    # the shock bar: open and high as the plain gap's, low and close times the cascade factor
    assert new[k, [0, 1, 4, 5]].tobytes() == old[k, [0, 1, 4, 5]].tobytes()
    np.testing.assert_allclose(new[k, [2, 3, 6, 7]] / old[k, [2, 3, 6, 7]], c, rtol=4e-16)
    s = res.summary()
    assert s["total_drop"] == pytest.approx(sol.final / float(md.frame["mark_open"].iloc[k]) - 1, rel=1e-15)
    assert 0 < s["forced_share"] <= 1 and s["iterations"] == sol.iterations


def test_the_engine_runs_the_path_and_a_short_gains_more_than_on_the_plain_gap():
    md, spec = sample(), btc_spec()
    target = [-1.0] + [float("nan")] * (md.n - 1)
    acc = Account(margin_mode="isolated", leverage=10)
    plain = simulate_perp(Gap("2022-06-13", -0.05).apply(md), target, spec, acc)
    cas = simulate_perp(Cascade("2022-06-13", -0.05, CascadeModel(lookback_bars=240)).apply(md), target, spec, acc)
    assert cas.frame("equity").iloc[-1, 0] > plain.frame("equity").iloc[-1, 0]


def test_the_crowd_drops_positions_the_history_already_liquidated():
    md = sample()
    k = int(np.searchsorted(md.timestamps, 1_655_078_400_000))   # 2022-06-13 00:00 UTC
    crowd = crowd_from_history(md, k, lookback_bars=240, leverage_mix=DEFAULT_LEVERAGE_MIX)
    p0 = float(md.frame["mark_open"].iloc[k])
    longs, shorts = crowd.side == 1, crowd.side == -1
    assert (crowd.liq[longs] < p0).all() and (crowd.liq[shorts] > p0).all()
    lows = md.frame["mark_low"].to_numpy()[k - 240:k].min()
    assert (crowd.liq[longs] < lows).all()     # nothing survives below the lookback's lowest mark
    # each side is scaled to its share of the open interest at the mark open
    assert crowd.notional(p0, 1) == pytest.approx(crowd.notional(p0, -1), rel=1e-12)
    assert crowd.notional(p0, 1) == pytest.approx(390_000 * 53_000.0, rel=1e-12)


@pytest.mark.parametrize("kwargs, match", [
    ({"leverage_mix": ((5, 0.5), (10, 0.4))}, r"sum to 0.9.*sum to 1"),
    ({"depth": 0.0}, r"depth=0.0 is out of range"),
    ({"impact": "cubic"}, r"impact='cubic'; give one of"),
    ({"bars": 0}, r"bars=0; give a whole number"),
    ({"long_share": 1.5}, r"long_share=1.5 is out of range"),
])
def test_bad_parameters_are_refused_by_name(kwargs, match):
    with pytest.raises(CascadeError, match=match):
        CascadeModel(**kwargs)


def test_a_lookback_reaching_before_the_data_is_refused():
    with pytest.raises(CascadeError, match=r"has only \d+ bars before it but lookback_bars=720"):
        Cascade("2022-05-02", -0.05).run(sample())


def test_a_cascade_spread_past_the_data_is_refused():
    with pytest.raises(CascadeError, match=r"spreads over 3 bars .* data ends 2 bars later"):
        apply_cascade_move(hand(), 4, 0.9, 3, "test")
    assert T0 + 4 * HOUR == int(hand().timestamps[4])


# ------------------------------------------------------------------------------ a historical event

def test_the_2021_12_04_crash_is_reproduced_to_its_order_of_magnitude():
    """2021-12-04, BTC: Binance's mark fell from 52,008 (04:00 open) to 43,404 (05:00 bar's low),
    -16.5 % in two hourly bars (the sample). Arcane Research (Skew data, "Second largest flush in
    BTC denominated open interest in 2021"): open interest 390,000 BTC before, 58,000 BTC closed
    that day (about 2.8 bn USD at 48,000: liquidations and voluntary closes). The trigger given
    to the model is the first hour's own move (04:00 mark open to its low, -5.0 %); the model's
    defaults (open interest, leverage mix, depth, sqrt impact) are the documented public figures.
    Order of magnitude: within a factor of 3 of both observed numbers."""
    md = load_market_data("binanceusdm", "BTC/USDT:USDT", "1h", start="2021-11-01", end="2021-12-06")
    k = int(np.searchsorted(md.timestamps, 1_638_590_400_000))   # 2021-12-04 04:00 UTC
    f = md.frame
    trigger = f["mark_low"].iloc[k] / f["mark_open"].iloc[k] - 1
    observed_drop = f["mark_low"].iloc[k + 1] / f["mark_open"].iloc[k] - 1
    assert trigger == pytest.approx(-0.0503, abs=5e-4) and observed_drop == pytest.approx(-0.1654, abs=5e-4)
    observed_closed = 58_000 * 48_000.0
    res = Cascade(int(md.timestamps[k]), float(trigger)).run(md)
    s = res.summary()
    assert 1 / 3 < s["total_drop"] / observed_drop < 3
    assert 1 / 3 < s["forced_notional"] / observed_closed < 3
    assert s["bars"] == 1 and s["iterations"] >= 2      # the speed: the whole cascade inside the hour
    # the linear law on the same crowd and depth runs away (every long sold, the price -88 %)
    lin = Cascade(int(md.timestamps[k]), float(trigger), CascadeModel(impact="linear")).run(md).summary()
    assert lin["forced_share"] == 1.0 and lin["total_drop"] < -0.8
