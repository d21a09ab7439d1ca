"""Resample aligned bars to a coarser timeframe, bars aligned to the UTC epoch.

Aggregation: ``open``/``mark_open`` first, ``high``/``mark_high`` max, ``low``/``mark_low``
min, ``close``/``mark_close`` last, ``volume`` sum, ``funding_rate`` and
``funding_interval_hours`` sum (NaN when the coarse bar holds no print), ``iv`` the last
sub-bar's value (the value as of the coarse bar's close; NaN stays NaN).

A coarse bar ``[k * T, (k + 1) * T)`` (T the target length in ms) is complete when it holds
all ``T / t`` source bars. Incomplete bars at either end are dropped; incomplete bars inside
(only possible when gaps were allowed) are kept and reported in the notes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from backtest.data.marketdata import MarketData, fingerprint, funding_to_bars
from backtest.data.timeutil import is_calendar, iso, ms_index, parse_timeframe
from backtest.data.validate import fmt_ranges

_HOW = {
    "open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum",
    "mark_open": "first", "mark_high": "max", "mark_low": "min", "mark_close": "last",
    "funding_rate": "sum", "funding_interval_hours": "sum", "iv": "last",
}


class ResampleError(ValueError):
    """The requested resampling is impossible; the message says why and what to do."""


def _reduce(v: np.ndarray, starts: np.ndarray, ends: np.ndarray, how: str) -> np.ndarray:
    if how == "first":
        return v[starts]
    if how == "last":
        return v[ends - 1]
    if how == "max":
        return np.maximum.reduceat(v, starts)
    if how == "min":
        return np.minimum.reduceat(v, starts)
    # sum with pandas' min_count=1 semantics: all-NaN groups stay NaN
    finite = np.isfinite(v)
    s = np.add.reduceat(np.where(finite, v, 0.0), starts)
    cnt = np.add.reduceat(finite.astype(np.int64), starts)
    s[cnt == 0] = np.nan
    return s


def _resample_arrays(ts: np.ndarray, cols: dict[str, np.ndarray], src_ms: int, tgt_ms: int
                     ) -> tuple[np.ndarray, dict[str, np.ndarray], list[str]]:
    if tgt_ms < src_ms:
        raise ResampleError(
            f"cannot resample {src_ms // 60000}-min bars to finer {tgt_ms // 60000}-min bars; "
            "load the finer timeframe from the store instead")
    if tgt_ms % src_ms:
        raise ResampleError(
            f"target bar ({tgt_ms // 60000} min) is not a whole multiple of the source bar "
            f"({src_ms // 60000} min); pick a multiple (e.g. 1h -> 4h, 1h -> 1d)")
    notes: list[str] = []
    if ts.size == 0:
        return ts, {k: v[:0] for k, v in cols.items()}, notes
    bins = ts // tgt_ms
    straddle = bins != (ts + src_ms - 1) // tgt_ms
    if straddle.any():
        i = int(np.argmax(straddle))
        raise ResampleError(
            f"source bar at {iso(int(ts[i]))} straddles a {tgt_ms // 60000}-min bar boundary: the source bars are "
            "not aligned to the UTC epoch grid, so they cannot be aggregated exactly")
    starts = np.flatnonzero(np.concatenate([[True], bins[1:] != bins[:-1]]))
    ends = np.concatenate([starts[1:], [ts.size]])
    count = ends - starts
    full = count == tgt_ms // src_ms
    keep = np.ones(starts.size, dtype=bool)
    # drop incomplete bars at the ends: their OHLC would not be the real coarse candle
    lo, hi = 0, starts.size
    while lo < hi and not full[lo]:
        keep[lo] = False
        lo += 1
    while hi > lo and not full[hi - 1]:
        keep[hi - 1] = False
        hi -= 1
    dropped = int((~keep).sum())
    out_ts = bins[starts] * tgt_ms
    if dropped:
        notes.append(f"resample: dropped {dropped} incomplete {tgt_ms // 60000}-min bar(s) at the edges")
    partial = keep & ~full
    if partial.any():
        notes.append(f"resample: {int(partial.sum())} bar(s) built from incomplete data (gaps): "
                     f"{fmt_ranges([(int(t), int(t)) for t in out_ts[partial]])}")
    out = {}
    for name, v in cols.items():
        how = _HOW.get(name)
        if how is None:
            raise ResampleError(
                f"resample does not know how to aggregate column {name!r}; known columns: {', '.join(_HOW)}; "
                "drop it first or aggregate it yourself")
        out[name] = _reduce(np.asarray(v, dtype=np.float64), starts, ends, how)[keep]
    return out_ts[keep], out, notes


def _frame_ts(frame: pd.DataFrame) -> np.ndarray:
    if not isinstance(frame.index, pd.DatetimeIndex):
        raise ResampleError("resample needs a DatetimeIndex (UTC bar open times) on the frame")
    idx = frame.index if frame.index.tz is not None else frame.index.tz_localize("UTC")
    return idx.as_unit("ms").asi8


def resample_frame(frame: pd.DataFrame, timeframe: str, *, from_timeframe: str | None = None
                   ) -> tuple[pd.DataFrame, list[str]]:
    """Resample a bar frame; returns ``(frame, notes)``. See :func:`resample`."""
    tgt_ms = _target_ms(timeframe)
    ts = _frame_ts(frame)
    if from_timeframe is not None:
        src_ms = parse_timeframe(from_timeframe)
    elif ts.size >= 2:
        src_ms = int(np.min(np.diff(ts)))
    else:
        raise ResampleError("cannot infer the source timeframe from fewer than two bars; pass from_timeframe")
    if src_ms <= 0:
        raise ResampleError("bar times are not strictly increasing; sort and de-duplicate the frame first")
    out_ts, cols, notes = _resample_arrays(ts, {c: frame[c].to_numpy() for c in frame.columns}, src_ms, tgt_ms)
    idx = ms_index(out_ts)
    return pd.DataFrame(cols, index=idx, columns=list(frame.columns)), notes


def _target_ms(timeframe: str) -> int:
    tgt_ms = parse_timeframe(timeframe)
    if is_calendar(timeframe):
        raise ResampleError(f"timeframe {timeframe!r} is a calendar period of varying length; "
                            "resample supports fixed lengths (s, m, h, d, w)")
    return tgt_ms


def resample(md_or_frame: MarketData | pd.DataFrame, timeframe: str, *, from_timeframe: str | None = None
             ) -> MarketData | pd.DataFrame:
    """Resample to a coarser timeframe with bars aligned to the UTC epoch.

    Parameters
    ----------
    md_or_frame : MarketData, or a DataFrame with a UTC DatetimeIndex of bar open times and
        any of the columns open, high, low, close, volume, mark_open, mark_high, mark_low,
        mark_close, funding_rate, funding_interval_hours, iv
    timeframe : target ccxt timeframe, a whole multiple of the source's (``'4h'``, ``'1d'``)
    from_timeframe : the frame's timeframe, when it cannot be inferred (frames only)

    Returns
    -------
    The same type. A MarketData keeps its raw funding prints (restricted to the new bars),
    gets the new timeframe, extra notes and a new fingerprint. Incomplete edge bars are dropped.

    Raises
    ------
    ResampleError
        Finer or non-multiple targets, calendar targets, misaligned bars, unknown columns.
    """
    if isinstance(md_or_frame, MarketData):
        md = md_or_frame
        tgt_ms = _target_ms(timeframe)
        if tgt_ms == md.bar_ms:
            return md
        out_ts, cols, notes = _resample_arrays(md.timestamps, {c: md.frame[c].to_numpy() for c in md.frame.columns},
                                               md.bar_ms, tgt_ms)
        idx = ms_index(out_ts)
        frame = pd.DataFrame(cols, index=idx, columns=list(md.frame.columns))
        _, _, inside = funding_to_bars(out_ts, tgt_ms, md.funding)
        funding = md.funding[inside].reset_index(drop=True)
        out = MarketData(exchange=md.exchange, symbol=md.symbol, timeframe=timeframe, bar_ms=tgt_ms,
                         source=md.source, frame=frame, funding=funding,
                         notes=md.notes + (f"resampled {md.timeframe} -> {timeframe}",) + tuple(notes))
        return out.replace()
    if isinstance(md_or_frame, pd.DataFrame):
        frame, _ = resample_frame(md_or_frame, timeframe, from_timeframe=from_timeframe)
        return frame
    raise TypeError(f"resample takes a MarketData or a DataFrame, got {type(md_or_frame).__name__}")


__all__ = ["resample", "resample_frame", "ResampleError", "fingerprint"]
