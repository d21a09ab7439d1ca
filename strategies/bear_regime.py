"""Bear-regime filter: below the 200-day average and the average falling.

Idea: the classic regime split. The market is in a bear regime at bar t when

* the close is below its ``ma_days`` simple moving average ``MA_t``, and
* the average is falling: ``MA_t < MA_{t - slope_days}``.

Alone, the strategy is short (-1) in the bear regime and flat (0) otherwise. As a filter
(``filter='bear_regime'`` in :func:`strategies.signals` / :func:`strategies.build_targets`) it
lets another strategy's short through only in the bear regime.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from pydantic import Field

from strategies.base import StrategyParams, register
from strategies.frame import MarketFrame
from strategies.indicators import moving_average


class BearRegimeParams(StrategyParams):
    """Parameters of ``bear_regime`` (days, converted to bars).

    Attributes
    ----------
    ma_days : moving-average length, days.
    slope_days : the average is falling when it is below its value ``slope_days`` ago, days.
    ewm : exponential (span = window) instead of a simple moving average.
    """

    ma_days: float = Field(200.0, gt=0)
    slope_days: float = Field(20.0, gt=0)
    ewm: bool = False


def regime_mask(market: MarketFrame, params: Sequence[BearRegimeParams]) -> np.ndarray:
    """Boolean (n_bars, len(params)): True where the bear regime holds (False in the warm-up)."""
    close = market.col("close", needed_by="bear_regime")
    out = np.zeros((market.n, len(params)), dtype=bool)
    for ewm in (False, True):
        group = [(j, p) for j, p in enumerate(params) if p.ewm == ewm]
        if not group:
            continue
        ma = moving_average(close, [market.bars(p.ma_days) for _, p in group], ewm=ewm)
        for j, p in group:
            m = ma[market.bars(p.ma_days)]
            k = market.bars(p.slope_days)
            past = np.full_like(m, np.nan)
            past[k:] = m[:-k]
            out[:, j] = (close < m) & (m < past)
    return out


def compute(market: MarketFrame, params: Sequence[BearRegimeParams]) -> np.ndarray:
    """Signals (n_bars, len(params)) in {-1, 0}."""
    return np.where(regime_mask(market, params), -1.0, 0.0)


STRATEGY = register("bear_regime", BearRegimeParams, compute,
                    "short while the close is below a falling long moving average (also a filter)")
