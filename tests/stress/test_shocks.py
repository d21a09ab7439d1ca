"""Shocks on hand candle tables (expected values computed by hand) and on the embedded sample
(engine runs on shocked against plain data)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from backtest.engine import Account, simulate_perp
from backtest.market import TIER_CUM, TIER_MAXLEV, TIER_MMR
from backtest.stress import (FundingSpike, Gap, MarkWick, PathTransplant, ShockError, SlippageShock, TierChange,
                             VolatilityShock, apply_shocks)
from tests.stress.kit import HOUR, PRINTS, T0, btc_spec, hand, same_data, sample

TRADE = ["open", "high", "low", "close"]
MARK = ["mark_open", "mark_high", "mark_low", "mark_close"]

def prices(md, cols):
    return md.frame[cols].to_numpy()


# ------------------------------------------------------------------------------ zero shocks

ZERO = [Gap("2022-06-13", 0.0), VolatilityShock("2022-06-01", "2022-06-10", 1.0), FundingSpike("2022-06-01", 0, 0.003),
        MarkWick("2022-06-13T05:00", 0.0), TierChange("2022-06-01"), SlippageShock(1.0)]


@pytest.mark.parametrize("shock", ZERO, ids=lambda s: type(s).__name__)
def test_a_zero_shock_leaves_data_spec_and_account_unchanged(shock):
    md, spec, acc = sample(), btc_spec(), Account(slippage=0.0007)
    out, spec2, acc2 = apply_shocks([shock], md, spec, acc)
    assert same_data(out, md) and out.fingerprint == md.fingerprint
    assert spec2 is spec and acc2 is acc


def test_the_bit_comparison_sees_one_changed_bit():
    md = sample()
    frame = md.frame.copy()
    v = frame["mark_low"].to_numpy(copy=True)
    v[100] = np.nextafter(v[100], 0.0)
    frame["mark_low"] = v
    assert not same_data(md.replace(frame=frame), md)


# ------------------------------------------------------------------------------ gap

def test_gap_halves_every_later_price_and_print_mark_by_hand():
    out = Gap(T0 + 3 * HOUR, -0.5).apply(hand())
    want = np.array([
        (100, 102, 99, 101, 100, 101.5, 99.5, 101),
        (101, 104, 100, 103, 101, 103.5, 100.5, 103),
        (100, 101, 96, 97, 100, 100.5, 96.5, 97),
        (48.5, 49, 47, 47.5, 48.5, 48.75, 47.25, 47.5),
        (47.5, 49.5, 47.5, 49, 47.5, 49.25, 47.5, 49),
        (49, 50, 48.5, 49.5, 49, 49.75, 48.75, 49.5),
    ])
    np.testing.assert_array_equal(prices(out, TRADE + MARK), want)
    np.testing.assert_array_equal(out.funding["mark_price"], [101.0, 48.5, 48.0])  # the -2 ms print is bar 3's
    np.testing.assert_array_equal(out.funding["funding_rate"], [0.0001, 0.0002, -0.0001])
    np.testing.assert_array_equal(out.funding["timestamp"], [p[0] for p in PRINTS])
    np.testing.assert_array_equal(out.frame["volume"], 1.0)


def test_gap_on_real_data_moves_every_later_price_by_exactly_the_factor():
    md = sample()
    k = int(np.searchsorted(md.timestamps, pd.Timestamp("2022-06-13", tz="UTC").value // 10**6))
    out = Gap("2022-06-13", -0.2).apply(md)
    old, new = prices(md, TRADE + MARK), prices(out, TRADE + MARK)
    assert old[:k].tobytes() == new[:k].tobytes()
    # each later price is the product old * 0.8 rounded once: within half an ulp of the exact value
    ratio = new[k:] / old[k:]
    assert np.abs(ratio - 0.8).max() <= 2 * np.finfo(float).eps
    assert new[k, 0] / old[k - 1, 3] < 0.81  # the gap bar's open jumps from the previous close
    for c in ("volume", "funding_rate", "funding_interval_hours"):
        assert out.frame[c].to_numpy().tobytes() == md.frame[c].to_numpy().tobytes()


def test_a_short_held_through_a_gap_loses_position_times_the_jump():
    md = sample()
    k = int(np.searchsorted(md.timestamps, pd.Timestamp("2022-06-13", tz="UTC").value // 10**6))
    target = np.full(md.n, np.nan)
    target[0] = -1.0
    acc = Account(margin_mode="cross", leverage=5, fee_rate=0.0)
    plain = simulate_perp(md, target, btc_spec(), acc)
    up = simulate_perp(Gap("2022-06-13", 0.05).apply(md), target, btc_spec(), acc)
    c = plain.series["position"][k, 0]
    assert c < 0 and up.series["position"][k, 0] == c
    # equity is valued at the mark close: without funding (which the gap also scales), the
    # gap bar's equity differs by C * (mark_close' - mark_close) = C * 0.05 * mark_close
    assert plain.series["equity"][k - 1, 0] == up.series["equity"][k - 1, 0]
    ex = lambda r: r.series["equity"][k, 0] - r.series["cum_funding"][k, 0]  # noqa: E731
    np.testing.assert_allclose(ex(up) - ex(plain), c * 0.05 * md.frame["mark_close"].iloc[k], rtol=1e-9)


# ------------------------------------------------------------------------------ volatility

def test_volatility_doubles_log_distances_from_the_span_level_by_hand():
    out = VolatilityShock(T0 + 2 * HOUR, T0 + 4 * HOUR, 2.0).apply(hand())
    # span bars 2-3, trade level 100 and mark level 100: p -> p**2 / 100; later bars x 90.25 / 95
    want = np.array([
        (100, 102, 99, 101, 100, 101.5, 99.5, 101),
        (101, 104, 100, 103, 101, 103.5, 100.5, 103),
        (100, 102.01, 92.16, 94.09, 100, 101.0025, 93.1225, 94.09),
        (94.09, 96.04, 88.36, 90.25, 94.09, 95.0625, 89.3025, 90.25),
        (90.25, 94.05, 90.25, 93.1, 90.25, 93.575, 90.25, 93.1),
        (93.1, 95, 92.15, 94.05, 93.1, 94.525, 92.625, 94.05),
    ])
    np.testing.assert_allclose(prices(out, TRADE + MARK), want, rtol=1e-14)
    np.testing.assert_allclose(out.funding["mark_price"], [101.0, 94.09, 91.2], rtol=1e-14)


def test_volatility_scales_log_returns_inside_the_span_and_keeps_them_after():
    md = sample()
    shock = VolatilityShock("2022-06-01", "2022-06-10", 3.0)
    out = shock.apply(md)
    ts = md.timestamps
    i0 = int(np.searchsorted(ts, pd.Timestamp("2022-06-01", tz="UTC").value // 10**6))
    i1 = int(np.searchsorted(ts, pd.Timestamp("2022-06-10", tz="UTC").value // 10**6))
    for c in ("close", "mark_close"):
        r_old = np.diff(np.log(md.frame[c].to_numpy()))
        r_new = np.diff(np.log(out.frame[c].to_numpy()))
        np.testing.assert_allclose(r_new[i0:i1 - 1], 3.0 * r_old[i0:i1 - 1], atol=1e-12)  # bars i0+1 .. i1-1
        np.testing.assert_allclose(r_new[i1:], r_old[i1:], atol=1e-12)                    # bars i1+1 ..
        assert r_new[:i0 - 1].tobytes() == r_old[:i0 - 1].tobytes()
    # the within-bar ranges widen threefold in log terms
    hl_old = np.log(md.frame["high"] / md.frame["low"]).to_numpy()[i0:i1]
    hl_new = np.log(out.frame["high"] / out.frame["low"]).to_numpy()[i0:i1]
    np.testing.assert_allclose(hl_new, 3.0 * hl_old, atol=1e-12)


# ------------------------------------------------------------------------------ funding spike

def test_funding_spike_replaces_the_prints_in_its_span_only():
    md = sample()
    out = FundingSpike("2022-06-01", 3, 0.003).apply(md)
    t = md.funding["timestamp"].to_numpy()
    lo = pd.Timestamp("2022-06-01", tz="UTC").value // 10**6
    hit = (t >= lo) & (t < lo + 3 * 86_400_000)
    assert hit.sum() == 9  # 8-hourly prints over three days
    np.testing.assert_array_equal(out.funding["funding_rate"].to_numpy()[hit], 0.003)
    assert out.funding["funding_rate"].to_numpy()[~hit].tobytes() == md.funding["funding_rate"].to_numpy()[~hit].tobytes()
    bars = out.frame["funding_rate"].notna().to_numpy()
    assert bars.sum() == md.frame["funding_rate"].notna().sum()


def test_funding_spike_changes_the_held_short_s_funding_by_exactly_rate_times_notional():
    md, spec = sample(), btc_spec()
    target = np.full(md.n, np.nan)
    target[0] = -1.0  # a 1x short opened at bar 1 and held: the same contracts at every print
    acc = Account(margin_mode="cross", leverage=5)
    plain = simulate_perp(md, target, spec, acc).events("funding")
    spiked = simulate_perp(FundingSpike("2022-06-01", 3, 0.003).apply(md), target, spec, acc).events("funding")
    assert len(plain) == len(spiked) and (plain["position"] == spiked["position"]).all()
    lo = pd.Timestamp("2022-06-01", tz="UTC").value // 10**6
    hit = ((plain["time"] >= lo) & (plain["time"] < lo + 3 * 86_400_000)).to_numpy()
    assert hit.sum() == 9
    notional = (-plain["position"] * spec.contract_size * plain["mark"]).to_numpy()[hit]  # > 0 for the short
    np.testing.assert_allclose(spiked["amount"].to_numpy()[hit], 0.003 * notional, rtol=1e-12)
    np.testing.assert_allclose((spiked["amount"] - plain["amount"]).to_numpy()[hit],
                               (0.003 - plain["rate"].to_numpy()[hit]) * notional, rtol=1e-9, atol=1e-9)
    assert spiked["amount"].to_numpy()[~hit].tobytes() == plain["amount"].to_numpy()[~hit].tobytes()


def test_a_spike_beyond_the_funding_bound_is_refused_naming_the_shock():
    with pytest.raises(ShockError, match=r"FundingSpike\(start='2022-06-01', days=1, rate=0\.08\).*funding_rate.*0\.08"):
        FundingSpike("2022-06-01", 1, 0.08).apply(sample())


def test_a_spike_without_prints_or_past_the_data_is_refused():
    with pytest.raises(ShockError, match="no funding print"):
        FundingSpike("2022-06-01T01:00", 0.1, 0.003).apply(sample())
    with pytest.raises(ShockError, match="reaches outside the data"):
        FundingSpike("2022-06-29", 5, 0.003).apply(sample())


# ------------------------------------------------------------------------------ mark wick

def test_mark_wick_moves_one_mark_extreme_of_one_bar():
    up = MarkWick(T0 + 3 * HOUR, 0.1).apply(hand())
    down = MarkWick(T0 + 3 * HOUR, -0.1).apply(hand())
    base = prices(hand(), TRADE + MARK)
    want_up, want_down = base.copy(), base.copy()
    want_up[3, 5] = 98 * 1.1     # mark high = trade high + 10 %
    want_down[3, 6] = 94 * 0.9   # mark low = trade low - 10 %
    np.testing.assert_array_equal(prices(up, TRADE + MARK), want_up)
    np.testing.assert_array_equal(prices(down, TRADE + MARK), want_down)
    # a smaller wick inside the mark's own range leaves it: the mark extreme never shrinks
    np.testing.assert_array_equal(prices(MarkWick(T0 + 3 * HOUR, 0.05).apply(up), TRADE + MARK), want_up)


def test_a_mark_wick_liquidates_an_isolated_short_on_its_bar():
    md = sample()
    target = np.full(md.n, np.nan)
    target[0] = -1.0
    acc = Account(margin_mode="isolated", leverage=10)
    assert len(simulate_perp(md, target, btc_spec(), acc).events("liquidations")) == 0
    at = "2022-05-20T12:00"
    k = int(np.searchsorted(md.timestamps, pd.Timestamp(at, tz="UTC").value // 10**6))
    liq = simulate_perp(MarkWick(at, 0.5).apply(md), target, btc_spec(), acc).events("liquidations")
    assert list(liq["bar"]) == [k]


# ------------------------------------------------------------------------------ tier change

def test_tier_change_adds_a_dated_table_with_raised_rates_and_capped_leverage_by_hand():
    spec = btc_spec()
    at = pd.Timestamp("2022-06-01", tz="UTC").value // 10**6
    new = TierChange("2022-06-01", max_leverage=20, maintenance_scale=1.5).apply_spec(spec)
    starts = [s for s, _ in new.tier_history]
    assert at in starts and starts == sorted(starts)
    before = [t for s, t in spec.tier_history if s < at]
    assert all(a is b for a, b in zip(before, [t for s, t in new.tier_history if s < at]))
    rows = dict(new.tier_history)[at].rows
    old = [t for s, t in spec.tier_history if s <= at][-1].rows
    # Binance BTCUSDT table of 2022-05-21: 0.4 % / 125x up to 50,000, 0.5 % / 100x up to 250,000, ...
    assert old[0, TIER_MMR] == 0.004 and old[1, TIER_MMR] == 0.005
    np.testing.assert_allclose(rows[:2, TIER_MMR], [0.006, 0.0075], rtol=1e-15)
    np.testing.assert_allclose(rows[:2, TIER_CUM], [0.0, 50_000 * (0.0075 - 0.006)], rtol=1e-12)  # 75
    np.testing.assert_array_equal(rows[:, TIER_MAXLEV], np.minimum(old[:, TIER_MAXLEV], 20))
    assert new.tiers is new.tier_history[-1][1]


def test_tier_change_raises_maintenance_from_its_date_only():
    md, spec = sample(), btc_spec()
    target = np.full(md.n, np.nan)
    target[0] = -1.0
    acc = Account(margin_mode="cross", leverage=10)
    shocked = TierChange("2022-06-01", maintenance_scale=1.5).apply_spec(spec)
    a = simulate_perp(md, target, spec, acc).series["margin_ratio"][:, 0]
    b = simulate_perp(md, target, shocked, acc).series["margin_ratio"][:, 0]
    k = int(np.searchsorted(md.timestamps, pd.Timestamp("2022-06-01", tz="UTC").value // 10**6))
    assert a[1:k].tobytes() == b[1:k].tobytes() and (a[1:] > 0).all()
    # maintenance margin N*mmr - cum, rates and amounts both x 1.5: the ratio MM/MB is x 1.5
    np.testing.assert_allclose(b[k:], 1.5 * a[k:], rtol=1e-12)


def test_a_tier_change_the_exchange_could_not_have_is_refused_with_the_limit():
    with pytest.raises(ShockError, match=r"TierChange\(at='2022-06-01'.*maintenance_scale below 2\b"):
        TierChange("2022-06-01", maintenance_scale=2.0).apply_spec(btc_spec())
    # Binance's rates are half the initial rate at every tier, the last (1x, 50 %) too: below 2 passes
    TierChange("2022-06-01", max_leverage=10, maintenance_scale=1.99).apply_spec(btc_spec())


# ------------------------------------------------------------------------------ slippage

def test_slippage_multiplier_changes_the_fill_price():
    md = sample()
    target = np.full(md.n, np.nan)
    target[0] = -1.0
    acc = SlippageShock(3.0).apply_account(Account(slippage=0.001))
    assert acc.slippage == pytest.approx(0.003, rel=1e-15)
    fill = simulate_perp(md, target, btc_spec(), acc).events("fills").iloc[0]
    assert fill["price"] == pytest.approx(md.frame["open"].iloc[1] * (1 - 0.003), rel=1e-15)
    per_col = SlippageShock(2.0).apply_account(Account(slippage=[0.001, 0.002]))
    np.testing.assert_allclose(per_col.slippage, [0.002, 0.004], rtol=1e-15)
    with pytest.raises(ShockError, match="SlippageShock.*slippage"):
        SlippageShock(1000.0).apply_account(Account(slippage=0.001))


# ------------------------------------------------------------------------------ transplant

def test_transplant_replays_the_window_s_returns_and_prints_from_the_start():
    md = sample()
    src0, src1, at = "2022-06-10", "2022-06-20", "2022-05-10"
    out = PathTransplant(src0, src1, at).apply(md)
    ts = md.timestamps
    ms = lambda s: pd.Timestamp(s, tz="UTC").value // 10**6  # noqa: E731
    s0, s1, k = (int(np.searchsorted(ts, ms(x))) for x in (src0, src1, at))
    w = s1 - s0
    for cols in (TRADE, MARK):
        old, new = prices(md, cols), prices(out, cols)
        # every price of bar j over the previous close, close to close included: the source's
        np.testing.assert_allclose(new[k:k + w] / new[k - 1:k + w - 1, 3:4], old[s0:s1] / old[s0 - 1:s1 - 1, 3:4],
                                   rtol=1e-13)
        np.testing.assert_allclose(new[k + w:] / new[k + w - 1:-1, 3:4], old[k + w:] / old[k + w - 1:-1, 3:4],
                                   rtol=1e-13)
        assert new[:k].tobytes() == old[:k].tobytes()
    shift = ms(at) - ms(src0)
    f_old, f_new = md.funding, out.funding
    src = (f_old["timestamp"] >= ms(src0)) & (f_old["timestamp"] < ms(src1))
    dst = (f_new["timestamp"] >= ms(at)) & (f_new["timestamp"] < ms(at) + w * HOUR)
    np.testing.assert_array_equal(f_new["timestamp"][dst].to_numpy(), f_old["timestamp"][src].to_numpy() + shift)
    np.testing.assert_array_equal(f_new["funding_rate"][dst].to_numpy(), f_old["funding_rate"][src].to_numpy())
    assert len(f_new) == len(f_old) - int(((f_old["timestamp"] >= ms(at)) & (f_old["timestamp"] < ms(at) + w * HOUR)).sum()) + int(src.sum())


def test_transplanting_a_window_onto_itself_changes_nothing_but_rounding():
    md = sample()
    out = PathTransplant("2022-06-10", "2022-06-20", "2022-06-10").apply(md)
    np.testing.assert_allclose(prices(out, TRADE + MARK), prices(md, TRADE + MARK), rtol=1e-12)
    pd.testing.assert_frame_equal(out.funding, md.funding)


def test_transplant_carries_print_marks_by_hand():
    # replay bars 3-4 (returns 95/97 ..., prints of bars 3 and 4) from bar 1
    out = PathTransplant(T0 + 3 * HOUR, T0 + 5 * HOUR, T0 + HOUR).apply(hand())
    c0 = 101.0  # bar 0's close, the level the replay starts from (trade and mark)
    np.testing.assert_allclose(prices(out, TRADE)[1], np.array([97, 98, 94, 95]) / 97 * c0, rtol=1e-14)
    np.testing.assert_allclose(prices(out, TRADE)[2], np.array([95, 99, 95, 98]) / 97 * c0, rtol=1e-14)
    # prints: bar 1's print replaced by bar 3's (-2 ms jitter, mark 97 over the mark close 97
    # before it) and bar 4's (mark 96 over 95); bar 3's and 4's own prints kept, their marks
    # times the factor of the replay's last mark close (98/97 * c0) over the old one (bar 2: 97)
    f = out.funding
    np.testing.assert_array_equal(f["timestamp"], [T0 + HOUR - 2, T0 + 2 * HOUR + 1_800_000, T0 + 3 * HOUR - 2,
                                                   T0 + 4 * HOUR + 1_800_000])
    np.testing.assert_array_equal(f["funding_rate"], [0.0002, -0.0001, 0.0002, -0.0001])
    g = (98 / 97 * c0) / 97  # later bars continue from the replay's last close
    np.testing.assert_allclose(f["mark_price"], [c0, 96 / 95 * (95 / 97 * c0), 97 * g, 96 * g], rtol=1e-14)


# ------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize("make, match", [
    (lambda: Gap("2022-06-13", -1.0), r"Gap.size=-1.0 is out of range"),
    (lambda: Gap("yesterday", 0.1), r"Gap.at: 'yesterday' is neither an ISO date"),
    (lambda: VolatilityShock("2022-06-10", "2022-06-01", 2), r"end .* is not after start"),
    (lambda: VolatilityShock("2022-06-01", "2022-06-10", 0), r"multiplier=0 is out of range"),
    (lambda: FundingSpike("2022-06-01", -1, 0.001), r"days=-1 is out of range"),
    (lambda: TierChange("2022-06-01", max_leverage=0.5), r"max_leverage=0.5 is out of range"),
    (lambda: TierChange("2022-06-01", maintenance_scale=0.9), r"maintenance_scale=0.9 is out of range"),
    (lambda: SlippageShock(True), r"multiplier=True is not a number"),
    (lambda: Gap("2022-06-13T00:30", 0.1).apply(sample()), r"not a bar's open time .* 2022-06-13T00:00"),
    (lambda: Gap("2023-06-13", 0.1).apply(sample()), r"outside the data"),
    (lambda: PathTransplant("2022-06-10", "2022-06-30", "2022-06-25").apply(sample()), r"reach past the data"),
    (lambda: apply_shocks(["gap"], sample()), r"'gap' is not a shock"),
])
def test_bad_shocks_are_refused_naming_the_value(make, match):
    with pytest.raises(ShockError, match=match):
        make()
