"""Volatility inputs for model-priced options: EWMA realised vol, implied vol with a staleness
limit, the ATM vol a simulation uses per bar, and the carry estimate from funding.

Everything is "as of the bar's close": a value at bar i uses data up to and including bar i
(returns up to its close, the implied-vol candle that closes with it, funding prints inside it).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from backtest.options.inputs import DAY_MS, YEAR_MS, InstrumentInputError

DEFAULT_LAMBDA = 0.94   # RiskMetrics daily decay (effective window 1/(1-0.94) ~ 17 days)
DEFAULT_VRP = 1.10      # implied/realised ratio; Almeida et al. (arXiv 2410.15195): sqrt(0.72/0.58) ~ 1.11


def ewma_vol(price: Any, bar_ms: int, lam: float = DEFAULT_LAMBDA) -> np.ndarray:
    """Annualised EWMA volatility of close-to-close log returns.

    The daily decay ``lam`` is converted to the bar size so the half-life in calendar time is
    the same at any bar size: ``lam_bar = lam ** (bar_ms / 1 day)``. The variance is the
    normalised exponentially weighted mean of squared log returns (pandas ``ewm(adjust=True)``,
    no arbitrary seed), annualised by ``365 days / bar_ms``. It is NaN for the first
    ``ceil(1 / (1 - lam))`` days of bars (warm-up).

    Parameters
    ----------
    price : (n,) or (n, k) closes (> 0).
    bar_ms : bar length in ms.
    lam : daily decay in (0, 1).

    Returns
    -------
    float64 array of the shape of ``price``, annualised vol as a fraction.
    """
    if not (0.0 < lam < 1.0):
        raise InstrumentInputError(f"ewma_lambda={lam!r} must be in (0, 1) (RiskMetrics daily: 0.94)")
    p = np.asarray(price, dtype=np.float64)
    one_d = p.ndim == 1
    p2 = p[:, None] if one_d else p
    lam_bar = lam ** (bar_ms / DAY_MS)
    warm_days = math.ceil(1.0 / (1.0 - lam) - 1e-9)  # tolerance: 1/(1-0.9) is 10.000000000000002
    warm = int(math.ceil(warm_days * DAY_MS / bar_ms))
    r = np.vstack([np.full((1, p2.shape[1]), np.nan), np.diff(np.log(p2), axis=0)])
    var = pd.DataFrame(r * r).ewm(alpha=1.0 - lam_bar, adjust=True, min_periods=warm).mean().to_numpy()
    vol = np.sqrt(var * (YEAR_MS / bar_ms))
    return vol[:, 0] if one_d else vol


def ffill_limited(x: np.ndarray, limit: int) -> np.ndarray:
    """Forward-fill NaN along axis 0 for at most ``limit`` bars (each column separately)."""
    return pd.DataFrame(x).ffill(limit=limit).to_numpy() if limit > 0 else x.copy()


def atm_vol(iv: np.ndarray | None, price: np.ndarray, bar_ms: int, source: str, lam: float,
            vrp: float, max_stale_hours: float) -> tuple[np.ndarray, np.ndarray]:
    """ATM vol per bar for one parameter combination.

    Parameters
    ----------
    iv : (n, k) implied vol (fraction, NaN = missing) or None.
    price : (n, k) closes.
    source : ``'iv'`` implied vol only; ``'ewma'`` EWMA realised vol x ``vrp``; ``'auto'`` the
        implied vol where one is known (forward-filled up to ``max_stale_hours``), else EWMA x vrp.
    lam, vrp : EWMA daily decay and the variance-risk-premium multiplier (> 0).
    max_stale_hours : how long a missing implied vol is carried forward (DVOL has ~1-day holes).

    Returns
    -------
    vol : (n, k) annualised fraction, NaN where nothing is available.
    from_iv : (n, k) bool, True where the implied vol was used.
    """
    if not (np.isfinite(vrp) and vrp > 0):
        raise InstrumentInputError(f"vrp={vrp!r} must be a finite number > 0 (1.10 by default)")
    if not (max_stale_hours >= 0):
        raise InstrumentInputError(f"iv_max_stale_hours={max_stale_hours!r} must be >= 0")
    n, k = price.shape
    limit = int(math.floor(max_stale_hours * 3_600_000 / bar_ms))
    if source == "iv":
        if iv is None:
            raise InstrumentInputError(
                "vol_source='iv' but the data has no implied-vol series; pass iv=... (a fraction), add an "
                "'iv' column, or use vol_source='auto' / 'ewma'")
        v = ffill_limited(iv, limit)
        return v, np.isfinite(v)
    rv = ewma_vol(price, bar_ms, lam) * vrp
    if source == "ewma" or iv is None:
        return rv, np.zeros((n, k), dtype=bool)
    if source != "auto":
        raise InstrumentInputError(f"vol_source={source!r} is not one of 'auto', 'iv', 'ewma'")
    v = ffill_limited(iv, limit)
    v, rv = np.broadcast_arrays(v, rv)
    use_iv = np.isfinite(v)
    return np.where(use_iv, v, rv), use_iv


def funding_carry(funding_rate: np.ndarray | None, bar_ms: int, window_days: float,
                  clip: float) -> np.ndarray:
    """Annualised carry from funding: the sum of funding prints in the trailing ``window_days``
    (bars up to and including the current one) divided by the window in years, clipped to
    ``[-clip, clip]``. Zero when there are no funding data. Shape (n, k) like the input."""
    if not (window_days > 0):
        raise InstrumentInputError(f"carry_window_days={window_days!r} must be > 0")
    if funding_rate is None:
        raise InstrumentInputError(
            "carry_from_funding=True but the data has no funding_rate; pass funding_rate=... or set "
            "carry_from_funding=False")
    w = max(1, int(round(window_days * DAY_MS / bar_ms)))
    s = pd.DataFrame(np.nan_to_num(funding_rate, nan=0.0)).rolling(w, min_periods=1).sum().to_numpy()
    return np.clip(s / (window_days / 365.0), -clip, clip)
