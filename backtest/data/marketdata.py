"""The loader's result: :class:`MarketData`, aligned bars plus the raw funding prints."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any, TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    from backtest.engine.bars import PerpBars

FRAME_COLUMNS = ("open", "high", "low", "close", "volume", "mark_open", "mark_high", "mark_low", "mark_close",
                 "funding_rate", "funding_interval_hours")
FUNDING_EVENT_COLUMNS = ("timestamp", "funding_rate", "interval_hours", "mark_price")


@dataclass(frozen=True, eq=False)
class MarketData:
    """Aligned market data of one symbol at one timeframe.

    Attributes
    ----------
    exchange, symbol : ccxt exchange id and symbol
    timeframe : ccxt timeframe of the bars; ``bar_ms`` its length in ms
    source : folder the data was read from (the default store or the committed sample)
    frame : DataFrame (n_bars rows), DatetimeIndex UTC named ``time`` = bar open time;
        float64 columns ``open high low close volume`` (trade candles),
        ``mark_open mark_high mark_low mark_close`` (mark candles),
        ``funding_rate`` (sum of the prints whose time rounded to the second falls inside the
        bar, fraction; NaN where none), ``funding_interval_hours`` (sum of those prints'
        intervals in hours; NaN where none) and, when requested, ``iv`` (implied vol as a
        fraction, 0.45 = 45 %, as of the bar's close)
    funding : raw prints inside the bars' span: ``timestamp`` (int64 ms, as the exchange
        reports it), ``funding_rate``, ``interval_hours``, ``mark_price`` (NaN if unknown)
    notes : human-readable warnings (fallbacks, filled or missing ranges)
    fingerprint : sha256 hex of the identity and every loaded array (derive run ids from it)
    """

    exchange: str
    symbol: str
    timeframe: str
    bar_ms: int
    source: str
    frame: pd.DataFrame
    funding: pd.DataFrame
    notes: tuple[str, ...] = field(default_factory=tuple)
    fingerprint: str = ""

    @property
    def n(self) -> int:
        """Number of bars."""
        return len(self.frame)

    @property
    def timestamps(self) -> np.ndarray:
        """Bar open times, int64 ms UTC, shape (n_bars,)."""
        return self.frame.index.as_unit("ms").asi8

    def to_perp_bars(self) -> "PerpBars":
        """The engine's aligned inputs (:class:`backtest.engine.bars.PerpBars`)."""
        from backtest.engine.bars import PerpBars

        return PerpBars.from_frame(self.frame, self.funding, bar_ms=self.bar_ms)

    def replace(self, **changes: Any) -> "MarketData":
        """A copy with fields changed and the fingerprint recomputed."""
        out = replace(self, **changes)
        return replace(out, fingerprint=fingerprint(out))

    def __repr__(self) -> str:
        span = f"{self.frame.index[0]} .. {self.frame.index[-1]}" if self.n else "empty"
        return (f"MarketData({self.exchange} {self.symbol} {self.timeframe}, {self.n} bars {span}, "
                f"{len(self.funding)} funding prints, {len(self.notes)} note(s), source={self.source!r})")


def fingerprint(md: MarketData) -> str:
    """sha256 over the identity (exchange, symbol, timeframe, bar size) and the loaded arrays
    (bar times, every frame column by name, every funding column), in a fixed byte layout."""
    h = hashlib.sha256()
    head = {"exchange": md.exchange, "symbol": md.symbol, "timeframe": md.timeframe, "bar_ms": int(md.bar_ms),
            "columns": list(map(str, md.frame.columns))}
    h.update(json.dumps(head, sort_keys=True).encode())
    h.update(np.ascontiguousarray(md.frame.index.as_unit("ms").asi8, dtype="<i8").tobytes())
    for c in md.frame.columns:
        h.update(str(c).encode() + b"\0")
        h.update(np.ascontiguousarray(md.frame[c].to_numpy(dtype=np.float64), dtype="<f8").tobytes())
    for c in FUNDING_EVENT_COLUMNS:
        if c in md.funding.columns:
            dt = "<i8" if c == "timestamp" else "<f8"
            h.update(c.encode() + b"\0")
            h.update(np.ascontiguousarray(md.funding[c].to_numpy(), dtype=dt).tobytes())
    return h.hexdigest()


def funding_to_bars(ts: np.ndarray, bar_ms: int, funding: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bar funding columns from raw prints.

    A print's time is rounded to the nearest whole second (exchange jitter) and it belongs to
    the bar whose ``[open, open + bar_ms)`` contains it (the rule of
    :mod:`backtest.engine.bars`).

    Returns
    -------
    rate : float64 (n_bars,), sum of the rates in the bar, NaN where none
    interval : float64 (n_bars,), sum of the prints' interval_hours, NaN where none
    inside : bool (n_prints,), the prints that fell inside a bar
    """
    ts = np.asarray(ts, dtype=np.int64)
    n = ts.shape[0]
    t = (funding["timestamp"].to_numpy(dtype=np.int64) + 500) // 1000 * 1000
    rate = funding["funding_rate"].to_numpy(dtype=np.float64)
    iv = (funding["interval_hours"].to_numpy(dtype=np.float64) if "interval_hours" in funding
          else np.full(t.shape, np.nan))
    if n == 0:
        return np.empty(0), np.empty(0), np.zeros(t.shape, dtype=bool)
    bar = np.searchsorted(ts, t, side="right") - 1
    inside = (bar >= 0) & (t < ts[np.clip(bar, 0, None)] + bar_ms)
    out_rate = np.zeros(n)
    out_iv = np.zeros(n)
    count = np.zeros(n, dtype=np.int64)
    np.add.at(out_rate, bar[inside], rate[inside])
    np.add.at(out_iv, bar[inside], iv[inside])
    np.add.at(count, bar[inside], 1)
    out_rate[count == 0] = np.nan
    out_iv[count == 0] = np.nan
    return out_rate, out_iv, inside
