"""Strategy parameter sets, parameter grids, and the strategy registry.

A strategy is a frozen pydantic parameter model plus a vectorized function
``compute(market, params_list) -> float64 array (n_bars, len(params_list))`` returning the
signal for each parameter set: a float in [-1, 1] per bar (negative = short; the leverage
policy scales it) or NaN (= keep the current position), computed from data up to and
including the bar's close. The engine fills row t at bar t+1's open.
"""

from __future__ import annotations

import difflib
import itertools
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError

from strategies.frame import MarketFrame, as_market


class StrategyError(ValueError):
    """Unknown strategy or parameter, invalid parameter value, or an invalid signal; the message
    names the value and the fix."""


class StrategyParams(BaseModel):
    """Base class of every strategy's parameter set: frozen, unknown fields rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True, allow_inf_nan=False)


def suggest(name: str, known: Iterable[str]) -> str:
    """A ``did you mean ...`` hint for a misspelt ``name`` (empty if nothing is close)."""
    known = list(known)
    close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    return "known: " + ", ".join(repr(k) for k in sorted(known))


def validate_model(cls: type[BaseModel], values: dict[str, Any], where: str, err: type[Exception]) -> Any:
    """Build ``cls(**values)``; unknown keys get a did-you-mean hint and every invalid field is
    reported at once, named as ``<where>.<field>=<value>``."""
    fields = list(cls.model_fields)
    unknown = [k for k in values if k not in fields]
    if unknown:
        msgs = [f"{where}: unknown parameter {k!r}; {suggest(k, fields)}" for k in unknown]
        raise err("; ".join(msgs) + f" (parameters: {', '.join(fields)})")
    try:
        return cls(**values)
    except ValidationError as exc:
        msgs = []
        for e in exc.errors():
            loc = ".".join(str(p) for p in e["loc"])
            if loc:
                msgs.append(f"{where}.{loc}={e.get('input')!r}: {e['msg']}")
            else:
                msgs.append(f"{where}: {e['msg']}")
        raise err("invalid parameters: " + "; ".join(msgs)) from None


def _is_axis(value: Any) -> bool:
    return isinstance(value, (list, tuple, np.ndarray, pd.Index, range))


def expand_grid(cls: type[BaseModel], params: Any, where: str, err: type[Exception]) -> list[Any]:
    """Turn ``params`` into a list of validated parameter sets.

    ``None`` -> the defaults; an instance of ``cls`` -> itself; a dict -> a grid (list values
    are axes, scalars are fixed; the product is taken in the dict's key order, the last key
    varying fastest); a list of instances and/or dicts of scalars -> each one.
    """
    if params is None:
        return [cls()]
    if isinstance(params, cls):
        return [params]
    if isinstance(params, BaseModel):
        raise err(f"{where}: got a {type(params).__name__}, expected {cls.__name__} parameters")
    if isinstance(params, dict):
        keys = list(params)
        axes = [list(params[k]) if _is_axis(params[k]) else [params[k]] for k in keys]
        for k, ax in zip(keys, axes):
            if len(ax) == 0:
                raise err(f"{where}: parameter {k!r} has an empty list of values; give at least one")
        out = [validate_model(cls, dict(zip(keys, combo)), where, err) for combo in itertools.product(*axes)]
    elif _is_axis(params):
        out = []
        for p in params:
            if isinstance(p, cls):
                out.append(p)
            elif isinstance(p, dict):
                out.append(validate_model(cls, p, where, err))
            else:
                raise err(f"{where}: list items must be {cls.__name__} or dicts, got {type(p).__name__}")
        if not out:
            raise err(f"{where}: empty parameter list; give at least one parameter set")
    else:
        raise err(f"{where}: parameters must be None, a dict (grid), a {cls.__name__} or a list; "
                  f"got {type(params).__name__}")
    seen: dict[Any, int] = {}
    for i, p in enumerate(out):
        key = tuple(p.model_dump().items())
        if key in seen:
            raise err(f"{where}: parameter set {i} duplicates set {seen[key]} ({p!r}); remove the repeat")
        seen[key] = i
    return out


ComputeFn = Callable[[MarketFrame, Sequence[Any]], np.ndarray]


@dataclass(frozen=True)
class Strategy:
    """A registered strategy.

    Attributes
    ----------
    name : registry name.
    params : the parameter model (a :class:`StrategyParams` subclass with defaults).
    compute : ``compute(market, params_list) -> float64 array (n_bars, len(params_list))``.
    summary : one-line description of the idea.
    """

    name: str
    params: type[StrategyParams]
    compute: ComputeFn
    summary: str = ""

    def grid(self, params: Any = None) -> list[StrategyParams]:
        """Validated parameter sets for ``params`` (see :func:`expand_grid`)."""
        return expand_grid(self.params, params, f"strategy {self.name!r}", StrategyError)

    def columns(self, params_list: Sequence[StrategyParams]) -> pd.MultiIndex:
        """Column labels: one level per parameter, in the model's field order."""
        names = list(self.params.model_fields)
        if not names:
            return pd.MultiIndex.from_arrays([[self.name] * len(params_list)], names=["strategy"])
        tuples = [tuple(getattr(p, f) for f in names) for p in params_list]
        return pd.MultiIndex.from_tuples(tuples, names=names)

    def params_of(self, columns: pd.MultiIndex) -> list[StrategyParams]:
        """Rebuild the parameter set of each column label made by :meth:`columns`."""
        names = list(self.params.model_fields)
        return [self.params(**dict(zip(names, (t if isinstance(t, tuple) else (t,))))) for t in columns]

    def run(self, data: Any, params: Any = None) -> pd.DataFrame:
        """Signals for every parameter set.

        Parameters
        ----------
        data : market data (DataFrame, ``MarketData`` or :class:`MarketFrame`).
        params : None (defaults), a parameter set, a dict grid or a list (see :func:`expand_grid`).

        Returns
        -------
        DataFrame (n_bars, n_params), float64 in [-1, 1] or NaN, index = bar open times,
        columns = :meth:`columns`.
        """
        market = as_market(data)
        plist = self.grid(params)
        out = np.asarray(self.compute(market, plist), dtype=np.float64)
        if out.shape != (market.n, len(plist)):
            raise StrategyError(
                f"strategy {self.name!r} returned shape {out.shape}, expected {(market.n, len(plist))}")
        bad = np.abs(out) > 1.0
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise StrategyError(
                f"strategy {self.name!r} produced signal {out[i, j]!r} outside [-1, 1] at "
                f"{market.index[i].isoformat()} for {plist[j]!r}; signals are scaled by the leverage policy")
        return pd.DataFrame(out, index=market.index, columns=self.columns(plist))

    __call__ = run


_REGISTRY: dict[str, Strategy] = {}


def register(name: str, params: type[StrategyParams], compute: ComputeFn, summary: str = "") -> Strategy:
    """Register a strategy under ``name`` and return it.

    Raises
    ------
    StrategyError : if ``name`` is taken or ``params`` is not a frozen, strict model.
    """
    if name in _REGISTRY:
        raise StrategyError(f"a strategy named {name!r} is already registered; choose another name")
    cfg = getattr(params, "model_config", {})
    if not (cfg.get("frozen") and cfg.get("extra") == "forbid"):
        raise StrategyError(
            f"{params.__name__}: parameter models must be frozen and reject unknown fields; "
            "subclass strategies.StrategyParams")
    strat = Strategy(name=name, params=params, compute=compute, summary=summary)
    _REGISTRY[name] = strat
    return strat


def get(name: str) -> Strategy:
    """The registered strategy called ``name``; an unknown name raises with a suggestion."""
    if isinstance(name, Strategy):
        return name
    try:
        return _REGISTRY[name]
    except KeyError:
        raise StrategyError(f"unknown strategy {name!r}; {suggest(name, _REGISTRY)}") from None


def names() -> list[str]:
    """Names of all registered strategies, sorted."""
    return sorted(_REGISTRY)


def per_column(fn: Callable[[MarketFrame, Any], np.ndarray]) -> ComputeFn:
    """Adapt ``fn(market, params) -> (n_bars,)`` into a ``compute`` for a list of parameter sets."""

    def compute(market: MarketFrame, params_list: Sequence[Any]) -> np.ndarray:
        return np.column_stack([np.asarray(fn(market, p), dtype=np.float64) for p in params_list])

    compute.__name__ = getattr(fn, "__name__", "compute")
    compute.__doc__ = fn.__doc__
    return compute
