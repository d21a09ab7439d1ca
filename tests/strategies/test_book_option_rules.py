"""Option legs in book strategies (strategies/book_options.py): the rules on hand arrays (hedge
sizes, overlay rows, delta-hedge rows and sizes on a synthetic delta path), the hedge grid and its
labels, the errors, the targets built on the sample, and a kernel run showing the delta hedge
keeps the net delta per option contract inside its band."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import strategies
from backtest.book import BookSettings, simulate_book
from backtest.book.options import ROLL_EARLY, ROLL_FIRST, ROLL_SETTLE, OptionLeg, option_paths
from backtest.data import SAMPLE_ROOT, load_book_data
from backtest.engine.settings import Account
from backtest.market import load_market
from backtest.options import PutSettings
from strategies import OptionRule, StrategyError
from strategies import book_options as bo
from strategies.book_build import labels

EX = "binanceusdm"
BTC, ETH = "BTC/USDT:USDT", "ETH/USDT:USDT"
nan = np.nan


def leg(underlying: str = BTC, kind: str = "put", **kw) -> OptionLeg:
    return OptionLeg(underlying, put=PutSettings(option_type=kind, **kw))


# ------------------------------------------------------------------------------------------
# rules on hand arrays
# ------------------------------------------------------------------------------------------

def test_hedge_covers_the_short_with_calls_and_the_long_with_puts():
    w = np.array([nan, -0.5, 0.2, -1.0, nan, 0.0])
    can = np.array([True, True, True, False, True, True])
    # call: ratio x the short (0 on the long and the flat row), NaN where the perp keeps or the leg cannot trade
    np.testing.assert_array_equal(bo.hedge_target(w, 0.8, "call", can), [nan, 0.4, 0.0, nan, nan, 0.0])
    np.testing.assert_array_equal(bo.hedge_target(w, 1.0, "put", can), [nan, 0.0, 0.2, nan, nan, 0.0])


def test_overlay_holds_its_exposure_on_the_rows_the_book_trades():
    traded = np.array([False, True, True, False, True])
    can = np.array([True, False, True, True, True])
    np.testing.assert_array_equal(bo.overlay_target(traded, 0.5, can), [nan, nan, 0.5, nan, 0.5])


def test_tradeable_rows_follow_the_engines_rule_for_each_lag():
    # a contract exists after the closes 2, 3, 4 (val finite): row r fills at bar r + lag, whose
    # open is close r + lag - 1; rows filling past the last bar are never traded (allowed)
    val = np.array([nan, nan, 1.0, 2.0, 3.0])
    assert bo.tradeable_rows(val, 1).tolist() == [False, False, True, True, True]
    assert bo.tradeable_rows(val, 2).tolist() == [False, True, True, True, True]
    assert bo.tradeable_rows(val, 0).tolist() == [False, False, False, True, True]


def test_delta_hedge_rows_first_contract_rolls_and_band_and_sizes():
    """Hand walk, band 0.05: t1 first contract (hedge at -0.30); t2 moved 0.03 (keep); t3 moved
    0.06 (hedge at -0.36); t4 0.04, t5 0.01 (keep); t6 a roll (hedge at -0.52 whatever the move);
    t7 0.02 (keep); t8 an early roll (hedge)."""
    delta = np.array([nan, -0.30, -0.33, -0.36, -0.40, -0.35, -0.52, -0.50, -0.49])
    roll = np.array([0, ROLL_FIRST, 0, 0, 0, 0, ROLL_SETTLE, 0, ROLL_EARLY])
    can = np.isfinite(delta)
    rows = bo.delta_hedge_rows(delta, roll, can, 0.05)
    assert np.flatnonzero(rows).tolist() == [1, 3, 6, 8]
    perp, opt = bo.delta_hedge_targets(delta, rows, 2.0)
    np.testing.assert_allclose(perp[[1, 3, 6, 8]], [0.60, 0.72, 1.04, 0.98], rtol=1e-15)
    np.testing.assert_array_equal(opt[[1, 3, 6, 8]], 2.0)
    assert np.isnan(perp[~rows]).all() and np.isnan(opt[~rows]).all()
    # a call's positive delta gives a short hedge; band 0 re-hedges at every change
    call = np.array([0.4, 0.4, 0.45, 0.45])
    rows0 = bo.delta_hedge_rows(call, np.array([ROLL_FIRST, 0, 0, 0]), np.ones(4, bool), 0.0)
    assert np.flatnonzero(rows0).tolist() == [0, 2]
    assert bo.delta_hedge_targets(call, rows0, 1.0)[0][2] == -0.45


def _plan(rules, delta, roll, k, can=None):
    n = delta.shape[0]
    can = np.ones(delta.shape, bool) if can is None else can
    hedge = np.zeros(delta.shape, bool)
    for j, r in enumerate(rules):
        if r.rule == "delta_hedged":
            hedge[:, j] = bo.delta_hedge_rows(delta[:, j], roll[:, j], can[:, j], r.band)
    assert hedge.shape[0] == n
    return bo.OptionPlan(rules=list(rules), k=np.asarray(k), paths=SimpleNamespace(delta=delta, roll=roll),
                         can_trade=can, hedge_rows=hedge)


def test_apply_options_one_column_of_three_legs():
    """K = 2 perps (BTC short, ETH long), legs: a BTC call hedge (ratio 1), a BTC put overlay
    (0.25), an ETH delta-hedged put (exposure 1, band 0.1) on a synthetic delta path."""
    w = np.array([[-1.0, 0.5], [nan, nan], [-0.8, 0.4], [nan, nan]])
    rules = [OptionRule(leg(BTC, "call"), "hedge", ratio=1.0), OptionRule(leg(BTC), "overlay", exposure=0.25),
             OptionRule(leg(ETH), "delta_hedged", exposure=1.0, band=0.1)]
    delta = np.column_stack([np.full(4, 0.3), np.full(4, -0.2), [-0.40, -0.45, -0.55, -0.60]])
    roll = np.zeros((4, 3), dtype=np.int64)
    roll[0] = ROLL_FIRST
    p = _plan(rules, delta, roll, [0, 0, 1])
    out = bo.apply_options(w, p, (1.0, 0.25, 1.0))
    want = np.array([
        # BTC   ETH (hedge)  call  put overlay  ETH put
        [-1.0, 0.40, 1.0, 0.25, 1.0],   # first contract: hedge -delta * 1
        [nan, nan, nan, nan, nan],      # perps keep; delta moved 0.05 <= band
        [-0.8, 0.55, 0.8, 0.25, 1.0],   # moved 0.15 > band: re-hedge
        [nan, nan, nan, nan, nan],
    ])
    np.testing.assert_allclose(out, want, rtol=1e-15)
    # a grid value of 0 leaves a leg out: never traded, the ETH perp keeps the strategy's target
    out0 = bo.apply_options(w, p, (0.0, 0.25, 0.0))
    assert np.isnan(out0[:, 2]).all() and np.isnan(out0[:, 4]).all()
    np.testing.assert_array_equal(out0[:, :2], w)


def test_hedge_grid_product_and_zip_and_readable_labels():
    call = OptionRule(leg(BTC, "call", moneyness=1.1), "hedge", ratio=[0.0, 1.0])
    put = OptionRule(leg(BTC, moneyness=0.9), "overlay", exposure=[0.0, 0.5])
    assert bo.hedge_grid([call, put]) == [(0.0, 0.0), (0.0, 0.5), (1.0, 0.0), (1.0, 0.5)]
    assert [bo.hedge_label([call, put], c) for c in bo.hedge_grid([call, put])] == [
        "none", "put(0.90)@0.5", "call(1.10)x1", "call(1.10)x1+put(0.90)@0.5"]
    c3 = OptionRule(leg(BTC, "call", moneyness=1.1), "hedge", ratio=[0.0, 1.0, 0.0])
    e3 = OptionRule(leg(ETH, "call", moneyness=1.1), "hedge", ratio=[0.0, 1.0, 0.0])
    p3 = OptionRule(leg(BTC, moneyness=0.9), "overlay", exposure=[0.0, 0.0, 0.5])
    z = bo.hedge_grid([c3, e3, p3], "zip")
    assert z == [(0.0, 0.0, 0.0), (1.0, 1.0, 0.0), (0.0, 0.0, 0.5)]
    assert [bo.hedge_label([c3, e3, p3], c) for c in z] == [
        "none", "BTC:call(1.10)x1+ETH:call(1.10)x1", "BTC:put(0.90)@0.5"]
    dh = OptionRule(leg(BTC, strike_mode="delta", target_delta=0.3), "delta_hedged", exposure=1.0, band=0.05)
    assert dh.label(1.0) == "put(d0.3)@1,band(0.05)"
    with pytest.raises(StrategyError, match=r"grid='zip' needs every leg's list of one length.*options\[0\]: 2"):
        bo.hedge_grid([call, p3], "zip")
    with pytest.raises(StrategyError, match="options grid='zipped' is not one of"):
        bo.hedge_grid([call], "zipped")


@pytest.mark.parametrize("kw, match", [
    ({"rule": "hedge"}, r"OptionRule.ratio: missing: rule 'hedge' needs ratio"),
    ({"rule": "hedge", "ratio": 1.0, "band": 0.1}, r"OptionRule.band: 0.1 is not used by rule 'hedge'"),
    ({"rule": "overlay", "exposure": [0.5, -1.0]}, r"OptionRule.exposure: -1.0 must be a finite number >= 0"),
    ({"rule": "delta_hedged", "exposure": 1.0}, r"OptionRule.band: missing"),
    ({"rule": "delta_hedged", "exposure": 1.0, "band": [0.1]}, r"OptionRule.band: \[0.1\] must be one finite"),
    ({"rule": "hedged", "ratio": 1.0}, r"OptionRule.rule: 'hedged' is not one of .*did you mean 'hedge'"),
])
def test_bad_rules_name_the_field_and_the_fix(kw, match):
    with pytest.raises(StrategyError, match=match):
        OptionRule(leg(), **kw)


def test_resolve_rules_refuses_what_cannot_be_hedged():
    bd = load_book_data(EX, [BTC, ETH], "1h", "2022-01-01", "2022-01-03", root=SAMPLE_ROOT)
    (r,) = bo.resolve_rules(bd, [OptionRule(leg("eth", "call"), "hedge", ratio=1.0)])
    assert r.leg.underlying == ETH
    with pytest.raises(StrategyError, match=r"options\[0\].underlying 'SOL' is not in the book"):
        bo.resolve_rules(bd, [OptionRule(leg("SOL"), "overlay", exposure=1.0)])
    dh = OptionRule(leg("BTC"), "delta_hedged", exposure=1.0, band=0.1)
    with pytest.raises(StrategyError, match=r"several delta_hedged legs on BTC/USDT:USDT"):
        bo.resolve_rules(bd, [dh, dh])
    with pytest.raises(StrategyError, match=r"options\[1\] hedges BTC/USDT:USDT, whose perp is the delta hedge"):
        bo.resolve_rules(bd, [dh, OptionRule(leg(BTC, "call"), "hedge", ratio=1.0)])
    frame = strategies.BookFrame(bd)
    with pytest.raises(StrategyError, match="option legs need the book's bars"):
        strategies.build_book_targets(frame, "basket_short", options=[dh])


# ------------------------------------------------------------------------------------------
# targets on the sample
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sample():
    bd = load_book_data(EX, [BTC, ETH], "1h", "2022-03-01", "2022-05-01", root=SAMPLE_ROOT)
    return bd, [load_market(EX, s) for s in bd.symbols]


def test_build_book_targets_with_a_call_hedge_and_a_put_overlay(sample):
    bd, specs = sample
    rules = [OptionRule(leg("BTC", "call", moneyness=1.1), "hedge", ratio=[0.0, 1.0]),
             OptionRule(leg("ETH", "call", moneyness=1.1), "hedge", ratio=[0.0, 1.0]),
             OptionRule(leg("BTC", moneyness=0.9), "overlay", exposure=[0.0, 0.5])]
    tgt, policy, cols = strategies.build_book_targets(
        bd, "basket_short", {"weighting": "beta", "beta_days": 5, "warmup_days": 5},
        ["voltarget(0.5)", "drawdown(0.2,leverage=2)"], specs=specs, rebalance_hours=8, options=rules,
        options_grid="zip")
    assert tgt.shape == (bd.bars.n, 2 + 3, 2 * 2)
    assert list(cols.names)[-2:] == ["hedge", "policy"]
    assert labels(cols) == [f"hedge={h}|policy={p}" for h in ("none", "BTC:call(1.10)x1+ETH:call(1.10)x1+BTC:put(0.90)@0.5")
                            for p in ("voltarget(0.5)", "drawdown(0.2,leverage=2)")]
    # the in-loop settings follow the policy (inner level) in every hedge column
    assert list(policy.kind) == ["none", "drawdown", "none", "drawdown"]
    # the perps' targets are the same with and without the hedge
    np.testing.assert_array_equal(tgt[:, :2, 0], tgt[:, :2, 2])
    assert np.isnan(tgt[:, 2:, 0]).all()  # 'none': no leg ever traded
    paths = option_paths(bd.bars, [r.leg for r in bo.resolve_rules(bd, rules)], False)
    for c in (2, 3):
        for j, k in ((0, 0), (1, 1)):
            w = tgt[:, k, c]
            can = np.isfinite(paths.val[:, j])   # lag 1: a contract after the signal close
            rows = np.isfinite(w) & can
            assert rows.sum() > 100
            np.testing.assert_array_equal(tgt[rows, 2 + j, c], np.maximum(0.0, -w[rows]))  # ratio 1 x the short
            assert np.isnan(tgt[~rows, 2 + j, c]).all()
            assert (w[rows] < 0).sum() > 50           # shorts were covered
        # the overlay holds 0.5 on every traded row with a contract, NaN elsewhere
        traded = np.isfinite(tgt[:, :2, c]).any(axis=1) & np.isfinite(paths.val[:, 2])
        np.testing.assert_array_equal(tgt[traded, 4, c], 0.5)
        assert np.isnan(tgt[~traded, 4, c]).all()


def test_the_delta_hedge_keeps_the_net_delta_per_contract_inside_its_band_in_the_kernel(sample):
    """The numba book kernel on the sample (BTC + ETH, March-April 2022): ETH shorted by the
    basket, BTC puts (95 %, exposure 1) delta-hedged with the BTC perp, band 0.05. At every close
    holding puts, the net delta per contract ``(perp position + q * delta_t) / q`` (delta_t the
    path's delta per contract at that close) is inside the band, except at the closes whose
    re-hedge (a target row) is pending at the next open."""
    bd, specs = sample
    band = 0.05
    rule = OptionRule(leg("BTC", moneyness=0.95), "delta_hedged", exposure=1.0, band=band)
    tgt, policy, cols = strategies.build_book_targets(
        bd, "basket_short", {"weighting": "equal", "warmup_days": 5}, ["const(1)"], specs=specs,
        rebalance_hours=8, options=[rule])
    res = simulate_book(bd.bars, tgt, specs, BookSettings(
        account=Account(initial_capital=1_000_000.0, leverage=10.0, margin_mode="cross"), policy=policy,
        options=[bo.resolve_rules(bd, [rule])[0].leg]), columns=cols)
    assert not len(res.records["liquidations"]) and not len(res.records["margin_calls"])
    pos = res.positions["position"][:, :, 0]
    perp, q = pos[:, 0], pos[:, 2]
    paths = option_paths(bd.bars, [bo.resolve_rules(bd, [rule])[0].leg], False)
    delta = paths.delta[:, 0]
    held = q > 0
    net = np.where(held, (perp + q * delta) / np.where(held, q, 1.0), np.nan)
    pending = np.isfinite(tgt[:, 2, 0])  # a hedge row: its target trades at the next open
    # right after a hedge's fills the net delta is ~0 (not exactly: the perp is sized at the trade
    # open, the puts at the signal bar's mark close, and the perp is rounded to 0.001 BTC)
    after = np.flatnonzero(pending[:-1]) + 1
    after = after[held[after] & ~pending[after]]
    assert len(after) > 20
    resid = np.abs(net[after] - (delta[after] - delta[after - 1]))
    assert resid.max() < 2e-3
    checked = held & ~pending
    assert checked.sum() > 900
    assert np.nanmax(np.abs(net[checked])) <= band + resid.max()
    # the band binds: on the pending rows the delta has moved past it (or the contract rolled)
    moved = np.abs(net[pending & held])
    assert (moved > band).sum() > 10
    # the kernel's book delta (delta_btc: perps and puts, in BTC) less the ETH short's is this
    # BTC position's delta, perp + q * delta_t, and it is small next to the puts' own delta
    s0 = bd.bars.prices("mark_close")[:, 0]
    btc_delta = res.series["delta_btc"][:, 0] - res.positions["notional"][:, 1, 0] / s0
    # (the kernel's Greeks are those of the contracts held during each bar, ``delta_in``: at a
    # roll close the old contract, which ``delta`` above, the contract the next open holds, is not)
    delta_held = paths.delta_in[:, 0]
    np.testing.assert_allclose(btc_delta[held], (perp + q * delta_held)[held], rtol=1e-9, atol=1e-9)
    put_delta = np.abs(q * delta)[checked]
    assert put_delta.mean() > 5 * np.abs(btc_delta[checked]).mean()


# ------------------------------------------------------------------------------------------
# look-ahead
# ------------------------------------------------------------------------------------------

def _lookahead_rules(n: int) -> list:
    """A call hedge on ETH, a put overlay on BTC priced from an implied-volatility series (NaN for
    its first 100 bars: the leg's first contract comes after them), and a delta-hedged BTC put."""
    iv = np.full(n, 0.8)
    iv[:100] = np.nan
    return [OptionRule(leg("ETH", "call", moneyness=1.1), "hedge", ratio=1.0),
            OptionRule(OptionLeg("BTC", put=PutSettings(moneyness=0.9, vol_source="iv"), iv=iv), "overlay",
                       exposure=0.5),
            OptionRule(leg("BTC", moneyness=0.95), "delta_hedged", exposure=1.0, band=0.05)]


def test_option_rules_pass_the_look_ahead_check(sample):
    """The book's target with option legs recomputed on the data cut at 5 points after 20 days (the EWMA
    volatility's warm-up: a cut before it gives a leg no contract at all), the bars, each
    leg's implied volatility, hence its contract path, deltas and tradeable rows, all cut): no row
    before a cut changes."""
    from strategies.book_build import check_lookahead

    bd, specs = sample
    assert check_lookahead(bd, "basket_short", {"weighting": "equal", "warmup_days": 5}, ["voltarget(0.5)"],
                           specs=specs, rebalance_hours=8, options=_lookahead_rules(bd.bars.n), n_cuts=5,
                           min_bars=24 * 20) == 5


def test_the_look_ahead_check_catches_an_option_rule_that_peeks(sample, monkeypatch):
    """A delta hedge scaled by a full-sample statistic (the largest |delta| of the whole history) is caught."""
    from strategies import LookAheadError
    from strategies.book_build import check_lookahead

    bd, specs = sample
    honest = bo.delta_hedge_targets
    monkeypatch.setattr(bo, "delta_hedge_targets", lambda delta, rows, exposure: honest(
        delta / np.nanmax(np.abs(delta)), rows, exposure))
    with pytest.raises(LookAheadError, match="looks ahead"):
        check_lookahead(bd, "basket_short", {"weighting": "equal", "warmup_days": 5}, ["const(1)"], specs=specs,
                        options=_lookahead_rules(bd.bars.n)[2:], n_cuts=3, min_bars=24 * 20)
