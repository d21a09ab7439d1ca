"""Auto-deleveraging: the exchange rankings on hand cases, the insurance fund through a cascade by
hand, the account's cut probability from its place in the queue, and no ADL without a shortfall."""

from __future__ import annotations

import math

import numpy as np
import pytest

from backtest.stress import (AccountPosition, CascadeError, CascadeModel, Crowd, adl_from_cascade, adl_risk,
                             binance_leverage_pnl, effective_leverage_ranking, short_cut_frequency, solve_cascade)
from backtest.stress.adl import crowd_leverage_pnl
from tests.stress.kit import sample

MMR = 0.004


# ------------------------------------------------------------------------------ rankings

def test_binance_leverage_pnl_reproduces_the_forum_case():
    # dev.binance.vision t/17801: uPnL 40.2, wallet 4.27, margin ratio 13.42 % -> Pnl Percent 9.41, Leverage Pnl 1.26
    mm = 0.1342 * (4.27 + 40.2)
    assert binance_leverage_pnl(40.2, 4.27, mm) == pytest.approx(40.2 / 4.27 * 0.1342, rel=1e-12)
    assert round(binance_leverage_pnl(40.2, 4.27, mm), 2) == 1.26


@pytest.mark.parametrize("upnl, wallet, mm, want", [
    (2.0, 0.5, 0.1, 2.0 / 1.0 * (0.1 / 2.5)),    # a wallet below 1 USDT counts as 1: max(1, WB)
    (-3.0, 10.0, 0.5, 0.0),                      # a loss: Pnl Percent = max(0, uPnL) / ... = 0
    (5.0, 100.0, 2.0, 0.05 * 2.0 / 105.0),
    (0.0, 10.0, 1.0, 0.0),
])
def test_binance_leverage_pnl_by_hand(upnl, wallet, mm, want):
    assert binance_leverage_pnl(upnl, wallet, mm) == pytest.approx(want, rel=1e-15)


def test_a_balance_at_or_below_zero_has_margin_ratio_zero():
    # [BN-ADL]: "If (Wallet Balance + Unrealized Profit) <= 0, then Margin Ratio = 0"; uPnL > 0 needs WB < 0
    assert binance_leverage_pnl(1.0, -2.0, 5.0) == 0.0
    assert binance_leverage_pnl(2.0, -2.0, 5.0) == 0.0


@pytest.mark.parametrize("side, entry, mark, bankrupt, want", [
    (1, 100.0, 110.0, 90.0, 0.10 * 110.0 / 20.0),     # a winning 10x long: PnL% 10 %, EL 110/20 = 5.5
    (-1, 100.0, 90.0, 110.0, 0.10 * 90.0 / 20.0),     # a winning 10x short: EL 90/20 = 4.5
    (1, 100.0, 95.0, 90.0, -0.05 / (95.0 / 5.0)),     # a losing long: PnL% / EL
])
def test_the_pnl_times_effective_leverage_ranking_by_hand(side, entry, mark, bankrupt, want):
    assert effective_leverage_ranking(side, entry, mark, bankrupt) == pytest.approx(want, rel=1e-14)


def test_the_crowd_ranking_is_binance_s_formula_on_isolated_buckets():
    crowd = Crowd([-1, -1], [100.0, 100.0], [10.0, 2.0], [4.0, 10.0], MMR)
    # at 90: bucket 0 uPnL 40, wallet 40, MM 4*90*mmr; bucket 1 uPnL 100, wallet 500, MM 10*90*mmr
    want = [40 / 40 * (360 * MMR / 80), 100 / 500 * (900 * MMR / 600)]
    np.testing.assert_allclose(crowd_leverage_pnl(crowd, 90.0), want, rtol=1e-14)


# ------------------------------------------------------------------------------ the fund and the queue

def hand_case():
    """A 20x long bucket (10 units at 100, bankrupt at 95) and two short buckets (4 units at 10x,
    10 units at 2x); a 10 % gap with no impact fills the longs at 90, 5 below their bankruptcy
    price: a loss of 10 x 5 = 50 to the fund."""
    crowd = Crowd([1, -1, -1], [100.0, 100.0, 100.0], [20.0, 10.0, 2.0], [10.0, 4.0, 10.0], MMR)
    sol = solve_cascade(crowd, 100.0, -0.10, math.inf)
    assert sol.final == 90.0 and list(sol.closed_round) == [1, 0, 0]
    # the account: a 5x short of 1 unit at 100; at 90: uPnL 10, wallet 20, MM 90*mmr -> 0.5 * 3 mmr;
    # the shorts rank 4.5 mmr (10x) > account 1.5 mmr > 0.3 mmr (2x)
    return crowd, sol, AccountPosition(-1, 100.0, 1.0, 5.0, MMR)


@pytest.mark.parametrize("fund, shortfall, adl_qty, probability", [
    (20.0, 30.0, 6.0, 1.0),      # 30 of 50 uncovered: 60 % of the 10 units; 4 rank above the account: all of it cut
    (26.0, 24.0, 4.8, 0.8),      # 4.8 units: 4 above, 0.8 of the account's 1 unit
    (40.0, 10.0, 2.0, 0.0),      # 2 units: the 10x shorts above cover it
    (50.0, 0.0, 0.0, 0.0),       # the fund covers the loss exactly: no ADL
    (1e9, 0.0, 0.0, 0.0),
])
def test_the_fund_and_the_account_s_cut_by_hand(fund, shortfall, adl_qty, probability):
    crowd, sol, pos = hand_case()
    risk = adl_risk(crowd, sol, pos, fund)
    out = risk.outcome
    assert out.shortfall == pytest.approx(shortfall, rel=1e-12, abs=1e-12)
    assert out.adl_qty == pytest.approx(adl_qty, rel=1e-12, abs=1e-12)
    assert out.fund_after == pytest.approx(max(0.0, fund - 50.0), rel=1e-12, abs=1e-12)
    assert out.winners == -1
    assert risk.probability == pytest.approx(probability, rel=1e-12, abs=1e-12)
    assert risk.quantile == pytest.approx((10 + 0.5) / 15)   # 10 units below it, its own unit at mid-rank
    assert risk.score == pytest.approx(0.5 * 90 * MMR / 30, rel=1e-14)
    if adl_qty:
        assert risk.close_price == 95.0                     # the liquidated longs' bankruptcy price
    else:
        assert math.isnan(risk.close_price)


def test_fills_before_the_bankruptcy_price_feed_the_fund_and_cause_no_adl():
    # a 4.7 % gap fills the 20x longs (liquidation 95.38, bankruptcy 95) at 95.3 > 95: a gain to an empty fund
    crowd = Crowd([1, -1], [100.0, 100.0], [20.0, 10.0], [10.0, 4.0], MMR)
    sol = solve_cascade(crowd, 100.0, -0.047, math.inf)
    assert list(sol.closed_round) == [1, 0]
    out = adl_from_cascade(crowd, sol, 0.0)
    assert out.shortfall == 0.0 and out.adl_qty == 0.0
    assert out.fund_after == pytest.approx(10 * (100 * (1 - 0.047) - 95.0), rel=1e-12)
    assert adl_risk(crowd, sol, AccountPosition(-1, 100.0, 1.0, 5.0), 0.0).probability == 0.0


def test_an_account_on_the_liquidated_side_is_not_in_the_queue():
    crowd, sol, _ = hand_case()
    risk = adl_risk(crowd, sol, AccountPosition(1, 80.0, 1.0, 2.0), 0.0)
    assert risk.probability == 0.0 and math.isnan(risk.quantile)


def test_no_cascade_no_adl():
    crowd, _, pos = hand_case()
    sol = solve_cascade(crowd, 100.0, 0.0, 1e6)
    risk = adl_risk(crowd, sol, pos, 0.0)
    assert risk.outcome.shortfall == 0.0 and risk.probability == 0.0 and risk.outcome.winners == 0


def test_bad_inputs_are_refused_by_name():
    crowd, sol, _ = hand_case()
    with pytest.raises(CascadeError, match=r"insurance_fund=-1.0 is out of range"):
        adl_from_cascade(crowd, sol, -1.0)
    with pytest.raises(CascadeError, match=r"AccountPosition.side=0"):
        AccountPosition(0, 100.0, 1.0, 5.0)
    with pytest.raises(CascadeError, match=r"AccountPosition.leverage=0.5 is out of range"):
        AccountPosition(-1, 100.0, 1.0, 0.5)


# ------------------------------------------------------------------------------ on the sample

def test_how_often_a_winning_short_is_cut_on_the_sample():
    md = sample()
    times = ["2022-06-10", "2022-06-13", "2022-06-18"]
    model = CascadeModel(lookback_bars=240)
    none = short_cut_frequency(md, times, -0.08, insurance_fund=1e12, leverage=10, model=model)
    assert (none["shortfall"] == 0).all() and (none["probability"] == 0).all()
    empty = short_cut_frequency(md, times, -0.08, insurance_fund=0.0, leverage=10, model=model)
    assert (empty["shortfall"] > 0).all()
    assert ((empty["probability"] >= 0) & (empty["probability"] <= 1)).all()
    # a higher leverage ranks higher (same entry, same profit per unit): cut at least as often
    high = short_cut_frequency(md, times, -0.08, insurance_fund=0.0, leverage=50, model=model)
    assert (high["quantile"] >= empty["quantile"]).all() and (high["probability"] >= empty["probability"]).all()
    assert list(empty.index) == [f"{t}T00:00:00+00:00" for t in times]
