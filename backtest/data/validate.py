"""Validation of stored candles and funding prints.

Every error is a :class:`DataValidationError` naming the file, the column, the first bad
timestamp (ISO UTC) and the fix. Checks, in order:

candles (``ohlcv``, ``mark``, ``index``)
    duplicate timestamp; timestamp going back in time; spacing that is not a whole number of
    bars; gaps (missing bars; an error unless ``allow_gaps``); missing or non-positive
    open/high/low/close; ``high < low``; ``high`` below open or close; ``low`` above open or
    close; negative volume.
funding
    duplicate or decreasing timestamp; missing rate; non-positive interval; non-positive mark.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from backtest.data.timeutil import iso

PRICE_COLUMNS = ("open", "high", "low", "close")


class DataValidationError(ValueError):
    """Bad market data. Attributes ``file``, ``column``, ``timestamp`` (ms or None)."""

    def __init__(self, file: str, column: str, timestamp: int | None, problem: str, fix: str) -> None:
        self.file, self.column, self.timestamp = str(file), column, timestamp
        at = f" at {iso(timestamp)}" if timestamp is not None else ""
        super().__init__(f"{file}: column {column!r}: {problem}{at}; {fix}")


def find_gaps(ts: np.ndarray, bar_ms: int) -> list[tuple[int, int]]:
    """Missing bars in sorted open times, as ``(first_missing_open, last_missing_open)`` pairs."""
    ts = np.asarray(ts, dtype=np.int64)
    if ts.size < 2:
        return []
    d = np.diff(ts)
    idx = np.flatnonzero(d > bar_ms)
    return [(int(ts[i] + bar_ms), int(ts[i + 1] - bar_ms)) for i in idx]


def ranges_of(ts: np.ndarray, mask: np.ndarray) -> list[tuple[int, int]]:
    """Runs of True in ``mask`` over bar open times ``ts`` as ``(first_open, last_open)``."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return []
    m = np.concatenate([[False], mask, [False]]).astype(np.int8)
    starts = np.flatnonzero(np.diff(m) == 1)
    ends = np.flatnonzero(np.diff(m) == -1) - 1
    return [(int(ts[a]), int(ts[b])) for a, b in zip(starts, ends)]


def fmt_ranges(ranges: Sequence[tuple[int, int]], limit: int = 3) -> str:
    """``2021-05-01T00:00..2021-05-03T23:00, ... (+4 more)`` (minutes precision)."""
    def one(a: int, b: int) -> str:
        return iso(a)[:16] if a == b else f"{iso(a)[:16]}..{iso(b)[:16]}"
    parts = [one(a, b) for a, b in ranges[:limit]]
    more = f" (+{len(ranges) - limit} more)" if len(ranges) > limit else ""
    return ", ".join(parts) + more


def funding_holes(ts: np.ndarray) -> tuple[list[tuple[int, int]], float]:
    """Pairs of consecutive prints more than 1.5x the median spacing apart, and that median (ms).

    Times are rounded to the second first. Fewer than three prints give no holes."""
    t = (np.asarray(ts, dtype=np.int64) + 500) // 1000 * 1000
    if t.size < 3:
        return [], float("nan")
    d = np.diff(t)
    med = float(np.median(d))
    idx = np.flatnonzero(d > 1.5 * med)
    return [(int(t[i]), int(t[i + 1])) for i in idx], med


def check_time_order(ts: np.ndarray, *, file: str, column: str = "timestamp") -> None:
    """Raise on the first duplicate or decreasing timestamp."""
    ts = np.asarray(ts, dtype=np.int64)
    if ts.size < 2:
        return
    d = np.diff(ts)
    bad = np.flatnonzero(d <= 0)
    if bad.size:
        i = int(bad[0]) + 1
        if d[i - 1] == 0:
            raise DataValidationError(file, column, int(ts[i]), "duplicate timestamp",
                                      "de-duplicate the file (re-running `backtest download` rewrites it merged)")
        raise DataValidationError(file, column, int(ts[i]),
                                  f"timestamp goes back in time (previous row {iso(int(ts[i - 1]))})",
                                  "sort the file by timestamp")


def check_candles(df: pd.DataFrame, *, file: str, bar_ms: int, prefix: str = "",
                  allow_gaps: bool = False, gap_fix: str = "") -> list[str]:
    """Validate a candle frame (int64 ``timestamp`` column or DatetimeIndex, columns
    ``<prefix>open/high/low/close`` and optional ``<prefix>volume``).

    Returns
    -------
    notes : list of str, tolerated findings (gaps when ``allow_gaps``)

    Raises
    ------
    DataValidationError
        On the first problem found (file, column, first bad timestamp, fix).
    """
    if "timestamp" in df.columns:
        ts = df["timestamp"].to_numpy(dtype=np.int64)
    else:
        ts = df.index.as_unit("ms").asi8
    notes: list[str] = []
    check_time_order(ts, file=file)
    if ts.size >= 2:
        d = np.diff(ts)
        off = np.flatnonzero(d % bar_ms != 0)
        if off.size:
            i = int(off[0]) + 1
            raise DataValidationError(
                file, "timestamp", int(ts[i]),
                f"spacing of {d[i - 1] / 60000:g} min to the previous row is not a whole number of "
                f"{bar_ms / 60000:g}-min bars",
                "the file holds another timeframe or misaligned candles; re-download it")
        gaps = find_gaps(ts, bar_ms)
        if gaps:
            n_missing = sum((b - a) // bar_ms + 1 for a, b in gaps)
            if not allow_gaps:
                raise DataValidationError(
                    file, "timestamp", gaps[0][0],
                    f"{len(gaps)} gap(s), {n_missing} missing bar(s), first missing {fmt_ranges(gaps, 1)}",
                    gap_fix or "download the missing range again, or pass allow_gaps=True to load the bars as they are")
            notes.append(f"{file}: {n_missing} missing bar(s) in {len(gaps)} gap(s): {fmt_ranges(gaps)} "
                         "(allow_gaps=True: loaded as they are)")
    cols = {c: prefix + c for c in PRICE_COLUMNS}
    vals = {}
    for c, name in cols.items():
        if name not in df.columns:
            raise DataValidationError(file, name, None, "column missing", "the file is not a candle file")
        v = df[name].to_numpy(dtype=np.float64)
        bad = ~(np.isfinite(v) & (v > 0))
        if bad.any():
            i = int(np.argmax(bad))
            raise DataValidationError(file, name, int(ts[i]), f"price {float(v[i])!r} is missing or not positive",
                                      "repair or drop that candle and download it again")
        vals[c] = v
    o, h, lo, c = vals["open"], vals["high"], vals["low"], vals["close"]
    for name, bad, what in (
        (cols["high"], h < lo, "high is below low"),
        (cols["high"], h < np.maximum(o, c), "high is below open or close"),
        (cols["low"], lo > np.minimum(o, c), "low is above open or close"),
    ):
        if bad.any():
            i = int(np.argmax(bad))
            raise DataValidationError(
                file, name, int(ts[i]),
                f"{what} (open={float(o[i])}, high={float(h[i])}, low={float(lo[i])}, close={float(c[i])})",
                "the candle is corrupt; repair it or download it again")
    vname = prefix + "volume"
    if vname in df.columns:
        v = df[vname].to_numpy(dtype=np.float64)
        neg = v < 0
        if neg.any():
            i = int(np.argmax(neg))
            raise DataValidationError(file, vname, int(ts[i]), f"negative volume {float(v[i])!r}",
                                      "the candle is corrupt; download it again")
    return notes


def check_funding(df: pd.DataFrame, *, file: str) -> list[str]:
    """Validate raw funding prints (``timestamp``, ``funding_rate``, ``interval_hours``,
    ``mark_price``). Returns notes; raises :class:`DataValidationError` on errors."""
    ts = df["timestamp"].to_numpy(dtype=np.int64)
    check_time_order(ts, file=file)
    rounded = (ts + 500) // 1000 * 1000
    check_time_order(rounded, file=file)  # two prints within a second are one print twice
    rate = df["funding_rate"].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(rate)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataValidationError(file, "funding_rate", int(ts[i]), f"rate {float(rate[i])!r} is missing",
                                  "drop the print or download funding again")
    if "interval_hours" in df.columns:
        iv = df["interval_hours"].to_numpy(dtype=np.float64)
        bad = np.isfinite(iv) & (iv <= 0)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataValidationError(file, "interval_hours", int(ts[i]),
                                      f"interval {float(iv[i])!r} h is not positive",
                                      "download funding again to re-derive the intervals")
    if "mark_price" in df.columns:
        mp = df["mark_price"].to_numpy(dtype=np.float64)
        bad = np.isfinite(mp) & (mp <= 0)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataValidationError(file, "mark_price", int(ts[i]), f"mark price {float(mp[i])!r} is not positive",
                                      "set it to NaN (unknown) or download funding again")
    return []
