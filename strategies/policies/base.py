"""Leverage-policy parameter sets, their registry, labels and grids.

A policy is a frozen pydantic model. Two families:

* :class:`Precomputed`: the leverage multiplier depends only on market data up to bar t's
  close, so it is computed here as a series (n_bars,) and multiplied into the target.
* :class:`InLoop`: the multiplier depends on the column's own equity path (drawdown control,
  CPPI), so the engine computes it inside its loop; the model translates to the fields of
  :class:`backtest.engine.settings.Policy`.

Every policy has a label such as ``const(3)`` or ``voltarget(0.5,estimator=rolling)``: its
name, its main parameters positionally, then every other non-default parameter as
``key=value``. :func:`parse` reads labels back, so a label is also a config value.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from strategies.base import suggest, validate_model
from strategies.frame import MarketFrame, as_market


class PolicyError(ValueError):
    """Unknown policy or parameter, an invalid value, or a policy that cannot be computed; the
    message names the field and the fix."""


class LeveragePolicy(BaseModel):
    """Base of every policy parameter set (frozen, unknown fields rejected)."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True, allow_inf_nan=False)

    name: ClassVar[str] = ""
    positional: ClassVar[tuple[str, ...]] = ()
    in_loop: ClassVar[bool] = False

    def label(self) -> str:
        """``name(positional values, key=value for other non-default fields)``."""
        parts = [_fmt(getattr(self, f)) for f in self.positional]
        for f, info in type(self).model_fields.items():
            if f in self.positional:
                continue
            v = getattr(self, f)
            if v != info.default:
                parts.append(f"{f}={_fmt(v)}")
        return f"{self.name}({','.join(parts)})"

    def __str__(self) -> str:
        return self.label()


class Precomputed(LeveragePolicy):
    """A policy whose leverage is a function of market data only."""

    def compute(self, data: Any, *, spec: Any = None) -> np.ndarray:
        """Leverage multiplier per bar, float64 (n_bars,), finite and >= 0; 0 where the policy
        has no value yet (warm-up, missing data). Uses data up to each bar's close only."""
        market = as_market(data)
        lev = np.asarray(self._leverage(market, spec), dtype=np.float64)
        if lev.shape != (market.n,):
            raise PolicyError(f"{self.label()}: leverage has shape {lev.shape}, expected ({market.n},)")
        lev = np.where(np.isnan(lev), 0.0, lev)
        bad = ~np.isfinite(lev) | (lev < 0)
        if bad.any():
            i = int(np.argmax(bad))
            raise PolicyError(
                f"{self.label()}: leverage {float(lev[i])!r} at {market.index[i].isoformat()} is not a finite "
                "number >= 0; combine it with a finite cap, e.g. min_of(..., const(10))")
        return lev

    def _leverage(self, market: MarketFrame, spec: Any) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class InLoop(LeveragePolicy):
    """A policy the engine computes inside its loop from the column's equity path."""

    in_loop: ClassVar[bool] = True

    def engine_fields(self) -> dict[str, Any]:  # pragma: no cover - abstract
        """Fields of :class:`backtest.engine.settings.Policy` for this policy."""
        raise NotImplementedError

    def target_scale(self) -> float:
        """Factor the signal is multiplied by before the engine applies the in-loop factor."""
        return 1.0


def _fmt(v: Any) -> str:
    if isinstance(v, LeveragePolicy):
        return v.label()
    if isinstance(v, tuple):
        return ",".join(_fmt(x) for x in v)
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        # Shortest exact form, so distinct values never share a label.
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)
    return str(v)


_POLICIES: dict[str, type[LeveragePolicy]] = {}


def register_policy(cls: type[LeveragePolicy]) -> type[LeveragePolicy]:
    """Class decorator: register a policy class under ``cls.name``."""
    if not cls.name or cls.name in _POLICIES:
        raise PolicyError(f"policy class {cls.__name__} needs a unique name, got {cls.name!r}")
    _POLICIES[cls.name] = cls
    return cls


def get(name: str) -> type[LeveragePolicy]:
    """The policy class registered as ``name``; an unknown name raises with a suggestion."""
    try:
        return _POLICIES[name]
    except KeyError:
        raise PolicyError(f"unknown policy {name!r}; {suggest(name, _POLICIES)}") from None


def names() -> list[str]:
    """Names of all registered policies, sorted."""
    return sorted(_POLICIES)


def make(name: str, **params: Any) -> LeveragePolicy:
    """One validated policy, e.g. ``make('voltarget', target_vol=0.5)``."""
    cls = get(name)
    return validate_model(cls, params, name, PolicyError)


def grid(name: str, **params: Any) -> list[LeveragePolicy]:
    """Policies for every combination of list-valued parameters, last key varying fastest,
    e.g. ``grid('voltarget', target_vol=[0.3, 0.5], max_leverage=[2, 5])`` -> 4 variants."""
    keys = list(params)
    axes = [list(v) if isinstance(v, (list, np.ndarray, range)) else [v] for v in params.values()]
    for k, ax in zip(keys, axes):
        if not ax:
            raise PolicyError(f"{name}: parameter {k!r} has an empty list of values; give at least one")
    return [make(name, **dict(zip(keys, combo))) for combo in itertools.product(*axes)]


def _split_args(s: str) -> list[str]:
    out, depth, cur = [], 0, []
    for ch in s:
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
            continue
        depth += (ch == "(") - (ch == ")")
        cur.append(ch)
    if "".join(cur).strip():
        out.append("".join(cur).strip())
    return out


def _value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    try:
        return float(text)
    except ValueError:
        return text


# Deepest nesting of parentheses a policy label may have (``const(1)`` is 1, ``min(const(1))`` 2):
# far more than any useful combination, and far below Python's recursion limit.
MAX_POLICY_DEPTH = 32


def _shown(text: str, keep: int = 60) -> str:
    """``text`` shortened for a message (a label can be thousands of characters long)."""
    return text if len(text) <= 2 * keep else f"{text[:keep]}...{text[-keep:]} ({len(text)} characters)"


def _check_nesting(text: str) -> None:
    """Balanced parentheses, nested at most :data:`MAX_POLICY_DEPTH` deep (checked in one pass,
    before the recursive reading)."""
    depth = deepest = 0
    for ch in text:
        if ch == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == ")":
            depth -= 1
            if depth < 0:
                break
    if depth != 0:
        raise PolicyError(f"cannot read policy {_shown(text)!r}: unbalanced parentheses; every '(' needs its ')'")
    if deepest > MAX_POLICY_DEPTH:
        raise PolicyError(
            f"policy {_shown(text)!r} nests {deepest} levels deep; at most {MAX_POLICY_DEPTH} are allowed: "
            "list the caps in one min(a,b,c) instead of nesting min(min(...))")


def nesting_depth(policy: LeveragePolicy) -> int:
    """Levels of a policy's label: 1 for a plain policy, 1 + the deepest part for ``min``."""
    parts = getattr(policy, "policies", None)
    return 1 + max((nesting_depth(p) for p in parts), default=0) if parts else 1


def parse(text: str) -> LeveragePolicy:
    """Read a policy from its label, e.g. ``'const(3)'``, ``'voltarget(0.5,max_leverage=5)'``,
    ``'min(voltarget(0.5),liqcap(3))'`` or a bare name for the defaults (``'cppi'``). Labels nest
    at most :data:`MAX_POLICY_DEPTH` levels deep."""
    if not isinstance(text, str):
        raise PolicyError(f"cannot read policy {text!r}: give a label such as 'const(3)'")
    text = text.strip()
    _check_nesting(text)
    if "(" not in text:
        return make(text)
    if not text.endswith(")"):
        raise PolicyError(f"cannot read policy {text!r}: expected name(args), e.g. 'const(3)'")
    name, args = text[: text.index("(")].strip(), text[text.index("(") + 1: -1]
    cls = get(name)
    if getattr(cls, "nested", False):
        return cls(policies=tuple(parse(a) for a in _split_args(args)))
    values: dict[str, Any] = {}
    pos = list(cls.positional)
    for i, a in enumerate(_split_args(args)):
        if "=" in a:
            k, v = a.split("=", 1)
            values[k.strip()] = _value(v.strip())
        elif i < len(pos):
            values[pos[i]] = _value(a)
        else:
            raise PolicyError(
                f"policy {text!r}: too many positional values; {name} takes {pos} positionally, "
                "give the rest as key=value")
    return validate_model(cls, values, name, PolicyError)


def expand(policies: Any) -> list[LeveragePolicy]:
    """Normalise a policy grid to a list of policies with unique labels.

    Accepted items: a policy instance; a label string (:func:`parse`); a dict
    ``{'name': 'voltarget', 'target_vol': [0.3, 0.5], ...}`` or a pair
    ``('voltarget', {'target_vol': [0.3, 0.5]})`` (a grid, see :func:`grid`). ``None`` means
    ``[const(1)]``; a single item is a one-element list.
    """
    if policies is None:
        policies = ["const(1)"]
    if isinstance(policies, (str, dict, LeveragePolicy)) or (
            isinstance(policies, tuple) and len(policies) == 2 and isinstance(policies[0], str)
            and isinstance(policies[1], dict)):
        policies = [policies]
    out: list[LeveragePolicy] = []
    for item in policies:
        if isinstance(item, LeveragePolicy):
            out.append(item)
        elif isinstance(item, str):
            out.append(parse(item))
        elif isinstance(item, dict):
            if "name" not in item:
                raise PolicyError(f"policy spec {item!r} has no 'name'; e.g. {{'name': 'voltarget', 'target_vol': 0.5}}")
            rest = {k: v for k, v in item.items() if k != "name"}
            out.extend(grid(item["name"], **rest))
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], dict):
            out.extend(grid(item[0], **item[1]))
        else:
            raise PolicyError(f"cannot read policy spec {item!r}: give a policy, a label string, or a dict with 'name'")
    if not out:
        raise PolicyError("empty policy list; give at least one policy, e.g. ['const(1)']")
    labels = [p.label() for p in out]
    dup = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dup:
        raise PolicyError(f"duplicate policy variants {dup}; each variant must be listed once")
    return out


def leverage(data: Any, policies: Any, *, spec: Any = None) -> pd.DataFrame:
    """Leverage series of precomputed policies, DataFrame (n_bars, n_policies), columns = labels."""
    market = as_market(data)
    pols = expand(policies)
    cols = {}
    for p in pols:
        if not isinstance(p, Precomputed):
            raise PolicyError(f"{p.label()} is an in-loop policy; the engine computes it from the equity path")
        cols[p.label()] = p.compute(market, spec=spec)
    return pd.DataFrame(cols, index=market.index).rename_axis(columns="policy")
