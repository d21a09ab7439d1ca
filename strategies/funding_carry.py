"""Funding-aware carry short.

Idea: when funding is positive, longs pay shorts, so a short earns the funding carry on top of
any price drop. Trade the short only while the trailing funding pays it, or scale the short by
how much it pays.

The trailing funding is the sum of the funding prints (column ``funding_rate``, NaN = no print)
over the last ``window_days``, annualised with 365-day years:
``phi_t = sum(rates in window) * 365 / window_days`` (a fraction per year; 0.0001 per 8 h
is 0.1095/yr).

* ``mode='gate'``: signal -1 while ``phi_t > threshold``, else 0;
* ``mode='scale'``: signal ``-clip((phi_t - threshold) / (full_at - threshold), 0, 1)``.

Signal 0 during the first window (no full window of funding history yet).
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
from pydantic import Field, model_validator

from strategies.base import StrategyError, StrategyParams, register
from strategies.frame import DAYS_PER_YEAR, MarketFrame
from strategies.indicators import rolling_sum


class FundingCarryParams(StrategyParams):
    """Parameters of ``funding_carry``.

    Attributes
    ----------
    mode : ``'gate'`` (all or nothing) or ``'scale'`` (proportional).
    window_days : trailing window of the funding average, days.
    threshold : annualised funding (fraction per year) above which the short is on.
    full_at : annualised funding at which ``'scale'`` reaches a full short (> ``threshold``).
    """

    mode: Literal["gate", "scale"] = "gate"
    window_days: float = Field(7.0, gt=0)
    threshold: float = 0.0
    full_at: float = 0.3

    @model_validator(mode="after")
    def _full_above_threshold(self) -> "FundingCarryParams":
        if self.mode == "scale" and not self.full_at > self.threshold:
            raise ValueError(f"full_at={self.full_at} must be above threshold={self.threshold} for mode='scale'")
        return self


def trailing_funding(market: MarketFrame, window_days: float) -> np.ndarray:
    """Annualised trailing funding (fraction per year), float64 (n_bars,), NaN in the warm-up."""
    rate = market.col("funding_rate", needed_by="funding_carry")
    if not np.isfinite(rate).any():
        raise StrategyError(
            "funding_carry: column 'funding_rate' has no funding prints; load the funding history")
    n = market.bars(window_days)
    return rolling_sum(rate, n) * DAYS_PER_YEAR / (n * market.bar_days)


def compute(market: MarketFrame, params: Sequence[FundingCarryParams]) -> np.ndarray:
    """Signals (n_bars, len(params)) in [-1, 0]."""
    cache: dict[float, np.ndarray] = {}
    out = np.zeros((market.n, len(params)))
    for j, p in enumerate(params):
        if p.window_days not in cache:
            cache[p.window_days] = trailing_funding(market, p.window_days)
        phi = cache[p.window_days]
        with np.errstate(invalid="ignore"):
            if p.mode == "gate":
                sig = np.where(phi > p.threshold, -1.0, 0.0)
            else:
                sig = 0.0 - np.clip((phi - p.threshold) / (p.full_at - p.threshold), 0.0, 1.0)
        out[:, j] = np.where(np.isnan(phi), 0.0, sig)
    return out


STRATEGY = register("funding_carry", FundingCarryParams, compute,
                    "short only while trailing funding pays shorts, or scale the short by it")
