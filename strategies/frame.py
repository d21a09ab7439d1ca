"""The market-data view strategies and leverage policies read.

Input is the loader's frame: a DataFrame with a tz-aware UTC ``DatetimeIndex`` of bar open
times and the columns ``open, high, low, close, volume, mark_open, mark_high, mark_low,
mark_close, funding_rate`` (sum of the funding prints inside the bar, NaN where none) and
optionally ``iv`` (implied volatility as a fraction, e.g. 0.65 for DVOL 65). Any object with a
``.frame`` attribute holding such a DataFrame (the loader's ``MarketData``) is accepted too.

Bars may have any size. Window lengths given in days or hours are converted to bars with
:meth:`MarketFrame.bars`; annualisation uses 365-day years.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

SECONDS_PER_DAY = 86_400.0
DAYS_PER_YEAR = 365.0


class MarketDataError(ValueError):
    """Market data given to a strategy or policy is unusable; the message names the column or
    index problem and the fix."""


class MarketFrame:
    """Validated view of one market's bars.

    Parameters
    ----------
    data : DataFrame or object with a ``.frame`` DataFrame (see module docstring).
    bar_seconds : bar size in seconds; by default taken from ``data.bar_ms`` if the object has
        one, else the most common spacing of the index.

    Attributes
    ----------
    frame : the DataFrame (index converted to UTC).
    index : ``DatetimeIndex`` (n_bars,), bar open times, UTC.
    bar_seconds : float, bar size in seconds.
    """

    def __init__(self, data: Any, bar_seconds: float | None = None) -> None:
        if isinstance(data, MarketFrame):
            frame, bar_seconds = data.frame, bar_seconds or data.bar_seconds
        else:
            frame = getattr(data, "frame", data)
        if not isinstance(frame, pd.DataFrame):
            raise MarketDataError(
                f"market data must be a DataFrame or an object with a .frame DataFrame, got "
                f"{type(data).__name__}")
        idx = frame.index
        if not isinstance(idx, pd.DatetimeIndex):
            raise MarketDataError(
                f"market data index must be a DatetimeIndex of bar open times (UTC), got "
                f"{type(idx).__name__}; set it with frame.index = pd.to_datetime(ms, unit='ms', utc=True)")
        if idx.tz is None:
            raise MarketDataError(
                "market data index is timezone-naive; bar open times must be UTC: use "
                "frame.index = frame.index.tz_localize('UTC')")
        if len(idx) < 2:
            raise MarketDataError(f"market data has {len(idx)} bar(s); at least 2 are needed")
        if str(idx.tz) != "UTC":
            frame = frame.set_axis(idx.tz_convert("UTC"), axis=0)
            idx = frame.index
        ms = idx.as_unit("ms").asi8
        steps = np.diff(ms)
        if not np.all(steps > 0):
            k = int(np.argmax(steps <= 0)) + 1
            raise MarketDataError(
                f"market data index is not strictly increasing at {idx[k].isoformat()} "
                f"(bar {k}); sort it and drop duplicate timestamps")
        if bar_seconds is None:
            bar_ms = getattr(data, "bar_ms", None)
            if bar_ms is None:
                vals, counts = np.unique(steps, return_counts=True)
                bar_ms = int(vals[np.argmax(counts)])
            bar_seconds = float(bar_ms) / 1000.0
        if not (np.isfinite(bar_seconds) and bar_seconds > 0):
            raise MarketDataError(f"bar size {bar_seconds!r} s must be a positive number of seconds")
        self.frame = frame
        self.index = idx
        self.bar_seconds = float(bar_seconds)

    @property
    def n(self) -> int:
        """Number of bars."""
        return len(self.index)

    @property
    def timestamps_ms(self) -> np.ndarray:
        """int64 (n_bars,): bar open times in milliseconds since the epoch, UTC."""
        return self.index.as_unit("ms").asi8

    @property
    def bar_days(self) -> float:
        """Bar size in days."""
        return self.bar_seconds / SECONDS_PER_DAY

    @property
    def bars_per_year(self) -> float:
        """Bars in a 365-day year (the annualisation factor for per-bar variances)."""
        return DAYS_PER_YEAR * SECONDS_PER_DAY / self.bar_seconds

    def bars(self, days: float) -> int:
        """Number of bars in ``days`` days (rounded to the nearest bar, at least 1)."""
        return max(1, int(round(days * SECONDS_PER_DAY / self.bar_seconds)))

    def col(self, name: str, *, needed_by: str = "") -> np.ndarray:
        """Column ``name`` as a float64 array (n_bars,); a missing column raises naming it."""
        if name not in self.frame.columns:
            who = f" (needed by {needed_by})" if needed_by else ""
            raise MarketDataError(
                f"market data has no column {name!r}{who}; columns are {list(self.frame.columns)}. "
                f"Load it with the data loader (e.g. funding_rate needs the funding history, iv "
                f"needs the DVOL index)")
        return np.ascontiguousarray(self.frame[name].to_numpy(dtype=np.float64, na_value=np.nan))

    def series(self, name: str, *, needed_by: str = "") -> pd.Series:
        """Column ``name`` as a float64 Series on the bar index."""
        return pd.Series(self.col(name, needed_by=needed_by), index=self.index, name=name)

    def truncate(self, n: int) -> "MarketFrame":
        """The first ``n`` bars (same bar size), for look-ahead checks."""
        return MarketFrame(self.frame.iloc[:n], bar_seconds=self.bar_seconds)


def as_market(data: Any) -> MarketFrame:
    """Return ``data`` as a :class:`MarketFrame` (no copy if it already is one)."""
    return data if isinstance(data, MarketFrame) else MarketFrame(data)
