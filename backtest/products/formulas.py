"""Closed forms for daily-reset leveraged products (readable references; the simulator is in
:mod:`backtest.products.nb`).

Sources: FTX Leveraged Token FAQ (help.ftx.com, article 360024479452) for the daily-reset
recursion and the +3x example table; Avellaneda & Zhang, "Path-dependence of leveraged ETF
returns", SIAM J. Financial Math. 1 (2010), for the decay term ``(L^2 - L)/2 * sigma^2``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from backtest.options.inputs import InstrumentInputError


def effective_leverage(L: Any, r: Any) -> np.ndarray:
    """Leverage after an underlying move ``r`` since the last rebalance: ``L (1 + r) / (1 + L r)``."""
    L, r = np.asarray(L, float), np.asarray(r, float)
    return L * (1.0 + r) / (1.0 + L * r)


def trigger_move(L: Any, ratio: Any = 4.0 / 3.0) -> np.ndarray:
    """Underlying move since the last rebalance at which ``|L'|`` reaches ``ratio x |L|``:
    ``r* = (T - L) / (L (1 - T))`` with ``T = ratio x L``. FTX (ratio 4/3): +3x -> -11.1 %,
    -3x -> +6.67 %, -1x -> +14.29 %. NaN where no move reaches it (L = 1, or 0 < L < 1 with
    ratio x L >= 1)."""
    L, ratio = np.asarray(L, float), np.asarray(ratio, float)
    if np.any(L == 0):
        raise InstrumentInputError("leverage L=0 has no rebalance trigger; give a non-zero L")
    T = ratio * L
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (T - L) / (L * (1.0 - T))
    return np.where(np.isfinite(r) & (r > -1.0), r, np.nan)


def decay_coefficient(L: Any) -> np.ndarray:
    """``(L^2 - L) / 2``: -1x -> 1, -2x -> 3, -3x -> 6, +2x -> 1, +3x -> 3."""
    L = np.asarray(L, float)
    return 0.5 * (L * L - L)


def expected_log_decay(L: Any, sigma: Any, years: Any) -> np.ndarray:
    """Expected ``ln(NAV_T) - L ln(S_T / S_0)`` of a frequently reset product without fees or
    funding: ``-(L^2 - L)/2 * sigma^2 * years`` (sigma annualised)."""
    return -decay_coefficient(L) * np.asarray(sigma, float) ** 2 * np.asarray(years, float)


def daily_reset_nav(prices: Any, L: Any, fee_per_period: float = 0.0) -> np.ndarray:
    """NAV path of a product reset at every given price: ``prod (1 + L r_k) (1 - fee)``,
    starting at 1. ``prices`` (n,) or (n, k) -> NAV of the same shape."""
    p = np.asarray(prices, float)
    r = p[1:] / p[:-1] - 1.0
    step = (1.0 + np.asarray(L, float) * r) * (1.0 - fee_per_period)
    return np.concatenate([np.ones((1,) + p.shape[1:]), np.cumprod(step, axis=0)], axis=0)
