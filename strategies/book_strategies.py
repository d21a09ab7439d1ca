"""Built-in book strategies: ``basket_short`` and ``pair_beta`` (unit weights, see
:mod:`strategies.book`).

``basket_short`` shorts every listed instrument that has an estimate on the bar (the *active*
set A_t; an instrument still warming up gets weight 0), weighted by ``weighting``:

* ``'equal'``: ``w_k = -exposure / |A_t|`` (gross ``sum |w| = exposure``);
* ``'inverse_vol'``: ``w_k = -exposure * (1/sigma_k) / sum_{j in A_t} (1/sigma_j)``, sigma the
  instrument's volatility forecast (the single-instrument ``voltarget`` forecast: EWMA or
  rolling), so every short carries the same forecast risk (gross = exposure);
* ``'beta'``: ``w_k = -exposure / (|A_t| * beta_k)``, beta_k the rolling beta of the instrument's
  returns to the benchmark's (1 for the benchmark itself), so the book's beta-weighted
  (BTC-equivalent) exposure ``sum_k beta_k w_k = -exposure`` and every short carries the same
  BTC-equivalent share. Instruments whose beta is below ``min_beta`` are left out on that bar
  (a beta near 0 would need an unbounded short).

``pair_beta`` shorts an alt and buys the benchmark sized by the alt's rolling beta:
``w_alt = -exposure``, ``w_bench = +exposure * beta_alt`` (every other instrument 0), so the
pair's beta-weighted exposure ``beta_alt * w_alt + 1 * w_bench = 0`` (beta-neutral). Flat while
the beta warms up or is below ``min_beta``.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

import numpy as np
from pydantic import Field

from strategies.base import StrategyError, StrategyParams
from strategies.book import BookFrame, annualised_vol, as_book, register_book, rolling_beta


class BasketShortParams(StrategyParams):
    """Parameters of ``basket_short``.

    Attributes
    ----------
    weighting : ``'equal'``, ``'inverse_vol'`` or ``'beta'`` (module docstring).
    exposure : gross short (equal, inverse_vol) or BTC-equivalent short (beta), multiple of equity.
    estimator : inverse_vol's volatility forecast, ``'ewma'`` or ``'rolling'``.
    halflife_days, window_days, warmup_days : the forecast's fields (as in ``voltarget``).
    beta_days : window of the rolling beta, days.
    min_beta : smallest beta an instrument may have to be in a beta-weighted basket (> 0).
    benchmark : the beta's benchmark: a symbol of the book or its base currency.
    """

    weighting: Literal["equal", "inverse_vol", "beta"] = "equal"
    exposure: float = Field(1.0, gt=0)
    estimator: Literal["ewma", "rolling"] = "ewma"
    halflife_days: float = Field(10.0, gt=0)
    window_days: float = Field(30.0, gt=0)
    warmup_days: float = Field(30.0, ge=0)
    beta_days: float = Field(30.0, gt=0)
    min_beta: float = Field(0.2, gt=0)
    benchmark: str = "BTC"


def betas(book: BookFrame, benchmark: str, beta_days: float) -> np.ndarray:
    """Rolling beta of every instrument to ``benchmark`` (n_bars, K); the benchmark's own is 1
    wherever it is listed."""
    def compute() -> np.ndarray:
        b = book.resolve(benchmark, what="benchmark")
        r = book.returns()
        w = book.market.bars(beta_days)
        out = np.column_stack([rolling_beta(r[:, j], r[:, b], w) for j in range(book.k)])
        out[:, b] = np.where(book.listed[:, b], 1.0, np.nan)
        return out

    return book.cached(("beta", benchmark, beta_days), compute)


def _basket(book: BookFrame, p: BasketShortParams) -> np.ndarray:
    listed = book.listed
    if p.weighting == "equal":
        score = np.where(listed, 1.0, np.nan)
    elif p.weighting == "inverse_vol":
        sigma = annualised_vol(book, p.estimator, p.halflife_days, p.window_days, p.warmup_days)
        with np.errstate(divide="ignore"):
            score = np.where(sigma > 0, 1.0 / sigma, np.nan)
    else:
        beta = betas(book, p.benchmark, p.beta_days)
        active = beta >= p.min_beta  # NaN compares False: warm-up and small betas are out
        score = np.where(active, 1.0, np.nan)
    active = np.isfinite(score)
    n_active = active.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        if p.weighting == "beta":
            w = -p.exposure / (n_active * beta)
        else:
            w = -p.exposure * score / np.nansum(np.where(active, score, 0.0), axis=1, keepdims=True)
    w = np.where(active, w, 0.0)
    return np.where(listed, w, np.nan)


def basket_short(book: BookFrame, params: Sequence[BasketShortParams]) -> np.ndarray:
    """Unit weights (n_bars, K, len(params)) of the basket short."""
    return np.stack([_basket(book, p) for p in params], axis=2)


class PairBetaParams(StrategyParams):
    """Parameters of ``pair_beta``.

    Attributes
    ----------
    alt : the instrument shorted (symbol or base); None = the first instrument that is not the benchmark.
    benchmark : the instrument bought against it (symbol or base).
    exposure : the alt's short, multiple of equity.
    beta_days : window of the rolling beta, days.
    min_beta : below this beta the pair is flat (> 0).
    """

    alt: str | None = None
    benchmark: str = "BTC"
    exposure: float = Field(1.0, gt=0)
    beta_days: float = Field(30.0, gt=0)
    min_beta: float = Field(0.2, gt=0)


def _pair(book: BookFrame, p: PairBetaParams) -> np.ndarray:
    b = book.resolve(p.benchmark, what="benchmark")
    if p.alt is None:
        others = [j for j in range(book.k) if j != b]
        if not others:
            raise StrategyError(f"pair_beta needs an alt besides the benchmark {book.symbols[b]}; add one to the book")
        a = others[0]
    else:
        a = book.resolve(p.alt, what="alt")
        if a == b:
            raise StrategyError(f"pair_beta: alt {p.alt!r} is the benchmark {book.symbols[b]}; give another instrument")
    beta = betas(book, p.benchmark, p.beta_days)[:, a]
    on = beta >= p.min_beta
    w = np.zeros((book.n, book.k))
    w[:, a] = np.where(on, -p.exposure, 0.0)
    w[:, b] = np.where(on, p.exposure * beta, 0.0)
    return np.where(book.listed, w, np.nan)


def pair_beta(book: BookFrame, params: Sequence[PairBetaParams]) -> np.ndarray:
    """Unit weights (n_bars, K, len(params)) of the beta-neutral pair."""
    return np.stack([_pair(book, p) for p in params], axis=2)


BASKET_SHORT = register_book("basket_short", BasketShortParams, basket_short,
                             "short every listed instrument: equal, inverse-volatility or beta (BTC-equivalent) weights")
PAIR_BETA = register_book("pair_beta", PairBetaParams, pair_beta,
                          "short an alt, long the benchmark sized by the alt's rolling beta (beta-neutral)")


def book_betas(book_data: Any, benchmark: str = "BTC", beta_days: float = 30.0) -> tuple[np.ndarray, str]:
    """The betas a book's beta-weighted exposure is reported with (``backtest.book.simulate_book``'s
    ``betas``): the rolling OLS beta of every instrument to ``benchmark`` over ``beta_days``, the
    estimate the beta-weighted ``basket_short`` and ``pair_beta`` size with (:func:`betas`).

    Returns ``(betas, symbol)``: float64 (n_bars, K), NaN while the beta warms up; and the
    benchmark's symbol. A book that does not hold ``benchmark`` (e.g. an ETH-only book) is
    measured against its first instrument, and the symbol returned says so.
    """
    book = as_book(book_data)
    try:
        b = book.resolve(benchmark, what="benchmark")
    except StrategyError:
        b = 0
    symbol = book.symbols[b]
    return betas(book, symbol, beta_days), symbol
