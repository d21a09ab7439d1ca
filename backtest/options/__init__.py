"""Long puts as an instrument: Black-76 pricing on the forward, volatility inputs, the Deribit
expiry calendar and a rolling long-put simulator returning a :class:`~backtest.result.SimResult`.

Public API::

    from backtest.options import simulate_puts, PutSettings
    res = simulate_puts(market_data, PutSettings(moneyness=[0.9, 0.8], roll_dte=7))
"""

from backtest.options.inputs import InstrumentInputError, Underlying, as_underlying, grid
from backtest.options.pricing import (
    black76, black76_greeks, bsm_greeks, forward_price, gbs_greeks, gbs_price, inverse_net_delta,
    inverse_payoff, inverse_price, option_fee, parity_gap, skewed_vol,
)
from backtest.options.schedule import expiry_schedule, last_friday
from backtest.options.sim import PutSettings, simulate_puts
from backtest.options.vol import atm_vol, ewma_vol, funding_carry

__all__ = [
    "InstrumentInputError", "Underlying", "as_underlying", "grid",
    "black76", "black76_greeks", "bsm_greeks", "forward_price", "gbs_greeks", "gbs_price",
    "inverse_net_delta", "inverse_payoff", "inverse_price", "option_fee", "parity_gap", "skewed_vol",
    "expiry_schedule", "last_friday", "PutSettings", "simulate_puts", "atm_vol", "ewma_vol", "funding_carry",
]
