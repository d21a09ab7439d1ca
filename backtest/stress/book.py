"""Stress on books: shocks, cascades and joint bootstrap paths of a book's symbols.

A book's data is one :class:`~backtest.data.marketdata.MarketData` per symbol
(:class:`~backtest.data.book.BookData`). How each scenario applies to a book:

* **data shocks** (gap, volatility, mark wick, funding spike, path transplant): the shock's own
  ``apply`` on every symbol's data (default) or on the symbols named by ``symbols``; a path
  transplant replays each symbol's own history over the same source window, so the
  cross-correlation of that crisis is kept;
* **tier change**: each named symbol's (default: every symbol's) market spec;
* **slippage**: the book's account (every symbol fills through it);
* **cascade**: the cascade model runs on the *driver*, the book's first symbol (the first of
  ``symbols`` when given): its crowd, rounds and path are :meth:`Cascade.run` on that symbol's
  data. Every other moved symbol ``j`` takes the same relative move times its beta to the driver:
  a gap of ``beta_j * size`` at the same bar (:class:`~backtest.stress.shocks.Gap`) and the
  cascade move ``1 + beta_j (c - 1)`` with ``c = P*/P_s`` the driver's
  (:func:`~backtest.stress.cascade.apply_cascade_move`, spread over the same bars). ``beta_j`` is
  the ordinary least-squares slope of ``j``'s close-to-close log returns on the driver's over the
  model's ``lookback_bars`` bars before the shock bar (the window the crowd is built from); a beta
  of 0 leaves the symbol's data unchanged bit for bit.

Every shocked dataset passes the validation real data passes (each shock's own checks), and the
book's aligned bars are rebuilt from the shocked symbols (:func:`book_with`) as the loader builds
them, so the book engine and the book strategies run on it unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from backtest.data.book import BookData
from backtest.data.marketdata import MarketData
from backtest.stress.common import ShockError, bar_at, parse_instant
from backtest.stress.shocks import Gap, Shock


def book_with(book: BookData, data: Sequence[MarketData], what: str = "") -> BookData:
    """``book`` with its symbols' data replaced by ``data`` (one MarketData per symbol, in the
    book's order) and its aligned bars rebuilt (:meth:`BookBars.from_legs`, the loader's step)."""
    from backtest.book.bars import BookBars

    data = tuple(data)
    if len(data) != len(book.symbols):
        raise ShockError(f"{len(data)} datasets for the book's {len(book.symbols)} symbols {list(book.symbols)}")
    bars = BookBars.from_legs(book.symbols, [md.to_perp_bars() for md in data])
    notes = book.notes + ((f"stress: {what}",) if what else ())
    return BookData(exchange=book.exchange, symbols=book.symbols, data=data, bars=bars, notes=notes)


def symbols_moved(symbols: Sequence[str] | None, book: BookData, what: str) -> list[int]:
    """Indices of the book's symbols a scenario moves: all (``symbols`` None) or the named ones,
    in the order named; a name that is not in the book raises :class:`ShockError` naming it."""
    if symbols is None:
        return list(range(len(book.symbols)))
    out = []
    for s in symbols:
        if s not in book.symbols:
            raise ShockError(f"{what}: symbol {s!r} is not in the book (its symbols are {list(book.symbols)}); "
                             "name symbols of the book, or leave 'symbols' out to move every symbol")
        out.append(book.symbols.index(s))
    return out


def shock_book(shock: Shock, book: BookData, specs: Sequence[Any], symbols: Sequence[str] | None = None,
               what: str = "") -> tuple[BookData, list[Any]]:
    """A book's data and market specs under one shock: ``shock.apply`` and ``shock.apply_spec``
    on every symbol (``symbols`` None) or on the named ones; the others unchanged. The account
    (``shock.apply_account``) is the caller's: it is the book's, not a symbol's.

    Returns
    -------
    (shocked BookData, shocked specs): ``book`` itself when no symbol's data changed.
    """
    what = what or repr(shock)
    moved = set(symbols_moved(symbols, book, what))
    data = list(book.data)
    specs = list(specs)
    for k in sorted(moved):
        try:
            data[k] = shock.apply(data[k])
            specs[k] = shock.apply_spec(specs[k])
        except ShockError as exc:
            raise ShockError(f"{book.symbols[k]}: {exc}") from None
    if all(a is b for a, b in zip(data, book.data)):
        return book, specs
    return book_with(book, data, what), specs


def rolling_beta(driver: MarketData, other: MarketData, t: int, bars: int) -> float:
    """OLS slope of ``other``'s close-to-close log returns on ``driver``'s over the ``bars`` bars
    before the bar opening at ``t`` (ms UTC), on the bar times both have; dimensionless.

    Raises
    ------
    ShockError
        Fewer than two common returns before ``t``, or a driver without variance there.
    """
    def returns(md: MarketData) -> tuple[np.ndarray, np.ndarray]:
        ts = md.timestamps
        k = int(np.searchsorted(ts, t))
        lo = max(0, k - bars - 1)
        close = md.frame["close"].to_numpy(dtype=np.float64)[lo:k]
        return ts[lo + 1:k], np.diff(np.log(close))

    t0, r0 = returns(driver)
    t1, r1 = returns(other)
    common, i0, i1 = np.intersect1d(t0, t1, return_indices=True)
    if common.shape[0] < 2:
        raise ShockError(f"the beta of {other.symbol} to {driver.symbol} needs at least two common bar returns before "
                         f"the cascade; {common.shape[0]} found: move the cascade later")
    x, y = r0[i0], r1[i1]
    x = x - x.mean()
    var = float(x @ x)
    if not var > 0:
        raise ShockError(f"{driver.symbol} has no price variance before the cascade; the beta of {other.symbol} "
                         "is undefined: move the cascade")
    return float(x @ (y - y.mean())) / var


@dataclass(frozen=True)
class BookCascade:
    """A cascade on a book (module docstring).

    Attributes
    ----------
    book : the book's data on the cascade path.
    driver : the symbol the cascade model ran on.
    result : :class:`~backtest.stress.cascade.CascadeResult` of the driver.
    betas : symbol -> the beta its move was scaled by (the driver: 1; unmoved symbols absent).
    """

    book: BookData
    driver: str
    result: Any
    betas: dict[str, float]


def cascade_book(cascade: Any, book: BookData, symbols: Sequence[str] | None = None,
                 what: str = "") -> BookCascade:
    """A :class:`~backtest.stress.cascade.Cascade` on a book: the model on the driver (the first of
    ``symbols``, default the book's first symbol), the other moved symbols by their beta to it."""
    from backtest.stress.cascade import apply_cascade_move

    what = what or repr(cascade)
    moved = symbols_moved(symbols, book, what)
    if not moved:
        raise ShockError(f"{what}: 'symbols' is empty; name at least the symbol the cascade runs on")
    d = moved[0]
    try:
        res = cascade.run(book.data[d])
    except ShockError as exc:
        raise ShockError(f"{book.symbols[d]}: {exc}") from None
    data = list(book.data)
    data[d] = res.data
    betas = {book.symbols[d]: 1.0}
    t = parse_instant(cascade.at, "Cascade.at")
    c = res.solution.final / res.solution.shocked
    for j in moved[1:]:
        sym = book.symbols[j]
        beta = rolling_beta(book.data[d], book.data[j], t, int(cascade.model.lookback_bars))
        betas[sym] = beta
        size, cj = beta * float(cascade.size), 1.0 + beta * (c - 1.0)
        if not (size > -1.0 and cj > 0.0):
            raise ShockError(f"{what}: {sym}'s beta {beta:.3g} to {book.symbols[d]} scales the move to a gap of "
                             f"{size:.3g} and a cascade factor of {cj:.3g}, a price at or below zero; leave {sym} out "
                             "of 'symbols' or give a smaller size")
        try:
            k = bar_at(data[j], t, "Cascade.at")
            data[j] = apply_cascade_move(Gap(cascade.at, size).apply(data[j]), k, cj, int(cascade.model.bars),
                                         f"{what} x beta {beta:.4g}")
        except ShockError as exc:
            raise ShockError(f"{sym}: {exc}") from None
    return BookCascade(book=book_with(book, data, what), driver=book.symbols[d], result=res, betas=betas)


__all__ = ["BookCascade", "book_with", "cascade_book", "rolling_beta", "shock_book", "symbols_moved"]
