"""``compute_metrics``: performance numbers of a :class:`~backtest.result.SimResult`, per column.

Raw numbers in fixed units (see :mod:`backtest.metrics.docs`), JSON-able: Python floats, ints,
bools, strings and ``None`` (for a value that is undefined, e.g. a Sharpe ratio with zero
volatility, or a record type the result does not have). Never formatted here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from backtest.engine.enums import FillStatus
from backtest.metrics import nb
from backtest.metrics.returns import (
    MS_PER_DAY,
    YEAR_DAYS,
    MetricsInputError,
    bars_per_year,
    drawdown,
    flow_returns,
    growth_index,
    index_ms,
    infer_bar_ms,
)
from backtest.result import NO_MARGIN_KINDS, SimResult

BASES = ("settle", "usd")
GREEKS = ("delta", "gamma", "vega", "theta")


def _f(x: Any) -> float | None:
    """A finite float, or None for NaN/inf (JSON has neither)."""
    x = float(x)
    return x if np.isfinite(x) else None


def column_labels(result: SimResult) -> list[str]:
    """Column labels as strings (JSON keys); raises if two labels collide.

    The readable labels of ``backtest run`` (``slow_days=50|policy=const(2)``), whether the
    result comes from the runner or from Python: :func:`backtest.runner.labels.result_labels`."""
    from backtest.runner.labels import result_labels  # the one labelling rule (runner and Python API)

    labels = result_labels(result)
    if len(set(labels)) != len(labels):
        dup = sorted({x for x in labels if labels.count(x) > 1})
        raise MetricsInputError(
            f"column labels {dup} are not unique as strings; give every simulated column a distinct label")
    return labels


def _per_bar_flow(cum: np.ndarray) -> np.ndarray:
    """Per-bar increments of a cumulative series that starts from 0 before the first bar."""
    return np.diff(np.nan_to_num(cum, nan=0.0), axis=0, prepend=0.0)


def basis_equity(result: SimResult, basis: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(equity (n_bars, n_cols), ``to_basis`` (n_bars,), currency) of one basis, not yet checked
    for finiteness: ``to_basis`` turns a settlement-currency amount booked at bar t into the basis
    currency."""
    if basis not in BASES:
        raise MetricsInputError(f"currency={basis!r} is not one of {BASES}")
    n = result.n_bars
    if basis == "settle":
        return np.asarray(result.series["equity"], dtype=np.float64), np.ones(n), result.currency
    to_basis = np.asarray(result.price_usd, dtype=np.float64)
    if to_basis.shape != (n,) or not np.all(np.isfinite(to_basis)):
        raise MetricsInputError(
            f"SimResult({result.kind}).price_usd must be {n} finite USD prices (one per bar), "
            f"got shape {to_basis.shape}")
    return np.asarray(result.series["equity_usd"], dtype=np.float64), to_basis, "USD"


def _not_finite(result: SimResult, basis: str, bar: int, col: int) -> MetricsInputError:
    name = "equity" if basis == "settle" else "equity_usd"
    return MetricsInputError(
        f"SimResult({result.kind}) series {name!r} is not finite at bar {int(bar)} "
        f"({result.index[bar]}) column {result.columns[col]!r}; the simulation must value equity at every bar")


def basis_arrays(result: SimResult, basis: str) -> dict[str, Any]:
    """Equity, flows and the money conversion for one basis.

    Returns
    -------
    dict with ``equity`` (n_bars, n_cols), ``added`` (per-bar capital added, n_bars x n_cols),
    ``initial`` (n_cols,), ``to_basis`` (n_bars,) factor that turns a settlement-currency amount
    booked at bar t into the basis currency, and ``currency``.
    """
    equity, to_basis, currency = basis_equity(result, basis)
    bad = ~np.isfinite(equity)
    if bad.any():
        bar, col = np.argwhere(bad)[0]
        raise _not_finite(result, basis, bar, col)
    initial = np.asarray(result.initial_capital, dtype=np.float64) * to_basis[0]
    added = _per_bar_flow(result.series["capital_added"]) * to_basis[:, None]
    return {"equity": equity, "added": added, "initial": initial, "to_basis": to_basis, "currency": currency}


def returns_and_drawdown(result: SimResult, basis: str = "settle") -> dict[str, np.ndarray]:
    """Per-bar returns, growth index and drawdown (each (n_bars, n_cols)) for one basis."""
    a = basis_arrays(result, basis)
    r = flow_returns(a["equity"], a["added"], a["initial"])
    g = growth_index(r)
    return {"returns": r, "growth": g, "drawdown": drawdown(g)}


# An account that lost this share of its capital (growth index at or below 1 - RUIN_LOSS) is
# ruined even if what is left could still place the smallest order: -99.95 % is not a survivor.
RUIN_LOSS = 0.999
# relative slack of the smallest-order rule, so that float rounding of an equity at exactly the
# threshold (10,000 x 0.0005 = 4.9999999999994) does not flip the verdict
RUIN_RTOL = 1e-9


def ruined(min_growth, final_usd, min_equity_usd):
    """The ``ruined`` rule (one place), elementwise over columns: the lowest growth index
    reached ``1 - RUIN_LOSS`` (99.9 % lost, equity 0 included), or the final USD equity cannot
    hold the smallest order the market allows at the column's leverage (``min_equity_usd``).
    Scalars or arrays (n_cols,); returns bool of the broadcast shape."""
    min_equity_usd = np.asarray(min_equity_usd)
    return (np.asarray(min_growth) <= 1.0 - RUIN_LOSS + RUIN_RTOL) \
        | ((np.asarray(final_usd) <= min_equity_usd * (1.0 + RUIN_RTOL)) & (min_equity_usd > 0.0))


def is_ruined(growth: np.ndarray, final_usd: float, min_equity_usd: float) -> bool:
    """:func:`ruined` of one column from its growth index series (n_bars,)."""
    return bool(ruined(np.min(growth), final_usd, min_equity_usd))


def ruin_inputs(result: SimResult) -> tuple[np.ndarray, np.ndarray]:
    """(final equity in USD, smallest USD equity that can still trade) per column.

    The second is ``meta['min_equity_usd']`` (the perp engine states it: the smallest order the
    market allows, in USD at the last bar's price, over the column's leverage setting), else 0:
    only a total loss ruins a result that does not state a tradable minimum.
    """
    final = np.asarray(result.series["equity_usd"], dtype=np.float64)[-1]
    raw = result.meta.get("min_equity_usd")
    if raw is None:
        return final, np.zeros(result.n_cols)
    mins = np.broadcast_to(np.asarray(raw, dtype=np.float64), (result.n_cols,))
    return final, np.nan_to_num(mins, nan=0.0)




# Bytes of series copied per block of columns in the compiled pass: a block's series are made
# column-contiguous (a copy when the result stores them bar by bar; none when it stores them
# column by column, as the perp engine does), so the copy's memory stays bounded whatever the
# number of columns.
BLOCK_BYTES = 64 * 2**20
SERIES_READ = ("capital_added", "cum_funding", "cum_fees", "position", "leverage")


class _Blocks:
    """Column blocks of the compiled pass: each block's series as C-contiguous rows (n_block,
    n_bars), at most ``BLOCK_BYTES`` of them copied at a time."""

    def __init__(self, n_bars: int, n_cols: int, n_series: int) -> None:
        self.n_bars, self.n_cols = n_bars, n_cols
        self.width = max(1, min(n_cols, BLOCK_BYTES // (8 * n_bars * n_series)))
        self.bufs: list[np.ndarray | None] = [None] * n_series

    def __iter__(self):
        for j0 in range(0, self.n_cols, self.width):
            yield j0, min(self.n_cols, j0 + self.width)

    def rows(self, i: int, a: np.ndarray, j0: int, j1: int) -> np.ndarray:
        """Columns ``j0:j1`` of the pass's ``i``-th series ``a`` (float64 (n_bars, n_cols)) as rows:
        a view when the series is stored column by column, else a copy into a buffer reused from
        block to block (fresh pages for every block cost more than the copy)."""
        block = a[:, j0:j1].T
        if block.flags.c_contiguous:
            return block
        buf = self.bufs[i]
        if buf is None:
            buf = self.bufs[i] = np.empty((self.width, self.n_bars))
        out = buf[: j1 - j0]
        nb.gather_rows_nb(a, j0, out)
        return out


def _day_end(open_ms: np.ndarray) -> np.ndarray:
    """bool (n_bars,): the bar is the last of its UTC calendar day (by its open time)."""
    day = open_ms // MS_PER_DAY
    return np.r_[day[1:] != day[:-1], True]


def underlying_returns(result: SimResult) -> np.ndarray | None:
    """The underlying's bar returns ``u_t / u_{t-1} - 1`` (float64 (n_bars,); bar 0, whose
    previous price the series does not hold, is 0 and never read), or None when the result has no
    ``underlying`` series (no relative metrics then).

    Raises
    ------
    MetricsInputError
        The series has the wrong shape, or a price that is not finite and > 0 (named with its bar).
    """
    u = getattr(result, "underlying", None)
    if u is None:
        return None
    u = np.asarray(u, dtype=np.float64)
    n = result.n_bars
    if u.shape != (n,):
        raise MetricsInputError(f"SimResult({result.kind}).underlying has shape {u.shape}; give one price per "
                                f"bar ({n},) or None")
    bad = ~np.isfinite(u) | (u <= 0)
    if bad.any():
        t = int(np.argmax(bad))
        raise MetricsInputError(
            f"SimResult({result.kind}).underlying is {float(u[t])!r} at bar {t} ({result.index[t]}); the underlying's "
            "price must be finite and > 0 at every bar (or the result's underlying None: no relative metrics)")
    out = np.zeros(n)
    out[1:] = u[1:] / u[:-1] - 1.0
    return out


def underlying_return(result: SimResult) -> float | None:
    """The underlying's total return over the result's window, ``u_last / u_first - 1`` (its
    first close to its last: spot buy-and-hold without costs); None without an underlying."""
    if underlying_returns(result) is None:  # also checks the series
        return None
    u = np.asarray(result.underlying, dtype=np.float64)
    return float(u[-1] / u[0] - 1.0)


def series_metrics(result: SimResult, equity: np.ndarray, to_basis: np.ndarray, initial: np.ndarray,
                   open_ms: np.ndarray, ann: float, u_ret: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The compiled pass (:func:`backtest.metrics.nb.column_metrics_nb`) over every column, and
    the relative metrics (:func:`backtest.metrics.nb.relative_metrics_nb`) on the same blocks
    when the underlying's bar returns ``u_ret`` (n_bars,) are given.

    Returns
    -------
    (:data:`backtest.metrics.nb.column_metrics_dt` (n_cols,), beta (n_cols,), correlation
    (n_cols,)); beta and correlation are NaN without ``u_ret``.
    """
    n, m = result.n_bars, result.n_cols
    ser = result.series
    has_premium = "premium_paid" in ser
    arrays = [np.asarray(a, dtype=np.float64) for a in
              [equity] + [ser[k] for k in SERIES_READ] + ([ser["premium_paid"]] if has_premium else [])]
    clock = nb.Clock(np.ascontiguousarray(to_basis, dtype=np.float64), _day_end(open_ms), float(ann), has_premium)
    out = np.empty(m, dtype=nb.column_metrics_dt)
    beta, corr = np.full(m, np.nan), np.full(m, np.nan)
    blocks = _Blocks(n, m, len(arrays))
    for j0, j1 in blocks:
        eq, cap, fund, fees, pos, lev = (blocks.rows(i, a, j0, j1) for i, a in enumerate(arrays[:6]))
        prem = blocks.rows(6, arrays[6], j0, j1) if has_premium else np.empty((j1 - j0, 0))
        init = np.ascontiguousarray(initial[j0:j1])
        nb.column_metrics_nb(eq, cap, fund, fees, prem, pos, lev, clock, init, out[j0:j1])
        if u_ret is not None:
            nb.relative_metrics_nb(eq, cap, clock.to_basis, init, u_ret, beta[j0:j1], corr[j0:j1])
    return out, beta, corr


def held_means(result: SimResult, name: str) -> np.ndarray:
    """float64 (n_cols,): mean of the finite values of series ``name`` over the bars holding a
    position (NaN: none)."""
    n, m = result.n_bars, result.n_cols
    out = np.empty(m)
    values, pos = (np.asarray(result.series[k], dtype=np.float64) for k in (name, "position"))
    blocks = _Blocks(n, m, 2)
    for j0, j1 in blocks:
        nb.held_mean_nb(blocks.rows(0, values, j0, j1), blocks.rows(1, pos, j0, j1), out[j0:j1])
    return out


def _record_field(rec: np.ndarray, name: str, dtype) -> np.ndarray:
    """One field of a record array in the kernels' dtype: a strided view, not a copy, when the
    field has that dtype (a sweep's fills run to millions of records)."""
    return np.asarray(rec[name], dtype=dtype)


def _record_columns(rec: np.ndarray, kind: str, n_bars: int, n_cols: int) -> tuple[np.ndarray, np.ndarray]:
    """(col, bar) of a record array as int64, checked to index the result."""
    names = rec.dtype.names or ()
    for field in ("col", "bar"):
        if field not in names:
            raise MetricsInputError(f"{kind!r} records have no {field!r} field; every record needs int 'bar' and 'col'")
    col = _record_field(rec, "col", np.int64)
    bar = _record_field(rec, "bar", np.int64)
    for field, v, size in (("col", col, n_cols), ("bar", bar, n_bars)):
        if len(v) and (v.min() < 0 or v.max() >= size):
            bad = int(v[(v < 0) | (v >= size)][0])
            raise MetricsInputError(
                f"{kind!r} record with {field}={bad}, outside 0..{size - 1} of this result; "
                f"records must index the result's {'columns' if field == 'col' else 'bars'}")
    return col, bar


def record_metrics(result: SimResult, to_basis: np.ndarray, open_ms: np.ndarray) -> tuple[dict, dict]:
    """Per-column record metrics and event counts, every record array read once.

    Returns
    -------
    (metrics, counts): ``metrics`` maps each record key (``turnover``, ``rejected_orders``,
    ``liquidations``, ``first_liquidation_ms``, ``liquidation_equity_lost``, ``liquidation_deficit``,
    ``margin_calls``, in this order) to a list of n_cols JSON values; ``counts`` maps each record
    kind, in the result's order, to a list of n_cols ints (``fills``: the executed ones).
    """
    n, m = result.n_bars, result.n_cols
    no_margin = result.kind in NO_MARGIN_KINDS
    tb = np.ascontiguousarray(to_basis, dtype=np.float64)
    counts: dict[str, list] = {}
    out: dict[str, list] = {}
    fill_cols = None
    # the perp engine's compact fills, when it left them: turnover and the fill counts from them,
    # without building the fill records (the same numbers: ``compact_fills_by_column_nb``)
    compact = getattr(result.records, "compact_fills", None)
    if compact is not None and len(compact["counts"]) != m:
        raise MetricsInputError(f"the records' compact fills count {len(compact['counts'])} columns, the result {m}; "
                                f"a result with other columns needs its own records (simulate it, or select them)")
    for kind in result.records:
        if kind == "fills" and compact is not None:
            f = compact["fills"]
            executed, rejected, turnover = nb.compact_fills_by_column_nb(
                compact["counts"], f["bar"], f["status"], f["size"], f["price"], compact["contract_size"],
                compact["inverse"], FillStatus.REJECTED, tb)
            counts[kind] = executed.tolist()
            fill_cols = (_floats(turnover), rejected.tolist())
            continue
        rec = result.records[kind]
        col, bar = _record_columns(rec, kind, n, m)
        names = rec.dtype.names or ()
        counts[kind] = np.bincount(col, minlength=m).tolist()
        if kind == "fills":
            ones, zeros = np.ones(len(rec)), np.zeros(len(rec), dtype=np.int64)
            executed, rejected, turnover = nb.fills_by_column_nb(
                col, bar,
                _record_field(rec, "notional", np.float64) if "notional" in names else ones,
                _record_field(rec, "status", np.int64) if "status" in names else zeros,
                _record_field(rec, "size", np.float64) if "size" in names else ones,
                FillStatus.REJECTED, tb, m)
            counts[kind] = executed.tolist()
            fill_cols = (_floats(turnover) if "notional" in names else [None] * m,
                         rejected.tolist() if "status" in names else [0] * m)
        elif kind == "liquidations":
            has_lost = "equity_start" in names and "equity_after" in names
            z = np.zeros(len(rec))
            count, first, lost, deficit = nb.liquidations_by_column_nb(
                col, bar,
                _record_field(rec, "equity_start", np.float64) if has_lost else z,
                _record_field(rec, "equity_after", np.float64) if has_lost else z,
                _record_field(rec, "deficit", np.float64) if "deficit" in names else z, tb, m)
            firsts = np.where(first >= 0, open_ms[np.maximum(first, 0)], 0).tolist()
            out["liquidations"] = count.tolist()
            out["first_liquidation_ms"] = [f if b >= 0 else None for f, b in zip(firsts, first.tolist())]
            out["liquidation_equity_lost"] = _floats(lost) if has_lost else [None] * m
            out["liquidation_deficit"] = _floats(deficit) if "deficit" in names else [None] * m
    if fill_cols is None:
        fill_cols = ([None] * m, [None] * m)
    if "liquidations" not in out:
        # a long option or a product holder posts no margin: never called, never liquidated
        zero = 0 if no_margin else None
        out["liquidations"] = [zero] * m
        out["first_liquidation_ms"] = [None] * m
        out["liquidation_equity_lost"] = [0.0 if no_margin else None] * m
        out["liquidation_deficit"] = [0.0 if no_margin else None] * m
    calls = counts.get("margin_calls") if "margin_calls" in result.records else None
    metrics = {
        "turnover": fill_cols[0],
        "rejected_orders": fill_cols[1],
        "liquidations": out["liquidations"],
        "first_liquidation_ms": out["first_liquidation_ms"],
        "liquidation_equity_lost": out["liquidation_equity_lost"],
        "liquidation_deficit": out["liquidation_deficit"],
        "margin_calls": calls if calls is not None else [0 if no_margin else None] * m,
    }
    return metrics, counts


def _floats(x: np.ndarray) -> list:
    """Python floats, None where not finite (JSON has neither NaN nor inf)."""
    x = np.asarray(x, dtype=np.float64)
    out = x.tolist()
    for i in np.flatnonzero(~np.isfinite(x)).tolist():
        out[i] = None
    return out


def compute_metrics(result: SimResult, *, currency: str = "settle", bar_ms: int | None = None) -> dict:
    """Performance metrics of every column of a simulation result.

    One compiled pass over each column's bars (:mod:`backtest.metrics.nb`) and one over each
    record array; no per-column pandas objects. The numbers are those of the per-column
    reference :func:`backtest.metrics.reference.compute_metrics_reference` (tests/metrics).

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

    equity, to_basis, currency_name = basis_equity(result, currency)
    initial = np.asarray(result.initial_capital, dtype=np.float64) * to_basis[0]
    initial = np.ascontiguousarray(np.broadcast_to(initial, (m,)))
    u_ret = underlying_returns(result)
    st, beta, corr = series_metrics(result, equity, to_basis, initial, open_ms, ann, u_ret)
    bad = st["first_bad_bar"]
    if (bad >= 0).any():
        bar = int(bad[bad >= 0].min())
        raise _not_finite(result, currency, bar, int(np.flatnonzero(bad == bar)[0]))

    final_usd, min_equity = ruin_inputs(result)
    mdd = st["max_drawdown"]
    with np.errstate(divide="ignore", invalid="ignore"):
        calmar = np.where(mdd > 0, st["cagr"] / np.where(mdd > 0, mdd, 1.0), np.nan)
    sharpe = np.where(st["flat"], np.nan, st["sharpe"])
    dd_bars = st["max_dd_bars"].tolist()
    long_bars = st["longest_dd_bars"].tolist()
    values: dict[str, list] = {
        "initial_capital": _floats(st["initial"]),
        "capital_added": _floats(st["capital_added"]),
        "final_equity": _floats(st["final_equity"]),
        "pnl": _floats(st["final_equity"] - st["initial"] - st["capital_added"]),
        "total_return": _floats(st["total_return"]),
        "cagr": _floats(st["cagr"]),
        "volatility": _floats(st["volatility"]),
        "sharpe": _floats(sharpe),
        "sortino": _floats(st["sortino"]),
        "calmar": _floats(calmar),
        "max_drawdown": _floats(mdd),
        "max_drawdown_duration_bars": dd_bars,
        "max_drawdown_duration_days": [b * bar_ms / MS_PER_DAY for b in dd_bars],
        "max_drawdown_recovered": st["max_dd_recovered"].tolist(),
        "longest_drawdown_bars": long_bars,
        "longest_drawdown_days": [b * bar_ms / MS_PER_DAY for b in long_bars],
        "ulcer_index": _floats(st["ulcer_index"]),
        "worst_bar_return": _floats(st["worst_bar_return"]),
        "worst_day_return": _floats(st["worst_day_return"]),
        "ruined": ruined(st["min_growth"], final_usd, min_equity).tolist(),
        "beta": _floats(beta),
        "correlation": _floats(corr),
        "excess_return": ([None] * m if u_ret is None
                          else _floats(st["total_return"] - underlying_return(result))),
        "exposure_time": _floats(st["exposure_time"]),
        "avg_leverage": _floats(st["avg_leverage"]),
        "max_leverage": _floats(st["max_leverage"]),
        "funding_paid": _floats(st["funding_paid"]),
        "funding_received": _floats(st["funding_received"]),
        "funding_net": _floats(st["funding_net"]),
        "fees": _floats(st["fees"]),
    }
    recs, counts = record_metrics(result, to_basis, open_ms)
    values.update(recs)
    values["event_counts"] = ([dict(zip(counts, c)) for c in zip(*counts.values())] if counts
                              else [{} for _ in range(m)])
    if "premium_paid" in result.series:
        values["premium_spent"] = _floats(st["premium_spent"])
    for greek in GREEKS:
        if greek in result.series:
            values[f"avg_{greek}"] = _floats(held_means(result, greek))

    keys = list(values)
    cols = {label: dict(zip(keys, row)) for label, row in zip(labels, zip(*values.values()))}
    return {
        "kind": result.kind,
        "currency": currency_name,
        "basis": currency,
        "bar_ms": int(bar_ms),
        "bars_per_year": ann,
        "year_days": YEAR_DAYS,
        "n_bars": int(n),
        "start_ms": int(open_ms[0]),
        "end_ms": int(open_ms[-1] + bar_ms),
        "columns": cols,
    }
