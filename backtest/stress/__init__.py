"""Stress: shocks applied consistently to trade, mark and funding data (and to the market spec
and the account), path transplants, Monte Carlo paths by the stationary bootstrap of bars, and a
liquidation-cascade model with auto-deleveraging.

Public API::

    from backtest.stress import (Gap, VolatilityShock, FundingSpike, MarkWick, TierChange,
                                 SlippageShock, PathTransplant, apply_shocks, ShockError,
                                 StationaryBootstrap, run_monte_carlo, MonteCarloResult,
                                 Cascade, CascadeModel, CascadeResult, Crowd, solve_cascade,
                                 AccountPosition, adl_from_cascade, adl_risk, short_cut_frequency)

See ``docs/stress.md``.
"""

from backtest.stress.adl import (
    AccountPosition, AdlOutcome, AdlRisk, adl_from_cascade, adl_risk, binance_leverage_pnl, effective_leverage_ranking,
    short_cut_frequency,
)
from backtest.stress.bootstrap import BootstrapPath, StationaryBootstrap, stationary_bootstrap_indices
from backtest.stress.cascade import (
    Cascade, CascadeError, CascadeModel, CascadeResult, CascadeSolution, Crowd, crowd_from_history, solve_cascade,
)
from backtest.stress.common import ShockError, check_market_data
from backtest.stress.montecarlo import QUANTILES, MonteCarloResult, run_monte_carlo
from backtest.stress.shocks import (
    FundingSpike, Gap, MarkWick, Shock, SlippageShock, TierChange, VolatilityShock, apply_shocks,
)
from backtest.stress.transplant import PathTransplant

__all__ = [
    "AccountPosition", "AdlOutcome", "AdlRisk", "Cascade", "CascadeError", "CascadeModel", "CascadeResult",
    "CascadeSolution", "Crowd", "adl_from_cascade", "adl_risk", "binance_leverage_pnl", "crowd_from_history",
    "effective_leverage_ranking", "short_cut_frequency", "solve_cascade",
    "BootstrapPath", "FundingSpike", "Gap", "MarkWick", "MonteCarloResult", "PathTransplant", "QUANTILES", "Shock",
    "ShockError", "SlippageShock", "StationaryBootstrap", "TierChange", "VolatilityShock", "apply_shocks",
    "check_market_data", "run_monte_carlo", "stationary_bootstrap_indices",
]
