"""Stress: shocks applied consistently to trade, mark and funding data (and to the market spec
and the account), path transplants, and Monte Carlo paths by the stationary bootstrap of bars.

Public API::

    from backtest.stress import (Gap, VolatilityShock, FundingSpike, MarkWick, TierChange,
                                 SlippageShock, PathTransplant, apply_shocks, ShockError,
                                 StationaryBootstrap, run_monte_carlo, MonteCarloResult)

See ``docs/stress.md``.
"""

from backtest.stress.bootstrap import BootstrapPath, StationaryBootstrap, stationary_bootstrap_indices
from backtest.stress.common import ShockError, check_market_data
from backtest.stress.montecarlo import QUANTILES, MonteCarloResult, run_monte_carlo
from backtest.stress.shocks import (
    FundingSpike, Gap, MarkWick, Shock, SlippageShock, TierChange, VolatilityShock, apply_shocks,
)
from backtest.stress.transplant import PathTransplant

__all__ = [
    "BootstrapPath", "FundingSpike", "Gap", "MarkWick", "MonteCarloResult", "PathTransplant", "QUANTILES", "Shock",
    "ShockError", "SlippageShock", "StationaryBootstrap", "TierChange", "VolatilityShock", "apply_shocks",
    "check_market_data", "run_monte_carlo", "stationary_bootstrap_indices",
]
