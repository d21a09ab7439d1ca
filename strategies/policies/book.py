"""Book-level leverage policies: one factor per bar that scales the whole book's unit weights.

A book policy sees the unit weights ``w_t`` (K,) of a strategy column (:mod:`strategies.book`)
and returns ``f_t >= 0`` from data up to bar t's close; the book's target is ``f_t * w_t``. Like
the single-instrument ``liqcap``, the caps give the *largest* factor they allow, so alone they
lever up to the cap; combine them with ``min(...)``: ``min(voltarget(0.5),grosscap(3),liqcap(4))``.

* ``const(L)``: ``f = L``.
* ``voltarget(s*)``: ``f = min(s* / sigma_book, max_gross / G)``, ``sigma_book =
  sqrt(B * w' S w)`` the unit book's annualised forecast volatility (EWMA or rolling covariance
  across the instruments, :func:`strategies.book.forecast_fields`), ``G = sum |w|``. The scaled
  book's forecast volatility is ``s*``.
* ``grosscap(cap)``: ``f = cap / G``: the gross leverage ``sum |f w|`` is at most ``cap``.
* ``liqcap(k)``: the account stays alive under a common adverse move of ``k`` forecast sigmas.
  The common move ``x`` moves every price against its position at once (a short's price to
  ``P (1 + x)``, a long's to ``P (1 - x)``); its forecast sigma over the horizon is the book's
  notional-weighted move, ``sigma_x = sqrt(B * w' S w) / G * sqrt(horizon_days / 365)`` (scale
  free; for one instrument its own volatility). The account is taken as just opened at the
  closes, every position in cross margin, wallet = ``equity``; at the move ``x = k * sigma_x``
  the margin balance ``MB = equity + sum_k uPnL_k`` must cover the maintenance
  ``MM = sum_k (N_k mmr_k - cum_k)``, tiers chosen by each position's notional at its moved price
  in the table in force at the bar (``backtest.mechanics``). ``f`` is the largest factor with
  ``MM / MB <= 1`` there (:func:`liquidation_scale`).

The in-loop policies ``drawdown`` and ``cppi`` (:mod:`strategies.policies.inloop`) run inside the
book engine on the account's equity (``BookSettings.policy``); ``build_book_targets`` accepts
their labels and returns their settings.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, ClassVar, Literal, Sequence

import numpy as np
from pydantic import Field

from backtest import mechanics as mk
from strategies.base import suggest, validate_model
from strategies.book import BookFrame, forecast_fields, horizon_scale, quadratic_form
from strategies.policies import base as single
from strategies.policies.base import LeveragePolicy, PolicyError, _check_nesting, _split_args, _value


class BookPolicy(LeveragePolicy):
    """A book policy: a factor per bar from market data and the unit weights."""

    def factor(self, book: BookFrame, weights: np.ndarray, *, specs: Sequence[Any] | None = None) -> np.ndarray:
        """Factor per bar, float64 (n_bars,), finite and >= 0; 0 where the policy has no value yet.

        Parameters
        ----------
        book : the book's data.
        weights : float64 (n_bars, K) unit weights of one strategy column (NaN = keep / not listed).
        specs : one :class:`backtest.market.MarketSpec` per instrument (``liqcap`` only).
        """
        f = np.asarray(self._factor(book, np.asarray(weights, dtype=np.float64), specs), dtype=np.float64)
        if f.shape != (book.n,):
            raise PolicyError(f"{self.label()}: factor has shape {f.shape}, expected ({book.n},)")
        f = np.where(np.isnan(f), 0.0, f)
        bad = ~np.isfinite(f) | (f < 0)
        if bad.any():
            i = int(np.argmax(bad))
            raise PolicyError(f"{self.label()}: factor {float(f[i])!r} at {book.index[i].isoformat()} is not a finite "
                              "number >= 0; combine it with a finite cap, e.g. min(...,grosscap(5))")
        return f

    def _factor(self, book: BookFrame, w: np.ndarray, specs: Sequence[Any] | None) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError


_BOOK_POLICIES: dict[str, type[BookPolicy]] = {}


def register_book_policy(cls: type[BookPolicy]) -> type[BookPolicy]:
    """Class decorator: register a book policy under ``cls.name`` (its own namespace)."""
    if not cls.name or cls.name in _BOOK_POLICIES:
        raise PolicyError(f"book policy class {cls.__name__} needs a unique name, got {cls.name!r}")
    _BOOK_POLICIES[cls.name] = cls
    return cls


def gross(w: np.ndarray) -> np.ndarray:
    """``G_t = sum_k |w_t,k|`` (NaN weights count 0), (n_bars,)."""
    return np.nansum(np.abs(w), axis=1)


@register_book_policy
class BookConst(BookPolicy):
    """``const(L)``: the unit book times ``L`` on every bar."""

    name: ClassVar[str] = "const"
    positional: ClassVar[tuple[str, ...]] = ("leverage",)
    leverage: float = Field(1.0, gt=0)

    def _factor(self, book: BookFrame, _w: np.ndarray, _specs: Sequence[Any] | None) -> np.ndarray:
        return np.full(book.n, self.leverage)


class BookVolForecast(BookPolicy):
    """The covariance forecast's fields (as :class:`strategies.policies.VolForecast`):
    ``estimator`` ``'ewma'`` (half-life ``halflife_days``, first forecast after ``warmup_days``)
    or ``'rolling'`` (``window_days``, ddof = 1)."""

    estimator: Literal["ewma", "rolling"] = "ewma"
    halflife_days: float = Field(10.0, gt=0)
    window_days: float = Field(30.0, gt=0)
    warmup_days: float = Field(30.0, ge=0)

    def book_vol(self, book: BookFrame, w: np.ndarray) -> np.ndarray:
        """``sqrt(B * w_t' S_t w_t)``: the annualised forecast volatility of the book ``w`` (n_bars,)."""
        cov = forecast_fields(self.estimator, self.halflife_days, self.window_days, self.warmup_days, book)
        return np.sqrt(quadratic_form(w, cov) * book.bars_per_year)


@register_book_policy
class BookVolTarget(BookVolForecast):
    """``voltarget(s*)``: ``f = min(target_vol / sigma_book, max_gross / G)`` (module docstring);
    ``max_gross / G`` where ``sigma_book = 0``; 0 before the forecast exists."""

    name: ClassVar[str] = "voltarget"
    positional: ClassVar[tuple[str, ...]] = ("target_vol",)
    target_vol: float = Field(0.5, gt=0)
    max_gross: float = Field(3.0, gt=0)

    def _factor(self, book: BookFrame, w: np.ndarray, _specs: Sequence[Any] | None) -> np.ndarray:
        sigma, g = self.book_vol(book, w), gross(w)
        with np.errstate(divide="ignore", invalid="ignore"):
            f = np.minimum(self.target_vol / sigma, self.max_gross / g)
        return np.where(g > 0, f, 0.0)


@register_book_policy
class GrossCap(BookPolicy):
    """``grosscap(cap)``: ``f = cap / G``, the largest factor with ``sum |f w| <= cap``."""

    name: ClassVar[str] = "grosscap"
    positional: ClassVar[tuple[str, ...]] = ("cap",)
    cap: float = Field(3.0, gt=0)

    def _factor(self, _book: BookFrame, w: np.ndarray, _specs: Sequence[Any] | None) -> np.ndarray:
        g = gross(w)
        with np.errstate(divide="ignore"):
            return np.where(g > 0, self.cap / g, 0.0)


def moved_price(contracts: float, price: float, x: float) -> float:
    """The price after a common adverse move ``x`` (fraction): a short's rises to ``P (1 + x)``,
    a long's falls to ``P (1 - x)``."""
    return price * (1.0 + x) if contracts < 0 else price * (1.0 - x)


def account_at_move(contracts: Sequence[float], prices: Sequence[float], x: float, wallet: float,
                    tables: Sequence[np.ndarray], specs: Sequence[Any]) -> tuple[float, float]:
    """``(MB, MM)`` of a cross account holding ``contracts`` entered at ``prices``, after the common
    adverse move ``x``: ``MB = wallet + sum uPnL_k``, ``MM = sum MM_k`` at the moved prices, each
    tier chosen in ``tables[k]`` by that position's moved notional
    (:func:`backtest.mechanics.cross_account_margin`)."""
    up, mm = [], []
    for c, p, tab, s in zip(contracts, prices, tables, specs):
        if c == 0.0:
            continue
        q = moved_price(c, p, x)
        up.append(mk.unrealized_pnl(c, p, q, s.contract_size, s.inverse))
        mm.append(mk.maintenance_margin(mk.position_notional(c, q, s.contract_size, s.inverse), tab))
    return mk.cross_account_margin(wallet, up, mm)


def unit_contracts(w: Sequence[float], prices: Sequence[float], equity: float, specs: Sequence[Any]) -> list[float]:
    """Signed contracts of exposures ``w * equity`` at ``prices``: ``w_k E / v_k(P_k)`` (no lots)."""
    return [0.0 if (not math.isfinite(wk) or wk == 0.0) else wk * equity / mk.contract_value(p, s.contract_size, s.inverse)
            for wk, p, s in zip(w, prices, specs)]


def liquidation_scale(w: Sequence[float], prices: Sequence[float], x: float, equity: float,
                      tables: Sequence[np.ndarray], specs: Sequence[Any]) -> float:
    """Largest factor f such that the cross account holding ``f * w`` (exposures, multiples of
    ``equity``, entered at ``prices``, wallet ``equity``) is not past liquidation after the common
    adverse move ``x``: ``MB(x) >= MM(x)`` (:func:`account_at_move`).

    Positions scale with f at fixed prices, so per unit f each position has a loss ``a_k`` and a
    moved notional ``b_k``, and within fixed tiers ``MB - MM = E + sum cum_k - f sum (a_k + b_k
    mmr_k)`` is linear: ``f = (E + sum cum_k) / sum (a_k + b_k mmr_k)``. The tiers are then
    re-chosen at the notionals ``f b_k`` until they no longer change; starting from the first
    tier this walks down monotonically to the root, as in
    :func:`backtest.mechanics.liquidation_price` (Binance's maintenance is the largest of the
    tiers' lines). ``inf`` when nothing can be lost nor maintained (no position).
    """
    c1 = unit_contracts(w, prices, equity, specs)
    a, b = [], []
    for c, p, s in zip(c1, prices, specs):
        q = moved_price(c, p, x)
        a.append(-mk.unrealized_pnl(c, p, q, s.contract_size, s.inverse) if c else 0.0)
        b.append(mk.position_notional(c, q, s.contract_size, s.inverse) if c else 0.0)
    tiers = [0] * len(c1)
    seen: list[tuple[int, ...]] = []
    f = math.inf
    while True:
        seen.append(tuple(tiers))
        num = equity + math.fsum(tab[j, mk.TIER_CUM] for tab, j, bk in zip(tables, tiers, b) if bk > 0)
        den = math.fsum(ak + bk * tab[j, mk.TIER_MMR] for tab, j, ak, bk in zip(tables, tiers, a, b) if bk > 0)
        f_new = num / den if den > 0 else math.inf
        f = min(f, f_new)
        if not math.isfinite(f):
            return f
        nxt = [mk.tier_index(tab, f * bk) if bk > 0 else 0 for tab, bk in zip(tables, b)]
        if nxt == tiers or tuple(nxt) in seen:
            return f
        tiers = nxt


@register_book_policy
class BookLiqCap(BookVolForecast):
    """``liqcap(k)``: keep the account's liquidation at least ``k`` forecast sigmas of a common
    adverse move away (module docstring; needs the instruments' market specs).

    Attributes
    ----------
    k : number of forecast sigmas (> 0).
    horizon_days : monitoring horizon, days.
    equity : account equity assumed (settlement currency: the tiers' maintenance amounts are absolute).
    """

    name: ClassVar[str] = "liqcap"
    positional: ClassVar[tuple[str, ...]] = ("k",)
    k: float = Field(3.0, gt=0)
    horizon_days: float = Field(1.0, gt=0)
    equity: float = Field(10_000.0, gt=0)

    def move(self, book: BookFrame, w: np.ndarray) -> np.ndarray:
        """Required common move ``x_t = k * sigma_book / G * sqrt(h / 365)`` (n_bars,); NaN where
        there is no forecast or no position."""
        g = gross(w)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(g > 0, self.k * self.book_vol(book, w) / g * horizon_scale(self.horizon_days), np.nan)

    def _factor(self, book: BookFrame, w: np.ndarray, specs: Sequence[Any] | None) -> np.ndarray:
        if specs is None or len(specs) != book.k:
            raise PolicyError(
                f"{self.label()} needs one market spec per instrument ({book.k}); pass specs=[load_market(exchange, "
                "symbol) for each symbol] to build_book_targets (a BookData's own exchange is used by default)")
        x = self.move(book, w)
        ts = book.market.timestamps_ms
        tabs = [s.tier_arrays(ts) for s in specs]
        close = book.close
        out = np.zeros(book.n)
        for t in np.flatnonzero(np.isfinite(x)):
            tables = [stack[ver[t], : nt[ver[t]]] for stack, nt, ver in tabs]
            out[t] = liquidation_scale(w[t], close[t], float(x[t]), self.equity, tables, specs)
        return out


@register_book_policy
class BookMin(BookPolicy):
    """``min(p1,p2,...)``: the smallest factor of several book policies on each bar."""

    name: ClassVar[str] = "min"
    positional: ClassVar[tuple[str, ...]] = ("policies",)
    nested: ClassVar[bool] = True
    policies: tuple[BookPolicy, ...] = Field(..., min_length=1)

    def _factor(self, book: BookFrame, w: np.ndarray, specs: Sequence[Any] | None) -> np.ndarray:
        return np.min(np.vstack([p.factor(book, w, specs=specs) for p in self.policies]), axis=0)


# --------------------------------------------------------------------------------------------
# Names, labels, grids
# --------------------------------------------------------------------------------------------

def _known() -> list[str]:
    return sorted(set(_BOOK_POLICIES) | {n for n in single.names() if single.get(n).in_loop})


def book_policy_names() -> list[str]:
    """Names usable in a book: the book policies and the in-loop policies (``drawdown``, ``cppi``)."""
    return _known()


def _cls(name: str) -> type[LeveragePolicy]:
    if name in _BOOK_POLICIES:
        return _BOOK_POLICIES[name]
    if name in single.names() and single.get(name).in_loop:
        return single.get(name)
    if name in single.names():
        raise PolicyError(f"{name!r} is a single-instrument policy; a book is scaled by the book policies "
                          f"{sorted(_BOOK_POLICIES)} or the in-loop ones (drawdown, cppi)")
    raise PolicyError(f"unknown book policy {name!r}; {suggest(name, _known())}")


def make_book(name: str, **params: Any) -> LeveragePolicy:
    """One validated book (or in-loop) policy, e.g. ``make_book('voltarget', target_vol=0.5)``."""
    return validate_model(_cls(name), params, name, PolicyError)


def parse_book(text: str) -> LeveragePolicy:
    """Read a book policy from its label: ``'voltarget(0.5,max_gross=4)'``,
    ``'min(voltarget(0.5),liqcap(4))'``, ``'drawdown(0.3)'``; a bare name takes the defaults."""
    if not isinstance(text, str):
        raise PolicyError(f"cannot read book policy {text!r}: give a label such as 'voltarget(0.5)'")
    text = text.strip()
    _check_nesting(text)
    name = text[: text.index("(")].strip() if "(" in text else text
    cls = _cls(name)
    if cls.in_loop:
        return single.parse(text)
    if "(" not in text:
        return make_book(name)
    if not text.endswith(")"):
        raise PolicyError(f"cannot read book policy {text!r}: expected name(args), e.g. 'voltarget(0.5)'")
    args = _split_args(text[text.index("(") + 1: -1])
    if getattr(cls, "nested", False):
        parts = [parse_book(a) for a in args]
        for p in parts:
            if not isinstance(p, BookPolicy):
                raise PolicyError(f"{text!r}: {p.label()} is an in-loop policy; only book policies go inside min(...)")
        return BookMin(policies=tuple(parts))  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    pos = list(cls.positional)
    for i, a in enumerate(args):
        if "=" in a:
            key, v = a.split("=", 1)
            values[key.strip()] = _value(v.strip())
        elif i < len(pos):
            values[pos[i]] = _value(a)
        else:
            raise PolicyError(f"book policy {text!r}: too many positional values; {name} takes {pos} positionally, "
                              "give the rest as key=value")
    return validate_model(cls, values, name, PolicyError)


def expand_book(policies: Any) -> list[LeveragePolicy]:
    """Normalise a book policy grid to a list with unique labels: items are policies, labels, or
    dicts ``{'name': 'voltarget', 'target_vol': [0.3, 0.5]}`` (list values are grid axes, the
    last key varying fastest). None = ``['const(1)']``."""
    if policies is None:
        policies = ["const(1)"]
    if isinstance(policies, (str, dict, LeveragePolicy)):
        policies = [policies]
    out: list[LeveragePolicy] = []
    for item in policies:
        if isinstance(item, (BookPolicy, single.InLoop)):
            out.append(item)
        elif isinstance(item, LeveragePolicy):
            raise PolicyError(f"{item.label()} is a single-instrument policy; use a book policy "
                              f"({sorted(_BOOK_POLICIES)}) or an in-loop one")
        elif isinstance(item, str):
            out.append(parse_book(item))
        elif isinstance(item, dict) and "name" in item:
            rest = {k: v for k, v in item.items() if k != "name"}
            axes = [list(v) if isinstance(v, (list, tuple, range, np.ndarray)) else [v] for v in rest.values()]
            if any(not ax for ax in axes):
                raise PolicyError(f"book policy spec {item!r} has an empty list of values; give at least one")
            out.extend(make_book(item["name"], **dict(zip(rest, combo))) for combo in itertools.product(*axes))
        else:
            raise PolicyError(f"cannot read book policy spec {item!r}: give a policy, a label string, or a dict "
                              "with 'name', e.g. {'name': 'voltarget', 'target_vol': [0.3, 0.5]}")
    if not out:
        raise PolicyError("empty book policy list; give at least one policy, e.g. ['const(1)']")
    labels = [p.label() for p in out]
    dup = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dup:
        raise PolicyError(f"duplicate book policy variants {dup}; each variant must be listed once")
    return out
