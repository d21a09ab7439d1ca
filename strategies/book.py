"""Books: the market view, estimators and registry of portfolio strategies.

A book strategy maps K instruments' data to **unit weights**: a float64 array
``(n_bars, K, n_params)``, per bar, instrument and parameter set the signed exposure as a multiple
of the account's equity before the book-level policy scales it (negative = short; NaN = keep the
current position, and always NaN before an instrument's first bar: it is not tradeable there).
The value at bar t uses data up to bar t's close; the engine trades row t at bar t + lag.
A book policy (:mod:`strategies.policies.book`) turns the unit weights into a factor per bar;
:func:`strategies.book_build.build_book_targets` multiplies them into the book's target.

Notation: ``r_{t,k} = ln(C_{t,k} / C_{t-1,k})``, ``B`` bars per 365-day year, ``w_t`` the unit
weights of bar t (K,), ``S_t`` the per-bar covariance of the returns (K, K).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from strategies.base import StrategyError, StrategyParams, expand_grid, suggest
from strategies.frame import DAYS_PER_YEAR, MarketDataError, MarketFrame
from strategies.indicators import ewma_variance, log_returns


class BookFrame:
    """K instruments' bars on one index, the view book strategies and book policies read.

    Parameters
    ----------
    data : :class:`backtest.data.BookData` (from :func:`backtest.data.load_book_data`), a
        DataFrame whose columns are a MultiIndex ``(symbol, field)`` (fields as in
        :mod:`strategies.frame`: ``close`` at least), or a BookFrame.
    bar_seconds : bar size in seconds; by default the BookData's bar size, else the most common
        spacing of the index.

    Attributes
    ----------
    frame : DataFrame (n_bars, (symbol, field)), each symbol's frame on the book's index, NaN
        before its first bar.
    symbols : tuple of the K symbols, in the book's order.
    market : :class:`MarketFrame` over ``frame`` (index, bar size, truncation).
    """

    def __init__(self, data: Any, bar_seconds: float | None = None) -> None:
        if isinstance(data, BookFrame):
            frame, bar_seconds = data.frame, bar_seconds or data.market.bar_seconds
        elif hasattr(data, "bars") and hasattr(data, "data") and hasattr(data, "symbols"):
            idx = data.bars.index.rename("time")
            frame = pd.concat([md.frame.reindex(idx) for md in data.data], axis=1, keys=list(data.symbols))
            bar_seconds = bar_seconds or float(data.bars.bar_ms) / 1000.0
        else:
            frame = data
        if not isinstance(frame, pd.DataFrame) or not isinstance(frame.columns, pd.MultiIndex) \
                or frame.columns.nlevels != 2:
            raise MarketDataError(
                f"book data must be a BookData (backtest.data.load_book_data) or a DataFrame with (symbol, field) "
                f"MultiIndex columns, got {type(data).__name__}; build one with "
                "pd.concat({symbol: frame, ...}, axis=1)")
        self.market = MarketFrame(frame, bar_seconds=bar_seconds)
        self.frame = self.market.frame
        self.symbols: tuple[str, ...] = tuple(dict.fromkeys(str(s) for s in self.frame.columns.get_level_values(0)))
        for s in self.symbols:
            if "close" not in self.frame[s].columns:
                raise MarketDataError(f"book data has no 'close' column for {s}; columns are "
                                      f"{list(self.frame[s].columns)}")
        listed = np.isfinite(self.close)
        # a symbol with no close yet (a book cut before its listing) is listed after the last bar
        self.first_bar = np.where(listed.any(axis=0), np.argmax(listed, axis=0), self.n).astype(np.int64)
        self._cache: dict[Any, Any] = {}

    @property
    def n(self) -> int:
        """Number of bars."""
        return self.market.n

    @property
    def k(self) -> int:
        """Number of instruments."""
        return len(self.symbols)

    @property
    def index(self) -> pd.DatetimeIndex:
        """Bar open times, UTC."""
        return self.market.index

    @property
    def bars_per_year(self) -> float:
        """Bars in a 365-day year."""
        return self.market.bars_per_year

    def prices(self, name: str = "close") -> np.ndarray:
        """float64 (n_bars, K) of one field; NaN before each instrument's first bar."""
        return np.column_stack([self.market.col((s, name), needed_by=f"the book ({s})") for s in self.symbols])

    @property
    def close(self) -> np.ndarray:
        """float64 (n_bars, K) closes."""
        return self.prices("close")

    @property
    def listed(self) -> np.ndarray:
        """bool (n_bars, K): True from each instrument's first bar on."""
        return np.arange(self.n)[:, None] >= self.first_bar[None, :]

    def returns(self) -> np.ndarray:
        """float64 (n_bars, K) log returns ``r_{t,k}``; NaN at and before each first bar."""
        if "returns" not in self._cache:
            c = self.close
            self._cache["returns"] = np.column_stack([log_returns(c[:, j]) for j in range(self.k)])
        return self._cache["returns"]

    def symbol_frame(self, symbol: str) -> pd.DataFrame:
        """One symbol's bars from its first bar on (the single-instrument frame)."""
        j = self.resolve(symbol)
        return self.frame[self.symbols[j]].iloc[int(self.first_bar[j]):]

    def resolve(self, name: str, *, what: str = "symbol") -> int:
        """Index of the instrument named ``name``: its full symbol, or its base currency
        (``'BTC'`` matches ``'BTC/USDT:USDT'`` and ``'BTC/USD:BTC'``)."""
        if name in self.symbols:
            return self.symbols.index(name)
        hits = [j for j, s in enumerate(self.symbols) if s.split("/")[0].upper() == str(name).upper()]
        if len(hits) == 1:
            return hits[0]
        why = "matches several symbols" if hits else "is not in the book"
        raise StrategyError(f"{what} {name!r} {why}; the book's symbols are {list(self.symbols)}: give one of them "
                            "or a base currency held once (e.g. 'BTC')")

    def truncate(self, n: int) -> "BookFrame":
        """The first ``n`` bars (for look-ahead checks)."""
        return BookFrame(self.frame.iloc[:n], bar_seconds=self.market.bar_seconds)

    def cached(self, key: Any, fn: Callable[[], Any]) -> Any:
        """``fn()`` computed once per BookFrame and ``key`` (estimates shared by columns)."""
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]


def as_book(data: Any) -> BookFrame:
    """``data`` as a :class:`BookFrame` (no copy if it already is one)."""
    return data if isinstance(data, BookFrame) else BookFrame(data)


# --------------------------------------------------------------------------------------------
# Estimators (causal: the value at bar t uses returns up to t)
# --------------------------------------------------------------------------------------------

def ewma_covariance(r: np.ndarray, halflife_bars: float, min_periods: int) -> np.ndarray:
    """Zero-mean exponentially weighted covariance of the columns of ``r`` (RiskMetrics), per bar.

    ``S_t[a, b] = sum_i lam^i r_{t-i,a} r_{t-i,b} / sum_i lam^i`` over the bars where both
    returns exist, ``lam = 0.5 ** (1 / halflife_bars)``; NaN until ``min_periods`` such bars.
    The diagonal is :func:`strategies.indicators.ewma_variance` of each column (the
    single-instrument ``voltarget`` forecast).

    Parameters
    ----------
    r : float64 (n_bars, K) per-bar returns.

    Returns
    -------
    float64 (n_bars, K, K), per-bar (not annualised) covariance.
    """
    n, k = r.shape
    out = np.empty((n, k, k))
    for a in range(k):
        for b in range(a, k):
            if a == b:
                s = ewma_variance(r[:, a], halflife_bars, min_periods)
            else:  # the product of two returns averaged as ewma_variance averages r*r
                s = pd.Series(r[:, a] * r[:, b]).ewm(halflife=float(halflife_bars), adjust=True, ignore_na=True,
                                                     min_periods=int(min_periods)).mean().to_numpy(np.float64)
            out[:, a, b] = out[:, b, a] = s
    return out


def rolling_covariance(r: np.ndarray, window: int) -> np.ndarray:
    """Sample covariance (ddof = 1, mean removed) of the last ``window`` bars of each pair of
    columns of ``r``; NaN until ``window`` bars where both exist. The diagonal is the square of
    the single-instrument rolling volatility (vectorbt ``MSTD``, ddof = 1).

    Returns
    -------
    float64 (n_bars, K, K), per-bar covariance.
    """
    n, k = r.shape
    out = np.empty((n, k, k))
    for a in range(k):
        sa = pd.Series(r[:, a])
        for b in range(a, k):
            s = sa.rolling(int(window), min_periods=int(window)).cov(pd.Series(r[:, b]), ddof=1)
            out[:, a, b] = out[:, b, a] = s.to_numpy(np.float64)
    return out


def rolling_beta(r_asset: np.ndarray, r_bench: np.ndarray, window: int) -> np.ndarray:
    """OLS beta of ``r_asset`` on ``r_bench`` over the last ``window`` bars:
    ``beta_t = cov(r_asset, r_bench) / var(r_bench)`` (both ddof = 1); NaN until ``window`` bars
    where both returns exist, and where the benchmark's variance is 0.

    Returns
    -------
    float64 (n_bars,).
    """
    a, b = pd.Series(r_asset), pd.Series(r_bench)
    both = a.notna() & b.notna()
    # the variance over the same bars as the covariance (a pairwise window)
    cov = a.rolling(int(window), min_periods=int(window)).cov(b, ddof=1)
    var = b.where(both).rolling(int(window), min_periods=int(window)).var(ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.array(cov / var, dtype=np.float64)
    out[~np.isfinite(out)] = np.nan
    return out


def quadratic_form(w: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """``w_t' S_t w_t`` per bar for ``w`` (n_bars, K) and ``cov`` (n_bars, K, K); NaN weights
    count 0 (a position kept or not listed is not in the forecast), and a bar where an
    instrument with a non-zero weight has no covariance yet is NaN. Clipped at 0 (pairwise
    estimates need not be positive semi-definite)."""
    w0 = np.nan_to_num(w, nan=0.0)
    used = w0 != 0.0
    c = np.where(used[:, :, None] & used[:, None, :], cov, 0.0)  # NaN rows of unused instruments drop out
    q = np.einsum("tk,tkl,tl->t", w0, c, w0)
    return np.maximum(q, 0.0)


def forecast_fields(estimator: str, halflife_days: float, window_days: float, warmup_days: float,
                    book: BookFrame) -> np.ndarray:
    """Per-bar covariance (n_bars, K, K) of the book's log returns by ``estimator``
    (``'ewma'`` or ``'rolling'``, the fields of :class:`strategies.policies.VolForecast`),
    computed once per book and parameter set."""
    key = ("cov", estimator, halflife_days, window_days, warmup_days)

    def compute() -> np.ndarray:
        r = book.returns()
        if estimator == "ewma":
            return ewma_covariance(r, halflife_days / book.market.bar_days, book.market.bars(warmup_days))
        return rolling_covariance(r, book.market.bars(window_days))

    return book.cached(key, compute)


def annualised_vol(book: BookFrame, estimator: str, halflife_days: float, window_days: float,
                   warmup_days: float) -> np.ndarray:
    """Each instrument's annualised volatility forecast (n_bars, K): ``sqrt(B * S_t[k, k])``,
    the single-instrument ``voltarget`` forecast of that instrument."""
    cov = forecast_fields(estimator, halflife_days, window_days, warmup_days, book)
    return np.sqrt(np.diagonal(cov, axis1=1, axis2=2) * book.bars_per_year)


def horizon_scale(horizon_days: float) -> float:
    """``sqrt(horizon_days / 365)``: an annualised volatility scaled to the horizon."""
    return math.sqrt(horizon_days / DAYS_PER_YEAR)


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

BookComputeFn = Callable[[BookFrame, Sequence[Any]], np.ndarray]


@dataclass(frozen=True)
class BookStrategy:
    """A registered book strategy.

    Attributes
    ----------
    name : registry name.
    params : the parameter model (a :class:`StrategyParams` subclass with defaults).
    compute : ``compute(book, params_list) -> float64 (n_bars, K, len(params_list))`` unit weights.
    summary : one-line description.
    """

    name: str
    params: type[StrategyParams]
    compute: BookComputeFn
    summary: str = ""

    def grid(self, params: Any = None) -> list[StrategyParams]:
        """Validated parameter sets (see :func:`strategies.base.expand_grid`)."""
        return expand_grid(self.params, params, f"book strategy {self.name!r}", StrategyError)

    def columns(self, params_list: Sequence[StrategyParams]) -> pd.MultiIndex:
        """Column labels: one level per parameter, in the model's field order."""
        names = list(self.params.model_fields)
        if not names:
            return pd.MultiIndex.from_arrays([[self.name] * len(params_list)], names=["strategy"])
        return pd.MultiIndex.from_tuples([tuple(getattr(p, f) for f in names) for p in params_list], names=names)

    def run(self, data: Any, params: Any = None) -> tuple[np.ndarray, pd.MultiIndex]:
        """Unit weights for every parameter set.

        Returns
        -------
        weights : float64 (n_bars, K, n_params); NaN before each instrument's first bar.
        columns : :meth:`columns` of the parameter sets.

        Raises
        ------
        StrategyError : a wrong shape, an infinite weight, or a value before an instrument's first bar.
        """
        book = as_book(data)
        plist = self.grid(params)
        out = np.asarray(self.compute(book, plist), dtype=np.float64)
        if out.shape != (book.n, book.k, len(plist)):
            raise StrategyError(f"book strategy {self.name!r} returned shape {out.shape}, expected "
                                f"{(book.n, book.k, len(plist))}")
        if np.isinf(out).any():
            t, j, c = np.argwhere(np.isinf(out))[0]
            raise StrategyError(f"book strategy {self.name!r} gave weight {out[t, j, c]!r} to {book.symbols[j]} at "
                                f"{book.index[t].isoformat()} for {plist[c]!r}; weights must be finite or NaN")
        early = ~book.listed[:, :, None] & ~np.isnan(out)
        if early.any():
            t, j, c = np.argwhere(early)[0]
            raise StrategyError(f"book strategy {self.name!r} gave {book.symbols[j]} a weight at "
                                f"{book.index[t].isoformat()}, before its first bar; it must be NaN there")
        return out, self.columns(plist)


_BOOK_REGISTRY: dict[str, BookStrategy] = {}


def register_book(name: str, params: type[StrategyParams], compute: BookComputeFn, summary: str = "") -> BookStrategy:
    """Register a book strategy under ``name`` and return it (names are separate from the
    single-instrument strategies')."""
    if name in _BOOK_REGISTRY:
        raise StrategyError(f"a book strategy named {name!r} is already registered; choose another name")
    cfg = getattr(params, "model_config", {})
    if not (cfg.get("frozen") and cfg.get("extra") == "forbid"):
        raise StrategyError(f"{params.__name__}: parameter models must be frozen and reject unknown fields; "
                            "subclass strategies.StrategyParams")
    strat = BookStrategy(name=name, params=params, compute=compute, summary=summary)
    _BOOK_REGISTRY[name] = strat
    return strat


def get_book(name: str | BookStrategy) -> BookStrategy:
    """The book strategy called ``name``; an unknown name raises with a suggestion."""
    if isinstance(name, BookStrategy):
        return name
    try:
        return _BOOK_REGISTRY[name]
    except KeyError:
        raise StrategyError(f"unknown book strategy {name!r}; {suggest(name, _BOOK_REGISTRY)}") from None


def book_names() -> list[str]:
    """Names of the registered book strategies, sorted."""
    return sorted(_BOOK_REGISTRY)


__all__ = ["BookFrame", "BookStrategy", "annualised_vol", "as_book", "book_names",
           "ewma_covariance", "forecast_fields", "get_book", "horizon_scale", "quadratic_form", "register_book",
           "rolling_beta", "rolling_covariance"]
