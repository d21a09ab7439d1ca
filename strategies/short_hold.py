"""Buy-and-hold 1x short: the baseline every bearish strategy should beat.

Idea: open a short of 1x equity on the first bar and hold it. With ``rebalance=False`` the
signal is -1 on the first bar and NaN (= keep the position) afterwards, so the position's size
stays fixed in coins and the leverage drifts with the price, as a true hold does. With
``rebalance=True`` the signal is -1 on every bar (constant -1x of equity, rebalanced each bar).
Use it with the policy ``const(1)`` for the 1x baseline.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from strategies.base import StrategyParams, register
from strategies.frame import MarketFrame


class ShortHoldParams(StrategyParams):
    """Parameters of ``short_hold``.

    Attributes
    ----------
    rebalance : False = open once and hold; True = -1 on every bar (rebalanced to -1x).
    """

    rebalance: bool = False


def compute(market: MarketFrame, params: Sequence[ShortHoldParams]) -> np.ndarray:
    """Signals (n_bars, len(params)): -1 on the first bar, then NaN (or -1 when rebalancing)."""
    out = np.full((market.n, len(params)), np.nan)
    for j, p in enumerate(params):
        if p.rebalance:
            out[:, j] = -1.0
        else:
            out[0, j] = -1.0
    return out


STRATEGY = register("short_hold", ShortHoldParams, compute, "buy-and-hold 1x short baseline")
