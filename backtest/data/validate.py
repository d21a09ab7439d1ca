"""Validation of stored candles and funding prints.

Every error is a :class:`DataValidationError` naming the file, the column, the first bad
timestamp (ISO UTC) and the fix. Checks, in order:

candles (``ohlcv``, ``mark``, ``index``)
    duplicate timestamp; timestamp going back in time; spacing that is not a whole number of
    bars; gaps (missing bars; an error unless ``allow_gaps``); missing or non-positive
    open/high/low/close; ``high < low``; ``high`` below open or close; ``low`` above open or
    close; negative volume.
funding
    duplicate or decreasing timestamp; missing rate; non-positive interval; non-positive mark;
    a rate beyond :data:`FUNDING_RATE_BOUND` (an error unless allowed); a print's mark price
    outside the mark range of its bars (:data:`MARK_PRICE_TOLERANCE`).
files
    timestamps stored as integers in another unit, as datetimes or as ISO strings
    (:func:`timestamps_to_ms`); numbers stored as text (:func:`numeric_column`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from backtest.data.timeutil import iso

PRICE_COLUMNS = ("open", "high", "low", "close")

# Largest plausible funding rate per interval, as a fraction. Exchanges cap funding per symbol:
# Binance clamps the rate to a per-symbol cap/floor published by GET /fapi/v1/fundingInfo
# (+-0.3 % to +-3 %: e.g. "the maximum funding rate will be capped at +3.00% / -3.00%",
# Binance announcement for OGNUSDT, 2023-10-01), Bybit and OKX publish per-symbol upper/lower
# limits of the same order, Deribit clips to per-instrument caps (research/mechanics.md, 1).
# 5 % is above every published cap; a rate beyond it is a unit error (percent stored as a
# fraction) or a corrupt print, and changes a result by orders of magnitude.
FUNDING_RATE_BOUND = 0.05
# A print's mark price must lie in the mark range of its bar and of the bar before it (the
# print is taken at the bar boundary, with ms jitter either side), widened by this fraction
# for the exchange's averaging of the mark over the last seconds.
MARK_PRICE_TOLERANCE = 0.01
# Plausible millisecond timestamps: 2000-01-01 .. 2100-01-01 UTC.
_MS_LO, _MS_HI = 946_684_800_000, 4_102_444_800_000


class DataValidationError(ValueError):
    """Bad market data. Attributes ``file``, ``column`` (None when the whole file is bad),
    ``timestamp`` (ms or None)."""

    def __init__(self, file: str, column: str | None, timestamp: int | None, problem: str, fix: str) -> None:
        self.file, self.column, self.timestamp = str(file), column, timestamp
        at = f" at {iso(timestamp)}" if timestamp is not None else ""
        col = f"column {column!r}: " if column is not None else ""
        super().__init__(f"{file}: {col}{problem}{at}; {fix}")


def timestamps_to_ms(values: pd.Series, *, file: str, column: str = "timestamp") -> np.ndarray:
    """A stored time column as int64 milliseconds UTC.

    Accepts integer milliseconds, whole floats, datetimes (any unit; a naive datetime is UTC,
    an aware one is converted) and ISO 8601 strings (naive = UTC). Refuses integers that look
    like seconds, microseconds or nanoseconds, sub-millisecond datetimes (never truncated),
    missing values and unparsable strings, naming the row and the value.

    Raises
    ------
    DataValidationError
    """
    s = pd.Series(values).reset_index(drop=True)
    fix = "store open times as int64 milliseconds since the epoch (UTC), or download the file again"
    if s.isna().any():
        i = int(np.argmax(s.isna().to_numpy()))
        raise DataValidationError(file, column, None, f"row {i}: timestamp is missing", fix)
    if isinstance(s.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(s.dtype):
        if isinstance(s.dtype, pd.DatetimeTZDtype):
            s = s.dt.tz_convert("UTC").dt.tz_localize(None)
        try:
            ns = s.astype("datetime64[ns]").to_numpy().view(np.int64)
        except (OverflowError, ValueError, pd.errors.OutOfBoundsDatetime) as exc:
            # pandas' nanosecond times end in 2262: a later time is a unit mistake, not a bar
            raise DataValidationError(file, column, None, f"a time outside 1677..2262 ({exc})", fix) from exc
        frac = ns % 1_000_000
        if frac.any():
            i = int(np.argmax(frac != 0))
            raise DataValidationError(file, column, int(ns[i] // 1_000_000),
                                      f"row {i}: {s.iloc[i]} is not a whole number of milliseconds", fix)
        return ns // 1_000_000
    if pd.api.types.is_object_dtype(s.dtype) or pd.api.types.is_string_dtype(s.dtype):
        if not all(isinstance(v, str) for v in s):
            bad = next(i for i, v in enumerate(s) if not isinstance(v, str))
            raise DataValidationError(file, column, None, f"row {bad}: {s.iloc[bad]!r} is not a time", fix)
        parsed = pd.to_datetime(s, utc=True, format="ISO8601", errors="coerce")
        if parsed.isna().any():
            i = int(np.argmax(parsed.isna().to_numpy()))
            raise DataValidationError(file, column, None,
                                      f"row {i}: {s.iloc[i]!r} is not an ISO date/time (2023-01-01T00:00:00Z)",
                                      fix)
        return timestamps_to_ms(parsed, file=file, column=column)
    if pd.api.types.is_float_dtype(s.dtype):
        v = s.to_numpy(dtype=np.float64)
        whole = np.isfinite(v) & (v == np.round(v))
        if not whole.all():
            i = int(np.argmax(~whole))
            raise DataValidationError(file, column, None, f"row {i}: {v[i]!r} is not a whole number of ms", fix)
        s = pd.Series(v.astype(np.int64))
    if not pd.api.types.is_integer_dtype(s.dtype):
        raise DataValidationError(file, column, None, f"the column has type {s.dtype}, not a time", fix)
    ms = s.to_numpy(dtype=np.int64)
    if ms.size == 0:
        return ms
    lo, hi = int(ms.min()), int(ms.max())
    for unit, factor in (("seconds", 1e-3), ("microseconds", 1e3), ("nanoseconds", 1e6)):
        if _MS_LO * factor <= lo and hi <= _MS_HI * factor:
            raise DataValidationError(
                file, column, None,
                f"integer timestamps {lo} .. {hi} look like {unit} since the epoch, not milliseconds",
                "convert them to milliseconds (int64) or download the file again")
    if hi > _MS_HI:
        raise DataValidationError(file, column, None, f"timestamp {hi} ms is after 2100",
                                  "store open times as int64 milliseconds since the epoch (UTC)")
    return ms


def numeric_column(values: pd.Series, ts: np.ndarray, *, file: str, column: str) -> np.ndarray:
    """A stored value column as float64: numbers stored as text are converted; text that is
    not a number is an error naming the row's timestamp and the value. Missing values stay NaN
    (the content checks decide whether they are allowed)."""
    s = pd.Series(values).reset_index(drop=True)
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        return s.to_numpy(dtype=np.float64)
    num = pd.to_numeric(s, errors="coerce")
    bad = (num.isna() & s.notna()).to_numpy()
    if pd.api.types.is_bool_dtype(s.dtype):
        bad = np.ones(len(s), dtype=bool)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataValidationError(file, column, int(ts[i]) if len(ts) else None,
                                  f"{s.iloc[i]!r} is not a number",
                                  "correct the value (a plain decimal number) or download the file again")
    return num.to_numpy(dtype=np.float64)


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


def funding_holes(ts: np.ndarray, interval_hours: np.ndarray | None = None
                  ) -> tuple[list[tuple[int, int]], float]:
    """Pairs of consecutive prints further apart than 1.5x the interval they are judged
    against, and the median spacing (ms).

    Exchanges change a symbol's funding interval (8 h -> 4 h -> 1 h), so a spacing is judged
    against the prints' own intervals, not one median: the spacing before print ``i`` is a
    hole when it exceeds 1.5x ``min(interval[i], max(interval[i-1], interval[i+1]))``. An
    interval the exchange gave (smaller than the spacing) flags a hole by itself; an interval
    derived from the spacing (what ccxt's history allows, see
    :func:`backtest.data.download.derive_intervals`) equals it, and then the neighbours'
    intervals judge: the interval of the stretch on either side, so the last 8 h spacing before
    a switch to 4 h is no hole, while a missing print inside a stretch is. Two holes of equal
    length in a row look like an interval change and are not flagged.

    ``interval_hours`` defaults to the spacings (the derived intervals). Times are rounded to
    the second first. Fewer than three prints give no holes.
    """
    t = (np.asarray(ts, dtype=np.int64) + 500) // 1000 * 1000
    if t.size < 3:
        return [], float("nan")
    d = np.diff(t).astype(np.float64)
    med = float(np.median(d))
    spacing = np.concatenate([[d[0]], d])  # print i's spacing to its predecessor; print 0: to the next
    iv = spacing.copy()
    if interval_hours is not None:
        given = np.asarray(interval_hours, dtype=np.float64) * 3_600_000.0
        iv = np.where(np.isfinite(given) & (given > 0), given, spacing)
    prev_iv = np.concatenate([[np.nan], iv[:-1]])
    next_iv = np.concatenate([iv[1:], [np.nan]])
    neighbours = np.fmax(prev_iv, next_iv)
    judged = np.fmin(iv, neighbours)[1:]
    idx = np.flatnonzero(d > 1.5 * judged)
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


def check_funding_rates(df: pd.DataFrame, *, file: str, allow_extreme: bool = False,
                        bound: float = FUNDING_RATE_BOUND) -> list[str]:
    """Refuse prints whose ``|funding_rate|`` exceeds ``bound`` (:data:`FUNDING_RATE_BOUND`,
    above every exchange's published cap); with ``allow_extreme`` return a note instead.

    Raises
    ------
    DataValidationError
        Naming the first such print's time and rate.
    """
    rate = df["funding_rate"].to_numpy(dtype=np.float64)
    bad = np.abs(rate) > bound
    if not bad.any():
        return []
    ts = df["timestamp"].to_numpy(dtype=np.int64)
    i = int(np.argmax(bad))
    if not allow_extreme:
        raise DataValidationError(
            file, "funding_rate", int(ts[i]),
            f"rate {float(rate[i])!r} per interval is beyond the bound of +-{bound:g} "
            f"({int(bad.sum())} such print(s); exchanges cap funding well below it)",
            "check the file's unit (a fraction: 0.0001 = 0.01 %), download funding again, or pass "
            "allow_extreme_funding=True to use the rates as they are")
    worst = int(np.argmax(np.abs(rate)))
    return [f"{file}: {int(bad.sum())} funding rate(s) beyond +-{bound:g} per interval, first {iso(int(ts[i]))}, "
            f"largest {float(rate[worst])!r} at {iso(int(ts[worst]))} (allow_extreme_funding=True: used as they are)"]


def check_print_marks(mark_price: np.ndarray, ts: np.ndarray, bar: np.ndarray, mark_low: np.ndarray,
                      mark_high: np.ndarray, *, file: str, tolerance: float = MARK_PRICE_TOLERANCE) -> None:
    """Refuse a funding print whose known ``mark_price`` lies outside the mark range of its bar
    and of the bar before it, widened by ``tolerance`` (:data:`MARK_PRICE_TOLERANCE`).

    Parameters
    ----------
    mark_price, ts : (n_prints,) the prints' mark (NaN = unknown) and time (ms)
    bar : (n_prints,) int, index of each print's bar in ``mark_low``/``mark_high``
    mark_low, mark_high : (n_bars,) the bars' mark low and high

    Raises
    ------
    DataValidationError
        Naming the print's time, its mark and the range.
    """
    mp = np.asarray(mark_price, dtype=np.float64)
    if mp.size == 0:
        return
    b = np.asarray(bar, dtype=np.int64)
    prev = np.maximum(b - 1, 0)
    lo = np.fmin(mark_low[b], mark_low[prev]) * (1.0 - tolerance)
    hi = np.fmax(mark_high[b], mark_high[prev]) * (1.0 + tolerance)
    bad = np.isfinite(mp) & np.isfinite(lo) & np.isfinite(hi) & ((mp < lo) | (mp > hi))
    if bad.any():
        i = int(np.argmax(bad))
        raise DataValidationError(
            file, "mark_price", int(ts[i]),
            f"mark price {float(mp[i])!r} of the print is outside the bar's mark range "
            f"{float(lo[i] / (1 - tolerance))!r} .. {float(hi[i] / (1 + tolerance))!r} (+-{tolerance:.0%} allowed)",
            "the print's mark is corrupt or in another unit: set it to NaN (unknown) or download funding again")


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
