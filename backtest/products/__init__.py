"""Leveraged (inverse) products as an instrument: -1x/-2x/-3x daily-reset products backed by a
perp (rebalance triggers, management fee, funding) and a constant-leverage twin, returning a
:class:`~backtest.result.SimResult`, plus the closed forms of their decay.

Public API::

    from backtest.products import simulate_product, ProductSettings
    res = simulate_product(market_data, ProductSettings(leverage=[-1, -2, -3]))
"""

from backtest.products.formulas import (
    daily_reset_nav, decay_coefficient, effective_leverage, expected_log_decay, trigger_move,
)
from backtest.products.sim import ProductSettings, simulate_product

__all__ = [
    "ProductSettings", "simulate_product", "daily_reset_nav", "decay_coefficient", "effective_leverage",
    "expected_log_decay", "trigger_move",
]
