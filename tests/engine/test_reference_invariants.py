"""Accounting invariants of the perpetual engine on random inputs (every implementation).

The mark-to-market PnL is recomputed here from the records and the position series alone
(summation by parts over the bar's trades), so the identity below checks the simulator's
wallet, isolated-margin and liquidation bookkeeping against an independent calculation:

    equity[t] - equity[t-1] = PnL_mtm + funding - trading fees - clearance fees + deficit
                              + capital added
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backtest.engine.enums import FillStatus
from backtest.engine.settings import Account, Policy

from .scenario_kit import make_bars, make_spec, random_case, targets

HYP = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _mtm_pnl(c_prev, c_end, mark_prev, mark_close, trades, cs, inverse):
    """PnL of a position path valued at the mark, given the trades (signed size, price) in the
    bar: sum_i C_i * (PnL per contract from p_i to p_{i+1}), rearranged so the order of the
    trades does not matter."""
    if inverse:
        return cs * (c_prev / mark_prev - c_end / mark_close + sum(dc / p for dc, p in trades))
    return cs * (c_end * mark_close - c_prev * mark_prev - sum(dc * p for dc, p in trades))


def check_accounting(bars, spec, account, series, records):
    n, m = series["equity"].shape
    ic = np.broadcast_to(np.asarray(account.initial_capital, dtype=float), (m,))
    fills, fund, liqs, calls = (records[k] for k in ("fills", "funding", "liquidations", "margin_calls"))
    for name, r in records.items():
        key = np.lexsort((r["bar"], r["col"])) if len(r) else np.arange(0)
        assert np.array_equal(key, np.arange(len(r))), f"{name} not sorted by (col, bar)"
    for j in range(m):
        for t in range(n):
            e_prev = series["equity"][t - 1, j] if t else ic[j]
            c_prev = series["position"][t - 1, j] if t else 0.0
            m_prev = bars.mark_close[t - 1] if t else bars.mark_open[0]
            f = fills[(fills["col"] == j) & (fills["bar"] == t) & (fills["status"] != FillStatus.REJECTED)]
            fu = fund[(fund["col"] == j) & (fund["bar"] == t)]
            lq = liqs[(liqs["col"] == j) & (liqs["bar"] == t)]
            trades = [(float(x["size"]), float(x["price"])) for x in f]
            trades += [(-float(x["size"]), float(x["price"])) for x in lq]
            c_end = series["position"][t, j]
            traded = abs(c_prev) + sum(abs(d) for d, _ in trades)
            assert c_end == pytest.approx(c_prev + sum(d for d, _ in trades), abs=1e-9 + 1e-12 * traded)
            pnl = _mtm_pnl(c_prev, c_end, m_prev, bars.mark_close[t], trades, spec.contract_size, spec.inverse)
            added = series["capital_added"][t, j] - (series["capital_added"][t - 1, j] if t else 0.0)
            expected = (pnl + fu["amount"].sum() - f["fee"].sum() - lq["clearance_fee"].sum()
                        + lq["deficit"].sum() + added)
            scale = ic[j] + abs(series["notional"][t, j]) + abs(c_prev) * spec.contract_size * (
                1.0 / m_prev if spec.inverse else m_prev)
            assert series["equity"][t, j] - e_prev == pytest.approx(expected, abs=1e-9 * scale), (j, t)
            # the cumulative series agree with the records
            assert series["cum_fees"][t, j] - (series["cum_fees"][t - 1, j] if t else 0.0) == pytest.approx(
                f["fee"].sum() + lq["clearance_fee"].sum(), abs=1e-12 * scale)
            assert series["cum_funding"][t, j] - (series["cum_funding"][t - 1, j] if t else 0.0) == pytest.approx(
                fu["amount"].sum(), abs=1e-12 * scale)
        # a liquidation or a margin call needs a position; the deficit is never negative
        assert np.all(liqs["deficit"] >= 0.0) and np.all(liqs["clearance_fee"] >= 0.0)
        assert np.all(calls["amount"] >= 0.0)


@HYP
@given(seed=st.integers(0, 2**32 - 1))
def test_accounting_identity_on_random_inputs(simulate, seed):
    bars, tgt, spec, account, policy = random_case(seed)
    series, records = simulate(bars, tgt, spec, account, policy)
    for name, arr in series.items():
        assert arr.shape == tgt.shape and np.all(np.isfinite(arr)), name
    assert np.all(series["leverage"] >= 0.0) and np.all(series["margin_ratio"] >= 0.0)
    assert np.all(series["liq_price"] >= 0.0)
    for name, r in records.items():
        for field in r.dtype.names:
            if (name, field) == ("margin_calls", "margin_ratio"):
                continue  # inf when the margin balance at the call price is <= 0 (documented)
            assert np.all(np.isfinite(r[field])), (name, field)
    check_accounting(bars, spec, account, series, records)


@HYP
@given(seed=st.integers(0, 2**32 - 1), exposure=st.floats(0.5, 12.0), leverage=st.sampled_from([2.0, 5.0, 10.0, 25.0, 50.0]),
       inverse=st.booleans(), response=st.sampled_from(["none", "top_up", "reduce"]))
def test_isolated_liquidation_loses_at_most_the_isolated_margin(simulate, seed, exposure, leverage, inverse, response):
    """One short opened at bar 1 and held (margin calls answered or not): whatever the path,
    after a liquidation the account keeps its free balance, so
    equity >= initial capital - isolated margin - trading fees."""
    rng = np.random.default_rng(seed)
    n = 24
    p0 = 30_000.0 if inverse else 100.0
    close = p0 * np.exp(np.cumsum(rng.normal(0.01, 0.04, n)))
    open_ = np.concatenate([[p0], close[:-1]])
    high = np.maximum(open_, close) * 1.01
    low = np.minimum(open_, close) * 0.99
    mark_high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.03, n)))
    candles = np.column_stack([open_, high, low, close, open_, mark_high, low, close])
    funding = [(int(t), float(rate)) for t, rate in zip(
        make_bars(candles).timestamp[::3], rng.normal(-2e-4, 1e-3, n // 3 + 1))]
    bars = make_bars(candles, funding=funding)
    spec = make_spec(inverse=inverse, lot=1.0 if inverse else 0.001, taker=0.0005)
    ic = 1.0 if inverse else 10_000.0
    account = Account(initial_capital=ic, margin_mode="isolated", leverage=leverage, margin_call_response=response,
                      margin_call_target=0.5, reserve=0.05 * ic)
    series, records = simulate(bars, targets([-exposure] + [None] * (n - 1)), spec, account, Policy())
    fills = records["fills"]
    if len(records["liquidations"]) == 0 or fills[0]["status"] == FillStatus.REJECTED:
        return
    margin = fills[0]["notional"] / leverage
    liq = records["liquidations"][0]
    fees = fills["fee"][fills["bar"] <= liq["bar"]].sum()
    assert liq["equity_after"] >= ic - margin - fees - 1e-9 * ic
    assert np.all(series["equity"][liq["bar"]:, 0] >= ic - margin - fees - 1e-9 * ic)
