"""Builders for the stress tests: hand-made MarketData (candle tables with funding prints that
carry marks and ms jitter) and the embedded sample."""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
import pandas as pd

from backtest.data import load_market_data
from backtest.data.marketdata import MarketData, funding_to_bars
from backtest.data.timeutil import ms_index
from backtest.market import load_market

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
HOUR = 3_600_000


def hand_data(candles: Sequence[Sequence[float]], prints: Sequence[tuple] = (), *, bar_ms: int = HOUR,
              volume: float = 1.0) -> MarketData:
    """MarketData from rows ``(open, high, low, close)`` (mark = trade) or 8 values (trade, mark),
    and raw prints ``(time_ms, rate, interval_hours, mark)`` (mark NaN = unknown)."""
    rows = np.asarray([list(c) * 2 if len(c) == 4 else list(c) for c in candles], dtype=np.float64)
    ts = T0 + bar_ms * np.arange(rows.shape[0], dtype=np.int64)
    fund = pd.DataFrame({"timestamp": np.array([p[0] for p in prints], dtype=np.int64),
                         "funding_rate": np.array([p[1] for p in prints], dtype=np.float64),
                         "interval_hours": np.array([p[2] for p in prints], dtype=np.float64),
                         "mark_price": np.array([p[3] for p in prints], dtype=np.float64)})
    rate, interval, _ = funding_to_bars(ts, bar_ms, fund)
    names = ("open", "high", "low", "close", "mark_open", "mark_high", "mark_low", "mark_close")
    cols = {c: rows[:, i] for i, c in enumerate(names[:4])}
    cols["volume"] = np.full(rows.shape[0], volume)
    cols.update({c: rows[:, i + 4] for i, c in enumerate(names[4:])})
    cols["funding_rate"], cols["funding_interval_hours"] = rate, interval
    frame = pd.DataFrame(cols, index=ms_index(ts))
    return MarketData(exchange="test", symbol="TEST/USDT:USDT", timeframe="1h", bar_ms=bar_ms, source="hand",
                      frame=frame, funding=fund).replace()


# trade OHLC | mark OHLC; bar 2 opens at 100 (the volatility level below)
CANDLES = [
    (100, 102, 99, 101, 100, 101.5, 99.5, 101),
    (101, 104, 100, 103, 101, 103.5, 100.5, 103),
    (100, 101, 96, 97, 100, 100.5, 96.5, 97),
    (97, 98, 94, 95, 97, 97.5, 94.5, 95),
    (95, 99, 95, 98, 95, 98.5, 95, 98),
    (98, 100, 97, 99, 98, 99.5, 97.5, 99),
]
# raw prints (time with ms jitter, rate, interval h, mark): bar 1 at its open (+3 ms), bar 3 at
# its open (-2 ms, rounded into bar 3), bar 4 inside the bar
PRINTS = [(T0 + HOUR + 3, 0.0001, 8.0, 101.0), (T0 + 3 * HOUR - 2, 0.0002, 8.0, 97.0),
          (T0 + 4 * HOUR + 1_800_000, -0.0001, 8.0, 96.0)]


def hand() -> MarketData:
    """The hand table above: six hourly bars from T0, three prints with marks and ms jitter."""
    return hand_data(CANDLES, PRINTS)


@lru_cache(maxsize=None)
def sample(start: str = "2022-05-01", end: str = "2022-07-01") -> MarketData:
    """Binance BTC/USDT:USDT 1h of the embedded sample (real trade, mark and funding data)."""
    return load_market_data("binanceusdm", "BTC/USDT:USDT", "1h", start=start, end=end)


@lru_cache(maxsize=None)
def btc_spec():
    return load_market("binanceusdm", "BTC/USDT:USDT")


def same_data(a: MarketData, b: MarketData) -> bool:
    """Bit for bit: the frame (index, columns, every float's bytes) and the prints."""
    if not a.frame.index.equals(b.frame.index) or list(a.frame.columns) != list(b.frame.columns):
        return False
    for c in a.frame.columns:
        if a.frame[c].to_numpy().tobytes() != b.frame[c].to_numpy().tobytes():
            return False
    if list(a.funding.columns) != list(b.funding.columns) or len(a.funding) != len(b.funding):
        return False
    return all(a.funding[c].to_numpy().tobytes() == b.funding[c].to_numpy().tobytes() for c in a.funding.columns)
