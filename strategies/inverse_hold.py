"""Inverse-product hold: hold a -1x/-2x/-3x daily-reset product (or its perp replica).

Idea: the simplest bearish exposure a retail user can buy. The signal is a constant hold in the
product's direction, ``sign(leverage)``. The product's leverage ``L``, ``reset`` and
``rebalance_hour`` are passed through to the product simulator under the names of
:class:`backtest.products.sim.ProductSettings` (:func:`settings_of` reads them from the column
labels).

To replicate the product on the perp engine, pair it with the policy ``const(|L|)``: with
``reset='daily'`` the signal is given only on the bar whose *close* is the day's
``rebalance_hour`` (so the engine fills it at the reset) and is NaN (= keep the position, let
the leverage drift as in the product) in between; bar 0 opens the position. ``reset='bar'``
gives the signal on every bar (rebalanced each bar). The products' intraday reset trigger
depends on the position path and is not replicated here (the product simulator has it).
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from strategies.base import StrategyParams, register
from strategies.frame import MarketFrame

_HOUR_MS = 3_600_000
_DAY_MS = 24 * _HOUR_MS


class InverseHoldParams(StrategyParams):
    """Parameters of ``inverse_hold``.

    Attributes
    ----------
    leverage : the product's signed leverage ``L`` (-1, -2, -3 for inverse products).
    reset : ``'daily'`` (rebalance once a day at ``rebalance_hour``) or ``'bar'`` (every bar).
    rebalance_hour : UTC hour of the daily reset, in [0, 24).
    """

    leverage: float = Field(-1.0, ge=-10, le=10)
    reset: Literal["daily", "bar"] = "daily"
    rebalance_hour: float = Field(0.0, ge=0, lt=24)

    @field_validator("leverage")
    @classmethod
    def _nonzero(cls, v: float) -> float:
        if v == 0:
            raise ValueError("leverage must be non-zero (e.g. -1, -2, -3 for inverse products)")
        return v


def compute(market: MarketFrame, params: Sequence[InverseHoldParams]) -> np.ndarray:
    """Signals (n_bars, len(params)): ``sign(L)`` on reset bars, NaN between resets."""
    close_ms = market.timestamps_ms + int(round(market.bar_seconds * 1000))
    out = np.empty((market.n, len(params)))
    for j, p in enumerate(params):
        s = float(np.sign(p.leverage))
        if p.reset == "bar":
            out[:, j] = s
            continue
        on = (close_ms - int(round(p.rebalance_hour * _HOUR_MS))) % _DAY_MS == 0
        on[0] = True
        out[:, j] = np.where(on, s, np.nan)
    return out


def settings_of(columns: pd.MultiIndex) -> dict[str, list[Any]]:
    """Per-column ``leverage``, ``reset`` and ``rebalance_hour`` from ``inverse_hold`` column
    labels, keyed like :class:`backtest.products.sim.ProductSettings` fields."""
    ps = STRATEGY.params_of(columns)
    return {"leverage": [p.leverage for p in ps], "reset": [p.reset for p in ps],
            "rebalance_hour": [p.rebalance_hour for p in ps]}


STRATEGY = register("inverse_hold", InverseHoldParams, compute,
                    "hold an inverse (daily-reset) product; leverage L passed through")
