"""Long-put signal: which bars to hold puts, and the put's terms passed through to the pricer.

Idea: buy puts either as a directional bearish bet or as protection of a long holding, while a
trigger is on. This module only decides *when* to hold puts (signal -1 = hold puts, 0 = none);
pricing, strikes, rolls and fees belong to the options backtest. The put's terms are named like
the fields of :class:`backtest.options.sim.PutSettings` (``purpose``, ``moneyness``, ``expiry``,
``min_days``, ``size_mode``, ``exposure``, ``budget``) and :func:`settings_of` reads them back
from the column labels.

Triggers (``trigger``):

* ``'always'``: hold puts on every bar (a rolled put program, e.g. a crypto PPUT);
* ``'below_ma'``: while the close is below its ``ma_days`` simple moving average;
* ``'bear_regime'``: while :mod:`strategies.bear_regime` holds with ``ma_days`` / ``slope_days``.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

import numpy as np
import pandas as pd
from pydantic import Field

from strategies.base import StrategyError, StrategyParams, register
from strategies.bear_regime import BearRegimeParams, regime_mask
from strategies.frame import MarketFrame
from strategies.indicators import moving_average

PASS_THROUGH = ("purpose", "moneyness", "expiry", "min_days", "size_mode", "exposure", "budget")


class LongPutParams(StrategyParams):
    """Parameters of ``long_put``.

    Attributes
    ----------
    purpose : ``'directional'`` (puts alone) or ``'protective'`` (puts on top of a held long
        position of the underlying, whose P&L is part of the result); passed through.
    trigger : ``'always'``, ``'below_ma'`` or ``'bear_regime'`` (see module docstring).
    ma_days : moving-average length of the trigger, days.
    slope_days : slope lookback of the ``'bear_regime'`` trigger, days.
    moneyness : strike / forward at purchase (0.9 = 10 % out of the money); passed through.
    expiry : expiry cycle, ``'weekly'``, ``'monthly'`` or ``'quarterly'``; passed through
        (one value for all columns of a put simulation).
    min_days : tenor: the put bought expires on the first expiry more than this many days
        away; passed through.
    size_mode : ``'notional'`` (put notional = ``exposure`` x equity) or ``'budget'``
        (premium + fees = ``budget`` x equity per purchase); passed through.
    exposure : notional multiple of equity in ``'notional'`` mode; passed through.
    budget : fraction of equity spent per purchase in ``'budget'`` mode; passed through.
    """

    purpose: Literal["directional", "protective"] = "directional"
    trigger: Literal["always", "below_ma", "bear_regime"] = "below_ma"
    ma_days: float = Field(50.0, gt=0)
    slope_days: float = Field(20.0, gt=0)
    moneyness: float = Field(0.9, gt=0, lt=2)
    expiry: Literal["weekly", "monthly", "quarterly"] = "monthly"
    min_days: float = Field(7.0, ge=0)
    size_mode: Literal["notional", "budget"] = "notional"
    exposure: float = Field(1.0, gt=0)
    budget: float = Field(0.01, gt=0, lt=1)


def compute(market: MarketFrame, params: Sequence[LongPutParams]) -> np.ndarray:
    """Signals (n_bars, len(params)) in {-1, 0}: -1 = hold puts."""
    close = market.col("close", needed_by="long_put")
    out = np.zeros((market.n, len(params)))
    below = [p for p in params if p.trigger == "below_ma"]
    ma = moving_average(close, [market.bars(p.ma_days) for p in below]) if below else {}
    for j, p in enumerate(params):
        if p.trigger == "always":
            out[:, j] = -1.0
        elif p.trigger == "below_ma":
            out[:, j] = np.where(close < ma[market.bars(p.ma_days)], -1.0, 0.0)
        else:
            mask = regime_mask(market, [BearRegimeParams(ma_days=p.ma_days, slope_days=p.slope_days)])
            out[:, j] = np.where(mask[:, 0], -1.0, 0.0)
    return out


def settings_of(columns: pd.MultiIndex) -> dict[str, Any]:
    """The put terms of ``long_put`` column labels, keyed like
    :class:`backtest.options.sim.PutSettings` fields: one value per column, except ``expiry``
    (one value for all columns)."""
    ps = STRATEGY.params_of(columns)
    expiries = sorted({p.expiry for p in ps})
    if len(expiries) > 1:
        raise StrategyError(
            f"long_put columns mix expiry cycles {expiries}; a put simulation takes one expiry for all "
            "columns: select the columns of one cycle")
    out: dict[str, Any] = {k: [getattr(p, k) for p in ps] for k in PASS_THROUGH if k != "expiry"}
    out["expiry"] = expiries[0]
    return out


STRATEGY = register("long_put", LongPutParams, compute,
                    "hold puts (directional or protective) while a trigger is on; terms passed through")
