"""Leverage policies: precomputed multipliers from market data, and in-loop (equity-path)
policies translated to the engine's :class:`backtest.engine.settings.Policy`.

Precomputed: ``const``, ``voltarget``, ``kelly``, ``liqcap``, ``tiercap``, ``min`` (``min_of``).
In-loop: ``drawdown``, ``cppi``. Books (:mod:`strategies.policies.book`): ``const``,
``voltarget``, ``grosscap``, ``liqcap``, ``min`` on the whole book's weights. See ``docs/strategies.md`` for the formulas.
"""

from strategies.policies.base import (InLoop, LeveragePolicy, PolicyError, Precomputed, expand, get, grid,
                                      leverage, make, names, parse, register_policy)
from strategies.policies.inloop import CPPI, Drawdown
from strategies.policies.precomputed import (Const, Kelly, LiqCap, MinOf, TierCap, VolForecast, VolTarget,
                                             min_of, tier_cap)
from strategies.policies.build import build_targets
from strategies.policies.book import (BookConst, BookLiqCap, BookMin, BookPolicy, BookVolTarget, GrossCap,
                                      book_policy_names, expand_book, make_book, parse_book)

__all__ = [
    "BookConst", "BookLiqCap", "BookMin", "BookPolicy", "BookVolTarget", "GrossCap", "book_policy_names",
    "expand_book", "make_book", "parse_book", "CPPI", "Const", "Drawdown", "InLoop", "Kelly", "LeveragePolicy", "LiqCap", "MinOf", "PolicyError",
    "Precomputed", "TierCap", "VolForecast", "VolTarget", "build_targets", "expand", "get", "grid",
    "leverage", "make", "min_of", "names", "parse", "register_policy", "tier_cap",
]
