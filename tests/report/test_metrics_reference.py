"""compute_metrics against values computed from the definitions (Python stdlib arithmetic, not
the code under test) and against empyrical's published reference values
(quantopian/empyrical, empyrical/tests/test_stats.py: annual_return, annual_volatility, calmar,
sortino, sharpe and max_drawdown of its 'weekly_returns', 'positive_returns' and
'negative_returns' series)."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from backtest.metrics import compute_metrics, returns_and_drawdown
from report_factories import CALL, LIQ, H, from_equity

DAY = 86_400_000
REL = 1e-12


def close(a: float, b: float, rel: float = REL) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-15)


def test_small_series_by_hand():
    # initial 100, daily bars, equity 110, 88, 121, 108.9
    res = from_equity([110.0, 88.0, 121.0, 108.9], bar_ms=DAY)
    m = compute_metrics(res)
    c = m["columns"]["c0"]
    r = [0.1, -0.2, 0.375, -0.1]
    ann = 365.0
    assert m["bars_per_year"] == ann and m["bar_ms"] == DAY and m["n_bars"] == 4
    assert close(c["total_return"], 0.089)
    assert close(c["cagr"], 1.089 ** (ann / 4) - 1)
    sd = statistics.stdev(r)
    mean = statistics.fmean(r)
    assert close(c["volatility"], sd * math.sqrt(ann))
    assert close(c["sharpe"], mean / sd * math.sqrt(ann))
    downside = math.sqrt((0.2 ** 2 + 0.1 ** 2) / 4) * math.sqrt(ann)
    assert close(c["sortino"], mean * ann / downside)
    assert close(c["max_drawdown"], 0.2)
    assert close(c["calmar"], (1.089 ** (ann / 4) - 1) / 0.2)
    # peak at bar 0 (110), trough bar 1, back above 110 at bar 2: 2 bars; then 121 -> 108.9 open
    assert c["max_drawdown_duration_bars"] == 2 and c["max_drawdown_recovered"] is True
    assert c["max_drawdown_duration_days"] == 2.0
    assert c["longest_drawdown_bars"] == 2 and c["longest_drawdown_days"] == 2.0
    assert close(c["ulcer_index"], math.sqrt((0.2 ** 2 + 0.1 ** 2) / 4))
    assert close(c["worst_bar_return"], -0.2)
    assert close(c["worst_day_return"], -0.2)
    assert close(c["final_equity"], 108.9) and close(c["pnl"], 8.9, 1e-9)
    assert c["ruined"] is False


def test_first_bar_loss_is_a_drawdown():
    # vectorbt alone would start the peak at the first close and miss this 10 % loss
    c = compute_metrics(from_equity([90.0, 95.0, 100.0, 101.0], bar_ms=DAY))["columns"]["c0"]
    assert close(c["max_drawdown"], 0.1)
    assert c["max_drawdown_duration_bars"] == 3  # start -> back at 100 at bar 2
    assert c["max_drawdown_recovered"] is True


def _equity_from_returns(r, initial=100.0):
    return initial * np.cumprod(1.0 + np.asarray(r, dtype=np.float64))


def test_empyrical_weekly_reference():
    weekly = np.array([0.0, 1.0, 10.0, -4.0, 2.0, 3.0, 2.0, 1.0, -10.0]) / 100
    res = from_equity(_equity_from_returns(weekly), bar_ms=7 * DAY)
    c = compute_metrics(res)["columns"]["c0"]
    # empyrical annualises weekly data with 52 periods a year; ours has 365/7
    k = (365 / 7) / 52
    assert close(c["volatility"], 0.38851569394870583 * math.sqrt(k), 1e-9)
    cagr = (1 + 0.24690830513998208) ** k - 1
    assert close(c["cagr"], cagr, 1e-9)
    assert close(c["sortino"], 1.1158901056866439 * math.sqrt(k), 1e-9)
    assert close(c["max_drawdown"], 0.1, 1e-9)  # empyrical calmar 2.4690830513998208 = annual / 0.1
    assert close(c["calmar"], cagr / (0.24690830513998208 / 2.4690830513998208), 1e-9)


@pytest.mark.parametrize("returns, sharpe_252", [
    ([1., 2., 1., 1., 1., 1., 1., 1., 1.], 52.915026221291804),
    ([0., -6., -7., -1., -9., -2., -6., -8., -5.], -24.406808633910085),
])
def test_empyrical_daily_sharpe_reference(returns, sharpe_252):
    res = from_equity(_equity_from_returns(np.array(returns) / 100), bar_ms=DAY)
    c = compute_metrics(res)["columns"]["c0"]
    assert close(c["sharpe"], sharpe_252 * math.sqrt(365 / 252), 1e-9)


def test_empyrical_negative_returns_drawdown():
    neg = np.array([0., -6., -7., -1., -9., -2., -6., -8., -5.]) / 100
    c = compute_metrics(from_equity(_equity_from_returns(neg), bar_ms=DAY))["columns"]["c0"]
    # empyrical: max drawdown of an all-negative series is its cumulative return (-0.36590...)
    assert close(c["max_drawdown"], 1 - np.prod(1 + neg), 1e-12)
    assert abs(c["max_drawdown"] - 0.36590730349873601) < 1e-12


def test_capital_added_is_a_flow_not_a_return():
    # 100 -> 90 (loss), top-up 50 during bar 1 and equity 150, then +10 %
    res = from_equity([90.0, 150.0, 165.0], capital_added=[0.0, 50.0, 50.0], bar_ms=DAY)
    c = compute_metrics(res)["columns"]["c0"]
    r = [-0.1, 150.0 / (90.0 + 50.0) - 1, 0.1]
    assert close(c["total_return"], (1 + r[0]) * (1 + r[1]) * (1 + r[2]) - 1)
    assert close(c["capital_added"], 50.0)
    assert close(c["pnl"], 165.0 - 100.0 - 50.0)
    # equity that rises only by the top-up earned nothing
    flat = compute_metrics(from_equity([100.0, 150.0, 150.0], capital_added=[0, 50, 50], bar_ms=DAY))
    assert flat["columns"]["c0"]["total_return"] == 0.0
    assert flat["columns"]["c0"]["max_drawdown"] == 0.0


def test_equity_at_zero_stops_returns_and_keeps_full_drawdown():
    res = from_equity([50.0, -20.0, 0.0, 0.0, 0.0], bar_ms=H)
    rd = returns_and_drawdown(res)
    assert rd["returns"][:, 0].tolist() == [-0.5, -1.0, 0.0, 0.0, 0.0]
    assert rd["drawdown"][:, 0].tolist() == [-0.5, -1.0, -1.0, -1.0, -1.0]
    c = compute_metrics(res)["columns"]["c0"]
    assert c["max_drawdown"] == 1.0 and c["ruined"] is True and c["total_return"] == -1.0
    assert c["cagr"] == -1.0 and c["worst_bar_return"] == -1.0
    assert c["max_drawdown_recovered"] is False and c["max_drawdown_duration_bars"] == 5
    assert c["final_equity"] == 0.0


def test_usd_basis_converts_at_each_bar_price():
    # 1 BTC held flat in BTC while BTC/USD goes 100 -> 150 -> 200; 0.5 BTC added at bar 1
    price = np.array([100.0, 150.0, 200.0])
    res = from_equity([1.0, 1.5, 1.5], initial=[1.0], price_usd=price, currency="BTC",
                      capital_added=[0.0, 0.5, 0.5], bar_ms=DAY)
    s = compute_metrics(res, currency="settle")
    u = compute_metrics(res, currency="usd")
    assert s["currency"] == "BTC" and u["currency"] == "USD" and u["basis"] == "usd"
    cs, cu = s["columns"]["c0"], u["columns"]["c0"]
    assert cs["total_return"] == 0.0
    # USD: start 100 (1 BTC at bar 0's price), bar 1: 225 / (100 + 75) - 1, bar 2: 300 / 225 - 1
    expected = (1.0) * (225.0 / 175.0) * (300.0 / 225.0) - 1
    assert close(cu["total_return"], expected)
    assert close(cu["capital_added"], 75.0) and close(cu["initial_capital"], 100.0)
    assert close(cu["final_equity"], 300.0) and close(cu["pnl"], 300.0 - 100.0 - 75.0)


def test_carry_costs_exposure_and_leverage():
    n = 4
    res = from_equity(
        np.full(n, 100.0), bar_ms=DAY, price_usd=[1.0, 2.0, 2.0, 3.0], position=[0, 1, -1, 0],
        extra={"cum_funding": np.array([[1.0], [1.0], [-2.0], [-1.0]]),
               "cum_fees": np.array([[0.5], [0.5], [1.5], [1.5]]),
               "leverage": np.array([[0.0], [2.0], [4.0], [0.0]])})
    c = compute_metrics(res)["columns"]["c0"]
    assert c["funding_received"] == 2.0 and c["funding_paid"] == 3.0 and c["funding_net"] == -1.0
    assert c["fees"] == 1.5
    assert c["exposure_time"] == 0.5
    assert c["avg_leverage"] == 1.5 and c["max_leverage"] == 4.0
    u = compute_metrics(res, currency="usd")["columns"]["c0"]
    # per-bar flows [1, 0, -3, 1] at USD prices [1, 2, 2, 3]
    assert u["funding_received"] == 1.0 * 1 + 1.0 * 3 and u["funding_paid"] == 3.0 * 2
    assert u["fees"] == 0.5 * 1 + 1.0 * 2


def test_records_liquidations_margin_calls_and_missing_kinds():
    # (equity_start, equity_before, equity_after, deficit): the second record's balance was
    # already below zero at the start (3 < 4 left after the insurance fund's 2): it costs 0
    liq = np.array([(2, 0, 101.0, 100.0, 1.0, 0.5, 90.0, 40.0, 0.0, 0.0),
                    (3, 0, 99.0, 98.0, 1.0, 0.0, 3.0, -2.0, 4.0, 2.0)], dtype=LIQ)
    calls = np.array([(1, 0, 99.0, 0.85, 0, 0.0)], dtype=CALL)
    res = from_equity([100.0, 90.0, 5.0, 4.0], bar_ms=H, records={"liquidations": liq, "margin_calls": calls})
    c = compute_metrics(res)["columns"]["c0"]
    assert c["liquidations"] == 2 and c["margin_calls"] == 1
    assert c["first_liquidation_ms"] == int(res.index[2].value // 10**6)
    assert c["liquidation_equity_lost"] == 90.0 + 0.0  # max(0, start - after) per record
    assert c["liquidation_deficit"] == 2.0
    assert c["event_counts"] == {"liquidations": 2, "margin_calls": 1}
    assert c["turnover"] is None  # no fills recorded
    bare = compute_metrics(from_equity([100.0, 90.0], bar_ms=H))["columns"]["c0"]
    assert bare["liquidations"] is None and bare["margin_calls"] is None
    assert bare["liquidation_equity_lost"] is None and bare["event_counts"] == {}
    assert bare["liquidation_deficit"] is None and bare["rejected_orders"] is None
    assert "premium_spent" not in bare and "avg_delta" not in bare


def test_put_premium_and_greeks():
    res = from_equity(
        [1.0, 0.99, 0.98], initial=[1.0], currency="BTC", bar_ms=DAY, position=[0, 1, 1],
        extra={"premium_paid": np.array([[0.0], [0.01], [0.02]]),
               "delta": np.array([[-9.0], [-0.3], [-0.5]]), "gamma": np.array([[1.0], [2e-5], [4e-5]]),
               "vega": np.array([[0.0], [10.0], [12.0]]), "theta": np.array([[0.0], [-3.0], [-5.0]])})
    c = compute_metrics(res, currency="settle")["columns"]["c0"]
    assert c["premium_spent"] == 0.02
    assert close(c["avg_delta"], -0.4) and close(c["avg_gamma"], 3e-5)
    assert close(c["avg_vega"], 11.0) and close(c["avg_theta"], -4.0)


def test_worst_day_groups_bars_by_utc_day():
    # 48 hourly bars from midnight: day 1 ends at 110 (+10 %), day 2 ends at 99 (-10 %), with a
    # -20 % hour inside day 2 that recovers
    eq = np.full(48, 110.0)
    eq[:24] = np.linspace(101, 110, 24)
    eq[30] = 88.0
    eq[-1] = 99.0
    c = compute_metrics(from_equity(eq, bar_ms=H, start="2022-03-01"))["columns"]["c0"]
    assert close(c["worst_day_return"], 99.0 / 110.0 - 1)
    assert close(c["worst_bar_return"], 88.0 / 110.0 - 1)
