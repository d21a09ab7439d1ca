"""Return, growth and drawdown maths shared by the metrics and the report.

Everything here is plain numpy on arrays of shape (n_bars, n_cols) (bars on axis 0, columns on
axis 1), so the same numbers feed the metrics table and the plotted drawdown series.

Conventions (documented in the README ("Metrics")):

* A return is the simple return of one bar, ``r_t = E_t / (E_{t-1} + F_t) - 1``, with ``E_{-1}``
  the initial capital and ``F_t`` the capital added during bar t (margin-call top-ups). The
  added capital is treated as a flow at the start of the bar, i.e. as money that was at risk
  for the whole bar: this is a time-weighted return, so a top-up is neither a gain nor a loss
  and the return stays >= -100 %.
* Equity below zero counts as zero (a loss is capped at 100 %). Once the capital at risk is
  zero (``E_{t-1} + F_t <= 0``) the return is 0: a liquidated and stopped column earns nothing
  and its growth index stays at 0, i.e. its drawdown stays at 100 %.
* The growth index starts at 1 before the first bar (at the initial capital), so a loss on
  the first bar is a drawdown.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MS_PER_DAY = 86_400_000
YEAR_DAYS = 365


class MetricsInputError(ValueError):
    """A result cannot be measured; the message names the bad value and the fix."""


def bars_per_year(bar_ms: int) -> float:
    """Annualisation factor: bars in a 365-day year, ``365 * 86_400_000 / bar_ms``."""
    if not bar_ms or bar_ms <= 0:
        raise MetricsInputError(f"bar_ms={bar_ms!r}: the bar size must be a positive number of milliseconds")
    return YEAR_DAYS * MS_PER_DAY / float(bar_ms)


def infer_bar_ms(index: pd.DatetimeIndex, meta: dict | None = None) -> int:
    """Bar size in ms: ``meta['bar_ms']`` when given, else the smallest step of ``index``."""
    if meta and meta.get("bar_ms") is not None:
        bar_ms = int(meta["bar_ms"])
        bars_per_year(bar_ms)
        return bar_ms
    if len(index) < 2:
        raise MetricsInputError(
            f"cannot infer the bar size from {len(index)} bar(s); set meta['bar_ms'] on the result "
            "or pass bar_ms=")
    ms = index_ms(index)
    step = int(np.min(np.diff(ms)))
    if step <= 0:
        raise MetricsInputError(
            f"the result's index is not strictly increasing (step {step} ms); sort the bars by open time")
    return step


def index_ms(index: pd.DatetimeIndex) -> np.ndarray:
    """Bar open times as int64 milliseconds since the epoch (UTC)."""
    idx = pd.DatetimeIndex(index)
    if idx.tz is None:
        idx = idx.tz_localize("UTC")
    return idx.as_unit("ms").asi8.astype(np.int64)


def flow_returns(equity: np.ndarray, added: np.ndarray, initial: np.ndarray) -> np.ndarray:
    """Per-bar time-weighted returns with capital added as a start-of-bar flow.

    Parameters
    ----------
    equity : float64 (n_bars, n_cols), equity at each bar's close (any currency).
    added : float64 (n_bars, n_cols), capital added during each bar (not cumulative), same currency.
    initial : float64 (n_cols,), equity before the first bar, same currency.

    Returns
    -------
    float64 (n_bars, n_cols): ``E_t / (E_{t-1} + F_t) - 1``; 0 where ``E_{t-1} + F_t <= 0``.
    """
    e = np.maximum(equity, 0.0)
    prev = np.vstack([np.maximum(np.asarray(initial, dtype=np.float64), 0.0)[None, :], e[:-1]])
    base = prev + added
    out = np.zeros_like(e)
    ok = base > 0
    out[ok] = e[ok] / base[ok] - 1.0
    return out


def growth_index(returns: np.ndarray) -> np.ndarray:
    """Compounded growth of 1 invested before the first bar, shape like ``returns``."""
    return np.cumprod(1.0 + returns, axis=0)


def drawdown(growth: np.ndarray) -> np.ndarray:
    """Drawdown ``G_t / max(1, max_{s<=t} G_s) - 1`` (<= 0; -1 means everything lost)."""
    peak = np.maximum(np.maximum.accumulate(growth, axis=0), 1.0)
    return growth / peak - 1.0


def drawdown_spells_1d(growth: np.ndarray) -> dict:
    """Durations of one column's drawdowns, measured in bars between growth points.

    Point -1 is the start (growth 1 at the initial capital), point t the close of bar t, so
    ``q - p`` points is ``q - p`` bars of time. A spell runs from a peak point ``p`` to the first
    later point ``q`` whose growth is back at or above the peak; a spell still open at the last
    point ends there (not recovered).

    Returns
    -------
    dict with ``max_dd_bars`` (the spell containing the deepest trough; 0 when there is no
    drawdown), ``max_dd_recovered`` (bool) and ``longest_bars`` (the longest spell).
    """
    g = np.concatenate([[1.0], np.asarray(growth, dtype=np.float64)])
    n = len(g)
    peak_val = np.maximum.accumulate(g)
    under = g < peak_val
    if not under.any():
        return {"max_dd_bars": 0, "max_dd_recovered": True, "longest_bars": 0}
    # peak point of each point: the last point at or before it that set the running maximum
    is_peak = ~under
    peak_pos = np.maximum.accumulate(np.where(is_peak, np.arange(n), 0))
    longest = 0
    spells = []  # (start, end, recovered)
    t = 0
    while t < n:
        if under[t]:
            start = peak_pos[t]
            end = t
            while end < n and under[end]:
                end += 1
            recovered = end < n
            stop = end if recovered else n - 1
            spells.append((start, stop, recovered))
            longest = max(longest, stop - start)
            t = end
        else:
            t += 1
    dd = g / peak_val - 1.0
    trough = int(np.argmin(dd))
    for start, stop, recovered in spells:
        if start < trough <= stop:
            return {"max_dd_bars": int(stop - start), "max_dd_recovered": bool(recovered),
                    "longest_bars": int(longest)}
    raise RuntimeError("deepest trough outside every drawdown spell")  # unreachable by construction


def worst_day_return_1d(growth: np.ndarray, bar_open_ms: np.ndarray) -> float:
    """Worst return over a UTC calendar day (bars grouped by the day of their open time).

    A day's return is its last growth value over the previous day's last value (1 before the
    first day); 0 when the previous value is 0 (nothing left to lose).
    """
    day = bar_open_ms // MS_PER_DAY
    last = np.flatnonzero(np.r_[day[1:] != day[:-1], True])
    end = growth[last]
    prev = np.concatenate([[1.0], end[:-1]])
    ret = np.where(prev > 0, end / np.where(prev > 0, prev, 1.0) - 1.0, 0.0)
    return float(np.min(ret))
