"""Returns by calendar period and the worst drawdowns of a growth index (pure functions).

Conventions are those of the metrics (``README.md`` "Metrics", ``backtest/metrics/returns.py``):
the growth index ``G`` starts at 1 before the first bar (at the initial capital) and ``G_t`` is its
value at the close of bar t. Time points are therefore the start (the first bar's open time) and
each bar's close (its open time + ``bar_ms``).

* **Period returns.** Bars belong to the UTC calendar year or month of their open time (as the
  metric ``worst_day_return`` groups days). A period's return is its last growth value over the
  previous period's last value, minus 1 (the previous value is 1 before the first period), so
  the returns of consecutive periods compound to the total return. Once the growth is 0 (the
  account is gone) later periods return 0: nothing was left to lose.
* **Drawdown spells.** A spell runs from a peak point (the last point at the running maximum)
  to the first later point back at or above that peak (its recovery); a spell still under water
  at the last point is not recovered. Its depth is ``1 - G_trough / G_peak`` (the fraction lost
  from the peak, as ``max_drawdown``), its trough the first point of least growth inside it. The
  deepest spell is the one ``max_drawdown`` measures and its length in bars is
  ``max_drawdown_duration_bars``.

:func:`period_frames` applies both to every column of a report in both bases and returns the
long tables stored as ``periods.parquet`` and ``drawdowns.parquet``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd

MS_PER_DAY = 86_400_000
FREQS = ("year", "month")
_UNIT = {"year": "Y", "month": "M"}
_ONE = {"year": np.timedelta64(1, "Y"), "month": np.timedelta64(1, "M")}
BASES = (("settle", "growth"), ("usd", "growth_usd"))  # (basis, growth column of equity.parquet)
DRAWDOWNS_STORED = 10  # worst drawdowns per column and basis kept in drawdowns.parquet

PERIOD_COLUMNS = ("result", "column", "col", "basis", "freq", "period", "start_ms", "end_ms", "bars",
                  "partial", "return")
DRAWDOWN_COLUMNS = ("result", "column", "col", "basis", "rank", "peak_ms", "trough_ms", "recovery_ms",
                    "recovered", "depth", "peak_to_trough_bars", "duration_bars", "peak_to_trough_days",
                    "duration_days")


def _check_times(open_ms: np.ndarray, bar_ms: int, n_bars: int) -> np.ndarray:
    ms = np.asarray(open_ms)
    if ms.ndim != 1 or ms.shape[0] != n_bars:
        raise ValueError(f"open_ms has shape {ms.shape} but the growth has {n_bars} bars; pass one open time "
                         "(int ms UTC) per bar")
    if n_bars == 0:
        raise ValueError("the growth index has 0 bars; there is no period to measure")
    if not np.issubdtype(ms.dtype, np.integer):
        raise ValueError(f"open_ms has dtype {ms.dtype}; pass int64 milliseconds UTC")
    if n_bars > 1 and np.any(np.diff(ms) <= 0):
        raise ValueError("open_ms is not strictly increasing; sort the bars by open time")
    if int(bar_ms) <= 0:
        raise ValueError(f"bar_ms={bar_ms!r}: the bar size must be a positive number of milliseconds")
    return ms.astype(np.int64)


def _growth_2d(growth: np.ndarray) -> np.ndarray:
    g = np.asarray(growth, dtype=np.float64)
    if g.ndim == 1:
        g = g[:, None]
    if g.ndim != 2:
        raise ValueError(f"growth has shape {g.shape}; pass (n_bars,) or (n_bars, n_cols)")
    bad = ~np.isfinite(g) | (g < 0)
    if bad.any():
        t, j = np.argwhere(bad)[0]
        raise ValueError(f"growth[{t}, {j}] = {float(g[t, j])!r}: a growth index is a finite number >= 0 "
                         "(see backtest.metrics.growth_index)")
    return g


@dataclass(frozen=True)
class PeriodReturns:
    """Returns of every column over consecutive calendar periods.

    Attributes
    ----------
    freq : ``'year'`` or ``'month'``.
    labels : period names, ``'2022'`` or ``'2022-03'`` (n_periods,).
    start_ms : int64 (n_periods,), open time of the period's first bar, ms UTC.
    end_ms : int64 (n_periods,), close time of the period's last bar, ms UTC.
    bars : int64 (n_periods,), bars in the period.
    partial : bool (n_periods,), the bars do not span the whole calendar period (the run starts
        after its first instant or ends before its last).
    returns : float64 (n_periods, n_cols), fraction (0.25 = +25 %).
    """

    freq: str
    labels: list[str]
    start_ms: np.ndarray
    end_ms: np.ndarray
    bars: np.ndarray
    partial: np.ndarray
    returns: np.ndarray


def period_returns(growth: np.ndarray, open_ms: np.ndarray, bar_ms: int, freq: str) -> PeriodReturns:
    """Returns by UTC calendar year or month (module docstring: conventions).

    Parameters
    ----------
    growth : float64 (n_bars,) or (n_bars, n_cols), growth index at each bar's close (1 = the
        initial capital), e.g. ``backtest.metrics.growth_index`` of the flow returns.
    open_ms : int64 (n_bars,), bar open times, ms UTC, strictly increasing.
    bar_ms : bar size in ms (a bar's close is its open + ``bar_ms``).
    freq : ``'year'`` or ``'month'``.

    Returns
    -------
    PeriodReturns
    """
    if freq not in FREQS:
        raise ValueError(f"freq={freq!r} is not one of {FREQS}")
    g = _growth_2d(growth)
    ms = _check_times(open_ms, bar_ms, g.shape[0])
    unit = _UNIT[freq]
    period = ms.astype("datetime64[ms]").astype(f"datetime64[{unit}]")
    last = np.flatnonzero(np.r_[period[1:] != period[:-1], True])
    first = np.r_[0, last[:-1] + 1]
    end = g[last]
    prev = np.vstack([np.ones((1, g.shape[1])), end[:-1]])
    safe = np.where(prev > 0, prev, 1.0)
    # growth 0 before the period: the account was gone, the period earned nothing
    rets = np.where(prev > 0, end / safe - 1.0, 0.0)
    cal_start = period[first].astype("datetime64[ms]").astype(np.int64)
    cal_end = (period[first] + _ONE[freq]).astype("datetime64[ms]").astype(np.int64)
    start_ms = ms[first]
    end_ms = ms[last] + int(bar_ms)
    return PeriodReturns(
        freq=freq, labels=[str(p) for p in period[first]], start_ms=start_ms, end_ms=end_ms,
        bars=(last - first + 1).astype(np.int64), partial=(start_ms > cal_start) | (end_ms < cal_end),
        returns=rets)


_SPELL_KEYS = ("peak_ms", "trough_ms", "recovery_ms", "recovered", "depth", "peak_to_trough_bars",
               "duration_bars")


def _spells(g1: np.ndarray, ms: np.ndarray, bar_ms: int) -> dict[str, np.ndarray]:
    """Every spell of one checked column as numpy arrays (``recovery_ms`` 0 where not recovered)."""
    g = np.concatenate([[1.0], g1])  # point 0: the start, growth 1
    points_ms = np.concatenate([[ms[0]], ms + int(bar_ms)])
    peak_val = np.maximum.accumulate(g)
    under = g < peak_val
    edges = np.diff(np.r_[np.int8(0), under.astype(np.int8), np.int8(0)])
    starts = np.flatnonzero(edges == 1)       # first point under water of each spell
    stops = np.flatnonzero(edges == -1)       # first point back at the peak (== len(g): not recovered)
    if not len(starts):
        return {k: np.zeros(0, dtype=bool if k == "recovered" else np.float64 if k == "depth" else np.int64)
                for k in _SPELL_KEYS}
    peak = starts - 1                         # the point just before is at the running maximum
    ratio = g / peak_val
    # the first point of least growth of each spell, without a Python loop over the spells (a
    # noisy path has thousands): the spell minimum by reduceat, then its first occurrence
    lowest = np.minimum.reduceat(ratio, starts)  # each segment runs to the next start; the points
    spell = np.cumsum(edges[:-1] == 1) - 1       # between a stop and the next start are not under
    at_min = under & (ratio == lowest[np.maximum(spell, 0)])
    first = np.unique(spell[at_min], return_index=True)[1]
    trough = np.flatnonzero(at_min)[first]
    recovered = stops < len(g)
    end = np.where(recovered, stops, len(g) - 1)
    return {
        "peak_ms": points_ms[peak],
        "trough_ms": points_ms[trough],
        "recovery_ms": np.where(recovered, points_ms[np.minimum(stops, len(g) - 1)], 0),
        "recovered": recovered,
        "depth": 1.0 - g[trough] / g[peak],
        "peak_to_trough_bars": (trough - peak).astype(np.int64),
        "duration_bars": (end - peak).astype(np.int64),
    }


def _worst(sp: dict[str, np.ndarray], n: int | None) -> dict[str, np.ndarray]:
    order = np.lexsort((sp["peak_ms"], -sp["depth"]))  # deepest first, ties: the earlier first
    if n is not None:
        order = order[:n]
    return {k: v[order] for k, v in sp.items()}


def _frame(sp: dict[str, np.ndarray]) -> pd.DataFrame:
    df = pd.DataFrame({k: sp[k] for k in _SPELL_KEYS})
    df["recovery_ms"] = pd.arrays.IntegerArray(sp["recovery_ms"].astype(np.int64), ~sp["recovered"])
    return df


def drawdown_spells(growth: np.ndarray, open_ms: np.ndarray, bar_ms: int) -> pd.DataFrame:
    """Every drawdown spell of one column, in time order (module docstring: conventions).

    Parameters
    ----------
    growth : float64 (n_bars,), growth index at each bar's close.
    open_ms : int64 (n_bars,), bar open times, ms UTC, strictly increasing.
    bar_ms : bar size in ms.

    Returns
    -------
    DataFrame, one row per spell: ``peak_ms``, ``trough_ms`` (int64, ms UTC), ``recovery_ms``
    (nullable Int64: null when not recovered), ``recovered`` (bool), ``depth`` (fraction of the
    peak lost, in (0, 1]), ``peak_to_trough_bars`` and ``duration_bars`` (peak to recovery, or to
    the last bar's close when not recovered).
    """
    g = _growth_2d(growth)
    if g.shape[1] != 1:
        raise ValueError(f"growth has {g.shape[1]} columns; drawdown_spells measures one column at a time")
    return _frame(_spells(g[:, 0], _check_times(open_ms, bar_ms, g.shape[0]), bar_ms))


def _check_n(n: int | None) -> None:
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
        raise ValueError(f"n={n!r}: ask for at least 1 drawdown (or None for all)")


def _add_rank_and_days(df: pd.DataFrame, bar_ms: int, rank: np.ndarray | None = None) -> pd.DataFrame:
    df.insert(0, "rank", np.arange(1, len(df) + 1, dtype=np.int64) if rank is None else rank)
    df["peak_to_trough_days"] = df["peak_to_trough_bars"] * int(bar_ms) / MS_PER_DAY
    df["duration_days"] = df["duration_bars"] * int(bar_ms) / MS_PER_DAY
    return df


def worst_drawdowns(growth: np.ndarray, open_ms: np.ndarray, bar_ms: int, n: int | None = 5) -> pd.DataFrame:
    """The ``n`` deepest drawdown spells of one column, deepest first (ties: the earlier first).

    Same columns as :func:`drawdown_spells`, plus ``rank`` (1 = deepest) first and the durations
    also in days (``peak_to_trough_days``, ``duration_days``). ``n=None`` keeps every spell.
    """
    _check_n(n)
    g = _growth_2d(growth)
    if g.shape[1] != 1:
        raise ValueError(f"growth has {g.shape[1]} columns; worst_drawdowns measures one column at a time")
    sp = _spells(g[:, 0], _check_times(open_ms, bar_ms, g.shape[0]), bar_ms)
    return _add_rank_and_days(_frame(_worst(sp, n)), bar_ms)


def _columns_of(series: pd.DataFrame, name: str, n_cols: int, keys: tuple[str, ...]
                ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(open_ms (n_bars,), key -> values (n_bars, n_cols)) of result ``name`` from the long
    series table."""
    # row positions, then only the asked-for columns (a boolean filter copies every column)
    rows = np.flatnonzero((series["result"] == name).to_numpy(dtype=bool, na_value=False))
    col = series["col"].to_numpy()[rows]
    bar = series["bar"].to_numpy()[rows]
    n_bars = int(bar.max()) + 1 if len(bar) else 0
    if len(rows) != n_bars * n_cols:
        raise ValueError(f"equity series of result {name!r}: {len(rows)} rows, expected {n_bars} bars x {n_cols} "
                         "columns; write the report again")
    # collect writes the rows column-major (all bars of column 0, then column 1, ...): no sort then
    in_order = np.array_equal(bar, np.tile(np.arange(n_bars), n_cols)) and \
        np.array_equal(col, np.repeat(np.arange(n_cols), n_bars))
    if not in_order:
        rows = rows[np.lexsort((bar, col))]
    ms = series["timestamp"].to_numpy(dtype=np.int64)[rows][:n_bars]
    return ms, {k: series[k].to_numpy(dtype=np.float64)[rows].reshape(n_cols, n_bars).T for k in keys}


def period_frames(metrics: Mapping, series: pd.DataFrame, *,
                  n_drawdowns: int | None = DRAWDOWNS_STORED) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Period returns and worst drawdowns of every column of a report, in both bases.

    Parameters
    ----------
    metrics : the ``metrics.json`` document (result names, column labels, ``bar_ms``).
    series : the ``equity.parquet`` table (its ``growth`` and ``growth_usd`` columns).
    n_drawdowns : deepest spells kept per column and basis (None: all).

    Returns
    -------
    (periods, drawdowns): long tables with the columns :data:`PERIOD_COLUMNS` (one row per
    result, column, basis, freq and period) and :data:`DRAWDOWN_COLUMNS` (one row per result,
    column, basis and spell, ``rank`` 1 = deepest), as stored in ``periods.parquet`` and
    ``drawdowns.parquet``.
    """
    _check_n(n_drawdowns)
    prows: list[pd.DataFrame] = []
    drows: list[pd.DataFrame] = []
    for name, res in metrics["results"].items():
        labels = list(res["columns"])
        bar_ms = int(res["settle"]["bar_ms"])
        ms, growth = _columns_of(series, name, len(labels), tuple(key for _, key in BASES))
        for basis, key in BASES:
            g = growth[key]
            for freq in FREQS:
                pr = period_returns(g, ms, bar_ms, freq)
                k = len(pr.labels)
                prows.append(pd.DataFrame({
                    "result": name, "column": np.repeat(np.asarray(labels, dtype=object), k),
                    "col": np.repeat(np.arange(len(labels), dtype=np.int32), k), "basis": basis, "freq": freq,
                    "period": np.tile(np.asarray(pr.labels, dtype=object), len(labels)),
                    "start_ms": np.tile(pr.start_ms, len(labels)), "end_ms": np.tile(pr.end_ms, len(labels)),
                    "bars": np.tile(pr.bars, len(labels)), "partial": np.tile(pr.partial, len(labels)),
                    "return": pr.returns.T.reshape(-1)}))
            parts = [_worst(_spells(g[:, j], ms, bar_ms), n_drawdowns) for j in range(len(labels))]
            counts = np.array([len(p["depth"]) for p in parts], dtype=np.int64)
            rank = np.concatenate([np.arange(1, c + 1, dtype=np.int64) for c in counts] or [np.zeros(0, np.int64)])
            dd = _add_rank_and_days(_frame({k: np.concatenate([p[k] for p in parts]) for k in _SPELL_KEYS}),
                                    bar_ms, rank)
            dd["result"] = name
            dd["column"] = np.repeat(np.asarray(labels, dtype=object), counts)
            dd["col"] = np.repeat(np.arange(len(labels), dtype=np.int32), counts)
            dd["basis"] = basis
            drows.append(dd[list(DRAWDOWN_COLUMNS)])
    periods = pd.concat(prows, ignore_index=True)[list(PERIOD_COLUMNS)]
    drawdowns = pd.concat(drows, ignore_index=True) if drows else pd.DataFrame(columns=list(DRAWDOWN_COLUMNS))
    for frame in (periods, drawdowns):
        for c in ("result", "column", "basis") + (("freq", "period") if frame is periods else ()):
            frame[c] = frame[c].astype("string")
    drawdowns["col"] = drawdowns["col"].astype(np.int32)
    drawdowns["recovery_ms"] = drawdowns["recovery_ms"].astype("Int64")
    return periods, drawdowns
