"""Plain inputs shared by the put and inverse-product simulators.

Both simulators work on an :class:`Underlying`: bar open times (int64 ms UTC), the underlying
price at each bar's close, optionally the bar's high/low, an implied-volatility series (a
fraction, 0.8 = 80 %) and funding prints. :func:`as_underlying` builds one from arrays, a
pandas object, or anything with a ``.frame`` DataFrame (the loader's ``MarketData``).

Parameters of a simulation are scalars (same for every column) or sequences with one value
per column (a parameter grid); :func:`per_column` broadcasts them and :func:`grid` builds a
Cartesian product of sequences.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from backtest.engine.bars import check_bar_times, ts_str  # noqa: F401 (ts_str re-exported)
from backtest.data.timeutil import ms_index

DAY_MS = 86_400_000
YEAR_MS = 365 * DAY_MS  # 365-day years (crypto trades every calendar day)

# An implied vol above this (as a fraction) is taken as a units mistake (vol points given).
MAX_PLAUSIBLE_VOL = 5.0


class InstrumentInputError(ValueError):
    """Input data or a setting of an instrument simulation is invalid; the message names the
    value, where it is (bar/column/field) and the fix."""


def _as_2d(name: str, a: Any, n: int, allow_nan: bool) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] != n or arr.shape[1] < 1:
        raise InstrumentInputError(
            f"{name} has shape {np.shape(a)} but there are {n} bars; give ({n},) or ({n}, n_columns)")
    arr = np.ascontiguousarray(arr)
    if not allow_nan:
        bad = ~np.isfinite(arr)
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise InstrumentInputError(
                f"{name} at bar {i} (column {j}) is {float(arr[i, j])!r}; it must be finite: fill or drop the bar")
    return arr


@dataclass(frozen=True)
class Underlying:
    """Aligned per-bar inputs of the instrument simulators.

    Attributes
    ----------
    timestamp : int64 (n,), bar open times, ms UTC, strictly increasing.
    bar_ms : bar length in ms (the smallest spacing of ``timestamp`` unless given).
    price : float64 (n, k), underlying price at each bar's close (USD per coin), k = 1 or one
        path per column. The simulators use it as forward (options), settlement price and
        product reference price.
    high, low : float64 (n, k) or None, the bar's extremes of the same price (products use them
        for intrabar rebalance triggers).
    iv : float64 (n, k) or None, implied volatility as a fraction, NaN where missing.
    funding_rate : float64 (n, k) or None, funding rate of the print inside the bar (fraction
        per funding interval), NaN where there is no print.
    source : text describing which columns were used (goes into the result's ``meta``).
    """

    timestamp: np.ndarray
    bar_ms: int
    price: np.ndarray
    high: np.ndarray | None = None
    low: np.ndarray | None = None
    iv: np.ndarray | None = None
    funding_rate: np.ndarray | None = None
    source: str = "arrays"

    @property
    def n(self) -> int:
        return int(self.timestamp.shape[0])

    @property
    def close_time(self) -> np.ndarray:
        """int64 (n,), each bar's close instant (open time + ``bar_ms``), ms UTC."""
        return self.timestamp + self.bar_ms

    @property
    def index(self) -> pd.DatetimeIndex:
        return ms_index(self.timestamp, name=None)

    @classmethod
    def from_arrays(cls, timestamp: Any, price: Any, *, high: Any = None, low: Any = None,
                    iv: Any = None, funding_rate: Any = None, bar_ms: int | None = None,
                    source: str = "arrays") -> "Underlying":
        """Validate and build.

        Parameters
        ----------
        timestamp : int64 ms UTC bar open times (n,), or a DatetimeIndex.
        price : (n,) or (n, k) underlying close (USD), finite and > 0.
        high, low : optional, same shape as ``price``; must bracket it.
        iv : optional (n,) or (n, k) implied vol as a fraction; NaN = missing; values must be > 0.
        funding_rate : optional (n,) or (n, k) funding rate per print, NaN = no print.
        bar_ms : bar length in ms; default the smallest timestamp spacing.

        Raises
        ------
        InstrumentInputError
            Naming the array, bar and value when anything is malformed.
        """
        if isinstance(timestamp, pd.DatetimeIndex):
            ts = _index_ms(timestamp)
        else:
            ts = np.asarray(timestamp)
            if ts.dtype.kind == "M":
                ts = ts.astype("datetime64[ms]").astype(np.int64)
            ts = np.ascontiguousarray(ts.astype(np.int64))
        n = ts.shape[0]
        if ts.ndim != 1 or n == 0:
            raise InstrumentInputError("timestamp must be a non-empty 1-d array of int64 ms UTC bar open times")
        bar_ms = check_bar_times(ts, bar_ms, InstrumentInputError)
        p = _as_2d("price", price, n, allow_nan=False)
        if (p <= 0).any():
            i, j = np.argwhere(p <= 0)[0]
            raise InstrumentInputError(
                f"price at bar {i} ({ts_str(ts[i])}) is {float(p[i, j])!r}; prices must be > 0")
        hi = lo = None
        if (high is None) != (low is None):
            raise InstrumentInputError("give both high and low, or neither")
        if high is not None:
            hi = _as_2d("high", high, n, allow_nan=False)
            lo = _as_2d("low", low, n, allow_nan=False)
            if hi.shape != p.shape or lo.shape != p.shape:
                raise InstrumentInputError(
                    f"high {hi.shape} and low {lo.shape} must have the shape of price {p.shape}")
            bad = (hi < p * (1 - 1e-12)) | (lo > p * (1 + 1e-12)) | (lo <= 0)
            if bad.any():
                i, j = np.argwhere(bad)[0]
                raise InstrumentInputError(
                    f"high/low at bar {i} ({ts_str(ts[i])}) do not bracket the close "
                    f"(high={hi[i, j]}, low={lo[i, j]}, close={p[i, j]}); fix the candle in the data")
        vol = None
        if iv is not None:
            vol = _as_2d("iv", iv, n, allow_nan=True)
            bad = ~np.isnan(vol) & ~(np.isfinite(vol) & (vol > 0))
            if bad.any():
                i, j = np.argwhere(bad)[0]
                raise InstrumentInputError(
                    f"iv at bar {i} ({ts_str(ts[i])}) is {float(vol[i, j])!r}; implied vol must be > 0 "
                    "(use NaN for a missing value)")
            if np.nanmax(vol, initial=0.0) > MAX_PLAUSIBLE_VOL:
                i, j = np.argwhere(vol > MAX_PLAUSIBLE_VOL)[0]
                raise InstrumentInputError(
                    f"iv at bar {i} ({ts_str(ts[i])}) is {float(vol[i, j])!r}; iv is a fraction (0.8 = 80 %): "
                    "if the series is in vol points (DVOL), divide it by 100")
        fr = None
        if funding_rate is not None:
            fr = _as_2d("funding_rate", funding_rate, n, allow_nan=True)
            if np.isinf(fr).any():
                i, j = np.argwhere(np.isinf(fr))[0]
                raise InstrumentInputError(
                    f"funding_rate at bar {i} ({ts_str(ts[i])}) is {float(fr[i, j])!r}; use NaN for 'no print'")
        return cls(timestamp=ts, bar_ms=int(bar_ms), price=p, high=hi, low=lo, iv=vol,
                   funding_rate=fr, source=source)


def _index_ms(idx: pd.DatetimeIndex) -> np.ndarray:
    if idx.tz is None:
        idx = idx.tz_localize("UTC")  # naive times are taken as UTC
    return np.ascontiguousarray(idx.tz_convert("UTC").as_unit("ms").asi8.astype(np.int64))


def _col(frame: pd.DataFrame, name: str) -> np.ndarray | None:
    return frame[name].to_numpy(np.float64) if name in frame.columns else None


def as_underlying(data: Any, *, price: str = "mark", iv: Any = None, funding_rate: Any = None,
                  bar_ms: int | None = None) -> Underlying:
    """Normalise the accepted data shapes into an :class:`Underlying`.

    Parameters
    ----------
    data : one of
        * an :class:`Underlying` (returned as is unless ``iv``/``funding_rate`` override it);
        * an object with a ``.frame`` DataFrame (the loader's ``MarketData``), or a DataFrame:
          DatetimeIndex (or an int64 ms ``timestamp`` column) and columns ``close`` and/or
          ``mark_close`` (+ optional ``high``/``low``, ``mark_high``/``mark_low``,
          ``funding_rate`` with NaN where no print, ``iv`` as a fraction);
        * a Series of closes with a DatetimeIndex.
    price : ``'mark'`` (default) uses ``mark_close``/``mark_high``/``mark_low`` when the frame
        has them, else the trade ``close``/``high``/``low``; ``'close'`` always uses trade prices.
    iv, funding_rate : optional arrays (n,) overriding / supplying those columns.
    bar_ms : bar length in ms (default: smallest timestamp spacing).
    """
    if isinstance(data, Underlying):
        if iv is None and funding_rate is None:
            return data
        return Underlying.from_arrays(
            data.timestamp, data.price, high=data.high, low=data.low,
            iv=data.iv if iv is None else iv,
            funding_rate=data.funding_rate if funding_rate is None else funding_rate,
            bar_ms=data.bar_ms if bar_ms is None else bar_ms, source=data.source)
    frame = getattr(data, "frame", data)
    if isinstance(frame, pd.Series):
        frame = frame.to_frame("close")
    if not isinstance(frame, pd.DataFrame):
        raise InstrumentInputError(
            f"data of type {type(data).__name__} is not supported: give an Underlying, a DataFrame, "
            "a Series of closes or an object with a .frame DataFrame (MarketData)")
    if "timestamp" in frame.columns:
        ts = frame["timestamp"].to_numpy(np.int64)
    elif isinstance(frame.index, pd.DatetimeIndex):
        ts = _index_ms(frame.index)
    else:
        raise InstrumentInputError("the frame needs a DatetimeIndex or an int64 'timestamp' column (ms UTC)")
    if price not in ("mark", "close"):
        raise InstrumentInputError(f"price={price!r} must be 'mark' or 'close'")
    use_mark = price == "mark" and "mark_close" in frame.columns
    pre = "mark_" if use_mark else ""
    close = _col(frame, pre + "close")
    if close is None:
        raise InstrumentInputError(
            f"the frame has no {'mark_close or ' if price == 'mark' else ''}close column; columns are "
            f"{list(frame.columns)}")
    hi, lo = _col(frame, pre + "high"), _col(frame, pre + "low")
    if hi is None or lo is None:
        hi = lo = None
    if iv is None:
        iv = _col(frame, "iv")
    if funding_rate is None:
        funding_rate = _col(frame, "funding_rate")
    src = f"{pre}close" + (f", {pre}high/{pre}low" if hi is not None else "")
    return Underlying.from_arrays(ts, close, high=hi, low=lo, iv=iv, funding_rate=funding_rate,
                                  bar_ms=bar_ms, source=src)


# --- parameter broadcasting -------------------------------------------------------------------

def _is_seq(v: Any) -> bool:
    return isinstance(v, (list, tuple, np.ndarray, pd.Index, pd.Series))


def column_count(values: Mapping[str, Any]) -> int:
    """Number of columns implied by per-column sequences (1 when all are scalars).

    Raises if two sequences have different lengths > 1.
    """
    m, who = 1, None
    for k, v in values.items():
        if _is_seq(v):
            ln = len(v)
            if ln == 0:
                raise InstrumentInputError(f"{k} is an empty sequence; give a scalar or one value per column")
            if ln != 1:
                if m != 1 and ln != m:
                    raise InstrumentInputError(
                        f"{k} has {ln} values but {who} has {m}; per-column sequences must have equal "
                        "lengths (use grid() for a Cartesian product)")
                m, who = ln, k
    return m


def per_column(name: str, value: Any, m: int, dtype: type = float,
               choices: Mapping[str, int] | None = None) -> np.ndarray:
    """Broadcast a scalar or per-column sequence to a contiguous (m,) array.

    ``choices`` maps allowed strings to int codes (enums numba can read).
    """
    vals = list(value) if _is_seq(value) else [value]
    if choices is not None:
        out = []
        for v in vals:
            if v not in choices:
                raise InstrumentInputError(f"{name}={v!r} is not one of {sorted(choices)}")
            out.append(choices[v])
        arr = np.asarray(out, dtype=np.int64)
    else:
        try:
            arr = np.asarray([np.nan if v is None else v for v in vals], dtype=dtype)
        except (TypeError, ValueError) as exc:
            raise InstrumentInputError(f"{name}={value!r} is not a number or a sequence of numbers") from exc
    if arr.shape[0] not in (1, m):
        raise InstrumentInputError(f"{name} has {arr.shape[0]} values for {m} columns; give 1 or {m}")
    return np.ascontiguousarray(np.broadcast_to(arr, (m,)).copy())


def column_labels(values: Mapping[str, Any], m: int, columns: Any = None) -> pd.Index:
    """Column labels: ``columns`` if given, else the varying parameters (MultiIndex when
    several vary), else a RangeIndex."""
    if columns is not None:
        idx = columns if isinstance(columns, pd.Index) else pd.Index(columns)
        if len(idx) != m:
            raise InstrumentInputError(f"columns has {len(idx)} labels for {m} columns")
        return idx
    varying = {k: [x.item() if isinstance(x, np.generic) else x for x in v]
               for k, v in values.items() if _is_seq(v) and len(v) == m and m > 1}
    if not varying:
        return pd.RangeIndex(m, name="column")
    if len(varying) == 1:
        (k, v), = varying.items()
        return pd.Index(v, name=k)
    return pd.MultiIndex.from_arrays(list(varying.values()), names=list(varying))


def grid(**params: Iterable[Any]) -> dict[str, list[Any]]:
    """Cartesian product of parameter values, as per-column lists.

    ``grid(moneyness=[0.9, 0.8], skew=[0, 0.1])`` gives four columns:
    ``{'moneyness': [0.9, 0.9, 0.8, 0.8], 'skew': [0, 0.1, 0, 0.1]}``; pass them to a settings
    class with ``PutSettings(**grid(...))``.
    """
    keys = list(params)
    combos = list(itertools.product(*[list(v) for v in params.values()]))
    return {k: [c[i] for c in combos] for i, k in enumerate(keys)}
