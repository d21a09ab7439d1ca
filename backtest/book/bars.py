"""Aligned inputs of a book: several perpetuals on one bar index.

A book holds K instruments in one account. Each instrument keeps its own validated
:class:`~backtest.engine.bars.PerpBars` (trade and mark OHLC, funding events mapped to its bars by
the single-instrument rules), over the bars where it is listed: instrument ``k`` starts at the book's
bar ``first_bar[k]`` and runs to the book's last bar.

The book's index is the union of the instruments' bar times. Before its first bar an instrument
is flat and cannot be traded. After it, the instrument must have every bar of the book: a bar that
one listed instrument lacks while another has it (a hole) is refused here, because any price put
there would be invented. Bars that every listed instrument lacks (an exchange-wide outage, or the
missing hours of a book of one) are simply not in the index, exactly as the single-instrument
engine runs on a gapped history: the loader's gap policy (``allow_gaps``) decides whether such
data is loaded at all, and :func:`backtest.data.load_book_data` drops the bars of a hole from
every instrument (noted) where the user allows gaps.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Sequence

import numpy as np
import pandas as pd

from backtest.data.timeutil import ms_index
from backtest.engine.bars import PRICE_FIELDS, EngineInputError, PerpBars, check_bar_times, ts_str


def check_book_symbols(symbols: Sequence[str], error: type[Exception] = EngineInputError) -> tuple[str, ...]:
    """The book's symbols as a tuple: at least one, each a non-empty string, none twice; else
    ``error`` naming the bad value and the fix."""
    if isinstance(symbols, str):
        raise error(f"symbols={symbols!r} is one string; give a list of symbols, e.g. [{symbols!r}]")
    symbols = tuple(symbols)
    if not symbols:
        raise error("a book needs at least one instrument; give one symbol (and one PerpBars) per instrument")
    for s in symbols:
        if not isinstance(s, str) or not s:
            raise error(f"symbol {s!r} is not a non-empty string; name each instrument, e.g. 'BTC/USDT:USDT'")
    if len(set(symbols)) != len(symbols):
        dup = sorted({s for s in symbols if symbols.count(s) > 1})
        raise error(f"symbols {dup} appear more than once in the book; list each once")
    return symbols


@dataclass(frozen=True)
class BookBars:
    """K instruments aligned on one bar index.

    Attributes
    ----------
    timestamp : int64 (n,) bar open times, ms UTC, strictly increasing, every one on the same
        phase of the bar size ``bar_ms`` (the union of the instruments' bars; bars that no listed
        instrument has are absent, as in a gapped single-instrument history).
    bar_ms : bar size in milliseconds.
    symbols : the K instrument symbols, in the book's order (axis 1 of every (n, K) array).
    legs : the K instruments' own bars; ``legs[k].timestamp == timestamp[first_bar[k]:]``, and
        their funding events are exactly those of the single-instrument run (bars of the leg).
    first_bar : int64 (K,) the book bar at which each instrument is listed (0 = from the start).
    """

    timestamp: np.ndarray
    bar_ms: int
    symbols: tuple[str, ...]
    legs: tuple[PerpBars, ...]
    first_bar: np.ndarray

    @property
    def n(self) -> int:
        """Number of book bars."""
        return self.timestamp.shape[0]

    @property
    def k(self) -> int:
        """Number of instruments."""
        return len(self.legs)

    @cached_property
    def index(self) -> pd.DatetimeIndex:
        """The book's bar open times as a UTC ``DatetimeIndex``."""
        return ms_index(self.timestamp)

    @cached_property
    def listed(self) -> np.ndarray:
        """bool (n, K): True from each instrument's first bar on (tradeable)."""
        out = np.arange(self.n)[:, None] >= self.first_bar[None, :]
        out.flags.writeable = False  # shared by every caller (cached)
        return out

    def prices(self, name: str) -> np.ndarray:
        """float64 (n, K) of one price field (``open``, ..., ``mark_close``); NaN before listing."""
        if name not in PRICE_FIELDS:
            raise EngineInputError(f"unknown price field {name!r}; one of {list(PRICE_FIELDS)}")
        out = np.full((self.n, self.k), np.nan)
        for j, (leg, f) in enumerate(zip(self.legs, self.first_bar)):
            out[f:, j] = getattr(leg, name)
        return out

    def funding_bar(self, k: int) -> np.ndarray:
        """int64 (events,) the book bar of each of instrument ``k``'s funding events
        (``legs[k].fe_bar`` counts the instrument's own bars, which start at ``first_bar[k]``)."""
        return self.legs[k].fe_bar + self.first_bar[k]

    @classmethod
    def from_legs(cls, symbols: Sequence[str], legs: Sequence[PerpBars]) -> "BookBars":
        """Align instruments that each have their own bars (e.g. ``MarketData.to_perp_bars()`` per symbol).

        The book's index is the union of the instruments' bar times, from the earliest first bar
        to the common last bar. An instrument listed later starts at its first bar.

        Raises
        ------
        EngineInputError
            No instrument; not one symbol per instrument; a symbol that is not a non-empty string
            or appears twice; an instrument that is not ``PerpBars``; different bar sizes; bars
            on different phases of the bar size (e.g. ``:00`` and ``:30`` opens); different last
            bars; a hole (a listed instrument lacks a bar that another has). Each message names
            the symbol, the bar and the fix.
        """
        symbols = check_book_symbols(symbols)
        legs = tuple(legs)
        if len(symbols) != len(legs):
            raise EngineInputError(f"{len(symbols)} symbols for {len(legs)} instruments; give one symbol each")
        for s, leg in zip(symbols, legs):
            if not isinstance(leg, PerpBars):
                raise EngineInputError(f"{s}: the instrument is a {type(leg).__name__}, not PerpBars; build it "
                                       "with PerpBars.from_arrays/from_frame or MarketData.to_perp_bars()")
        sizes = {s: int(leg.bar_ms) for s, leg in zip(symbols, legs)}
        if len(set(sizes.values())) != 1:
            raise EngineInputError(
                f"the instruments have different bar sizes {sizes} ms; load every symbol with the same timeframe")
        bms = next(iter(sizes.values()))
        phase = {s: int(leg.timestamp[0]) % bms for s, leg in zip(symbols, legs)}
        if len(set(phase.values())) != 1:
            raise EngineInputError(
                f"the instruments' bars open at different offsets within the {bms} ms bar "
                f"({ {s: f'{p} ms' for s, p in phase.items()} }); every bar must open on the same grid: "
                "load every symbol from the same store timeframe")
        ends = {s: int(leg.timestamp[-1]) for s, leg in zip(symbols, legs)}
        if len(set(ends.values())) != 1:
            raise EngineInputError(
                f"the instruments end at different bars { {s: ts_str(t) for s, t in ends.items()} }; "
                "load them with the same end (load_book_data cuts them to the common end with "
                "allow_partial_range=True)")
        ts = np.unique(np.concatenate([leg.timestamp for leg in legs]))
        check_bar_times(ts, bms, EngineInputError)
        off = (ts - ts[0]) % bms
        if off.any():  # a leg's own bars off its first bar's grid
            i = int(np.argmax(off != 0))
            raise EngineInputError(f"bar {ts_str(int(ts[i]))} is not a whole number of {bms} ms bars after "
                                   f"{ts_str(int(ts[0]))}; every bar must open on the same grid")
        first = np.searchsorted(ts, np.array([leg.timestamp[0] for leg in legs], dtype=np.int64))
        for j, (s, leg) in enumerate(zip(symbols, legs)):
            book = ts[first[j]:]
            if leg.n != book.shape[0]:  # the leg's bars are a subset of the union: fewer = a hole
                have = np.isin(book, leg.timestamp)
                i = int(first[j]) + int(np.argmin(have))
                who = [o for o, other in zip(symbols, legs) if o != s and ts[i] in other.timestamp]
                raise EngineInputError(
                    f"{s} has no bar at {ts_str(int(ts[i]))} (book bar {i}, {int((~have).sum())} such bar(s) "
                    f"after its first bar {ts_str(int(leg.timestamp[0]))}), which {', '.join(who)} has: a hole "
                    "inside its history; complete the data, or load the book with load_book_data(..., "
                    "allow_gaps=True), which drops such bars from every instrument and notes them")
        first = first.astype(np.int64)
        ts.flags.writeable = False
        first.flags.writeable = False
        return cls(timestamp=ts, bar_ms=bms, symbols=symbols, legs=legs, first_bar=first)
