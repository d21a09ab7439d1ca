"""The perpetual-futures engine (numba kernel in ``nb.py``, pandas-facing wrapper in ``core.py``)."""

from backtest.engine.bars import EngineInputError, PerpBars
from backtest.engine.core import simulate_perp
from backtest.engine.settings import Account, Policy, SettingsError

__all__ = ["Account", "EngineInputError", "PerpBars", "Policy", "SettingsError", "simulate_perp"]
