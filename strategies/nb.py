"""Numba kernels of the strategies' indicators (numpy in, numpy out).

The moving averages are vectorbt 1.2's (``vectorbt/generic/nb.py``: ``rolling_mean_1d_nb``,
``ewm_mean_1d_nb``, called by ``vectorbt.MA`` through ``vectorbt/indicators/nb.py: ma_nb`` with
``minp = window`` and ``adjust=False``), operation for operation, so the numbers are the same to
the last bit (``tests/strategies/test_strat_indicators.py`` compares them with vectorbt). They
are here so that a strategy's signals do not import vectorbt: its import takes 2-3 s, most of a
1,000-column sweep's fixed cost (benchmarks/README.md, "Sweeps").
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def rolling_mean_1d_nb(a, window, out):
    """Mean of the last ``window`` values of ``a`` (NaN not counted), NaN while fewer than
    ``window`` values are there: vectorbt's ``rolling_mean_1d_nb(a, window, minp=window)``.
    A running sum over the bars less the running sum ``window`` bars earlier.

    ``a`` float64 (n,); ``out`` float64 (n,), written.
    """
    n = a.shape[0]
    cumsum_arr = np.zeros(n)
    nancnt_arr = np.zeros(n)
    cumsum = 0.0
    nancnt = 0.0
    for i in range(n):
        if np.isnan(a[i]):
            nancnt = nancnt + 1
        else:
            cumsum = cumsum + a[i]
        nancnt_arr[i] = nancnt
        cumsum_arr[i] = cumsum
        if i < window:
            window_len = i + 1 - nancnt
            window_cumsum = cumsum
        else:
            window_len = window - (nancnt - nancnt_arr[i - window])
            window_cumsum = cumsum - cumsum_arr[i - window]
        if window_len < window:
            out[i] = np.nan
        else:
            out[i] = window_cumsum / window_len


@njit(cache=True)
def ewm_mean_1d_nb(a, span, out):
    """Exponential moving average of span ``span`` (alpha = 2 / (span + 1)), not adjusted, NaN
    while fewer than ``span`` values are there: vectorbt's ``ewm_mean_1d_nb(a, span,
    minp=span, adjust=False)`` (pandas' ``ewma``).

    ``a`` float64 (n,); ``out`` float64 (n,), written.
    """
    n = a.shape[0]
    if n == 0:
        return
    com = (span - 1) / 2.0
    alpha = 1.0 / (1.0 + com)
    old_wt_factor = 1.0 - alpha
    new_wt = alpha
    weighted_avg = a[0]
    nobs = 1 if weighted_avg == weighted_avg else 0
    out[0] = weighted_avg if nobs >= span else np.nan
    old_wt = 1.0
    for i in range(1, n):
        cur = a[i]
        is_observation = cur == cur
        nobs += 1 if is_observation else 0
        if weighted_avg == weighted_avg:
            old_wt *= old_wt_factor
            if is_observation:
                if weighted_avg != cur:  # vectorbt: avoids rounding on a constant series
                    weighted_avg = ((old_wt * weighted_avg) + (new_wt * cur)) / (old_wt + new_wt)
                old_wt = 1.0
        elif is_observation:
            weighted_avg = cur
        out[i] = weighted_avg if nobs >= span else np.nan


@njit(cache=True)
def moving_averages_nb(a, windows, ewm):
    """:func:`rolling_mean_1d_nb` (``ewm`` False) or :func:`ewm_mean_1d_nb` of ``a`` (float64
    (n,)) for each of ``windows`` (int64 (k,), each >= 1); returns float64 (k, n), one row per
    window."""
    out = np.empty((windows.shape[0], a.shape[0]))
    for j in range(windows.shape[0]):
        if ewm:
            ewm_mean_1d_nb(a, windows[j], out[j])
        else:
            rolling_mean_1d_nb(a, windows[j], out[j])
    return out
