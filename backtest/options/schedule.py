"""Deribit expiry calendar: weekly (every Friday), monthly (last Friday of the month) and
quarterly (last Friday of March, June, September, December), all at 08:00 UTC.

Source: Deribit "Contract Introduction Policy" (support.deribit.com, article 25944688876957).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd

from backtest.options.inputs import InstrumentInputError, ts_str

KINDS = ("weekly", "monthly", "quarterly")


def last_friday(year: int, month: int) -> dt.date:
    """The last Friday of a month."""
    nxt = dt.date(year + month // 12, month % 12 + 1, 1)
    last = nxt - dt.timedelta(days=1)
    return last - dt.timedelta(days=(last.weekday() - 4) % 7)


def _ms(d: dt.date, hour: float) -> int:
    return int(pd.Timestamp(d, tz="UTC").value // 1_000_000 + round(hour * 3_600_000))


def expiry_schedule(start_ms: int, end_ms: int, kind: str = "monthly", hour: float = 8.0) -> np.ndarray:
    """Expiry instants in ``[start_ms, end_ms]``.

    Parameters
    ----------
    start_ms, end_ms : int64 ms UTC bounds (inclusive).
    kind : ``'weekly'``, ``'monthly'`` or ``'quarterly'``.
    hour : expiry time of day, UTC hours (Deribit: 8).

    Returns
    -------
    int64 (k,) ms UTC, increasing.
    """
    if kind not in KINDS:
        raise InstrumentInputError(f"expiry={kind!r} is not one of {KINDS} (or give explicit expiries)")
    if not (0 <= hour < 24):
        raise InstrumentInputError(f"expiry_hour={hour!r} must be in [0, 24) (UTC hours; Deribit: 8)")
    d0 = pd.Timestamp(int(start_ms), unit="ms", tz="UTC").date() - dt.timedelta(days=40)
    d1 = pd.Timestamp(int(end_ms), unit="ms", tz="UTC").date() + dt.timedelta(days=40)
    out: list[int] = []
    if kind == "weekly":
        d = d0 + dt.timedelta(days=(4 - d0.weekday()) % 7)
        while d <= d1:
            out.append(_ms(d, hour))
            d += dt.timedelta(days=7)
    else:
        y, mth = d0.year, d0.month
        while (y, mth) <= (d1.year, d1.month):
            if kind == "monthly" or mth % 3 == 0:
                out.append(_ms(last_friday(y, mth), hour))
            y, mth = (y + 1, 1) if mth == 12 else (y, mth + 1)
    arr = np.asarray(out, dtype=np.int64)
    return arr[(arr >= start_ms) & (arr <= end_ms)]


def validate_expiries(expiries: Any, first_open_ms: int) -> np.ndarray:
    """Check a user-given expiry list: int64 ms (or datetimes), strictly increasing, none before
    the first bar. Returns int64 (k,)."""
    if isinstance(expiries, (pd.DatetimeIndex, pd.Series)) or np.asarray(expiries).dtype.kind == "M":
        idx = pd.DatetimeIndex(expiries)
        idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
        arr = idx.as_unit("ms").asi8.astype(np.int64)
    else:
        arr = np.asarray(expiries, dtype=np.int64)
    if arr.ndim != 1 or arr.size == 0:
        raise InstrumentInputError("expiries must be a non-empty 1-d list of ms UTC instants")
    if arr.size > 1 and not np.all(np.diff(arr) > 0):
        i = int(np.argmax(np.diff(arr) <= 0)) + 1
        raise InstrumentInputError(f"expiries are not strictly increasing at {ts_str(arr[i])}; sort them")
    if arr[0] < first_open_ms:
        raise InstrumentInputError(
            f"expiry {ts_str(arr[0])} is before the data start {ts_str(first_open_ms)}; drop it or load "
            "earlier data")
    return arr
