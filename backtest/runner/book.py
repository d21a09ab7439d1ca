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
    positions : name -> float64 (n_bars, K, n_cols) per-position series
        (``backtest.book.POSITION_SERIES``: ``notional``, ``pnl_price``, ``pnl_funding``,
        ``pnl_fees``, ``pnl_liquidation``, ...), settlement currency.
    symbols : the K instruments, in the book's order (axis 1 of ``positions``).
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
             columns: pd.Index | None = None) -> BookRun:
    """Simulate a book: the runner's one call into the book engine.

    Parameters
    ----------
    bars : :class:`backtest.book.BookBars` (``BookData.bars``).
    target : float64 (n_bars, K, n_cols) signed exposure per instrument as a multiple of equity
        (``strategies.build_book_targets``).
    specs : one MarketSpec per instrument, in the book's order.
    settings : :class:`backtest.book.BookSettings`.
    columns : one label per column (default 0..n_cols-1).

    Returns
    -------
    BookRun
    """
    from backtest.book import simulate_book

    res = simulate_book(bars, target, list(specs), settings, columns=columns)
    return BookRun(result=res.to_sim_result(), positions=res.positions, symbols=tuple(res.symbols))


# ---------------------------------------------------------------------------------------------
# a [[book]] of a run config

def load_book(cfg: Any, data: Any) -> Any:
    """The book's :class:`~backtest.data.book.BookData`: its symbols on the run's ``[data]``
    exchange, timeframe, range, store and allow_* settings."""
    from backtest.data import load_book_data

    return load_book_data(data.exchange, cfg.symbols, data.timeframe, data.start, data.end, root=data.root,
                          allow_gaps=data.allow_gaps, allow_mark_fallback=data.allow_mark_fallback,
                          allow_partial_range=data.allow_partial_range,
                          allow_extreme_funding=data.allow_extreme_funding)


def book_settings(cfg: Any, symbols: Sequence[str], policy: Any) -> Any:
    """:class:`backtest.book.BookSettings` of a ``[[book]]``: its account, one Leg per symbol
    (``legs.<symbol>``, fields left out take the account's), its intrabar convention and the
    in-loop policy of each column (from ``build_book_targets``)."""
    from backtest.book import BookSettings, Leg
    from backtest.engine.settings import Account

    legs = [Leg(**cfg.legs[s].model_dump()) if s in cfg.legs else Leg() for s in symbols]
    return BookSettings(account=Account(**cfg.account.model_dump()), policy=policy, legs=legs,
                        intrabar=cfg.intrabar)


def run_book(cfg: Any, book: Any, specs: Sequence[Any]) -> tuple[BookRun, pd.MultiIndex]:
    """Targets (``strategies.build_book_targets``) and the simulation of a ``[[book]]``; returns
    the run and its column grid (strategy parameters x gate x policy)."""
    import strategies

    s = cfg.strategy
    target, policy, columns = strategies.build_book_targets(
        book, s.name, s.params or None, list(cfg.policies), gate=s.gate, gate_params=s.gate_params or None,
        gate_symbol=s.gate_symbol, specs=list(specs), rebalance_hours=cfg.rebalance_hours)
    return simulate(book.bars, target, specs, book_settings(cfg, book.symbols, policy), columns), columns
