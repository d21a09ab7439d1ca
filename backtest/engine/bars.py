"""Aligned engine inputs: trade OHLC, mark OHLC and funding events mapped to bars.

Funding mapping (documented in the README, "Engine semantics"):

* a raw funding timestamp is rounded to the nearest whole second first, so exchange jitter
  (``08:00:00.003``) lands on the intended instant;
* the print belongs to the bar whose ``[open_time, open_time + bar_ms)`` contains that instant;
* ``at_open`` is true when the instant equals the bar's open time: such a print is paid by the
  position held *going into* the open, before the bar's fill; a print strictly inside a bar is
  paid by the position after the fill;
* the mark price of a payment is the print's own ``mark_price`` when the data has one, else the
  bar's mark open (the last mark known at that instant without looking ahead);
* prints before the first bar or after the last bar's close are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from backtest.data.timeutil import ms_index


class EngineInputError(ValueError):
    """Engine input is invalid; the message names the array, the bar and the fix."""


PRICE_FIELDS = ("open", "high", "low", "close", "mark_open", "mark_high", "mark_low", "mark_close")


def ts_str(ts: int) -> str:
    """ISO-8601 UTC text of an int64 ms timestamp (for error messages)."""
    return pd.Timestamp(int(ts), unit="ms", tz="UTC").isoformat()


def check_bar_times(ts: np.ndarray, bar_ms: int | None, error: type[Exception]) -> int:
    """Check that bar open times (int64 ms, at least one) strictly increase and return the bar
    size: ``bar_ms`` when given, else the smallest spacing. Raises ``error`` naming the bar."""
    n = ts.shape[0]
    if n > 1 and not np.all(np.diff(ts) > 0):
        i = int(np.argmax(np.diff(ts) <= 0)) + 1
        raise error(f"timestamp is not strictly increasing at bar {i} ({ts_str(ts[i])}); "
                    "sort and de-duplicate the bars")
    if bar_ms is None:
        if n < 2:
            raise error("bar_ms is needed when there is a single bar")
        bar_ms = int(np.min(np.diff(ts)))
    if int(bar_ms) <= 0:
        raise error(f"bar_ms={bar_ms!r} must be a positive number of milliseconds")
    return int(bar_ms)


@dataclass(frozen=True)
class PerpBars:
    """Aligned per-bar inputs of the engine; all float arrays float64 (n_bars,).

    ``timestamp`` int64 ms UTC bar open times, strictly increasing, bar size ``bar_ms``.
    Funding events (k,): ``fe_bar`` int64 bar index, ``fe_time`` int64 ms (rounded),
    ``fe_at_open`` bool, ``fe_rate`` float64 (fraction per interval), ``fe_mark`` float64.
    """

    timestamp: np.ndarray
    bar_ms: int
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    mark_open: np.ndarray
    mark_high: np.ndarray
    mark_low: np.ndarray
    mark_close: np.ndarray
    fe_bar: np.ndarray
    fe_time: np.ndarray
    fe_at_open: np.ndarray
    fe_rate: np.ndarray
    fe_mark: np.ndarray

    @property
    def n(self) -> int:
        return self.timestamp.shape[0]

    @cached_property
    def index(self) -> pd.DatetimeIndex:
        """The bars' open times as a UTC ``DatetimeIndex`` (built once: sweeps over the same
        bars share it; an index is immutable)."""
        return ms_index(self.timestamp)

    @classmethod
    def from_arrays(
        cls,
        timestamp: Any,
        open: Any, high: Any, low: Any, close: Any,
        mark_open: Any = None, mark_high: Any = None, mark_low: Any = None, mark_close: Any = None,
        funding_time: Any = None, funding_rate: Any = None, funding_mark: Any = None,
        bar_ms: int | None = None,
    ) -> "PerpBars":
        """Build and validate. Mark arrays default to the trade prices (say so in your report:
        the loader only does this where the user allows it). Funding is given as raw events."""
        ts = np.ascontiguousarray(np.asarray(timestamp, dtype=np.int64))
        n = ts.shape[0]
        if n == 0:
            raise EngineInputError("no bars: the timestamp array is empty; check the date range")
        bar_ms = check_bar_times(ts, bar_ms, EngineInputError)
        arrays = {"open": open, "high": high, "low": low, "close": close,
                  "mark_open": open if mark_open is None else mark_open,
                  "mark_high": high if mark_high is None else mark_high,
                  "mark_low": low if mark_low is None else mark_low,
                  "mark_close": close if mark_close is None else mark_close}
        arr = {}
        for name, a in arrays.items():
            a = np.ascontiguousarray(np.asarray(a, dtype=np.float64))
            if a.shape != (n,):
                raise EngineInputError(
                    f"{name} has shape {a.shape} but timestamp has {n} bars; align the arrays to the same bars")
            bad = ~(np.isfinite(a) & (a > 0))
            if bad.any():
                i = int(np.argmax(bad))
                raise EngineInputError(
                    f"{name} at bar {i} ({ts_str(ts[i])}) is {float(a[i])!r}; prices must be finite and > 0 "
                    "(fill or drop the bar in the data, or allow the mark fallback in the loader)")
            arr[name] = a
        for pre in ("", "mark_"):
            hi, lo = arr[pre + "high"], arr[pre + "low"]
            bad = (hi < lo) | (hi < arr[pre + "open"]) | (hi < arr[pre + "close"]) \
                | (lo > arr[pre + "open"]) | (lo > arr[pre + "close"])
            if bad.any():
                i = int(np.argmax(bad))
                raise EngineInputError(
                    f"{pre}high/{pre}low at bar {i} ({ts_str(ts[i])}) do not bracket {pre}open/{pre}close "
                    f"(high={hi[i]}, low={lo[i]}); fix the candle in the data")
        fe = map_funding(ts, bar_ms, funding_time, funding_rate, funding_mark, arr["mark_open"])
        return cls(timestamp=ts, bar_ms=int(bar_ms), **arr, **fe)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, funding: pd.DataFrame | None = None,
                   bar_ms: int | None = None) -> "PerpBars":
        """From an aligned frame (DatetimeIndex UTC or an int64 ``timestamp`` column; columns
        open/high/low/close and optionally mark_open/.../mark_close) and raw funding events
        (``timestamp``, ``funding_rate``, optional ``mark_price``)."""
        if "timestamp" in frame.columns:
            ts = frame["timestamp"].to_numpy(np.int64)
        elif isinstance(frame.index, pd.DatetimeIndex):
            ts = frame.index.as_unit("ms").asi8
        else:
            raise EngineInputError("frame needs a DatetimeIndex or an int64 'timestamp' column (ms UTC)")
        missing = [c for c in ("open", "high", "low", "close") if c not in frame.columns]
        if missing:
            raise EngineInputError(f"frame lacks columns {missing}; the engine needs trade OHLC")
        get = lambda c: frame[c].to_numpy(np.float64) if c in frame.columns else None  # noqa: E731
        kw: dict[str, Any] = {}
        if funding is not None and len(funding):
            for col in ("timestamp", "funding_rate"):
                if col not in funding.columns:
                    raise EngineInputError(f"funding frame lacks column {col!r}")
            kw = {"funding_time": funding["timestamp"].to_numpy(np.int64),
                  "funding_rate": funding["funding_rate"].to_numpy(np.float64),
                  "funding_mark": funding["mark_price"].to_numpy(np.float64) if "mark_price" in funding else None}
        return cls.from_arrays(ts, get("open"), get("high"), get("low"), get("close"),
                               get("mark_open"), get("mark_high"), get("mark_low"), get("mark_close"),
                               bar_ms=bar_ms, **kw)


def map_funding(ts: np.ndarray, bar_ms: int, funding_time: Any, funding_rate: Any,
                funding_mark: Any, mark_open: np.ndarray) -> dict[str, np.ndarray]:
    """Map raw funding prints to bars (rules in the module docstring)."""
    if funding_time is None:
        e_i = np.empty(0, dtype=np.int64)
        return {"fe_bar": e_i, "fe_time": e_i.copy(), "fe_at_open": np.empty(0, dtype=np.bool_),
                "fe_rate": np.empty(0), "fe_mark": np.empty(0)}
    t_raw = np.asarray(funding_time, dtype=np.int64)
    rate = np.asarray(funding_rate, dtype=np.float64)
    if rate.shape != t_raw.shape:
        raise EngineInputError(f"funding_rate has {rate.shape[0]} values for {t_raw.shape[0]} funding times")
    mark = (np.full(t_raw.shape, np.nan) if funding_mark is None
            else np.asarray(funding_mark, dtype=np.float64))
    if mark.shape != t_raw.shape:
        raise EngineInputError(f"funding mark has {mark.shape[0]} values for {t_raw.shape[0]} funding times")
    bad = ~np.isfinite(rate)
    if bad.any():
        i = int(np.argmax(bad))
        raise EngineInputError(
            f"funding_rate at {ts_str(t_raw[i])} is {float(rate[i])!r}; drop the print or fill it explicitly")
    if t_raw.size > 1 and not np.all(np.diff(t_raw) > 0):
        i = int(np.argmax(np.diff(t_raw) <= 0)) + 1
        raise EngineInputError(
            f"funding times are not strictly increasing at {ts_str(t_raw[i])}; de-duplicate the funding data")
    t = (t_raw + 500) // 1000 * 1000  # nearest whole second (jitter of a few ms)
    bar = np.searchsorted(ts, t, side="right") - 1
    inside = (bar >= 0) & (t < ts[np.clip(bar, 0, None)] + bar_ms)
    bar, t, rate, mark = bar[inside], t[inside], rate[inside], mark[inside]
    at_open = t == ts[bar]
    mark = np.where(np.isfinite(mark) & (mark > 0), mark, mark_open[bar])
    return {"fe_bar": bar.astype(np.int64), "fe_time": t.astype(np.int64), "fe_at_open": at_open,
            "fe_rate": np.ascontiguousarray(rate), "fe_mark": np.ascontiguousarray(mark)}
