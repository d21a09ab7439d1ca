"""Long puts as an instrument: Black-76 pricing on the forward, volatility inputs, the Deribit
expiry calendar and a rolling long-put simulator returning a :class:`~backtest.result.SimResult`.

Public API::

    from backtest.options import simulate_puts, PutSettings
    res = simulate_puts(market_data, PutSettings(moneyness=[0.9, 0.8], roll_dte=7))
"""

from typing import TYPE_CHECKING

from backtest.lazy import lazy_exports

if TYPE_CHECKING:  # the names, for type checkers and readers; imported on first use below
    from backtest.options.inputs import InstrumentInputError, Underlying, as_underlying, grid
    from backtest.options.pricing import black76, black76_greeks, bsm_greeks, forward_price, gbs_greeks, gbs_price, inverse_net_delta, inverse_payoff, inverse_price, option_fee, parity_gap, skewed_vol
    from backtest.options.schedule import expiry_schedule, last_friday
    from backtest.options.sim import PutSettings, simulate_puts
    from backtest.options.vol import atm_vol, ewma_vol, funding_carry

# Each public name -> the module defining it. The package imports none of them up front: a perp
# run or sweep imports this package for one settings class (its config's option fields, the
# book's intrabar modes), and the rest pulls in compiled kernels that it never calls.
_WHERE = {name: module for module, names in {
    'backtest.options.inputs': ('InstrumentInputError', 'Underlying', 'as_underlying', 'grid'),
    'backtest.options.pricing': ('black76', 'black76_greeks', 'bsm_greeks', 'forward_price', 'gbs_greeks', 'gbs_price', 'inverse_net_delta', 'inverse_payoff', 'inverse_price', 'option_fee', 'parity_gap', 'skewed_vol'),
    'backtest.options.schedule': ('expiry_schedule', 'last_friday'),
    'backtest.options.sim': ('PutSettings', 'simulate_puts'),
    'backtest.options.vol': ('atm_vol', 'ewma_vol', 'funding_carry'),
}.items() for name in names}
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)


__all__ = [
    "InstrumentInputError", "Underlying", "as_underlying", "grid",
    "black76", "black76_greeks", "bsm_greeks", "forward_price", "gbs_greeks", "gbs_price",
    "inverse_net_delta", "inverse_payoff", "inverse_price", "option_fee", "parity_gap", "skewed_vol",
    "expiry_schedule", "last_friday", "PutSettings", "simulate_puts", "atm_vol", "ewma_vol", "funding_carry",
]
