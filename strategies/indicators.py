"""Indicators shared by strategies and policies, computed with vectorbt where it has them.

Every function is causal: the value at bar t uses bars ``<= t`` only, and is NaN until its
window is full. Windows are in bars; callers convert days with :meth:`MarketFrame.bars`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd


def _unique(windows: Sequence[int]) -> list[int]:
    return sorted({int(w) for w in windows})


def moving_average(x: np.ndarray, windows: Sequence[int], ewm: bool = False) -> dict[int, np.ndarray]:
    """Simple (``ewm=False``) or exponential moving average of ``x`` for each window.

    vectorbt's ``MA``: simple = mean of the last ``w`` values; exponential = span ``w``
    (alpha = 2 / (w + 1)), not adjusted, NaN for the first ``w - 1`` bars. Computed by
    :func:`strategies.nb.moving_averages_nb`, vectorbt's arithmetic without its import.

    Returns
    -------
    dict window -> float64 array (n_bars,)
    """
    ws = _unique(windows)
    if ws and ws[0] < 1:
        raise ValueError(f"moving_average: window {ws[0]} must be at least 1 bar")
    # vectorbt's arithmetic without importing vectorbt (strategies/nb.py)
    from strategies.nb import moving_averages_nb

    rows = moving_averages_nb(np.ascontiguousarray(x, dtype=np.float64), np.asarray(ws, dtype=np.int64), bool(ewm))
    return {w: rows[i] for i, w in enumerate(ws)}


def rolling_std(x: np.ndarray, windows: Sequence[int], ddof: int = 1) -> dict[int, np.ndarray]:
    """Rolling standard deviation of ``x`` over the last ``w`` values (vectorbt ``MSTD``,
    ``ddof=1`` = sample standard deviation by default).

    Returns
    -------
    dict window -> float64 array (n_bars,)
    """
    ws = _unique(windows)
    import vectorbt as vbt  # imported on use: it costs ~3 s at start-up

    res = vbt.MSTD.run(pd.Series(x), window=ws, ddof=ddof).mstd
    arr = np.asarray(res, dtype=np.float64).reshape(len(x), len(ws))
    return {w: np.ascontiguousarray(arr[:, i]) for i, w in enumerate(ws)}


def average_true_range(high: np.ndarray, low: np.ndarray, close: np.ndarray,
                       windows: Sequence[int], ewm: bool = False) -> dict[int, np.ndarray]:
    """Average true range (vectorbt ``ATR``): TR_t = max(H_t - L_t, |H_t - C_{t-1}|,
    |L_t - C_{t-1}|) (TR_0 = H_0 - L_0), averaged like :func:`moving_average`.

    Returns
    -------
    dict window -> float64 array (n_bars,), in price units.
    """
    ws = _unique(windows)
    import vectorbt as vbt  # imported on use: it costs ~3 s at start-up

    res = vbt.ATR.run(pd.Series(high), pd.Series(low), pd.Series(close), window=ws, ewm=bool(ewm)).atr
    arr = np.asarray(res, dtype=np.float64).reshape(len(close), len(ws))
    return {w: np.ascontiguousarray(arr[:, i]) for i, w in enumerate(ws)}


def log_returns(close: np.ndarray) -> np.ndarray:
    """ln(C_t / C_{t-1}); NaN at bar 0."""
    out = np.full(close.shape, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        out[1:] = np.log(close[1:] / close[:-1])
    return out


def ewma_variance(r: np.ndarray, halflife_bars: float, min_periods: int) -> np.ndarray:
    """Zero-mean exponentially weighted variance of ``r`` (RiskMetrics), normalised weights:

    ``s2_t = sum_i lam^i r_{t-i}^2 / sum_i lam^i`` over the available (non-NaN) ``r``,
    ``lam = 0.5 ** (1 / halflife_bars)``; NaN until ``min_periods`` observations exist.
    For long histories this equals the recursion ``s2_t = lam s2_{t-1} + (1 - lam) r_t^2``.
    """
    s = pd.Series(r * r)
    return s.ewm(halflife=float(halflife_bars), adjust=True, ignore_na=True,
                 min_periods=int(min_periods)).mean().to_numpy(np.float64)


def rolling_sum(x: np.ndarray, window: int, fill: float = 0.0) -> np.ndarray:
    """Sum of the last ``window`` values with NaN counted as ``fill``; NaN for the first
    ``window - 1`` bars."""
    s = pd.Series(np.where(np.isnan(x), fill, x))
    return s.rolling(int(window), min_periods=int(window)).sum().to_numpy(np.float64)
