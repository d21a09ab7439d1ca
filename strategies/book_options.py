"""Option legs in book strategies: one sizing rule per leg, turned into the legs' targets.

A book may hold option legs next to its perpetuals (:class:`backtest.book.options.OptionLeg`,
docs/mechanics.md "Options in a book"): the book's target is ``(n_bars, K + J, n_cols)``, the K
perpetuals then the J legs, an option leg's target a long exposure ``>= 0`` as a multiple of the
account's equity (``contracts = target x equity / underlying``), NaN = keep the contracts. An
:class:`OptionRule` says how one leg is sized, from the perpetuals' targets after the book policy
(``w``, (n_bars, K)):

* ``hedge`` (ratio ``r``): the leg covers the exposure of its underlying ``k`` that it protects:
  a **call** leg covers a short, ``r * max(0, -w_k)`` (a short perp's loss on a rally is capped by
  long calls), a **put** leg a long, ``r * max(0, w_k)`` (e.g. the long-BTC leg of ``pair_beta``);
  0 where there is nothing to cover. Traded on the rows where the underlying's target is (the
  perpetuals' rows, ``rebalance_hours``), NaN elsewhere.
* ``overlay`` (exposure ``e``): a constant long exposure ``e`` on every row where the book trades
  (any perpetual's target set). Long puts next to a short book add to its gain in a fall (a tail
  overlay); they do not cap its loss on a rally.
* ``delta_hedged`` (exposure ``e``, band ``b``): the leg holds ``e``, and the underlying perp's
  target is **replaced** by the hedge ``-delta_t * e`` (``delta_t`` the delta per contract of the
  contract held after the signal bar's close, :func:`backtest.book.options.option_paths`): both
  targets are sized from the same equity at the open, so the book's delta (perp plus options, in
  the engine's measure ``delta_btc``) is 0 after the fills. Both targets are emitted on the first
  row with a contract, on every roll, and whenever ``|delta_t - delta_h| > b`` (``delta_h`` the
  delta per contract at the last hedge); NaN elsewhere. The band is on the **net delta per
  option contract**, ``(perp position + q * delta_t) / q = delta_t - delta_h``, which depends on
  the contract path alone, not on the account: the targets are computed before the simulation
  (the strategy layer sees no positions or equity), and this net delta is the same in every
  column and at every equity, so the band decides the same rows for all of them. A band on the
  book's delta in coins would need the simulated positions (fills, cuts, liquidations): an
  in-loop rule of the kernel.

A rule's number may be a list (a grid): the legs' grids make a column level ``hedge`` (product
of the legs' grids, or zipped with ``grid='zip'``), labelled readably (:func:`hedge_label`:
``'none'``, ``'call(1.10)x1'``, ``'put(0.90)@0.5'``, ``'put(0.90)@1,band(0.05)'``; with legs on
several underlyings each part is prefixed by its base, ``'BTC:call(1.10)x1+ETH:call(1.10)x1'``).
A value of 0 leaves the leg out of that column: never traded, and a ``delta_hedged`` leg's
underlying keeps the strategy's target there.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from strategies.base import StrategyError

RULES = ("hedge", "overlay", "delta_hedged")
GRIDS = ("product", "zip")
# the number each rule is sized by (a grid allowed), and the band of the delta hedge
SIZE_KEY = {"hedge": "ratio", "overlay": "exposure", "delta_hedged": "exposure"}


def _as_list(v: Any) -> list[Any]:
    return list(v) if isinstance(v, (list, tuple, np.ndarray)) else [v]


def rule_problems(rule: Any, ratio: Any = None, exposure: Any = None, band: Any = None) -> list[tuple[str, str]]:
    """Every problem of one leg's rule as ``(key, reason with the fix)``; empty when valid.

    One definition of the rules' checks, used by :class:`OptionRule` and by the run config's
    checks (``backtest.runner.checks``), which name the key of the bad table."""
    if rule not in RULES:
        import difflib

        close = difflib.get_close_matches(str(rule), RULES, n=1)
        return [("rule", f"{rule!r} is not one of {list(RULES)}" + (f" (did you mean {close[0]!r}?)" if close else ""))]
    out = []
    given = {"ratio": ratio, "exposure": exposure, "band": band}
    need = [SIZE_KEY[rule]] + (["band"] if rule == "delta_hedged" else [])
    for key, v in given.items():
        if key not in need and v is not None:
            out.append((key, f"{v!r} is not used by rule {rule!r} (it takes {' and '.join(need)}); remove it"))
    size_key = SIZE_KEY[rule]
    size = given[size_key]
    what = ("the fraction of the underlying's hedged exposure covered (1 = one contract per coin)"
            if rule == "hedge" else "a long exposure as a multiple of equity")
    if size is None:
        out.append((size_key, f"missing: rule {rule!r} needs {size_key} ({what}), e.g. {size_key} = 1.0"))
    else:
        values = _as_list(size)
        if not values:
            out.append((size_key, "an empty list; give a number >= 0 or a list of them (a grid)"))
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
                    or not math.isfinite(v) or v < 0:
                out.append((size_key, f"{v!r} must be a finite number >= 0 ({what}; 0 = the leg is left out)"))
                break
    if rule == "delta_hedged":
        if band is None:
            out.append(("band", "missing: rule 'delta_hedged' needs band, the largest net delta per option contract "
                                "kept before re-hedging, e.g. band = 0.05"))
        elif isinstance(band, bool) or not isinstance(band, (int, float, np.integer, np.floating)) \
                or not math.isfinite(band) or band < 0:
            out.append(("band", f"{band!r} must be one finite number >= 0 (net delta per contract; 0 = re-hedge "
                                "at every change)"))
    return out


@dataclass(frozen=True)
class OptionRule:
    """One option leg of a book and the rule sizing it (module docstring).

    Parameters
    ----------
    leg : the leg (:class:`backtest.book.options.OptionLeg`); its ``underlying`` may be a symbol
        of the book or its base currency held once (``'BTC'``): :func:`resolve_rules` makes it
        the symbol.
    rule : ``'hedge'``, ``'overlay'`` or ``'delta_hedged'``.
    ratio : ``hedge``: fraction of the underlying's hedged exposure covered; a number >= 0 or a
        list (a grid).
    exposure : ``overlay`` and ``delta_hedged``: the leg's long exposure, multiple of equity; a
        number >= 0 or a list (a grid).
    band : ``delta_hedged``: the largest net delta per option contract kept before re-hedging
        (coins per contract, >= 0; one value).
    """

    leg: Any
    rule: str
    ratio: Any = None
    exposure: Any = None
    band: float | None = None

    def __post_init__(self) -> None:
        from backtest.book.options import OptionLeg

        if not isinstance(self.leg, OptionLeg):
            raise StrategyError(f"OptionRule.leg is a {type(self.leg).__name__}; give an OptionLeg(underlying=..., "
                                "put=PutSettings(...))")
        bad = rule_problems(self.rule, self.ratio, self.exposure, self.band)
        if bad:
            raise StrategyError("; ".join(f"OptionRule.{k}: {msg}" for k, msg in bad))

    @property
    def values(self) -> list[float]:
        """The rule's grid: the ratio (hedge) or exposure values, in order."""
        return [float(v) for v in _as_list(self.ratio if self.rule == "hedge" else self.exposure)]

    def label(self, value: float, with_base: bool = False) -> str:
        """Readable label of this leg at one grid value (empty for 0: the leg is left out)."""
        if value == 0.0:
            return ""
        head = contract_label(self.leg.put)
        if self.rule == "hedge":
            body = f"{head}x{value:g}"
        elif self.rule == "overlay":
            body = f"{head}@{value:g}"
        else:
            body = f"{head}@{value:g},band({float(self.band):g})"
        return (self.leg.underlying.split("/")[0] + ":" + body) if with_base else body


def contract_label(put: Any) -> str:
    """``'call(1.10)'`` (moneyness mode) or ``'put(d0.25)'`` (delta mode) of a leg's PutSettings."""
    strike = f"d{float(put.target_delta):g}" if put.strike_mode == "delta" else f"{float(put.moneyness):.2f}"
    return f"{put.option_type}({strike})"


def resolve_rules(book: Any, rules: Sequence[OptionRule]) -> list[OptionRule]:
    """The rules with each leg's ``underlying`` the book's full symbol (a base currency held once,
    ``'BTC'``, is resolved as ``gate_symbol`` is); checks the legs a rule set allows: at most one
    ``delta_hedged`` leg per underlying, and no ``hedge`` leg on an underlying that is delta-hedged
    (its perp's target is the delta hedge, not an exposure to cover)."""
    from strategies.book import as_book

    bf = as_book(book)
    if isinstance(rules, OptionRule):
        rules = [rules]
    out = []
    for j, r in enumerate(rules):
        if not isinstance(r, OptionRule):
            raise StrategyError(f"options[{j}] is a {type(r).__name__}; give an OptionRule(leg=OptionLeg(...), "
                                "rule='hedge'|'overlay'|'delta_hedged', ...)")
        sym = bf.symbols[bf.resolve(r.leg.underlying, what=f"options[{j}].underlying")]
        out.append(replace(r, leg=replace(r.leg, underlying=sym)) if sym != r.leg.underlying else r)
    bad = rule_set_problems(out)
    if bad:
        raise StrategyError("; ".join(msg for _, msg in bad))
    return out


def rule_set_problems(rules: Sequence[OptionRule]) -> list[tuple[int, str]]:
    """Problems of a book's legs together, ``(leg index, reason with the fix)``, their
    underlyings being the book's symbols: at most one ``delta_hedged`` leg per underlying, and no
    ``hedge`` leg on an underlying that is delta-hedged (its perp's target is the delta hedge,
    not an exposure to cover)."""
    out = []
    dh = {r.leg.underlying for r in rules if r.rule == "delta_hedged"}
    seen: set[str] = set()
    for j, r in enumerate(rules):
        u = r.leg.underlying
        if r.rule == "delta_hedged":
            if u in seen:
                out.append((j, f"several delta_hedged legs on {u}: one perp hedges one leg; merge them into one "
                               "leg (its exposure) or hedge another underlying"))
            seen.add(u)
        elif r.rule == "hedge" and u in dh:
            out.append((j, f"options[{j}] hedges {u}, whose perp is the delta hedge of a delta_hedged leg (not an "
                           "exposure to cover); put the hedge on another underlying"))
    return out


def hedge_grid(rules: Sequence[OptionRule], grid: str = "product") -> list[tuple[float, ...]]:
    """The hedge columns: one value per leg in each, the product of the legs' grids (first leg
    outer) or, with ``grid='zip'``, their i-th values (every grid of one length, or one value)."""
    if grid not in GRIDS:
        raise StrategyError(f"options grid={grid!r} is not one of {list(GRIDS)}; 'product' combines every value of "
                            "every leg, 'zip' takes the legs' i-th values together")
    values = [r.values for r in rules]
    if grid == "product":
        return list(itertools.product(*values))
    lengths = {len(v) for v in values if len(v) > 1}
    if len(lengths) > 1:
        each = ", ".join(f"options[{j}]: {len(v)}" for j, v in enumerate(values))
        raise StrategyError(f"grid='zip' needs every leg's list of one length (or one value), got {each}; give "
                            "lists of one length, or grid='product'")
    n = lengths.pop() if lengths else 1
    return [tuple(v[i] if len(v) > 1 else v[0] for v in values) for i in range(n)]


def hedge_label(rules: Sequence[OptionRule], combo: Sequence[float]) -> str:
    """The ``hedge`` level's label of one column: the legs in it joined by ``'+'``, ``'none'``
    when every leg is left out (value 0)."""
    several = len({r.leg.underlying for r in rules}) > 1
    parts = [r.label(v, with_base=several) for r, v in zip(rules, combo)]
    return "+".join(p for p in parts if p) or "none"


def tradeable_rows(val: np.ndarray, lag: int) -> np.ndarray:
    """bool (n,) of one leg: the target rows the engine can trade it on, those whose fill bar
    ``r + lag`` opens after a close holding a contract (``val[r + lag - 1]`` finite,
    docs/mechanics.md "Options in a book", Target)."""
    n = val.shape[0]
    ok = np.zeros(n, dtype=bool)
    has = np.isfinite(val)
    src = np.arange(n) + lag - 1
    inside = (src >= 0) & (src < n)
    ok[inside] = has[src[inside]]
    # rows past the end are never traded (no fill bar): allowed, as the engine allows them
    ok[np.arange(n) + lag >= n] = True
    return ok


def hedge_target(w_k: np.ndarray, ratio: float, option_type: str, can_trade: np.ndarray) -> np.ndarray:
    """``hedge``: float64 (n,) target of a leg covering ``ratio`` of its underlying's exposure
    ``w_k`` (n,) (after the policy): a call covers a short, ``ratio * max(0, -w_k)``; a put a long,
    ``ratio * max(0, w_k)``; NaN where ``w_k`` is NaN (the perp keeps) or the leg cannot trade."""
    cover = np.maximum(0.0, -w_k) if option_type == "call" else np.maximum(0.0, w_k)
    return np.where(np.isfinite(w_k) & can_trade, ratio * cover, np.nan)


def overlay_target(traded: np.ndarray, exposure: float, can_trade: np.ndarray) -> np.ndarray:
    """``overlay``: float64 (n,) target ``exposure`` on the rows where the book trades
    (``traded``, bool (n,)) and the leg can trade, NaN elsewhere."""
    return np.where(traded & can_trade, exposure, np.nan)


def delta_hedge_rows(delta: np.ndarray, roll: np.ndarray, can_trade: np.ndarray, band: float) -> np.ndarray:
    """``delta_hedged``: bool (n,) rows that re-hedge: the first row with a contract (and a
    delta), every roll (``roll != 0``: first contract, settlement, early roll), and every row
    whose delta per contract ``delta`` (n,) moved more than ``band`` since the last hedge."""
    ok = can_trade & np.isfinite(delta)
    rows = np.zeros(delta.shape[0], dtype=bool)
    last = math.nan
    for t in np.flatnonzero(ok):
        d = float(delta[t])
        if math.isnan(last) or roll[t] != 0 or abs(d - last) > band:
            rows[t] = True
            last = d
    return rows


def delta_hedge_targets(delta: np.ndarray, rows: np.ndarray, exposure: float) -> tuple[np.ndarray, np.ndarray]:
    """``delta_hedged``: (perp target, leg target), float64 (n,) each: on the hedge ``rows`` the
    leg holds ``exposure`` and the perp ``-delta * exposure`` (the options' delta-equivalent
    exposure, opposite), NaN elsewhere."""
    leg = np.where(rows, exposure, np.nan)
    perp = np.where(rows, -delta * exposure, np.nan)
    return perp, leg


@dataclass(frozen=True)
class OptionPlan:
    """What the book's option legs need, computed once per build: the resolved rules, each leg's
    underlying index, the legs' contract paths and the tradeable rows (n, J), and the
    delta-hedge rows (n, J) (False for other rules)."""

    rules: list[OptionRule]
    k: np.ndarray
    paths: Any
    can_trade: np.ndarray
    hedge_rows: np.ndarray


def require_bars(book_data: Any) -> Any:
    """The BookData's bars (:class:`backtest.book.BookBars`), or a StrategyError saying why
    option legs need them."""
    bars = getattr(book_data, "bars", None)
    if bars is None or not hasattr(book_data, "symbols"):
        raise StrategyError("option legs need the book's bars (their contract paths are priced on the mark "
                            "closes): pass the BookData of backtest.data.load_book_data, not a frame")
    return bars


def plan(book_data: Any, rules: Sequence[OptionRule], specs: Sequence[Any] | None, lag: int) -> OptionPlan:
    """Resolve the rules and compute the legs' contract paths on the BookData's bars
    (:func:`backtest.book.options.option_paths`; a coin book when the specs are inverse)."""
    from backtest.book.options import check_option_legs, option_paths

    bars = require_bars(book_data)
    if isinstance(lag, bool) or not isinstance(lag, (int, np.integer)) or lag < 0:
        raise StrategyError(f"lag={lag!r} must be the engine's lag, an integer >= 0 (Account.lag, default 1)")
    rules = resolve_rules(book_data, rules)
    inverse = bool(specs[0].inverse) if specs else False
    legs = check_option_legs([r.leg for r in rules], bars.symbols, inverse)
    paths = option_paths(bars, legs, inverse)
    n, jj = bars.n, len(rules)
    can = np.column_stack([tradeable_rows(paths.val[:, j], int(lag)) for j in range(jj)])
    hedge = np.zeros((n, jj), dtype=bool)
    for j, r in enumerate(rules):
        if r.rule == "delta_hedged":
            hedge[:, j] = delta_hedge_rows(paths.delta[:, j], paths.roll[:, j], can[:, j], float(r.band))
    return OptionPlan(rules=rules, k=np.asarray(paths.k), paths=paths, can_trade=can, hedge_rows=hedge)


def apply_options(w: np.ndarray, p: OptionPlan, combo: Sequence[float]) -> np.ndarray:
    """One column's full target (n, K + J): the perpetuals' targets ``w`` (n, K) after the policy
    (and rebalancing), a ``delta_hedged`` leg's underlying replaced by its hedge, then the legs'
    targets by their rules at the grid values ``combo`` (one per leg)."""
    n, kk = w.shape
    out = np.full((n, kk + len(p.rules)), np.nan)
    perps = w.copy()
    traded = np.isfinite(w).any(axis=1)
    for j, (r, v) in enumerate(zip(p.rules, combo)):
        k, can = int(p.k[j]), p.can_trade[:, j]
        if v == 0.0:
            continue  # left out of this column: never traded
        if r.rule == "hedge":
            out[:, kk + j] = hedge_target(w[:, k], v, r.leg.put.option_type, can)
        elif r.rule == "overlay":
            out[:, kk + j] = overlay_target(traded, v, can)
        else:
            perps[:, k], out[:, kk + j] = delta_hedge_targets(p.paths.delta[:, j], p.hedge_rows[:, j], v)
    out[:, :kk] = perps
    return out
