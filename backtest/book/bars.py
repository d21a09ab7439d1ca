"""Aligned inputs of a book: several perpetuals on one bar index.

A book holds K instruments in one account. Each instrument keeps its own validated
:class:`~backtest.engine.bars.PerpBars` (trade and mark OHLC, funding events mapped to its bars by
the single-instrument rules), over the bars where it is listed: instrument ``k`` starts at the book's
bar ``first_bar[k]`` and runs to the book's last bar. Before its first bar an instrument is flat and
cannot be traded; gaps inside a history follow the loader's gap policy (refused, or filled with a
note where the user allows it), so each instrument's bars are contiguous.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Sequence

import numpy as np
import pandas as pd

from backtest.data.timeutil import ms_index
from backtest.engine.bars import PRICE_FIELDS, EngineInputError, PerpBars, check_bar_times, ts_str


@dataclass(frozen=True)
class BookBars:
    """K instruments aligned on one bar index.

    Attributes
    ----------
    timestamp : int64 (n,) bar open times, ms UTC, strictly increasing, bar size ``bar_ms``
        (the union of the instruments' bars).
    bar_ms : bar size in milliseconds.
    symbols : the K instrument symbols, in the book's order (axis 1 of every (n, K) array).
    legs : the K instruments' own bars; ``legs[k].timestamp == timestamp[first_bar[k]:]``.
    first_bar : int64 (K,) the book bar at which each instrument is listed (0 = from the start).
    """

    timestamp: np.ndarray
    bar_ms: int
    symbols: tuple[str, ...]
    legs: tuple[PerpBars, ...]
    first_bar: np.ndarray

    @property
    def n(self) -> int:
        return self.timestamp.shape[0]

    @property
    def k(self) -> int:
        return len(self.legs)

    @cached_property
    def index(self) -> pd.DatetimeIndex:
        return ms_index(self.timestamp)

    @cached_property
    def listed(self) -> np.ndarray:
        """bool (n, K): True from each instrument's first bar on (tradeable)."""
        return np.arange(self.n)[:, None] >= self.first_bar[None, :]

    def prices(self, name: str) -> np.ndarray:
        """float64 (n, K) of one price field (``open``, ..., ``mark_close``); NaN before listing."""
        if name not in PRICE_FIELDS:
            raise EngineInputError(f"unknown price field {name!r}; one of {list(PRICE_FIELDS)}")
        out = np.full((self.n, self.k), np.nan)
        for j, (leg, f) in enumerate(zip(self.legs, self.first_bar)):
            out[f:, j] = getattr(leg, name)
        return out

    @classmethod
    def from_legs(cls, symbols: Sequence[str], legs: Sequence[PerpBars]) -> "BookBars":
        """Align instruments that each have their own bars (e.g. ``MarketData.to_perp_bars()`` per symbol).

        The book's index runs from the earliest first bar to the common last bar. An instrument
        listed later starts at its first bar; every instrument must reach the same last bar and
        have no hole inside its history (the loader fills or refuses holes; a listed instrument's
        missing bar here is an error naming the symbol and the bar).
        """
        symbols = tuple(str(s) for s in symbols)
        legs = tuple(legs)
        if not legs:
            raise EngineInputError("a book needs at least one instrument")
        if len(symbols) != len(legs):
            raise EngineInputError(f"{len(symbols)} symbols for {len(legs)} instruments; give one symbol each")
        if len(set(symbols)) != len(symbols):
            dup = sorted({s for s in symbols if symbols.count(s) > 1})
            raise EngineInputError(f"symbols {dup} appear more than once in the book; list each once")
        bar_ms = {int(leg.bar_ms) for leg in legs}
        if len(bar_ms) != 1:
            raise EngineInputError(
                f"the instruments have different bar sizes {dict(zip(symbols, (leg.bar_ms for leg in legs)))} ms; "
                "load every symbol with the same timeframe")
        (bms,) = bar_ms
        last = {int(leg.timestamp[-1]) for leg in legs}
        if len(last) != 1:
            ends = {s: ts_str(int(leg.timestamp[-1])) for s, leg in zip(symbols, legs)}
            raise EngineInputError(f"the instruments end at different bars {ends}; load them with the same end")
        start = min(int(leg.timestamp[0]) for leg in legs)
        ts = np.arange(start, next(iter(last)) + bms, bms, dtype=np.int64)
        check_bar_times(ts, bms, EngineInputError)
        first = np.empty(len(legs), dtype=np.int64)
        for j, (s, leg) in enumerate(zip(symbols, legs)):
            f = int((int(leg.timestamp[0]) - start) // bms)
            if int(leg.timestamp[0]) != start + f * bms or leg.n != ts.shape[0] - f \
                    or not np.array_equal(leg.timestamp, ts[f:]):
                have = np.isin(ts[f:], leg.timestamp)
                i = f + int(np.argmin(have)) if not have.all() else f
                raise EngineInputError(
                    f"{s}: its bars are not the book's bars from {ts_str(int(leg.timestamp[0]))} on "
                    f"(first mismatch at {ts_str(int(ts[i]))}); load it with the same timeframe and the "
                    "loader's gap policy (allow_gaps) so that its history has no hole")
            first[j] = f
        return cls(timestamp=ts, bar_ms=bms, symbols=symbols, legs=legs, first_bar=first)
