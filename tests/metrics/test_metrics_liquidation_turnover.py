"""Turnover counts executed notional only; liquidation losses are what the liquidation cost the
account (never negative, the insurance fund's deficit apart); ``ruined`` follows a result the
account cannot trade from. Engine runs on hand-made candle tables, numbers by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from backtest.engine import Account, simulate_perp
from backtest.engine.enums import FillStatus
from backtest.metrics import LOWER_IS_BETTER, compute_metrics
from backtest.report.collect import rank
from tests.engine.scenario_kit import make_bars, make_spec, targets

FLAT = (100.0, 100.0, 100.0, 100.0)


def _cols(res, currency="settle"):
    return compute_metrics(res, currency=currency)["columns"]


def test_turnover_counts_executed_orders_only_and_rejected_orders_apart():
    # 1,000 USDT at leverage 2: a -10x target exceeds the available margin; with excess='reject'
    # every one of the four orders is refused whole and nothing trades
    bars = make_bars([FLAT] * 5)
    spec = make_spec()
    res = simulate_perp(bars, targets([-10.0, -9.0, -8.0, -7.0, None]), spec,
                        Account(initial_capital=1000.0, leverage=2.0, excess="reject"))
    fills = res.records["fills"]
    assert len(fills) == 4 and np.all(fills["status"] == FillStatus.REJECTED)
    assert np.sum(fills["notional"]) == pytest.approx(34_000.0)  # the requested sizes: not traded
    c = _cols(res)["0"]
    assert c["turnover"] == 0.0
    assert c["rejected_orders"] == 4
    assert c["event_counts"]["fills"] == 0


def test_turnover_is_the_notional_of_the_executed_fills():
    # -1x (1,000 notional) fills at bar 1, a -10x increase is rejected at bar 2, a close at bar 3
    # (its open, 100)
    bars = make_bars([FLAT, FLAT, FLAT, (100.0, 110.0, 100.0, 110.0), (110.0, 110.0, 110.0, 110.0)])
    res = simulate_perp(bars, targets([-1.0, -10.0, 0.0, None, None]), make_spec(),
                        Account(initial_capital=1000.0, leverage=2.0, excess="reject"))
    status = list(res.records["fills"]["status"])
    assert status == [FillStatus.FILLED, FillStatus.REJECTED, FillStatus.FILLED]
    c = _cols(res)["0"]
    assert c["turnover"] == pytest.approx(1000.0 + 10.0 * 100.0, rel=1e-12)
    assert c["rejected_orders"] == 1 and c["event_counts"]["fills"] == 2


def _isolated_liquidation(lot: float = 0.001, min_notional: float = 0.0, target: float = -1.0):
    # short at 100 (isolated, leverage 10), the mark opens bar 2 at 100 and rises to 120:
    # liquidated at LP = (B + Q*EP)/(Q*mmr + Q) without a gap
    bars = make_bars([FLAT, FLAT, (100.0, 120.0, 100.0, 120.0), (120.0, 120.0, 120.0, 120.0)])
    spec = make_spec(lot=lot, min_notional=min_notional)
    return simulate_perp(bars, targets([target, None, None, None]), spec,
                         Account(initial_capital=10_000.0, margin_mode="isolated", leverage=10.0))


def test_an_isolated_liquidation_costs_its_whole_margin_not_the_clearance_fee():
    res = _isolated_liquidation()
    liq = res.records["liquidations"]
    assert len(liq) == 1 and liq["gap"][0] == 0
    # C = -100 contracts, isolated margin 1,000, free wallet 9,000; LP = 11000/100.4
    lp = 11_000.0 / 100.4
    assert liq["price"][0] == pytest.approx(lp, rel=1e-12)
    # at LP the margin balance is MM = 0.4*LP, taken whole as the clearance fee (0.4 % < 1.25 %)
    assert liq["clearance_fee"][0] == pytest.approx(0.4 * lp, rel=1e-9)
    assert liq["equity_start"][0] == pytest.approx(10_000.0, rel=1e-12)  # at the mark open 100
    assert liq["equity_after"][0] == pytest.approx(9_000.0, rel=1e-12)
    c = _cols(res)["0"]
    # the 1,000 margin was lost, not the 43.8 fee
    assert c["liquidation_equity_lost"] == pytest.approx(1_000.0, rel=1e-12)
    assert c["liquidation_deficit"] == 0.0
    assert c["final_equity"] == pytest.approx(9_000.0) and c["ruined"] is False


def test_a_bankrupt_gap_liquidation_is_a_loss_and_its_deficit_is_reported_apart():
    # cross 10,000 USDT, short -10x (1,000 contracts at 100); the mark opens bar 2 at 112, past
    # the bankruptcy price 110: the balance 10,000 - 12,000 = -2,000 is absorbed by the
    # insurance fund; the account had 10,000 at the previous close and keeps 0
    bars = make_bars([FLAT, FLAT, (112.0, 112.0, 112.0, 112.0), (112.0, 112.0, 112.0, 112.0)])
    res = simulate_perp(bars, targets([-10.0, None, None, None], [-1.0, None, None, None]), make_spec(),
                        Account(initial_capital=10_000.0, margin_mode="cross", leverage=20.0))
    liq = res.records["liquidations"]
    assert list(liq["col"]) == [0] and liq["gap"][0] == 1
    assert liq["equity_before"][0] == pytest.approx(-2_000.0, rel=1e-12)  # valued at the gap price
    assert liq["equity_start"][0] == pytest.approx(10_000.0, rel=1e-12)   # at the previous close
    assert liq["deficit"][0] == pytest.approx(2_000.0, rel=1e-12)
    cols = _cols(res, "usd")
    bust, alive = cols["0"], cols["1"]
    assert bust["liquidation_equity_lost"] == pytest.approx(10_000.0, rel=1e-12)
    assert bust["liquidation_deficit"] == pytest.approx(2_000.0, rel=1e-12)
    assert bust["ruined"] is True and bust["total_return"] == -1.0
    assert alive["liquidations"] == 0 and alive["liquidation_equity_lost"] == 0.0
    assert alive["liquidation_deficit"] == 0.0
    # on every loss metric the unliquidated column ranks first
    doc = {"r": {"usd": {"columns": cols}}}
    for key in ("liquidation_equity_lost", "liquidation_deficit", "liquidations", "max_drawdown"):
        assert key in LOWER_IS_BETTER
        assert [row["column"] for row in rank(doc, key)] == ["1", "0"], key


def test_ruined_when_what_is_left_cannot_hold_the_smallest_order():
    # -9.995x isolated at leverage 10: isolated margin 9,995 of the 10,000, liquidated: 5 left
    # (-99.95 %). With a 100 USDT minimum notional, 5 USDT at 10x (50 USDT) cannot trade again
    res = _isolated_liquidation(min_notional=100.0, target=-9.995)
    c = _cols(res)["0"]
    assert c["final_equity"] == pytest.approx(5.0, rel=1e-9)
    assert c["total_return"] == pytest.approx(-0.9995, rel=1e-9)
    assert res.meta["min_equity_usd"] == [10.0]
    assert c["ruined"] is True
    assert c["liquidation_equity_lost"] == pytest.approx(9_995.0, rel=1e-12)
    # 5 USDT at a 200x leverage setting would hold one 1,000 USDT order: the loss alone (99.95 %)
    # still makes it ruin (test below)


def test_liquidation_loss_is_never_negative_on_random_runs():
    from tests.engine.scenario_kit import random_case

    seen = 0
    for seed in range(12):
        bars, target, spec, account, policy = random_case(seed)
        res = simulate_perp(bars, target, spec, account, policy)
        liq = res.records["liquidations"]
        seen += len(liq)
        for label, c in _cols(res).items():
            assert c["liquidation_equity_lost"] >= 0.0 and c["liquidation_deficit"] >= 0.0
            if c["liquidations"] == 0:
                assert c["liquidation_equity_lost"] == 0.0
        # each record's cost is at least the fee it charged (the fee is part of what is lost)
        cost = np.maximum(liq["equity_start"] - liq["equity_after"], 0.0)
        assert np.all(cost >= liq["clearance_fee"] - 1e-9 * np.maximum(1.0, np.abs(liq["equity_start"])))
    assert seen > 0 and not math.isnan(seen)


def test_results_that_cannot_be_liquidated_report_zero_liquidations_and_rank_with_the_survivors():
    # a report mixes perps with puts and inverse products; a long put or a product holder posts no
    # margin, so it is never margin-called or liquidated: 0, not null (null would rank last and put
    # a bankrupt perp first on every liquidation metric)
    from backtest.options import PutSettings, Underlying, simulate_puts

    n = 24 * 40
    u = Underlying.from_arrays(1_646_092_800_000 + 3_600_000 * np.arange(n), np.full(n, 30_000.0),
                               iv=np.full(n, 0.8))
    puts = compute_metrics(simulate_puts(u, PutSettings(vol_source="iv")), currency="usd")["columns"]
    (p,) = puts.values()
    assert p["liquidations"] == 0 and p["liquidation_equity_lost"] == 0.0
    assert p["liquidation_deficit"] == 0.0 and p["margin_calls"] == 0 and p["first_liquidation_ms"] is None
    bars = make_bars([FLAT, FLAT, (112.0, 112.0, 112.0, 112.0), (112.0, 112.0, 112.0, 112.0)])
    bust = simulate_perp(bars, targets([-10.0, None, None, None]), make_spec(),
                         Account(initial_capital=10_000.0, margin_mode="cross", leverage=20.0))
    doc = {"perp": {"usd": {"columns": _cols(bust, "usd")}}, "puts": {"usd": {"columns": puts}}}
    for key in ("liquidations", "liquidation_equity_lost", "liquidation_deficit"):
        assert [row["result"] for row in rank(doc, key)] == ["puts", "perp"], key


def test_a_ruined_column_ranks_after_every_surviving_one_whatever_the_metric():
    # a column stopped by a liquidation at its first bars pays no more fees, funding or leverage:
    # on those keys it would otherwise look best
    cols = {"ruined": {"fees": 1.0, "avg_leverage": 0.1, "calmar": 9.0, "total_return": -1.0, "ruined": True},
            "alive": {"fees": 50.0, "avg_leverage": 3.0, "calmar": 0.5, "total_return": 0.2, "ruined": False}}
    doc = {"r": {"usd": {"columns": cols}}}
    for key in ("fees", "avg_leverage", "calmar"):
        assert [row["column"] for row in rank(doc, key)] == ["alive", "ruined"], key


@pytest.mark.parametrize("target, ruined", [(-9.995, True), (-9.9, False)])
def test_losing_99_9_percent_or_more_is_ruin_whatever_the_minimum_order(target, ruined):
    # no minimum notional, one lot of 0.001: 5 USDT (-99.95 %) could still place an order, but an
    # account that lost 99.9 % or more of its capital is ruined; 100 USDT left (-99 %) is not
    c = _cols(_isolated_liquidation(min_notional=0.0, target=target))["0"]
    assert c["total_return"] == pytest.approx(target / 10.0, rel=1e-9)
    assert c["ruined"] is ruined
