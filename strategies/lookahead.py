"""Look-ahead check: recompute on truncated data and require the past to stay unchanged.

A causal strategy's value at bar t depends only on bars <= t, so computing it on the first
``c`` bars must reproduce the first ``c`` rows of the full computation exactly, for every cut
``c``. Using a future value (``close.shift(-1)``, a full-sample mean or quantile, a centred
window, a backward fill) changes some past row at some cut, which this check reports.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd

from strategies.base import Strategy, get
from strategies.frame import MarketFrame, as_market
from strategies.policies.base import LeveragePolicy


class LookAheadError(Exception):
    """A past value changed when future bars were removed: the computation looks ahead."""


def _resolve(strategy: Any, params: Any, spec: Any) -> tuple[str, Callable[[MarketFrame], Any]]:
    if isinstance(strategy, (str, Strategy)):
        strat = get(strategy)
        return strat.name, lambda m: strat.run(m, params)
    if isinstance(strategy, LeveragePolicy):
        return strategy.label(), lambda m: strategy.compute(m, spec=spec)
    if callable(strategy):
        if params is not None:
            return getattr(strategy, "__name__", repr(strategy)), lambda m: strategy(m.frame, params)
        return getattr(strategy, "__name__", repr(strategy)), lambda m: strategy(m.frame)
    raise TypeError(f"cannot check {strategy!r}: give a strategy name, a Strategy, a leverage policy "
                    "or a callable frame -> DataFrame")


def _as_2d(out: Any) -> tuple[np.ndarray, list[Any]]:
    if isinstance(out, pd.DataFrame):
        return out.to_numpy(dtype=np.float64), list(out.columns)
    if isinstance(out, pd.Series):
        return out.to_numpy(dtype=np.float64)[:, None], [out.name]
    arr = np.asarray(out, dtype=np.float64)
    arr = arr[:, None] if arr.ndim == 1 else arr
    return arr, list(range(arr.shape[1]))


def check(strategy: Any, data: Any, params: Any = None, n_cuts: int = 20, *, min_bars: int = 2,
          rtol: float = 1e-9, atol: float = 1e-12, spec: Any = None) -> int:
    """Recompute ``strategy`` on data truncated at ``n_cuts`` points and compare with the full run.

    Parameters
    ----------
    strategy : a registered strategy name or :class:`Strategy` (run with ``params``), a
        precomputed leverage policy (its leverage series), or a callable
        ``f(frame) -> DataFrame | Series | array`` (``f(frame, params)`` if params are given).
    data : market data (DataFrame, ``MarketData`` or ``MarketFrame``).
    params : strategy parameters (a grid checks every column).
    n_cuts : number of truncation points, spread evenly from ``min_bars`` to the last bar.
    rtol, atol : two values are equal when both are NaN or ``|a - b| <= atol + rtol * |b|``
        (the computations are deterministic; the tolerance only absorbs summation-order noise).
    spec : market spec, for policies that need one (``tiercap``).

    Returns
    -------
    int : number of cuts checked.

    Raises
    ------
    LookAheadError : naming the strategy, the column and the first changed bar's timestamp.
    """
    market = as_market(data)
    name, fn = _resolve(strategy, params, spec)
    full, cols = _as_2d(fn(market))
    if full.shape[0] != market.n:
        raise ValueError(f"{name}: output has {full.shape[0]} rows for {market.n} bars")
    lo = max(2, int(min_bars))
    if lo >= market.n:
        raise ValueError(f"look-ahead check of {name}: {market.n} bars, need more than min_bars={lo}")
    cuts = np.unique(np.linspace(lo, market.n - 1, max(1, int(n_cuts))).astype(int))
    for c in cuts:
        part, _ = _as_2d(fn(market.truncate(int(c))))
        ref = full[:c]
        if part.shape != ref.shape:
            raise LookAheadError(
                f"{name}: on the first {c} bars the output has shape {part.shape}, expected {ref.shape}")
        same = (np.isnan(part) & np.isnan(ref)) | (np.abs(part - ref) <= atol + rtol * np.abs(ref))
        if not same.all():
            i, j = np.argwhere(~same)[0]
            raise LookAheadError(
                f"{name} looks ahead: column {cols[j]!r} at {market.index[i].isoformat()} (bar {i}) is "
                f"{float(ref[i, j])!r} on the full data but {float(part[i, j])!r} when the data ends at "
                f"{market.index[c - 1].isoformat()} (bar {c - 1}); a value must depend only on bars up to its own")
    return len(cuts)
