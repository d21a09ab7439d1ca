"""The per-column implementation of :func:`backtest.metrics.compute_metrics` that the compiled
one (:mod:`backtest.metrics.nb`) replaced, kept as the reference the tests and the benchmark
compare it with: vectorbt's returns accessor for the return statistics, numpy per column for
the rest, every record array filtered once per column (O(columns^2)). Slow; not for callers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from backtest.engine.enums import FillStatus
from backtest.metrics.compute import (
    BASES,
    GREEKS,
    _f,
    _per_bar_flow,
    basis_arrays,
    column_labels,
    is_ruined,
    ruin_inputs,
)
from backtest.metrics.returns import (
    MS_PER_DAY,
    YEAR_DAYS,
    MetricsInputError,
    bars_per_year,
    drawdown,
    drawdown_spells_1d,
    flow_returns,
    growth_index,
    index_ms,
    infer_bar_ms,
    worst_day_return_1d,
)
from backtest.result import NO_MARGIN_KINDS, SimResult


def _is_flat(x: np.ndarray) -> bool:
    """Constant up to rounding: the Sharpe ratio of such a series is rounding noise, not a number."""
    return bool(np.ptp(x) <= 1e-12 * max(float(np.max(np.abs(x))), 1e-300))


def _vbt_stats(r: np.ndarray, index: pd.DatetimeIndex, bar_ms: int) -> dict[str, np.ndarray]:
    """Return statistics from vectorbt's returns accessor (365-day year, bar-size frequency)."""
    import vectorbt as vbt  # noqa: F401  (registers the .vbt accessor; slow import, so lazy)

    freq = pd.Timedelta(milliseconds=bar_ms)
    df = pd.DataFrame(r, index=index, columns=range(r.shape[1]))
    acc = df.vbt.returns(freq=freq, year_freq=f"{YEAR_DAYS} days")
    # vectorbt's drawdown ignores a loss on the first bar (its peak starts at the first close);
    # a zero return prepended one bar earlier makes the initial capital the first peak.
    start = pd.DatetimeIndex([index[0] - freq]).append(pd.DatetimeIndex(index))
    padded = pd.DataFrame(np.vstack([np.zeros((1, r.shape[1])), r]), index=start, columns=df.columns)
    acc_dd = padded.vbt.returns(freq=freq, year_freq=f"{YEAR_DAYS} days")
    return {
        "ann_factor": float(acc.ann_factor),
        "total_return": acc.total().to_numpy(),
        "cagr": acc.annualized().to_numpy(),
        "volatility": acc.annualized_volatility().to_numpy(),
        "sharpe": acc.sharpe_ratio().to_numpy(),
        "sortino": acc.sortino_ratio().to_numpy(),
        "max_drawdown": -acc_dd.max_drawdown().to_numpy(),
    }


def _money_total(result: SimResult, name: str, to_basis: np.ndarray) -> np.ndarray | None:
    if name not in result.series:
        return None
    return np.sum(_per_bar_flow(result.series[name]) * to_basis[:, None], axis=0)


def compute_metrics_reference(result: SimResult, *, currency: str = "settle", bar_ms: int | None = None) -> dict:
    """Performance metrics of every column of a simulation result.

    Parameters
    ----------
    result : the simulation output; series and record kinds it lacks are skipped (their
        metrics are null or absent, never an error).
    currency : ``'settle'`` to measure equity in the settlement currency, ``'usd'`` to measure
        ``equity_usd`` (money values converted at each bar's ``price_usd``).
    bar_ms : bar size in ms; default ``result.meta['bar_ms']``, else the index's smallest step.

    Returns
    -------
    dict, JSON-able: block keys (``kind``, ``currency``, ``basis``, ``bar_ms``, ``bars_per_year``,
    ...) and ``columns``: column label -> metric key -> raw number. Keys and units are in
    :data:`backtest.metrics.METRIC_DOCS`.
    """
    if currency not in BASES:
        raise MetricsInputError(f"currency={currency!r} is not one of {BASES}")
    n, m = result.n_bars, result.n_cols
    if n == 0 or m == 0:
        raise MetricsInputError(f"SimResult({result.kind}) has {n} bars and {m} columns; nothing to measure")
    labels = column_labels(result)
    bar_ms = infer_bar_ms(result.index, result.meta) if bar_ms is None else int(bar_ms)
    ann = bars_per_year(bar_ms)
    open_ms = index_ms(result.index)

    a = basis_arrays(result, currency)
    to_basis = a["to_basis"]
    r = flow_returns(a["equity"], a["added"], a["initial"])
    g = growth_index(r)
    dd = drawdown(g)
    st = _vbt_stats(r, result.index, bar_ms)
    if not np.isclose(st["ann_factor"], ann, rtol=1e-12):
        raise RuntimeError(f"vectorbt annualisation factor {st['ann_factor']} != {ann}")

    pos = np.nan_to_num(np.asarray(result.series["position"], dtype=np.float64), nan=0.0)
    holding = pos != 0
    lev = np.asarray(result.series["leverage"], dtype=np.float64)
    fund = _per_bar_flow(result.series["cum_funding"]) * to_basis[:, None]
    fees = _money_total(result, "cum_fees", to_basis)
    added_total = np.sum(a["added"], axis=0)
    premium = _money_total(result, "premium_paid", to_basis)
    recs = result.records
    final_usd, min_equity = ruin_inputs(result)

    cols: dict[str, dict] = {}
    for j, label in enumerate(labels):
        spells = drawdown_spells_1d(g[:, j])
        mdd = float(st["max_drawdown"][j]) + 0.0  # + 0.0 turns -0.0 into 0.0
        cagr = float(st["cagr"][j])
        c: dict[str, Any] = {
            "initial_capital": _f(a["initial"][j]),
            "capital_added": _f(added_total[j]),
            "final_equity": _f(a["equity"][-1, j]),
            "pnl": _f(a["equity"][-1, j] - a["initial"][j] - added_total[j]),
            "total_return": _f(st["total_return"][j]),
            "cagr": _f(cagr),
            "volatility": _f(st["volatility"][j]),
            "sharpe": None if _is_flat(r[:, j]) else _f(st["sharpe"][j]),
            "sortino": _f(st["sortino"][j]),
            "calmar": _f(cagr / mdd) if mdd > 0 else None,
            "max_drawdown": _f(mdd),
            "max_drawdown_duration_bars": spells["max_dd_bars"],
            "max_drawdown_duration_days": spells["max_dd_bars"] * bar_ms / MS_PER_DAY,
            "max_drawdown_recovered": spells["max_dd_recovered"],
            "longest_drawdown_bars": spells["longest_bars"],
            "longest_drawdown_days": spells["longest_bars"] * bar_ms / MS_PER_DAY,
            "ulcer_index": _f(np.sqrt(np.mean(dd[:, j] ** 2))),
            "worst_bar_return": _f(np.min(r[:, j])),
            "worst_day_return": _f(worst_day_return_1d(g[:, j], open_ms)),
            "ruined": is_ruined(g[:, j], final_usd[j], min_equity[j]),
            "exposure_time": _f(np.mean(holding[:, j])),
            "avg_leverage": _f(np.nanmean(np.nan_to_num(lev[:, j], nan=0.0))),
            "max_leverage": _f(np.nanmax(np.nan_to_num(lev[:, j], nan=0.0))),
            "funding_paid": _f(np.sum(np.maximum(-fund[:, j], 0.0))),
            "funding_received": _f(np.sum(np.maximum(fund[:, j], 0.0))),
            "funding_net": _f(np.sum(fund[:, j])),
            "fees": _f(fees[j]) if fees is not None else None,  # cum_fees is a required series
        }
        c.update(_record_metrics(recs, j, to_basis, open_ms, result.kind in NO_MARGIN_KINDS))
        if premium is not None:
            c["premium_spent"] = _f(premium[j])
        for greek in GREEKS:
            if greek in result.series:
                vals = np.asarray(result.series[greek][:, j], dtype=np.float64)[holding[:, j]]
                vals = vals[np.isfinite(vals)]
                c[f"avg_{greek}"] = _f(np.mean(vals)) if len(vals) else None
        cols[label] = c

    return {
        "kind": result.kind,
        "currency": a["currency"],
        "basis": currency,
        "bar_ms": int(bar_ms),
        "bars_per_year": ann,
        "year_days": YEAR_DAYS,
        "n_bars": int(n),
        "start_ms": int(open_ms[0]),
        "end_ms": int(open_ms[-1] + bar_ms),
        "columns": cols,
    }


def _executed(fills: np.ndarray) -> np.ndarray:
    """Mask of the fill records that traded: not rejected, non-zero size (a clip to nothing,
    status ``clipped`` with size 0, traded nothing). Records without a status all traded."""
    names = fills.dtype.names or ()
    done = fills["size"] != 0 if "size" in names else np.ones(len(fills), dtype=bool)
    if "status" in names:
        done &= fills["status"] != FillStatus.REJECTED
    return done


def _record_metrics(recs: Mapping[str, np.ndarray], j: int, to_basis: np.ndarray,
                    open_ms: np.ndarray, no_margin: bool) -> dict[str, Any]:
    """Counts and sums over one column's records; null for a record kind the result lacks, except
    liquidations and margin calls of a kind that posts no margin (``no_margin``): 0."""
    mine = {k: v[v["col"] == j] for k, v in recs.items()}
    out: dict[str, Any] = {}
    counts = {k: int(len(v)) for k, v in mine.items()}
    fills = mine.get("fills")
    if fills is not None:
        done = _executed(fills)
        counts["fills"] = int(np.sum(done))
        names = fills.dtype.names or ()
        # a rejected order's record carries the requested size: it traded nothing
        out["turnover"] = (_f(np.sum(np.abs(fills["notional"][done]) * to_basis[fills["bar"][done]]))
                           if "notional" in names else None)
        out["rejected_orders"] = (int(np.sum(fills["status"] == FillStatus.REJECTED))
                                  if "status" in names else 0)
    else:
        out.update(turnover=None, rejected_orders=None)
    liq = mine.get("liquidations")
    if liq is None and no_margin:
        # a long option or a product holder posts no margin: never called, never liquidated
        out.update(liquidations=0, first_liquidation_ms=None, liquidation_equity_lost=0.0,
                   liquidation_deficit=0.0)
    elif liq is None:
        out.update(liquidations=None, first_liquidation_ms=None, liquidation_equity_lost=None,
                   liquidation_deficit=None)
    else:
        out["liquidations"] = int(len(liq))
        out["first_liquidation_ms"] = int(open_ms[np.min(liq["bar"])]) if len(liq) else None
        names = liq.dtype.names or ()
        if "equity_start" in names and "equity_after" in names:
            # what each liquidation cost the account: its equity before the adverse move that
            # triggered it (the margin that move and the liquidation took included) less what is
            # left; never negative (a balance already below zero at the start was covered by the
            # insurance fund: that is the deficit, reported apart)
            lost = np.maximum(liq["equity_start"] - liq["equity_after"], 0.0) * to_basis[liq["bar"]]
            out["liquidation_equity_lost"] = _f(np.sum(lost))
        else:
            out["liquidation_equity_lost"] = None
        out["liquidation_deficit"] = (_f(np.sum(liq["deficit"] * to_basis[liq["bar"]]))
                                      if "deficit" in names else None)
    calls = mine.get("margin_calls")
    out["margin_calls"] = (0 if no_margin else None) if calls is None else int(len(calls))
    out["event_counts"] = counts
    return out
