"""Breakdown short (Donchian channel).

Idea: a close below the lowest low of the previous ``entry_days`` is a breakdown; short it and
hold until the close rises above the highest high of the previous ``exit_days`` (the upper
channel of a shorter window), then stay flat until the next breakdown.

The channels exclude the current bar (they cover bars t-n .. t-1), so the close of bar t is
compared with a level known before the bar. Entry and exit cannot fire on the same bar: the
lowest low of any window containing bar t-1 is below the highest high of any other such window.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from pydantic import Field

from strategies.base import StrategyParams, register
from strategies.frame import MarketFrame


class BreakdownShortParams(StrategyParams):
    """Parameters of ``breakdown_short`` (days, converted to bars).

    Attributes
    ----------
    entry_days : lookback of the lower channel (lowest low) whose break opens the short, days.
    exit_days : lookback of the upper channel (highest high) whose break closes it, days.
    """

    entry_days: float = Field(20.0, gt=0)
    exit_days: float = Field(10.0, gt=0)


def _channel(x: pd.Series, n: int, how: str) -> np.ndarray:
    roll = x.rolling(n, min_periods=n)
    return (roll.min() if how == "min" else roll.max()).shift(1).to_numpy(np.float64)


def compute(market: MarketFrame, params: Sequence[BreakdownShortParams]) -> np.ndarray:
    """Signals (n_bars, len(params)) in {-1, 0}."""
    close = market.col("close", needed_by="breakdown_short")
    low = pd.Series(market.col("low", needed_by="breakdown_short"))
    high = pd.Series(market.col("high", needed_by="breakdown_short"))
    lows = {n: _channel(low, n, "min") for n in {market.bars(p.entry_days) for p in params}}
    highs = {n: _channel(high, n, "max") for n in {market.bars(p.exit_days) for p in params}}
    out = np.zeros((market.n, len(params)))
    for j, p in enumerate(params):
        entry = close < lows[market.bars(p.entry_days)]
        exit_ = close > highs[market.bars(p.exit_days)]
        # State machine without a loop: mark events, carry the last one forward.
        state = pd.Series(np.where(entry, -1.0, np.where(exit_, 0.0, np.nan)))
        out[:, j] = state.ffill().fillna(0.0).to_numpy()
    return out


STRATEGY = register("breakdown_short", BreakdownShortParams, compute,
                    "short a close below the Donchian lower channel, cover above the upper channel")
