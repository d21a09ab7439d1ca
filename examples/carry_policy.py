"""A leverage policy of one's own, loaded by a run config (examples/carry_policy.toml):
``carrytilt(low,high)`` holds leverage ``high`` while the funding of the last ``window_days``
summed is positive (shorts were paid), else ``low``; 0 until ``window_days`` of bars exist."""

from typing import Any, ClassVar

import numpy as np
import pandas as pd
from pydantic import Field

from strategies import MarketFrame
from strategies.policies import Precomputed, register_policy


@register_policy
class CarryTilt(Precomputed):
    """``carrytilt(low,high)``: more leverage while a short is paid funding.

    Attributes
    ----------
    low : leverage while the trailing funding sum is <= 0 (shorts paid it), >= 0.
    high : leverage while it is > 0 (shorts received it), >= 0.
    window_days : the trailing window, days (converted to bars from the data's bar size).
    """

    name: ClassVar[str] = "carrytilt"                      # the label's name: carrytilt(1,3)
    positional: ClassVar[tuple[str, ...]] = ("low", "high")  # written without key= in a label
    low: float = Field(1.0, ge=0)
    high: float = Field(2.0, ge=0)
    window_days: float = Field(7.0, gt=0)

    def _leverage(self, market: MarketFrame, spec: Any) -> np.ndarray:  # noqa: ARG002 (the policy interface)
        # funding_rate: the prints inside each bar (NaN where none), known by the bar's close
        funding = np.nan_to_num(market.col("funding_rate", needed_by=self.label()), nan=0.0)
        n = market.bars(self.window_days)
        trailing = pd.Series(funding).rolling(n, min_periods=n).sum().to_numpy()  # bars t-n+1 .. t
        # NaN in the warm-up: Precomputed.compute turns it into leverage 0 (flat)
        return np.where(np.isnan(trailing), np.nan, np.where(trailing > 0, self.high, self.low))
