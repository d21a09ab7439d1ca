"""Strategy modules and leverage policies.

A strategy maps market data to a signal in [-1, 1] per bar and parameter column (negative =
short); a leverage policy scales it; :func:`build_targets` turns both into the engine's target
exposure and policy settings. See ``docs/strategies.md``.

>>> import strategies
>>> strategies.names()                                       # doctest: +SKIP
>>> sig = strategies.get("trend_short").run(data, {"slow_days": [50, 100]})   # doctest: +SKIP
>>> target, policy, cols = strategies.build_targets(
...     data, "trend_short", {"slow_days": [50, 100]}, ["const(2)", "voltarget(0.5)"])  # doctest: +SKIP
>>> target, policy, cols = strategies.build_book_targets(                 # books: (n, K, n_cols)
...     book_data, "basket_short", {"weighting": "beta"}, ["voltarget(0.5)"])  # doctest: +SKIP
>>> target, policy, cols = strategies.build_book_targets(                 # with option legs: (n, K + J, n_cols)
...     book_data, "basket_short", {"weighting": "beta"}, ["voltarget(0.5)"],
...     options=[strategies.OptionRule(leg, "hedge", ratio=[0.0, 1.0])])   # doctest: +SKIP
"""

from strategies.base import Strategy, StrategyError, StrategyParams, get, names, per_column, register
from strategies.frame import MarketDataError, MarketFrame, as_market

# Built-in strategies register themselves on import.
from strategies import (bear_regime, breakdown_short, funding_carry, inverse_hold, long_put,  # noqa: E402,F401
                        short_hold, trend_short)
from strategies.combine import apply_filter, signals  # noqa: E402
from strategies import lookahead, policies  # noqa: E402,F401
from strategies.lookahead import LookAheadError  # noqa: E402
from strategies.policies import build_targets, min_of  # noqa: E402
from strategies import book, book_strategies  # noqa: E402,F401
from strategies.book import BookFrame, book_names, get_book, register_book  # noqa: E402
from strategies.book_build import build_book_targets  # noqa: E402
from strategies import book_options  # noqa: E402
from strategies.book_options import OptionRule  # noqa: E402
from strategies.modules import load_module  # noqa: E402

__all__ = [
    "BookFrame", "LookAheadError", "OptionRule", "MarketDataError", "MarketFrame", "Strategy", "StrategyError", "StrategyParams",
    "apply_filter", "as_market", "book", "book_names", "book_options", "build_book_targets", "build_targets", "get",
    "get_book", "load_module", "lookahead", "min_of", "names", "per_column",
    "policies", "register", "register_book", "signals",
]
