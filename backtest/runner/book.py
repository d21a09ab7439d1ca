"""Books in runs: load a ``[[book]]``'s data, build its targets, simulate it, and hand the report a
:class:`~backtest.result.SimResult` plus the per-position series its attribution is built from.

The engine is called in exactly one place, :func:`simulate`: the numba book kernel
(:func:`backtest.book.simulate_book`), whose ``BookResult.to_sim_result`` is what metrics and
reports read.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from backtest.result import SimResult


@dataclass(frozen=True)
class BookRun:
    """A simulated book as the report takes it.

    Attributes
    ----------
    result : the book as a SimResult of kind ``'book'`` (account series; ``notional`` is the net
        notional, ``leverage`` the gross leverage ``sum_k |N_k| / equity``, ``position`` the number
        of open positions; also ``gross_notional``, ``margin_ratio``, ``margin_ratio_adverse``).
        Also the account's distance to liquidation ``liq_distance`` and, run from a config,
        ``beta_exposure`` and ``beta_exposure_coin``.
        With option legs, also ``option_value``, ``delta_btc`` and ``vega`` (docs/mechanics.md,
        "Options in a book").
    positions : name -> float64 (n_bars, K + J, n_cols) per-position series
        (``backtest.book.POSITION_SERIES``: ``notional``, ``pnl_price``, ``pnl_funding``,
        ``pnl_fees``, ``pnl_liquidation``, ...), settlement currency; rows K.. are the option legs.
    symbols : the K instruments then the J option legs' names, in the book's order (axis 1 of
        ``positions``).
    """

    result: SimResult
    positions: dict[str, np.ndarray]
    symbols: tuple[str, ...]

    def to_sim_result(self) -> SimResult:
        """The SimResult (what ``backtest.report.collect`` also asks a kernel ``BookResult`` for)."""
        return self.result

    def relabel(self, result: SimResult) -> "BookRun":
        """The same book with ``result`` (e.g. readable column labels) in place of its SimResult."""
        if result.n_cols != self.result.n_cols or result.n_bars != self.result.n_bars:
            raise ValueError(f"a result of {result.n_bars} x {result.n_cols} for a book of "
                             f"{self.result.n_bars} x {self.result.n_cols}")
        return dataclasses.replace(self, result=result)


def simulate(bars: Any, target: np.ndarray, specs: Sequence[Any], settings: Any,
             columns: pd.Index | None = None, betas: Any = None, benchmark: str | None = None) -> BookRun:
    """Simulate a book: the runner's one call into the book engine.

    Parameters
    ----------
    bars : :class:`backtest.book.BookBars` (``BookData.bars``).
    target : float64 (n_bars, K, n_cols) signed exposure per instrument as a multiple of equity
        (``strategies.build_book_targets``).
    specs : one MarketSpec per instrument, in the book's order.
    settings : :class:`backtest.book.BookSettings`.
    columns : one label per column (default 0..n_cols-1).
    betas, benchmark : the instruments' betas and their benchmark (``simulate_book``): the
        result gains ``beta_exposure`` and ``beta_exposure_coin``.

    Returns
    -------
    BookRun
    """
    from backtest.book import simulate_book
    from backtest.book.options import OPTION_SERIES

    res = simulate_book(bars, target, list(specs), settings, columns=columns, betas=betas, benchmark=benchmark)
    result = res.to_sim_result()
    extra = {s: res.series[s] for s in OPTION_SERIES if s in res.series}
    if extra:  # a book with option legs: its option value, delta (first coin) and vega are stored too
        result = dataclasses.replace(result, series={**result.series, **extra})
    return BookRun(result=result, positions=res.positions, symbols=tuple(res.symbols))


# ---------------------------------------------------------------------------------------------
# a [[book]] of a run config

def option_underlying(name: str, symbols: Sequence[str]) -> str | None:
    """The book's symbol an option table's ``underlying`` names (a symbol, or a base currency held
    once, as ``gate_symbol``), or None when it names none or several."""
    if name in symbols:
        return name
    hits = [s for s in symbols if s.split("/")[0].upper() == name.upper()]
    return hits[0] if len(hits) == 1 else None


def option_ivs(cfg: Any) -> dict[str, tuple[str, str]]:
    """``{symbol: (exchange, name)}``: the implied-volatility index each option leg's ``iv``
    names, by its underlying's symbol (loaded with the book: ``load_book_data(iv=...)``)."""
    out = {}
    for o in cfg.option:
        sym = option_underlying(o.underlying, cfg.symbols)
        if o.iv is not None and sym is not None:
            ex, name = o.iv.split("/")
            out[sym] = (ex, name)
    return out


def load_book(cfg: Any, data: Any) -> Any:
    """The book's :class:`~backtest.data.book.BookData`: its symbols on the run's ``[data]``
    exchange, timeframe, range, store and allow_* settings, with the implied volatility its
    option legs name (``[[book.option]] iv``)."""
    from backtest.data import load_book_data

    return load_book_data(data.exchange, cfg.symbols, data.timeframe, data.start, data.end, root=data.root,
                          allow_gaps=data.allow_gaps, allow_mark_fallback=data.allow_mark_fallback,
                          allow_partial_range=data.allow_partial_range,
                          allow_extreme_funding=data.allow_extreme_funding, iv=option_ivs(cfg) or None)


def option_columns(cfg: Any) -> tuple[int, int]:
    """(hedge columns, option legs) of a ``[[book]]`` for the memory estimate: the legs' grids
    multiplied (``options_grid = 'product'``) or the longest (``'zip'``), and their count."""
    sizes = [len(v) if isinstance(v, list) else 1
             for o in cfg.option for v in ([o.ratio if o.rule == "hedge" else o.exposure])]
    if not sizes:
        return 1, 0
    return (int(np.prod(sizes)) if cfg.options_grid == "product" else max(sizes)), len(sizes)


def option_settings(o: Any, inverse: bool = False) -> Any:
    """The :class:`~backtest.options.PutSettings` of one ``[[book.option]]`` table: its type,
    the contract keys it gives (the others at PutSettings' defaults) and the book's settlement."""
    from backtest.options import PutSettings
    from backtest.runner.config import OPTION_CONTRACT_FIELDS

    given = {k: getattr(o, k) for k in OPTION_CONTRACT_FIELDS if getattr(o, k) is not None}
    return PutSettings(option_type=o.type, settlement="coin" if inverse else "usd", **given)


def option_rules(cfg: Any, book: Any | None = None, inverse: bool = False) -> list[Any]:
    """The :class:`strategies.OptionRule` of every ``[[book.option]]`` of a book: its leg
    (underlying, contract, name; the implied volatility of ``iv`` on the book's bars when ``book``
    is given) and its rule."""
    from backtest.book.options import OptionLeg
    from strategies.book_options import OptionRule, contract_label

    out = []
    for o in cfg.option:
        put = option_settings(o, inverse)
        sym = option_underlying(o.underlying, cfg.symbols) or o.underlying
        iv = None
        if o.iv is not None and book is not None:
            iv = book[sym].frame["iv"].reindex(book.bars.index).to_numpy()
        name = o.name or f"{sym} {contract_label(put)}"
        leg = OptionLeg(sym, put=put, name=name, iv=iv)
        out.append(OptionRule(leg, o.rule, ratio=o.ratio, exposure=o.exposure, band=o.band))
    return out


def book_settings(cfg: Any, symbols: Sequence[str], policy: Any, options: Sequence[Any] = ()) -> Any:
    """:class:`backtest.book.BookSettings` of a ``[[book]]``: its account, one Leg per symbol
    (``legs.<symbol>``, fields left out take the account's), its intrabar convention, the
    in-loop policy of each column (from ``build_book_targets``), its option legs
    (``OptionLeg``, the rules' legs) and ``options_collateral``."""
    from backtest.book import BookSettings, Leg
    from backtest.engine.settings import Account

    legs = [Leg(**cfg.legs[s].model_dump()) if s in cfg.legs else Leg() for s in symbols]
    return BookSettings(account=Account(**cfg.account.model_dump()), policy=policy, legs=legs,
                        intrabar=cfg.intrabar, options=list(options), options_collateral=cfg.options_collateral)


def run_book(cfg: Any, book: Any, specs: Sequence[Any]) -> tuple[BookRun, pd.MultiIndex]:
    """Targets (``strategies.build_book_targets``) and the simulation of a ``[[book]]``; returns
    the run and its column grid (strategy parameters x gate x policy)."""
    import strategies

    from strategies.book_options import resolve_rules
    from strategies.book_strategies import book_betas

    s = cfg.strategy
    rules = resolve_rules(book, option_rules(cfg, book, bool(specs[0].inverse))) if cfg.option else []
    target, policy, columns = strategies.build_book_targets(
        book, s.name, s.params or None, list(cfg.policies), gate=s.gate, gate_params=s.gate_params or None,
        gate_symbol=s.gate_symbol, specs=list(specs), rebalance_hours=cfg.rebalance_hours, options=rules or None,
        options_grid=cfg.options_grid, lag=int(cfg.account.lag))
    settings = book_settings(cfg, book.symbols, policy, [r.leg for r in rules])
    # the beta-weighted exposure is reported with the strategy's own beta estimate (its benchmark
    # and window when given as one value, else BTC over 30 days)
    params = s.params or {}
    bench = params.get("benchmark", "BTC")
    days = params.get("beta_days", 30.0)
    betas, benchmark = book_betas(book, bench if isinstance(bench, str) else "BTC",
                                  float(days) if isinstance(days, (int, float)) else 30.0)
    return simulate(book.bars, target, specs, settings, columns, betas=betas, benchmark=benchmark), columns
