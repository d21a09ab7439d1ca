"""Named periods of a report (``[[period]]`` of a run config): per period and column, the return,
max drawdown, Sharpe, liquidations and funding net of that window (pure functions on arrays).

Conventions are those of the metrics and of the calendar periods (:mod:`backtest.report.periods`):

* a bar belongs to a period when its **open time** is in ``[start, end)``;
* the growth index ``G`` is 1 before the first bar and ``G_t`` its value at bar t's close; the
  period's starting point is the growth at the close of the bar before its first bar (1 when the
  period starts with the run), so consecutive periods compound;
* **return** ``G_last / G_before - 1`` (0 when ``G_before`` is 0: nothing was left to lose);
* **max drawdown** the largest fall of the growth from its running peak inside the period, the
  starting point counting as a peak (as ``max_drawdown``): ``max(1 - G_t / max(G_before, max G_s))``;
* **Sharpe** ``mean(r) / std(r, ddof=1) * sqrt(bars_per_year)`` of the period's bar returns (null
  with fewer than 2 bars or constant returns, as the metric ``sharpe``);
* **liquidations** the ``liquidations`` records of the column whose bar is in the period;
* **funding net** the increase of ``cum_funding`` over the period's bars (``usd`` basis: each
  bar's increase at that bar's USD price, as ``funding_net``).

A period reaching past the bars of a result is measured on the bars it holds and flagged
``partial`` (its first bar's open and its last bar's close are stored); one holding no bar of a
result is an error naming both ranges.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from backtest.report.periods import _columns_of

class NamedPeriodError(ValueError):
    """A named period cannot be measured (it holds no bar of a result); the message names both
    ranges and the fix."""


NAMED_COLUMNS = ("result", "column", "col", "basis", "period", "start_ms", "end_ms", "first_ms", "last_ms",
                 "bars", "partial", "return", "max_drawdown", "sharpe", "liquidations", "funding_net")
BASES = (("settle", "growth", "return"), ("usd", "growth_usd", "return_usd"))  # (basis, growth, returns)
# a period's values of the report (metric key -> readable header), in the table's order
METRICS = (("return", "Return"), ("max_drawdown", "Max drawdown"), ("sharpe", "Sharpe"),
           ("liquidations", "Liquidations"), ("funding_net", "Funding net"))


def check_periods(periods: Sequence) -> list[tuple[str, int, int]]:
    """``[(name, start_ms, end_ms), ...]`` checked: distinct non-empty names, int ms, end > start.

    Raises
    ------
    ValueError
        Naming the bad period and the fix.
    """
    out: list[tuple[str, int, int]] = []
    seen: set[str] = set()
    for i, p in enumerate(periods):
        try:
            name, start, end = p
        except (TypeError, ValueError):
            raise ValueError(f"periods[{i}] = {p!r}: give (name, start_ms, end_ms)") from None
        if not isinstance(name, str) or not name:
            raise ValueError(f"periods[{i}]: name {name!r} must be a non-empty string")
        if name in seen:
            raise ValueError(f"periods[{i}]: the name {name!r} is used twice; give every period a distinct name")
        seen.add(name)
        for what, v in (("start_ms", start), ("end_ms", end)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"periods[{i}] {name!r}: {what}={v!r} must be int milliseconds UTC")
        if end <= start:
            raise ValueError(f"periods[{i}] {name!r}: end_ms={end} is not after start_ms={start}; the period is empty")
        out.append((name, int(start), int(end)))
    return out


def window_stats(growth: np.ndarray, returns: np.ndarray, cum_funding: np.ndarray, to_basis: np.ndarray,
                 first: int, last: int, ann: float) -> dict[str, np.ndarray]:
    """Return, max drawdown, Sharpe and funding net of bars ``first..last`` (inclusive), every column.

    Parameters
    ----------
    growth, returns : float64 (n_bars, n_cols), growth index and bar returns of one basis.
    cum_funding : float64 (n_bars, n_cols), cumulative funding in the settlement currency (NaN: 0).
    to_basis : float64 (n_bars,), settlement currency -> basis currency at each bar.
    first, last : the period's first and last bar.
    ann : bars per year.

    Returns
    -------
    dict of float64 (n_cols,): ``return``, ``max_drawdown``, ``sharpe`` (NaN: undefined),
    ``funding_net``.
    """
    m = growth.shape[1]
    before = growth[first - 1] if first > 0 else np.ones(m)
    g = growth[first:last + 1]
    alive = before > 0
    safe = np.where(alive, before, 1.0)
    ret = np.where(alive, g[-1] / safe - 1.0, 0.0)
    peak = np.maximum(np.maximum.accumulate(g, axis=0), before[None, :])
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = np.where(peak > 0, 1.0 - g / np.where(peak > 0, peak, 1.0), 0.0)
    mdd = np.max(dd, axis=0) + 0.0
    r = returns[first:last + 1]
    sharpe = np.full(m, np.nan)
    if r.shape[0] >= 2:
        std = np.std(r, axis=0, ddof=1)
        flat = np.ptp(r, axis=0) <= 1e-12 * np.maximum(np.max(np.abs(r), axis=0), 1e-300)
        ok = ~flat & (std > 0)
        sharpe[ok] = np.mean(r[:, ok], axis=0) / std[ok] * np.sqrt(ann)
    cf = np.nan_to_num(cum_funding, nan=0.0)
    prev = np.vstack([np.zeros((1, m)), cf[:-1]])
    flow = (cf - prev)[first:last + 1] * to_basis[first:last + 1, None]
    return {"return": ret, "max_drawdown": mdd, "sharpe": sharpe, "funding_net": np.sum(flow, axis=0)}


def records_of(events: pd.DataFrame, kind: str, result: str) -> tuple[np.ndarray, np.ndarray]:
    """(bar, col) of the records of ``kind`` of ``result`` (int64, one entry a record)."""
    if not len(events.columns) or not len(events):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    mine = ((events["kind"] == kind) & (events["result"] == result)).to_numpy(dtype=bool, na_value=False)
    return events["bar"].to_numpy(dtype=np.int64)[mine], events["col"].to_numpy(dtype=np.int64)[mine]


def records_in(records: tuple[np.ndarray, np.ndarray], first: int, last: int, m: int) -> np.ndarray:
    """Records (from :func:`records_of`) on bars ``first..last``, per column (int64 (m,))."""
    bar, col = records
    hit = (bar >= first) & (bar <= last)
    return np.bincount(col[hit], minlength=m).astype(np.int64)


def bars_of(open_ms: np.ndarray, bar_ms: int, name: str, start: int, end: int, result: str
            ) -> tuple[int, int, bool]:
    """(first bar, last bar, partial) of a period: the bars whose open time is in ``[start, end)``.

    Raises
    ------
    NamedPeriodError
        The period holds no bar of the result (both ranges named, and the fix).
    """
    inside = np.flatnonzero((open_ms >= start) & (open_ms < end))
    if not len(inside):
        iso = lambda ms: pd.Timestamp(int(ms), unit="ms", tz="UTC").isoformat()  # noqa: E731
        raise NamedPeriodError(f"period {name!r} ({iso(start)} .. {iso(end)}) holds no bar of result {result!r} "
                         f"({iso(open_ms[0])} .. {iso(open_ms[-1] + bar_ms)}); change its start/end to overlap the "
                         "run's data, or remove it")
    first, last = int(inside[0]), int(inside[-1])
    partial = bool(open_ms[first] > start or open_ms[last] + bar_ms < end)
    return first, last, partial


def named_period_frame(metrics: Mapping, series: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """Every named period of a report, per result, column and basis (``named_periods.parquet``).

    Parameters
    ----------
    metrics : the ``metrics.json`` document; its ``named_periods`` (``[{name, start_ms, end_ms}]``)
        are measured (none: an empty table).
    series : the ``equity.parquet`` table (``growth``, ``return``, their ``_usd`` twins,
        ``cum_funding``, ``price_usd``).
    events : the ``events.parquet`` table (``liquidations`` rows).

    Returns
    -------
    DataFrame with the columns :data:`NAMED_COLUMNS`, one row per (period, result, column, basis).
    """
    periods = check_periods([(p["name"], p["start_ms"], p["end_ms"]) for p in metrics.get("named_periods") or []])
    rows: list[pd.DataFrame] = []
    for res_name, res in metrics["results"].items():
        labels = list(res["columns"])
        m = len(labels)
        bar_ms = int(res["settle"]["bar_ms"])
        ann = float(res["settle"]["bars_per_year"])
        ms, arrays = _columns_of(series, res_name, m, ("growth", "return", "growth_usd", "return_usd", "cum_funding",
                                                       "price_usd"))
        liq = records_of(events, "liquidations", res_name)
        for name, start, end in periods:
            first, last, partial = bars_of(ms, bar_ms, name, start, end, res_name)
            liqs = records_in(liq, first, last, m)
            for basis, gkey, rkey in BASES:
                to_basis = np.ones(len(ms)) if basis == "settle" else arrays["price_usd"][:, 0]
                st = window_stats(arrays[gkey], arrays[rkey], arrays["cum_funding"], to_basis, first, last, ann)
                rows.append(pd.DataFrame({
                    "result": res_name, "column": np.asarray(labels, dtype=object),
                    "col": np.arange(m, dtype=np.int32), "basis": basis, "period": name,
                    "start_ms": start, "end_ms": end, "first_ms": int(ms[first]), "last_ms": int(ms[last]) + bar_ms,
                    "bars": last - first + 1, "partial": partial, "return": st["return"],
                    "max_drawdown": st["max_drawdown"], "sharpe": st["sharpe"], "liquidations": liqs.astype(np.int64),
                    "funding_net": st["funding_net"]}))
    if not rows:
        out = pd.DataFrame({c: pd.Series([], dtype=object) for c in NAMED_COLUMNS})
    else:
        out = pd.concat(rows, ignore_index=True)[list(NAMED_COLUMNS)]
    for c in ("result", "column", "basis", "period"):
        out[c] = out[c].astype("string")
    for c in ("start_ms", "end_ms", "first_ms", "last_ms", "bars", "liquidations"):
        out[c] = out[c].astype(np.int64)
    out["col"] = out["col"].astype(np.int32)
    out["partial"] = out["partial"].astype(bool)
    for c in ("return", "max_drawdown", "sharpe", "funding_net"):
        out[c] = out[c].astype(np.float64)
    return out
