"""The perpetual-futures engine (numba kernel in ``nb.py``, pandas-facing wrapper in ``core.py``)."""

from typing import Any

from backtest.engine.bars import EngineInputError, PerpBars
from backtest.engine.settings import Account, Policy, SettingsError

__all__ = ["Account", "EngineInputError", "PerpBars", "Policy", "SettingsError", "simulate_perp"]


def __getattr__(name: str) -> Any:
    # the kernel (numba) is imported on first use: the run config builds its account keys from
    # ``settings``, and commands that simulate nothing (``backtest report``) need no compiler
    if name == "simulate_perp":
        from backtest.engine.core import simulate_perp

        return simulate_perp
    raise AttributeError(f"module 'backtest.engine' has no attribute {name!r}")
