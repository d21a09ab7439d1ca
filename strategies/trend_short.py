"""Trend-following short: short while the trend is down.

Idea: time-series momentum is documented in crypto (Liu & Tsyvinski, RFS 2021), so a short is
held only while the price trend points down, and the position is flat otherwise.

Rules (``rule``):

* ``'price_ma'``: signal -1 while the close is below its ``slow_days`` moving average;
* ``'ma_cross'``: signal -1 while the ``fast_days`` moving average is below the ``slow_days``
  one.

Signal 0 otherwise and while the averages are still warming up.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
from pydantic import Field, model_validator

from strategies.base import StrategyParams, register
from strategies.frame import MarketFrame
from strategies.indicators import moving_average


class TrendShortParams(StrategyParams):
    """Parameters of ``trend_short`` (window lengths in days, converted to bars).

    Attributes
    ----------
    rule : ``'price_ma'`` (close below the slow average) or ``'ma_cross'`` (fast average below
        the slow average).
    slow_days : slow moving-average length, days.
    fast_days : fast moving-average length, days (``'ma_cross'`` only); must be < ``slow_days``.
    ewm : exponential (span = window) instead of simple moving averages.
    """

    rule: Literal["price_ma", "ma_cross"] = "price_ma"
    slow_days: float = Field(50.0, gt=0)
    fast_days: float = Field(10.0, gt=0)
    ewm: bool = False

    @model_validator(mode="after")
    def _fast_below_slow(self) -> "TrendShortParams":
        if self.rule == "ma_cross" and not self.fast_days < self.slow_days:
            raise ValueError(
                f"fast_days={self.fast_days} must be below slow_days={self.slow_days} for rule='ma_cross'")
        return self


def compute(market: MarketFrame, params: Sequence[TrendShortParams]) -> np.ndarray:
    """Signals (n_bars, len(params)) in {-1, 0}."""
    close = market.col("close", needed_by="trend_short")
    out = np.zeros((market.n, len(params)))
    for ewm in (False, True):
        group = [(j, p) for j, p in enumerate(params) if p.ewm == ewm]
        if not group:
            continue
        windows = [market.bars(p.slow_days) for _, p in group]
        windows += [market.bars(p.fast_days) for _, p in group if p.rule == "ma_cross"]
        ma = moving_average(close, windows, ewm=ewm)
        for j, p in group:
            slow = ma[market.bars(p.slow_days)]
            fast = close if p.rule == "price_ma" else ma[market.bars(p.fast_days)]
            # NaN comparisons are False, so the warm-up stays flat.
            out[:, j] = np.where(fast < slow, -1.0, 0.0)
    return out


STRATEGY = register("trend_short", TrendShortParams, compute,
                    "short while the close (or a fast MA) is below a slow moving average")
