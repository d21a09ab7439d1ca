"""Books in runs: load a ``[[book]]``'s data, build its targets, simulate it, and hand the report a
:class:`~backtest.result.SimResult` plus the per-position series its attribution is built from.

The engine is called in exactly one place, :func:`simulate`. It runs the reference simulator
(:func:`backtest.book.simulate_book_reference`) until the numba book kernel is merged; then its
body becomes::

    res = simulate_book(bars, target, specs, settings, columns=columns)
    return BookRun(res.to_sim_result(), res.positions, res.symbols)

and :func:`_sim_result` and :func:`_liquidation_events` (which mirror ``BookResult.to_sim_result``)
are deleted. Nothing else in the runner or the report changes.
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
    from backtest.book import simulate_book_reference

    series, records = simulate_book_reference(bars, target, list(specs), settings)
    m = series["equity"].shape[1]
    cols = pd.RangeIndex(m) if columns is None else columns
    if len(cols) != m:
        raise ValueError(f"{len(cols)} column labels for a book of {m} columns")
    result = _sim_result(series, records, bars, list(specs), settings, cols)
    positions = {name: series[name] for name in _position_series()}
    return BookRun(result=result, positions=positions, symbols=tuple(bars.symbols))


def _position_series() -> tuple[str, ...]:
    from backtest.book import POSITION_SERIES

    return POSITION_SERIES


def _sim_result(series: dict[str, np.ndarray], records: dict[str, np.ndarray], bars: Any, specs: list[Any],
                settings: Any, columns: pd.Index) -> SimResult:
    """The reference's outputs as the kernel's ``BookResult.to_sim_result`` gives them."""
    from backtest.book.settings import book_arrays

    n, m = series["equity"].shape
    legs, pol, intrabar = book_arrays(settings, specs, m, n)
    pos, notional = series["position"], series["notional"]
    out = {
        "equity": series["equity"], "equity_usd": series["equity_usd"],
        "position": (pos != 0.0).sum(axis=1).astype(np.float64),
        "notional": notional.sum(axis=1),
        "leverage": series["gross_leverage"],
        "gross_notional": np.abs(notional).sum(axis=1),
        "cum_funding": series["cum_funding"], "cum_fees": series["cum_fees"],
        "capital_added": series["capital_added"],
        "margin_ratio": series["margin_ratio"], "margin_ratio_adverse": series["margin_ratio_adverse"],
    }
    recs = dict(records)
    recs["liquidations"] = _liquidation_events(records["liquidations"])
    inverse = bool(specs[0].inverse)
    if inverse:  # USD per coin: the mark close of the first listed instrument (as the engine values equity_usd)
        marks = bars.prices("mark_close")
        first = np.argmax(bars.listed, axis=1)
        price_usd = marks[np.arange(n), first]
    else:
        price_usd = np.ones(n)
    acc = settings.account
    meta = {
        "instrument": "book", "symbols": list(bars.symbols), "exchange": specs[0].exchange,
        "settle": str(specs[0].settle), "inverse": inverse, "bar_ms": int(bars.bar_ms), "lag": int(acc.lag),
        "allow_lookahead": bool(acc.allow_lookahead),
        "settings": {**{k: v.tolist() for k, v in legs[0].items() if k not in ("margin_mode", "leverage", "fee_rate")},
                     **{k: v.tolist() for k, v in pol.items()},
                     "intrabar": intrabar.tolist(),
                     "margin_mode": [a["margin_mode"].tolist() for a in legs],
                     "leverage": [a["leverage"].tolist() for a in legs],
                     "fee_rate": [a["fee_rate"].tolist() for a in legs]},
    }
    return SimResult(kind="book", currency=str(specs[0].settle), index=bars.index, columns=columns, series=out,
                     records=recs, price_usd=price_usd, initial_capital=legs[0]["initial_capital"].copy(),
                     meta=meta, underlying=None)


def _liquidation_events(liq: np.ndarray) -> np.ndarray:
    """One record per account liquidation (a cross liquidation closes several positions at once):
    consecutive records of one column and bar with the same ``equity_before``/``equity_after``
    are one event, its clearance fees, deficit and size summed; so the metrics count events and
    the equity they cost once."""
    if not len(liq):
        return liq.copy()
    key = np.stack([liq["col"], liq["bar"]], axis=1)
    new = np.ones(len(liq), dtype=bool)
    new[1:] = ((key[1:] != key[:-1]).any(axis=1) | (liq["equity_before"][1:] != liq["equity_before"][:-1])
               | (liq["equity_after"][1:] != liq["equity_after"][:-1]))
    starts = np.flatnonzero(new)
    out = liq[starts].copy()
    for f in ("clearance_fee", "deficit", "size"):
        out[f] = np.add.reduceat(liq[f], starts)
    return out


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
