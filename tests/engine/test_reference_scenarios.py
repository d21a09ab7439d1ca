"""Candle-table scenarios for the perpetual engine (run against every implementation).

Each scenario is a handful of hand-made bars. The expected numbers are worked out by hand from
the formulas of README.md ("Engine semantics") and written as arithmetic in the test, with the derivation in the
comments; none is copied from a simulator's output.

Common set-up unless stated: linear contract of size 1, no trading fee, no slippage, clearance
fee 1.25 %, the 2020 Binance tiers (0.4 % up to 50,000 USDT, then 0.5 % with cum 50, ...),
bars of one hour, lag 1 (target row t is traded at bar t+1's open).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from backtest.engine.enums import FillReason, FillStatus
from backtest.engine.settings import Account, CallResponse, Policy

from .scenario_kit import HOUR, LINEAR_TIERS, T0, make_bars, make_spec, recs, targets

FLAT = (100.0, 100.0, 100.0, 100.0)
SHORT_TEN_X = [-10.0, None, None, None, None, None]  # short 10x equity at bar 1, then hold


def run(simulate, bars, target, spec, account, policy=Policy()):
    series, records = simulate(bars, target, spec, account, policy)
    for name, arr in series.items():
        assert np.all(np.isfinite(arr)), name
    return series, records


# ------------------------------------------------------------------------------------------
# Liquidation by the mark price
# ------------------------------------------------------------------------------------------

def test_short_liquidated_on_mark_high_while_trade_high_stays_below(simulate):
    # Cross, 1,000 USDT, short -10x at 100: C = -10 * 1000 / 100 = -100 contracts.
    # LP = (W + cum - s*Q*EP) / (Q*mmr - s*Q) = (1000 + 0 + 100*100) / (100*0.004 + 100) = 11000/100.4
    #    = 109.5618 (notional 10,956 stays in tier 1).
    # Bar 2: trade high 108 < LP, mark high 110 > LP -> liquidated at LP.
    lp = 11000 / 100.4
    bars = make_bars([
        FLAT,
        (100, 101, 99, 100, 100, 101, 99, 100),
        (101, 108, 100, 104, 101, 110, 100, 104),
        FLAT, FLAT, FLAT,
    ])
    acc = Account(initial_capital=1000.0, margin_mode="cross", leverage=20.0)
    s, r = run(simulate, bars, targets(SHORT_TEN_X), make_spec(), acc)

    assert s["position"][1, 0] == -100.0
    assert s["equity"][1, 0] == pytest.approx(1000.0, abs=1e-9)
    assert s["notional"][1, 0] == pytest.approx(-10_000.0)
    assert s["leverage"][1, 0] == pytest.approx(10.0)
    assert s["margin_ratio"][1, 0] == pytest.approx(0.004 * 10_000 / 1000)  # MM/MB = 40/1000
    assert s["liq_price"][1, 0] == pytest.approx(lp, rel=1e-12)

    liq = recs(r, "liquidations", col=0)
    assert len(liq) == 1 and liq["bar"][0] == 2 and liq["gap"][0] == 0
    assert liq["trigger_price"][0] == pytest.approx(lp, rel=1e-12)
    assert liq["price"][0] == pytest.approx(lp, rel=1e-12)
    assert liq["size"][0] == -100.0
    # clearance fee 1.25 % of N(LP) = 1.25*LP; at LP the balance equals MM = 0.004*100*LP = 0.4*LP,
    # so the account keeps max(0, 0.4*LP - 1.25*LP) = 0: the fee charged is the 0.4*LP left and
    # the position is not bankrupt (no deficit)
    assert liq["clearance_fee"][0] == pytest.approx(0.4 * lp, rel=1e-9)
    assert liq["equity_before"][0] == pytest.approx(0.4 * lp, rel=1e-9)
    assert liq["equity_after"][0] == 0.0
    assert liq["deficit"][0] == 0.0
    # the margin call (threshold 0.8, response none) fired first, where 0.8*MB = MM:
    # P_c = (0.8*1000 + 0.8*100*100) / (100*0.004 + 0.8*100) = 8800/80.4
    call = recs(r, "margin_calls", col=0)
    assert len(call) == 1 and call["bar"][0] == 2
    assert call["price"][0] == pytest.approx(8800 / 80.4, rel=1e-12)
    assert call["margin_ratio"][0] == pytest.approx(0.8, rel=1e-12)
    assert call["response"][0] == CallResponse.NONE and call["amount"][0] == 0.0
    # stopped: flat, equity 0, clearance fee counted in the fees
    assert np.all(s["position"][2:, 0] == 0.0) and np.all(s["equity"][2:, 0] == 0.0)
    assert s["cum_fees"][2, 0] == pytest.approx(0.4 * lp, rel=1e-9)


def test_trade_high_above_lp_does_not_liquidate_when_the_mark_stays_below(simulate):
    # Same position; trade high 112 > LP (109.56) but mark high 109 < LP: no liquidation.
    bars = make_bars([
        FLAT,
        (100, 101, 99, 100, 100, 101, 99, 100),
        (101, 112, 100, 104, 101, 109, 100, 104),
        FLAT,
    ])
    acc = Account(initial_capital=1000.0, margin_mode="cross", leverage=20.0)
    s, r = run(simulate, bars, targets([-10.0, None, None, None]), make_spec(), acc)
    assert len(r["liquidations"]) == 0
    assert s["position"][2, 0] == -100.0
    assert s["equity"][2, 0] == pytest.approx(1000 - 100 * 4)  # valued at the mark close 104


def test_gap_liquidation_at_the_mark_open(simulate):
    # Short -100 at 100 (LP 11000/100.4 = 109.56). Bar 2's mark opens at 115, past LP: the gap
    # check liquidates at the mark open before anything else in the bar.
    # Backing balance at 115: 1000 - 100*15 = -500: bankrupt, keep 0, the insurance fund covers
    # 500 and the clearance fee (1.25 % of 11,500) finds nothing to be charged from.
    bars = make_bars([
        FLAT,
        (100, 101, 99, 100, 100, 101, 99, 100),
        (115, 116, 114, 115, 115, 116, 114, 115),
        FLAT,
    ])
    acc = Account(initial_capital=1000.0, leverage=20.0)
    s, r = run(simulate, bars, targets([-10.0, None, None, None]), make_spec(), acc)
    liq = recs(r, "liquidations", col=0)
    assert len(liq) == 1 and liq["bar"][0] == 2 and liq["gap"][0] == 1
    assert liq["trigger_price"][0] == pytest.approx(11000 / 100.4, rel=1e-12)
    assert liq["price"][0] == 115.0
    assert liq["clearance_fee"][0] == 0.0
    assert liq["equity_before"][0] == pytest.approx(-500.0, rel=1e-12)
    assert liq["equity_after"][0] == 0.0
    assert liq["deficit"][0] == pytest.approx(500.0, rel=1e-12)
    assert len(r["margin_calls"]) == 0  # the gap check liquidates directly
    assert s["equity"][2, 0] == 0.0 and s["position"][2, 0] == 0.0


def test_isolated_liquidation_loses_only_the_isolated_margin(simulate):
    # 10,000 USDT, short -2x at 100 with leverage 10, taker 0.05 %: C = -200, N = 20,000,
    # isolated margin M = 20000/10 = 2,000, fee 0.0005*20000 = 10, free balance W = 7,990.
    # Isolated LP = (M + Q*EP) / (Q*(1 + mmr)) = 22000/200.8 = 109.5618; bar 2's mark high is 130
    # (trade high 128).
    # Isolated: keep max(0, MM(LP) - 1.25 % N(LP)) = 0 (0.4 % < 1.25 %): equity = W = 7,990,
    # i.e. the loss is exactly the isolated margin plus the opening fee.
    # Cross (same trade): LP = (9990 + 20000)/200.8 = 149.35 is not reached; it survives at
    # 9990 - 200*(128 - 100) = 4,390, a loss larger than the isolated column's.
    bars = make_bars([
        FLAT,
        (100, 101, 99, 100, 100, 101, 99, 100),
        (102, 128, 101, 128, 102, 130, 101, 128),
        (128, 128, 128, 128),
    ])
    acc = Account(initial_capital=10_000.0, margin_mode=["isolated", "cross"], leverage=10.0)
    spec = make_spec(taker=0.0005)
    s, r = run(simulate, bars, targets([-2.0, None, None, None], [-2.0, None, None, None]), spec, acc)

    assert s["liq_price"][1, 0] == pytest.approx(22000 / 200.8, rel=1e-12)
    assert s["liq_price"][1, 1] == pytest.approx(29990 / 200.8, rel=1e-12)
    liq = recs(r, "liquidations", col=0)
    assert len(liq) == 1 and liq["price"][0] == pytest.approx(22000 / 200.8, rel=1e-12)
    assert liq["equity_after"][0] == pytest.approx(7990.0, rel=1e-12)
    assert s["equity"][2, 0] == pytest.approx(10_000 - 2000 - 10, rel=1e-12)
    assert len(recs(r, "liquidations", col=1)) == 0
    assert s["equity"][2, 1] == pytest.approx(9990 - 200 * 28, rel=1e-12)


def test_liquidation_price_retiers_to_a_higher_tier(simulate):
    # 10,000 USDT isolated, leverage 5, target -4.8 at 60,000: C = -4.8*10000/60000 = -0.8 BTC,
    # N = 48,000 (tier 1), M = 9,600. Tier 1 would give LP = (9600 + 48000)/(0.8*1.004) = 71,713.15,
    # where N = 57,370 is in tier 2 (0.5 %, cum 50): re-tiered LP = (9600 + 50 + 48000)/(0.8*1.005)
    # = 57650/0.804 = 71,703.98, whose notional 57,363 is in tier 2.
    lp = 57650 / 0.804
    bars = make_bars([
        (60_000, 60_000, 60_000, 60_000),
        (60_000, 60_500, 59_500, 60_000),
        (61_000, 70_000, 60_900, 69_000, 61_000, 72_000, 60_900, 69_000),
        (69_000, 69_000, 69_000, 69_000),
    ])
    acc = Account(initial_capital=10_000.0, margin_mode="isolated", leverage=5.0)
    s, r = run(simulate, bars, targets([-4.8, None, None, None]), make_spec(), acc)
    assert s["position"][1, 0] == pytest.approx(-0.8, abs=1e-12)
    assert s["liq_price"][1, 0] == pytest.approx(lp, rel=1e-12)
    liq = recs(r, "liquidations", col=0)
    assert len(liq) == 1 and liq["trigger_price"][0] == pytest.approx(lp, rel=1e-12)
    # at LP the isolated margin is MM(LP) = 0.005*0.8*LP - 50 = 236.8, below the 1.25 % fee of
    # 0.8*LP = 717: all of it is charged, no deficit, and W = 10000 - 9600 = 400 is kept
    assert liq["clearance_fee"][0] == pytest.approx(0.005 * 0.8 * lp - 50, rel=1e-9)
    assert liq["deficit"][0] == 0.0
    assert s["equity"][2, 0] == pytest.approx(400.0, rel=1e-9)


# ------------------------------------------------------------------------------------------
# Funding timing
# ------------------------------------------------------------------------------------------

def test_funding_at_the_open_is_paid_by_the_position_going_in(simulate):
    # Print at bar 2's open (T0 + 2h), rate 0.1 %, mark 100 (flat prices).
    # col 0: short -10 from bar 1, closed at bar 2's open: the pre-fill position pays/receives:
    #        -(-10) * 100 * 0.001 = +1.0.
    # col 1: opens -10 at bar 2's open (same instant as the print): pays nothing for it.
    # col 2: opens -10 at bar 3, one bar after the print: pays nothing.
    bars = make_bars([FLAT] * 5, funding=[(T0 + 2 * HOUR, 0.001)])
    tgt = targets([-1.0, 0.0, None, None, None],
                  [None, -1.0, None, None, None],
                  [None, None, -1.0, None, None])
    s, r = run(simulate, bars, tgt, make_spec(), Account(initial_capital=1000.0))
    f0 = recs(r, "funding", col=0)
    assert len(f0) == 1 and f0["bar"][0] == 2 and f0["time"][0] == T0 + 2 * HOUR
    assert f0["position"][0] == -10.0
    assert f0["amount"][0] == pytest.approx(1.0, rel=1e-12)
    assert f0["mark"][0] == 100.0 and f0["rate"][0] == 0.001
    assert s["position"][2, 0] == 0.0
    assert s["equity"][2, 0] == pytest.approx(1001.0, rel=1e-12)
    assert s["cum_funding"][4, 0] == pytest.approx(1.0, rel=1e-12)
    for col in (1, 2):
        assert len(recs(r, "funding", col=col)) == 0
        assert s["cum_funding"][4, col] == 0.0
    assert s["position"][2, 1] == -10.0 and s["position"][3, 2] == -10.0


def test_funding_paid_can_liquidate_without_a_more_adverse_mark(simulate):
    # Isolated, 1,000 USDT, leverage 20, short -10x at 100: C = -100, M = 10000/20 = 500.
    # Isolated LP = (M + Q*EP) / (Q*(1 + mmr)) = 10500/100.4 = 104.58; call threshold 0.95.
    # Bar 3's mark high 104.5: MB = 500 - 450 = 50, MM = 0.004*100*104.5 = 41.8, ratio 0.836 < 0.95.
    # Bar 4's open: the short pays a -0.3 % print at mark 100: -(-100)*100*(-0.003) = -30 out of
    # the isolated margin (M = 470), and bar 4's mark high 104.4, below bar 3's, is now past
    # both levels: call at P_c = (470 + 10000) / (100*0.004/0.95 + 100) = 9946.5/95.4 and
    # liquidation at LP = 10470/100.4 = 104.28 (no gap: the mark opens at 100).
    bars = make_bars([
        FLAT,
        (100, 101, 99, 100, 100, 101, 99, 100),
        (100, 103, 99, 102, 100, 103, 99, 102),
        (102, 104.5, 101, 103, 102, 104.5, 101, 103),
        (100, 104.4, 99, 100, 100, 104.4, 99, 100),
        FLAT,
    ], funding=[(T0 + 4 * HOUR, -0.003, 100.0)])
    acc = Account(initial_capital=1000.0, margin_mode="isolated", leverage=20.0, margin_call_threshold=0.95)
    s, r = run(simulate, bars, targets([-10.0, None, None, None, None, None]), make_spec(), acc)
    f = recs(r, "funding", col=0)
    assert len(f) == 1 and f["bar"][0] == 4 and f["amount"][0] == pytest.approx(-30.0, rel=1e-12)
    assert len(recs(r, "liquidations", bar=3)) == 0 and len(recs(r, "margin_calls", bar=3)) == 0
    call = recs(r, "margin_calls", col=0)
    assert len(call) == 1 and call["bar"][0] == 4
    assert call["price"][0] == pytest.approx(9946.5 / 95.4, rel=1e-12)
    liq = recs(r, "liquidations", col=0)
    assert len(liq) == 1 and liq["bar"][0] == 4 and liq["gap"][0] == 0
    assert liq["price"][0] == pytest.approx(10470 / 100.4, rel=1e-12)
    assert s["position"][4, 0] == 0.0
    # the isolated loss is the margin (500), funding included: the free balance 500 is what is left
    assert s["equity"][4, 0] == pytest.approx(500.0, rel=1e-12)


def test_funding_with_ms_jitter_lands_on_the_bar_open(simulate):
    # The 02:00 print stamped 02:00:00.003 rounds to 02:00:00, the open of bar 2, so it is paid
    # by the position going into bar 2 (closed at that open): +10 * 100 * 0.001 = 1.0.
    bars = make_bars([FLAT] * 4, funding=[(T0 + 2 * HOUR + 3, 0.001)])
    s, r = run(simulate, bars, targets([-1.0, 0.0, None, None]), make_spec(), Account(initial_capital=1000.0))
    f = recs(r, "funding", col=0)
    assert len(f) == 1 and f["bar"][0] == 2 and f["time"][0] == T0 + 2 * HOUR
    assert f["amount"][0] == pytest.approx(1.0, rel=1e-12)


def test_funding_strictly_inside_a_coarse_bar_is_paid_after_the_fill(simulate):
    # 4-hour bars. Prints at 06:00 (inside bar 1, rate 0.05 %, print mark 101) and at 10:00
    # (inside bar 2, rate 0.05 %, no mark: the bar's mark open 100 is used).
    # col 0: short -10 filled at bar 1's open (04:00), held: receives 10*101*0.0005 = 0.505 and
    #        10*100*0.0005 = 0.5.
    # col 1: same short, closed at bar 2's open (08:00): receives only the 06:00 print.
    four_h = 4 * HOUR
    bars = make_bars([FLAT] * 4, bar_ms=four_h,
                     funding=[(T0 + four_h + 2 * HOUR, 0.0005, 101.0), (T0 + 2 * four_h + 2 * HOUR, 0.0005)])
    tgt = targets([-1.0, None, None, None], [-1.0, 0.0, None, None])
    s, r = run(simulate, bars, tgt, make_spec(), Account(initial_capital=1000.0))
    f0 = recs(r, "funding", col=0)
    assert list(f0["bar"]) == [1, 2]
    assert f0["amount"][0] == pytest.approx(10 * 101 * 0.0005, rel=1e-12)
    assert f0["amount"][1] == pytest.approx(10 * 100 * 0.0005, rel=1e-12)
    f1 = recs(r, "funding", col=1)
    assert list(f1["bar"]) == [1] and f1["amount"][0] == pytest.approx(0.505, rel=1e-12)
    assert s["cum_funding"][3, 0] == pytest.approx(1.005, rel=1e-12)
    assert s["equity"][3, 1] == pytest.approx(1000.505, rel=1e-12)


# ------------------------------------------------------------------------------------------
# Margin calls
# ------------------------------------------------------------------------------------------

MARGIN_CALL_BARS = [
    FLAT,
    (100, 101, 99, 100, 100, 101, 99, 100),
    (101, 109, 100, 105, 101, 109.5, 100, 105),        # mark high above the call price
    (105, 109, 105, 109, 105, 109.5, 105, 109.5),      # call again; closes with ratio >= 0.8
    (109, 109, 104, 104, 109.5, 109.5, 104, 104),      # still in the episode: no new call
    (104, 109, 104, 105, 104, 109.5, 104, 105),        # episode ended at bar 4's close: call
]


def test_margin_call_responses(simulate):
    # Cross 1,000 USDT, lot 1, short -100 at 100 (as above). Threshold 0.8, target 0.5.
    # Call price where 0.8*MB = MM: P_c = (0.8*1000 + 0.8*100*100)/(100*0.004 + 0.8*100) = 8800/80.4
    # = 109.4527 (bar 2's mark open 101 is below it). There MB = 11000 - 100*P_c = 0.5*P_c and
    # MM = 0.4*P_c. Mark high 109.5 < LP 109.5618: no liquidation.
    # col 3: isolated, 10,000 USDT, leverage 10, target -1: the same 100 contracts with isolated
    # margin M = 1,000 playing the part of the cross wallet, so the same call price.
    pc = 8800 / 80.4
    spec = make_spec(lot=1.0)
    # col 4: the same isolated position with a top-up (into the isolated margin).
    acc = Account(initial_capital=[1000.0] * 3 + [10_000.0] * 2, margin_mode=["cross"] * 3 + ["isolated"] * 2,
                  leverage=[20.0] * 3 + [10.0] * 2, margin_call_threshold=0.8, margin_call_target=0.5,
                  margin_call_response=["none", "reduce", "top_up", "reduce", "top_up"],
                  reserve=[0.0, 0.0, 1000.0, 0.0, 1000.0])
    tgt = targets(*[[-10.0] + [None] * 5] * 3, *[[-1.0] + [None] * 5] * 2)
    s, r = run(simulate, make_bars(MARGIN_CALL_BARS), tgt, spec, acc)

    # none: calls at bars 2 and 3 (bar 2 closed at ratio 0.4*105/500 = 0.084 < 0.8, ending the
    # episode); bar 3 closes at 109.5 with ratio 0.4*109.5/50 = 0.876 >= 0.8, so bar 4 has no call;
    # bar 4 closes at 104 (ratio 41.6/600 < 0.8) and bar 5 calls again.
    c0 = recs(r, "margin_calls", col=0)
    assert list(c0["bar"]) == [2, 3, 5]
    np.testing.assert_allclose(c0["price"], [pc, pc, pc], rtol=1e-12)
    np.testing.assert_allclose(c0["margin_ratio"], [0.8, 0.8, 0.8], rtol=1e-12)
    assert np.all(c0["amount"] == 0.0) and np.all(c0["response"] == CallResponse.NONE)
    assert s["equity"][2, 0] == pytest.approx(1000 - 100 * 5)
    assert s["margin_ratio"][3, 0] == pytest.approx(0.4 * 109.5 / 50, rel=1e-12)
    assert len(r["liquidations"]) == 0

    # reduce: after cutting to q contracts at P_c (no fee), MB stays 0.5*P_c and
    # MM = 0.004*q*P_c, so ratio <= 0.5 iff q <= 62.5: the lot-rounded size is 62, cut 38.
    c1 = recs(r, "margin_calls", col=1)
    assert list(c1["bar"]) == [2] and c1["amount"][0] == 38.0 and c1["response"][0] == CallResponse.REDUCE
    f1 = recs(r, "fills", col=1, bar=2)
    assert len(f1) == 1 and f1["size"][0] == 38.0 and f1["reason"][0] == FillReason.MARGIN_CALL
    assert f1["price"][0] == pytest.approx(pc, rel=1e-12) and f1["status"][0] == FillStatus.FILLED
    assert s["position"][2, 1] == -62.0
    # realised -38*(P_c - 100) into the wallet, the rest valued at the close 105
    assert s["equity"][2, 1] == pytest.approx(1000 - 38 * (pc - 100) - 62 * 5, rel=1e-12)

    # top_up: X = MM/0.5 - MB = 0.8*P_c - 0.5*P_c = 0.3*P_c from the reserve
    c2 = recs(r, "margin_calls", col=2)
    assert list(c2["bar"]) == [2] and c2["amount"][0] == pytest.approx(0.3 * pc, rel=1e-12)
    assert s["capital_added"][2, 2] == pytest.approx(0.3 * pc, rel=1e-12)
    assert s["equity"][2, 2] == pytest.approx(500 + 0.3 * pc, rel=1e-12)
    assert s["position"][5, 2] == -100.0

    # isolated reduce: the isolated margin and the cut's realised loss stay with the position,
    # M = 1000 - (100 - q)*(P_c - 100), so MB = M - q*(P_c - 100) = 0.5*P_c as in cross: q = 62.
    c3 = recs(r, "margin_calls", col=3)
    assert list(c3["bar"]) == [2] and c3["amount"][0] == 38.0
    assert s["position"][2, 3] == -62.0
    # liquidation price of the rest: (M + 62*100)/(62*1.004) with M = 1000 - 38*(P_c - 100)
    assert s["liq_price"][2, 3] == pytest.approx((1000 - 38 * (pc - 100) + 6200) / (62 * 1.004), rel=1e-12)
    assert s["equity"][2, 3] == pytest.approx(10_000 - 38 * (pc - 100) - 62 * 5, rel=1e-12)

    # isolated top-up: 0.3*P_c goes into the isolated margin, which moves the liquidation price
    # to (1000 + 0.3*P_c + 100*100)/(100*1.004)
    assert recs(r, "margin_calls", col=4)["amount"][0] == pytest.approx(0.3 * pc, rel=1e-12)
    assert s["liq_price"][2, 4] == pytest.approx((11_000 + 0.3 * pc) / 100.4, rel=1e-12)


def test_top_up_is_limited_by_the_reserve(simulate):
    # Same call; the reserve of 10 USDT is below the 0.3*P_c = 32.8 needed: 10 is added.
    acc = Account(initial_capital=1000.0, leverage=20.0, margin_call_response="top_up",
                  margin_call_target=0.5, reserve=10.0)
    s, r = run(simulate, make_bars(MARGIN_CALL_BARS[:3]), targets([-10.0, None, None]), make_spec(lot=1.0), acc)
    assert recs(r, "margin_calls")["amount"][0] == 10.0
    assert s["capital_added"][2, 0] == 10.0 and s["equity"][2, 0] == pytest.approx(510.0, rel=1e-12)


def test_margin_call_at_the_mark_open_when_already_past_the_call_price(simulate):
    # Short -100 at 100, cross 1,000 USDT. Bar 2's mark opens at 109.5, past P_c = 109.4527 but
    # below LP = 109.5618: the call fires at the mark open, where MB = 1000 - 950 = 50 and
    # MM = 0.004*100*109.5 = 43.8 (ratio 0.876). top_up adds MM/0.5 - MB = 87.6 - 50 = 37.6.
    bars = make_bars([FLAT, FLAT, (109, 109.5, 104, 105, 109.5, 109.55, 104, 105)])
    acc = Account(initial_capital=1000.0, margin_call_response=["none", "top_up"], margin_call_target=0.5,
                  reserve=1000.0)
    s, r = run(simulate, bars, targets([-10.0, None, None], [-10.0, None, None]), make_spec(), acc)
    calls = r["margin_calls"]
    assert list(calls["col"]) == [0, 1] and np.all(calls["price"] == 109.5)
    np.testing.assert_allclose(calls["margin_ratio"], [43.8 / 50, 43.8 / 50], rtol=1e-12)
    np.testing.assert_allclose(calls["amount"], [0.0, 37.6], rtol=1e-12)
    assert len(r["liquidations"]) == 0


def test_margin_call_reduce_with_slippage(simulate):
    # Slippage 0.1 %: the short opens at 100*(1 - 0.001) = 99.9 (C = -10*1000/100 = -100, lot 1).
    # Call price: 0.8*(1000 - 100*(P - 99.9)) = 0.004*100*P -> P_c = 0.8*10990/80.4 = 8792/80.4.
    # The reduce buys at P_f = 1.001*P_c; after cutting to q, valued at P_c:
    #   MB = 1000 - (100 - q)*(P_f - 99.9) - q*(P_c - 99.9) = 1000 - 100*(P_f - 99.9) + q*(P_f - P_c)
    #   MM = 0.004*q*P_c; MM <= 0.5*MB  <=>  q <= 0.5*(1000 - 100*(P_f - 99.9)) / (0.004*P_c - 0.5*0.001*P_c)
    #   = 57.2 -> 57 contracts (62 without the slippage).
    pc = 8792 / 80.4
    pf = 1.001 * pc
    q = math.floor(0.5 * (1000 - 100 * (pf - 99.9)) / (0.0035 * pc))
    assert q == 57
    acc = Account(initial_capital=1000.0, slippage=0.001, margin_call_response="reduce", margin_call_target=0.5)
    s, r = run(simulate, make_bars(MARGIN_CALL_BARS[:3]), targets([-10.0, None, None]), make_spec(lot=1.0), acc)
    f = recs(r, "fills")
    assert f["price"][0] == pytest.approx(99.9, rel=1e-12)
    assert recs(r, "margin_calls")["price"][0] == pytest.approx(pc, rel=1e-12)
    assert f["price"][1] == pytest.approx(pf, rel=1e-12) and f["size"][1] == 100.0 - q
    assert s["position"][2, 0] == -q


def test_lot_rounding_toward_zero_and_slippage_on_fills(simulate):
    # target -1.27 of 1,000 USDT at 100, lot 1: 12.7 contracts -> 12 (toward zero).
    # Slippage 0.1 %: sell at 99.9, buy back at the next open at 100.1: equity 1000 - 12*0.2.
    bars = make_bars([FLAT] * 3)
    s, r = run(simulate, bars, targets([-1.27, 0.0, None]), make_spec(lot=1.0), Account(initial_capital=1000.0, slippage=0.001))
    f = recs(r, "fills")
    assert list(f["size"]) == [-12.0, 12.0]
    np.testing.assert_allclose(f["price"], [99.9, 100.1], rtol=1e-12)
    assert s["equity"][2, 0] == pytest.approx(1000 - 12 * 0.2, rel=1e-12)


def test_no_equity_at_the_open_means_close_only(simulate):
    # Short -100 at 100 (cross 1,000). Bar 2: the mark opens at 105 (no liquidation: MB = 500 >
    # MM = 42) but the trade opens at 111: E_open = 1000 - 100*11 = -100 <= 0, so the target -10
    # closes the position at 111 instead of sizing from a negative equity; the wallet is left at
    # 1000 - 1100 = -100 and nothing is traded afterwards.
    bars = make_bars([FLAT, FLAT, (111, 111, 104, 105, 105, 106, 104, 105), (105, 105, 105, 105)])
    s, r = run(simulate, bars, targets([-10.0, -10.0, -10.0, None]), make_spec(), Account(initial_capital=1000.0))
    f = recs(r, "fills")
    assert list(f["bar"]) == [1, 2] and f["size"][1] == 100.0 and f["price"][1] == 111.0
    assert s["position"][2, 0] == 0.0 and s["position"][3, 0] == 0.0
    np.testing.assert_allclose(s["equity"][2:, 0], [-100.0, -100.0], rtol=1e-12)
    assert np.all(s["leverage"][2:, 0] == 0.0) and len(r["liquidations"]) == 0


def test_position_opened_past_its_liquidation_price_is_liquidated_at_the_mark_open(simulate):
    # Bar 1 trades at 100 but its mark opens at 109.8. The new short -100 (EP 100, LP 11000/100.4
    # = 109.56) is already past LP at the mark open, so step 5 liquidates it there (gap):
    # MB(109.8) = 1000 - 980 = 20, MM = 0.004*10980 = 43.92; the call (none) fires at the mark
    # open with ratio 43.92/20; the 20 left pays part of the 137.25 clearance fee; keep 0.
    bars = make_bars([FLAT, (100, 100, 100, 100, 109.8, 110, 109, 109.5), FLAT])
    s, r = run(simulate, bars, targets([-10.0, None, None]), make_spec(), Account(initial_capital=1000.0))
    call = recs(r, "margin_calls")
    assert len(call) == 1 and call["price"][0] == 109.8
    assert call["margin_ratio"][0] == pytest.approx(43.92 / 20, rel=1e-9)
    liq = recs(r, "liquidations")
    assert len(liq) == 1 and liq["bar"][0] == 1 and liq["gap"][0] == 1 and liq["price"][0] == 109.8
    assert liq["trigger_price"][0] == pytest.approx(11000 / 100.4, rel=1e-12)
    assert liq["equity_before"][0] == pytest.approx(20.0, rel=1e-9)
    assert liq["clearance_fee"][0] == pytest.approx(20.0, rel=1e-9) and liq["deficit"][0] == 0.0
    assert s["equity"][1, 0] == 0.0


# ------------------------------------------------------------------------------------------
# Exchange checks: tier cap, available margin
# ------------------------------------------------------------------------------------------

CAP_TIERS = [
    {"minNotional": 0.0, "maxNotional": 10_000.0, "maintenanceMarginRate": 0.01, "maxLeverage": 20.0, "maintAmt": 0.0},
    {"minNotional": 10_000.0, "maxNotional": None, "maintenanceMarginRate": 0.02, "maxLeverage": 10.0, "maintAmt": 100.0},
]


def test_target_above_the_tier_cap_is_clipped_or_rejected(simulate):
    # 5,000 USDT, target -3 at 100: desired C = -150, N = 15,000. Leverage 20 is allowed only in
    # tier 1 (cap 10,000), so Ncap = 10,000. Taker 0.1 %.
    # col 0 (clip): 100 contracts (N = 10,000; margin 10000/20 + fee 10 = 510 <= 5000), fee 10.
    # col 1 (reject): nothing traded, a rejected record with the requested size.
    # col 2 (clip, leverage 2: Ncap = inf): available margin |C|*100*(1/2 + 0.001) <= 5000
    #        -> |C| <= 99.8 -> 99 contracts, fee 0.001*99*100 = 9.9.
    spec = make_spec(tiers=CAP_TIERS, taker=0.001, lot=1.0)
    acc = Account(initial_capital=5000.0, leverage=[20.0, 20.0, 2.0], excess=["clip", "reject", "clip"])
    tgt = targets(*[[-3.0, None, None]] * 3)
    s, r = run(simulate, make_bars([FLAT] * 3), tgt, spec, acc)

    f0 = recs(r, "fills", col=0)
    assert len(f0) == 1 and f0["status"][0] == FillStatus.CLIPPED and f0["size"][0] == -100.0
    assert f0["notional"][0] == pytest.approx(10_000.0) and f0["fee"][0] == pytest.approx(10.0)
    assert s["position"][1, 0] == -100.0 and s["equity"][1, 0] == pytest.approx(4990.0)

    f1 = recs(r, "fills", col=1)
    assert len(f1) == 1 and f1["status"][0] == FillStatus.REJECTED and f1["size"][0] == -150.0
    assert f1["fee"][0] == 0.0
    assert s["position"][1, 1] == 0.0 and s["equity"][1, 1] == 5000.0

    f2 = recs(r, "fills", col=2)
    assert len(f2) == 1 and f2["status"][0] == FillStatus.CLIPPED and f2["size"][0] == -99.0
    assert f2["fee"][0] == pytest.approx(9.9)
    assert s["position"][2, 2] == -99.0


def test_isolated_margin_on_increase_reduce_flip(simulate):
    # Isolated 10,000 USDT, leverage 10, lot 1, no fees. The isolated margin M is seen through
    # the liquidation price (isolated LP = (M + cum - s*Q*EP)/(Q*mmr - s*Q), tier 1 throughout).
    # bar 1, open 100, target -1: C = -100, M = 10000/10 = 1000, W = 9000 -> LP = 11000/100.4.
    # bar 2, open 90, target -2: E_open = 9000 + 1000 + (-100)*(90 - 100) = 11000,
    #   C* = -2*11000/90 = -244.4 -> -244; increase 144 at 90 adds 144*90/10 = 1296: M = 2296,
    #   W = 7704; EP = (100*100 + 144*90)/244 = 22960/244 -> LP = (2296 + 22960)/(244*1.004).
    # bar 3, open 90, target -1: E_open = 11000, C* = -122; closing 122 of 244 releases
    #   M*122/244 = 1148 (M = 1148) and realises 122*(EP - 90) = 500 into W -> W = 9352;
    #   LP = (1148 + 122*EP)/(122*1.004) = 12628/(122*1.004).
    # bar 4, open 90, target +1: E_open = 11000, C* = +122: the flip releases all M (W = 11000)
    #   and allocates 122*90/10 = 1098: long LP = (1098 - 122*90)/(122*0.004 - 122) = 9882/121.512.
    bars = make_bars([FLAT, FLAT] + [(90.0, 90.0, 90.0, 90.0)] * 3)
    acc = Account(initial_capital=10_000.0, margin_mode="isolated", leverage=10.0)
    s, r = run(simulate, bars, targets([-1.0, -2.0, -1.0, 1.0, None]), make_spec(lot=1.0), acc)
    assert list(s["position"][1:, 0]) == [-100.0, -244.0, -122.0, 122.0]
    np.testing.assert_allclose(
        s["liq_price"][1:, 0],
        [11000 / 100.4, 25256 / (244 * 1.004), 12628 / (122 * 1.004), 9882 / 121.512], rtol=1e-12)
    np.testing.assert_allclose(s["equity"][1:, 0], [10_000.0, 11_000.0, 11_000.0, 11_000.0], rtol=1e-12)
    assert list(recs(r, "fills")["size"]) == [-100.0, -144.0, 122.0, 244.0]


def test_clip_never_goes_below_the_current_position(simulate):
    # Long +5 of 1,000 USDT at 100: C = 50 (N 5,000 under the 10,000 cap of leverage 20).
    # Price 250: N = 12,500, E = 1000 + 50*150 = 8,500. Target +2: C* = 2*8500/250 = 68, above the
    # cap (10000/250 = 40 < 50): clipped to the current 50, a clipped record of size 0.
    spec = make_spec(tiers=CAP_TIERS, lot=1.0)
    bars = make_bars([FLAT, (100, 250, 100, 250), (250, 250, 250, 250)])
    s, r = run(simulate, bars, targets([5.0, 2.0, None]), spec, Account(initial_capital=1000.0, leverage=20.0))
    f = recs(r, "fills")
    assert list(f["status"]) == [FillStatus.FILLED, FillStatus.CLIPPED]
    assert list(f["size"]) == [50.0, 0.0] and f["fee"][1] == 0.0
    assert s["position"][2, 0] == 50.0


def test_clipped_remainder_below_the_minimum_is_not_traded(simulate):
    # Minimum order 100 USDT, lot 0.001. Long +5 of 1,000 at 100: C = 50. At 199: E = 1000 +
    # 50*99 = 5,950, N = 9,950. Target +2: C* = 2*5950/199 = 59.8 is above the 10,000 cap; the cap
    # allows 10000/199 = 50.251, an order of 0.251*199 = 49.9 USDT < 100: nothing is traded and
    # the clipped record has size 0.
    spec = make_spec(tiers=CAP_TIERS, min_notional=100.0)
    bars = make_bars([FLAT, (100, 199, 100, 199), (199, 199, 199, 199)])
    s, r = run(simulate, bars, targets([5.0, 2.0, None]), spec, Account(initial_capital=1000.0, leverage=20.0))
    f = recs(r, "fills")
    assert list(f["status"]) == [FillStatus.FILLED, FillStatus.CLIPPED]
    assert f["size"][1] == 0.0 and f["fee"][1] == 0.0
    assert s["position"][2, 0] == pytest.approx(50.0, abs=1e-12)


def test_inverse_minimum_notional_is_in_usd(simulate):
    # Inverse, minimum order 1,000 USD. -500 contracts at 50,000 (1 BTC). Target -1.005:
    # C* = -502.5 -> -502, an order of 2*100 = 200 USD: skipped. Target -1.05: C* = -525, an
    # order of 2,500 USD: filled.
    spec = make_spec(inverse=True, lot=1.0, min_notional=1000.0)
    bars = make_bars([(50_000.0,) * 4] * 4)
    s, r = run(simulate, bars, targets([-1.0, -1.005, -1.05, None]), spec, Account(initial_capital=1.0))
    f = recs(r, "fills")
    assert list(f["bar"]) == [1, 3] and list(f["size"]) == [-500.0, -25.0]
    assert s["position"][2, 0] == -500.0 and s["position"][3, 0] == -525.0


# ------------------------------------------------------------------------------------------
# After a liquidation
# ------------------------------------------------------------------------------------------

def test_continue_after_liquidation_vs_stop(simulate):
    # One tier, mmr 5 % (above the 1 % clearance fee, so something is left), max leverage 10.
    # Cross 1,000 USDT, target -5 at 100: C = -50. LP = (1000 + 50*100)/(50*0.05 + 50) = 6000/52.5.
    # At LP the balance is MM = 0.05*50*LP = 2.5*LP; clearance 0.01*50*LP = 0.5*LP; keep 2*LP
    # = 228.57. Bar 3: target -5 again. col 0 (continue): E_open = 2*LP, C = -5*2*LP/100 = -11.43
    # -> lot 1 -> -11. Bar 4's print (rate 0.1 %, mark 100) pays it 11*100*0.001 = 1.1.
    # col 1 (stop): frozen at 2*LP, no fill, no funding.
    lp = 6000 / 52.5
    tiers = [{"minNotional": 0.0, "maxNotional": None, "maintenanceMarginRate": 0.05, "maxLeverage": 10.0, "maintAmt": 0.0}]
    spec = make_spec(tiers=tiers, lot=1.0, liquidation_fee=0.01)
    bars = make_bars([
        FLAT,
        (100, 101, 99, 100, 100, 101, 99, 100),
        (101, 118, 100, 118, 101, 120, 100, 118),
        FLAT, FLAT, FLAT,
    ], funding=[(T0 + 4 * HOUR, 0.001)])
    acc = Account(initial_capital=1000.0, leverage=10.0, after_liquidation=["continue", "stop"])
    tgt = targets(*[[-5.0, None, -5.0, None, None, None]] * 2)
    s, r = run(simulate, bars, tgt, spec, acc)

    for col in (0, 1):
        liq = recs(r, "liquidations", col=col)
        assert len(liq) == 1 and liq["bar"][0] == 2
        assert liq["price"][0] == pytest.approx(lp, rel=1e-12)
        assert liq["equity_after"][0] == pytest.approx(2 * lp, rel=1e-12)
        assert liq["deficit"][0] == 0.0
        assert s["equity"][2, col] == pytest.approx(2 * lp, rel=1e-12)
    assert s["position"][3, 0] == -11.0
    assert recs(r, "funding", col=0)["amount"][0] == pytest.approx(1.1, rel=1e-12)
    assert s["equity"][5, 0] == pytest.approx(2 * lp + 1.1, rel=1e-12)
    assert np.all(s["position"][2:, 1] == 0.0)
    np.testing.assert_allclose(s["equity"][2:, 1], 2 * lp, rtol=1e-12)
    assert len(recs(r, "fills", col=1)) == 1 and len(recs(r, "funding", col=1)) == 0


def test_a_liquidation_ends_the_margin_call_episode(simulate):
    # Short -100 at 100, cross 1,000, clearance fee 0.1 %, continue after liquidation.
    # Bar 2: call at P_c = 8800/80.4; the close at 109.5 keeps the ratio at 0.876 >= 0.8, so the
    # episode goes on. Bar 3: the mark opens at 109.58 > LP = 109.5618: gap liquidation (balance
    # 1000 - 958 = 42, fee 0.001*10958, keep 31.04); the target -10 re-opens
    # -10*31.04/109.58 = -2.832 at the trade open 109.58. Its mark high 130 reaches the new call
    # price and the new LP: a second call (the liquidation ended the first episode) and a
    # second liquidation in the same bar.
    keep = 42 - 0.001 * 100 * 109.58
    c_new = -math.floor(10 * keep / 109.58 * 1000) / 1000
    bars = make_bars([FLAT, FLAT, (101, 109, 100, 109, 101, 109.5, 100, 109.5),
                      (109.58, 125, 109, 125, 109.58, 130, 109, 125)])
    acc = Account(initial_capital=1000.0, leverage=20.0, after_liquidation="continue")
    s, r = run(simulate, bars, targets([-10.0, None, -10.0, None]), make_spec(liquidation_fee=0.001), acc)
    assert list(recs(r, "margin_calls")["bar"]) == [2, 3]
    liq = recs(r, "liquidations")
    assert list(liq["bar"]) == [3, 3] and list(liq["gap"]) == [1, 0]
    assert liq["equity_after"][0] == pytest.approx(keep, rel=1e-9)
    assert liq["size"][1] == pytest.approx(c_new, abs=1e-12)
    # the new position's call price: 0.8*(keep - |C|*(P - 109.58)) = 0.004*|C|*P
    q = -c_new
    assert recs(r, "margin_calls")["price"][1] == pytest.approx(
        0.8 * (keep + q * 109.58) / (0.004 * q + 0.8 * q), rel=1e-9)


# ------------------------------------------------------------------------------------------
# Inverse (coin-margined) short
# ------------------------------------------------------------------------------------------

def test_inverse_short_funding_and_pnl_in_coin(simulate):
    # BTCUSD-style contract of 100 USD, 1 BTC of capital, target -1 at 50,000:
    # C = -1 * 1 * 50000 / 100 = -500 contracts; N = 500*100/50000 = 1 BTC.
    # col 0 taker 0.05 %: fee 0.0005*1 = 0.0005 BTC. col 1: no fee.
    # Print inside bar 2 (02:30), rate 0.01 %, mark 40,000: -C*cs/mark*rate = 500*100/40000*0.0001
    # = 0.000125 BTC received.
    # Bar 2 closes at mark 40,000: uPnL = C*cs*(1/EP - 1/P) = -50000*(1/50000 - 1/40000) = 0.25 BTC.
    spec = make_spec(inverse=True, lot=1.0, liquidation_fee=0.015)
    bars = make_bars([
        (50_000, 50_000, 50_000, 50_000),
        (50_000, 50_000, 50_000, 50_000),
        (50_000, 50_000, 40_000, 40_000),
        (40_000, 40_000, 40_000, 40_000),
    ], funding=[(T0 + 2 * HOUR + HOUR // 2, 0.0001, 40_000.0)])
    acc = Account(initial_capital=1.0, leverage=20.0, fee_rate=[0.0005, 0.0])
    tgt = targets([-1.0, None, None, None], [-1.0, None, None, None])
    s, r = run(simulate, bars, tgt, spec, acc)

    assert s["position"][1, 0] == -500.0
    assert recs(r, "fills", col=0)["fee"][0] == pytest.approx(0.0005, rel=1e-12)
    f = recs(r, "funding", col=0)
    assert len(f) == 1 and f["amount"][0] == pytest.approx(0.000125, rel=1e-12)
    assert s["equity"][2, 0] == pytest.approx(1 - 0.0005 + 0.000125 + 0.25, rel=1e-12)
    assert s["notional"][2, 0] == pytest.approx(-500 * 100 / 40_000, rel=1e-12)
    assert s["equity_usd"][2, 0] == pytest.approx((1 - 0.0005 + 0.000125 + 0.25) * 40_000, rel=1e-12)
    # with the fee the wallet is 0.999625 < Q/EP = 1 BTC: LP = Q*(mmr + s)/(W + cum + s*Q/EP)
    # = 50000*(0.004 - 1)/(0.999625 - 1) = 132,800,000 (notional there is tiny: tier 1)
    assert s["liq_price"][2, 0] == pytest.approx(50_000 * 0.996 / 0.000375, rel=1e-9)
    # no fee: a 1x short (wallet 1.000125 >= Q/EP) has no liquidation price, and its USD value is
    # the 50,000 USD hedged plus the funding (0.000125 BTC at 40,000 = 5 USD)
    assert s["liq_price"][2, 1] == 0.0
    assert s["equity_usd"][2, 1] == pytest.approx(50_005.0, rel=1e-12)
    assert s["equity"][2, 1] == pytest.approx(1.250125, rel=1e-12)


def test_policy_factor_from_previous_close_and_running_peak(simulate):
    # Target -1 on rows 0-2 (bars 1-3), lot 0.1, cross 1,000 USDT. Bar 0 uses E = peak = 1000.
    # col 0 drawdown (max 50 %); col 1 CPPI floor 0.5, multiplier 2, no ratchet (F = 500);
    # col 2 the same with ratchet (F = 0.5 * peak).
    # bar 1 (open 100): factors 1, 2*(1000-500)/1000 = 1, 1 -> C = -10 in all; close 80: E = 1200.
    # bar 2 (open 80, peak 1200): drawdown 1 -> C = -1200/80 = -15; CPPI 2*700/1200 -> C = -17.5;
    #   ratchet F = 600, 2*600/1200 = 1 -> C = -15. Close 100: E = 900, 850, 900.
    # bar 3 (open 100): drawdown dd = 1 - 900/1200 = 0.25, factor 1 - 0.25/0.5 = 0.5 -> C = -4.5;
    #   CPPI 2*(850-500)/850 -> C = -700/100 = -7; ratchet 2*(900-600)/900 -> C = -600/100 = -6.
    bars = make_bars([FLAT, (100, 100, 80, 80), (80, 100, 80, 100), FLAT])
    pol = Policy(kind=["drawdown", "cppi", "cppi"], max_drawdown=0.5, floor=[0.0, 0.5, 0.5],
                 multiplier=2.0, ratchet=[False, False, True])
    tgt = targets(*[[-1.0, -1.0, -1.0, None]] * 3)
    s, _ = run(simulate, bars, tgt, make_spec(lot=0.1), Account(initial_capital=1000.0), pol)
    np.testing.assert_allclose(s["position"][1], [-10.0, -10.0, -10.0], atol=1e-12)
    np.testing.assert_allclose(s["equity"][1], [1200.0, 1200.0, 1200.0], rtol=1e-12)
    np.testing.assert_allclose(s["position"][2], [-15.0, -17.5, -15.0], atol=1e-12)
    np.testing.assert_allclose(s["equity"][2], [900.0, 850.0, 900.0], rtol=1e-12)
    np.testing.assert_allclose(s["position"][3], [-4.5, -7.0, -6.0], atol=1e-12)


def test_minimum_notional_skips_small_orders_but_not_closing(simulate):
    # Minimum order 100 USDT. bar 1: -0.15 x 1000 / 100 = -1.5 contracts (150 USDT) fills.
    # Bar 1 closes at 50: E = 1000 + 1.5*50 = 1075. bar 2 (open 50), target -0.1:
    # C* = -0.1*1075/50 = -2.15, order 0.65*50 = 32.5 USDT < 100: skipped without a record.
    # bar 3 (open 50), target 0: closing 1.5*50 = 75 USDT < 100 is allowed.
    bars = make_bars([FLAT, (100, 100, 50, 50), (50, 50, 50, 50), (50, 50, 50, 50)])
    s, r = run(simulate, bars, targets([-0.15, -0.1, 0.0, None]), make_spec(min_notional=100.0),
               Account(initial_capital=1000.0))
    f = recs(r, "fills")
    assert list(f["bar"]) == [1, 3]
    np.testing.assert_allclose(f["size"], [-1.5, 1.5], atol=1e-12)
    assert s["position"][2, 0] == pytest.approx(-1.5, abs=1e-12) and s["position"][3, 0] == 0.0


def test_tier_table_in_force_at_the_bar_open(simulate):
    # From bar 2 (02:00) a stricter table applies: one tier, 2 %. Short -100 at 100, 1,000 USDT
    # cross, flat prices: bar 1 MM/MB = 0.004*10000/1000 = 0.04, LP = 11000/100.4;
    # bar 2 MM/MB = 0.02*10000/1000 = 0.2, LP = (1000 + 100*100)/(100*0.02 + 100) = 11000/102.
    strict = [{"minNotional": 0.0, "maxNotional": None, "maintenanceMarginRate": 0.02, "maxLeverage": 25.0, "maintAmt": 0.0}]
    spec = make_spec(tier_history=[{"from": 0, "tiers": LINEAR_TIERS}, {"from": T0 + 2 * HOUR, "tiers": strict}])
    s, _ = run(simulate, make_bars([FLAT] * 3), targets([-10.0, None, None]), spec,
               Account(initial_capital=1000.0, leverage=20.0))
    np.testing.assert_allclose(s["margin_ratio"][1:, 0], [0.04, 0.2], rtol=1e-12)
    np.testing.assert_allclose(s["liq_price"][1:, 0], [11000 / 100.4, 11000 / 102], rtol=1e-12)


def test_policy_factor_scales_the_target(simulate):
    # Drawdown policy, max drawdown 50 %: bar 0 uses E = peak = 1000 (factor 1); short -1 at
    # bar 1 (C = -10, lot 1). Price 100 -> 120 at bar 1's close: E = 1000 - 10*20 = 800,
    # dd = 0.2, factor = 1 - 0.2/0.5 = 0.6. Bar 2's target -1 -> -0.6 * E_open / open:
    # open 120 -> E_open = 800 -> C = -0.6*800/120 = -4.
    bars = make_bars([FLAT, (100, 120, 100, 120), (120, 120, 120, 120), (120, 120, 120, 120)])
    s, r = run(simulate, bars, targets([-1.0, -1.0, None, None]), make_spec(lot=1.0),
               Account(initial_capital=1000.0), Policy(kind="drawdown", max_drawdown=0.5))
    assert s["position"][1, 0] == -10.0 and s["equity"][1, 0] == pytest.approx(800.0)
    assert s["position"][2, 0] == -4.0
    assert math.isclose(recs(r, "fills", bar=2)["size"][0], 6.0)
