"""What every stress transformation shares: the validation real data passes, bar look-ups by
time, the funding prints' bars, and the bar-relative description of price paths.

Validation (:func:`check_market_data`) runs the loader's own checks
(:mod:`backtest.data.validate`) on a transformed :class:`~backtest.data.marketdata.MarketData`:
trade and mark candles (prices finite and > 0, high/low bracketing open/close, no new gaps),
funding prints (order, finite rates, positive intervals and marks), the funding-rate bound, each
print's mark inside its bars' mark range, and, beyond the loader, that the frame's per-bar
funding columns still sum the prints they hold. A failure is a :class:`ShockError` naming the
transformation that produced the data.

Bar-relative description (:class:`BarUnits`): bar ``i >= 1`` as its trade OHLC divided by the
previous bar's trade close, its mark OHLC divided by the previous mark close, its funding prints
(raw time offset from the bar's open, rate, interval, mark divided by the previous mark close)
and its other columns (volume, implied vol) as they are. :func:`chain_prices` rebuilds prices
from such ratios and a starting close; the path transplant and the bootstrap both use it, so a
path's returns are the history's returns, exactly as ratios.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from backtest.data.marketdata import MarketData, funding_to_bars
from backtest.data.timeutil import iso, parse_time
from backtest.data.validate import (
    FUNDING_RATE_BOUND, DataValidationError, check_candles, check_funding, check_funding_rates,
    check_print_marks, find_gaps,
)

TRADE = ("open", "high", "low", "close")
MARK = ("mark_open", "mark_high", "mark_low", "mark_close")
PRICES = TRADE + MARK
FUNDING_FRAME = ("funding_rate", "funding_interval_hours")
MS_PER_DAY = 86_400_000


class ShockError(ValueError):
    """A stress transformation is invalid or produced invalid data; the message names the
    transformation, the value and the fix."""


def parse_instant(value: Any, name: str) -> int:
    """A user-given instant (ISO text, ms, datetime) as int ms UTC; :class:`ShockError` naming
    ``name`` otherwise."""
    try:
        out = parse_time(value, name=name)
    except ValueError as exc:
        raise ShockError(str(exc)) from None
    if out is None:
        raise ShockError(f"{name} is missing; give a time (ISO text such as '2022-06-13' or ms UTC)")
    return out


def check_number(value: Any, name: str, *, lo: float | None = None, lo_open: bool = False,
                 hi: float | None = None, fix: str) -> float:
    """``value`` as a finite float within the bounds, else :class:`ShockError` naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ShockError(f"{name}={value!r} is not a number; {fix}")
    v = float(value)
    ok = np.isfinite(v)
    if lo is not None:
        ok = ok and (v > lo if lo_open else v >= lo)
    if hi is not None:
        ok = ok and v <= hi
    if not ok:
        raise ShockError(f"{name}={value!r} is out of range; {fix}")
    return v


def bar_at(md: MarketData, t: int, name: str) -> int:
    """Index of the bar whose open time is ``t`` (ms). A time that is no bar's open is refused,
    naming the bars around it (a shock placed between bars would be moved silently)."""
    ts = md.timestamps
    k = int(np.searchsorted(ts, t, side="left"))
    if k < ts.shape[0] and ts[k] == t:
        return k
    if ts.shape[0] == 0 or t < ts[0] or t >= ts[-1] + md.bar_ms:
        raise ShockError(f"{name}={iso(t)} is outside the data, whose bars open from {iso(int(ts[0]))} to "
                         f"{iso(int(ts[-1]))}; choose a time inside")
    before = iso(int(ts[k - 1])) if k > 0 else "none"
    after = iso(int(ts[k])) if k < ts.shape[0] else "none"
    raise ShockError(f"{name}={iso(t)} is not a bar's open time (the bars around it open at {before} and "
                     f"{after}); give a bar open time")


def span_of(md: MarketData, start: int, end: int, name: str) -> tuple[int, int]:
    """Bars ``[i0, i1)`` with ``start <= open < end``; the span must lie inside the data and hold
    at least one bar (a span reaching past the data would be truncated silently)."""
    ts = md.timestamps
    if end <= start:
        raise ShockError(f"{name}: end {iso(end)} is not after start {iso(start)}; give a later end")
    last_end = int(ts[-1]) + md.bar_ms
    if start < ts[0] or end > last_end:
        raise ShockError(f"{name}: the span {iso(start)} .. {iso(end)} reaches outside the data "
                         f"({iso(int(ts[0]))} .. {iso(last_end)}); choose a span inside it")
    i0 = int(np.searchsorted(ts, start, side="left"))
    i1 = int(np.searchsorted(ts, end, side="left"))
    if i1 <= i0:
        raise ShockError(f"{name}: no bar opens in {iso(start)} .. {iso(end)}; widen the span")
    return i0, i1


def print_bars(md: MarketData, funding: pd.DataFrame | None = None) -> np.ndarray:
    """Bar index of each funding print (time rounded to the second, the rule of
    :func:`~backtest.data.marketdata.funding_to_bars`), int64 (n_prints,)."""
    f = md.funding if funding is None else funding
    t = (f["timestamp"].to_numpy(dtype=np.int64) + 500) // 1000 * 1000
    return np.searchsorted(md.timestamps, t, side="right") - 1


def refund_frame(frame: pd.DataFrame, ts: np.ndarray, bar_ms: int, funding: pd.DataFrame,
                 bars: np.ndarray) -> None:
    """Rewrite the per-bar funding columns of ``frame`` (in place) at the bars ``bars`` (bool
    mask) from the prints ``funding``, with the loader's rule; other bars keep their values."""
    rate, interval, _ = funding_to_bars(ts, bar_ms, funding)
    for col, new in (("funding_rate", rate), ("funding_interval_hours", interval)):
        if col in frame.columns:
            v = frame[col].to_numpy(dtype=np.float64, copy=True)
            v[bars] = new[bars]
            frame[col] = v


def _allowed(md: MarketData) -> tuple[bool, bool]:
    """What the loader must have allowed for the base data to exist: gaps, extreme funding."""
    gaps = bool(find_gaps(md.timestamps, md.bar_ms))
    extreme = bool(len(md.funding)) and bool(
        (np.abs(md.funding["funding_rate"].to_numpy(dtype=np.float64)) > FUNDING_RATE_BOUND).any())
    return gaps, extreme


def check_market_data(md: MarketData, *, what: str, base: MarketData | None = None) -> MarketData:
    """Run the validation real data passes on ``md``; return it unchanged.

    Parameters
    ----------
    md : the transformed data.
    what : the transformation, named in the error (``Gap(at='2022-06-13', size=-0.2)``).
    base : the data it came from; what the loader allowed for it (gaps, funding rates beyond
        :data:`~backtest.data.validate.FUNDING_RATE_BOUND`) stays allowed, nothing more.

    Raises
    ------
    ShockError
        ``invalid data after <what> on <exchange> <symbol> <timeframe>: <the validation error>``.
    """
    allow_gaps, allow_extreme = _allowed(base if base is not None else md)
    label = f"{what} on {md.exchange} {md.symbol} {md.timeframe}"
    try:
        frame = md.frame
        check_candles(frame, file=label, bar_ms=md.bar_ms, allow_gaps=allow_gaps)
        check_candles(frame, file=label, bar_ms=md.bar_ms, prefix="mark_", allow_gaps=allow_gaps)
        fund = md.funding
        check_funding(fund, file=label)
        check_funding_rates(fund, file=label, allow_extreme=allow_extreme)
        bars = print_bars(md)
        t = (fund["timestamp"].to_numpy(dtype=np.int64) + 500) // 1000 * 1000
        outside = (bars < 0) | (t >= md.timestamps[np.clip(bars, 0, None)] + md.bar_ms)
        if outside.any():
            i = int(np.argmax(outside))
            raise DataValidationError(label, "timestamp", int(t[i]), "a funding print falls outside every bar",
                                      "keep prints inside the bars")
        check_print_marks(fund["mark_price"].to_numpy(dtype=np.float64), fund["timestamp"].to_numpy(),
                          bars, frame["mark_low"].to_numpy(), frame["mark_high"].to_numpy(), file=label)
        if all(c in frame.columns for c in FUNDING_FRAME):
            rate, interval, _ = funding_to_bars(md.timestamps, md.bar_ms, fund)
            for col, want in (("funding_rate", rate), ("funding_interval_hours", interval)):
                have = frame[col].to_numpy(dtype=np.float64)
                bad = ~((have == want) | (np.isnan(have) & np.isnan(want)))
                if bad.any():
                    i = int(np.argmax(bad))
                    raise DataValidationError(
                        label, col, int(md.timestamps[i]),
                        f"the bar holds {have[i]!r} but its prints sum to {want[i]!r}",
                        "rebuild the per-bar funding columns from the prints (funding_to_bars)")
    except DataValidationError as exc:
        raise ShockError(f"invalid data after {exc}") from exc
    return md


def with_data(md: MarketData, frame: pd.DataFrame, funding: pd.DataFrame, note: str) -> MarketData:
    """A copy of ``md`` with a new frame and prints (fingerprint recomputed) and ``note`` added."""
    return md.replace(frame=frame, funding=funding.reset_index(drop=True), notes=md.notes + (note,))


def chain_prices(prev_close: float, ratios: np.ndarray) -> np.ndarray:
    """Prices of consecutive bars from their OHLC ratios to the previous close.

    Parameters
    ----------
    prev_close : close before the first bar (> 0).
    ratios : float64 (k, 4), each bar's open, high, low, close divided by the previous bar's
        close; or (p, k, 4): ``p`` paths at once, each from ``prev_close``.

    Returns
    -------
    float64 of the shape of ``ratios``, open, high, low, close: ``close_j = close_{j-1} *
    ratio_close_j`` (a running product from ``prev_close``) and ``open/high/low_j = close_{j-1} *
    ratio_j``. Multiplying a bar's ratios by one positive number keeps their order, so OHLC
    relations hold. A batch gives each path the numbers of its own (k, 4) call, bit for bit (the
    running product runs along the bars, in order, for every path).
    """
    # one running product from prev_close, so close_j is exactly close_{j-1} * ratio_j, the
    # operation that gives the bar's open/high/low: a low equal to the close stays equal
    lead = np.full(ratios.shape[:-2] + (1,), prev_close, dtype=np.float64)
    closes = np.cumprod(np.concatenate([lead, ratios[..., 3]], axis=-1), axis=-1)[..., 1:]
    prev = np.concatenate([lead, closes[..., :-1]], axis=-1)
    out = ratios * prev[..., None]
    out[..., 3] = closes
    return out


@dataclass(frozen=True)
class BarUnits:
    """Bars ``1 .. n-1`` of a dataset described relative to the bar before (unit ``u`` is bar
    ``u + 1``): the building blocks of transplants and bootstrap paths.

    Attributes
    ----------
    trade, mark : float64 (n-1, 4), OHLC over the previous bar's close (trade; mark over mark)
    contiguous : bool (n-1,), the unit's bar directly follows the previous one (no missing bars)
    extra : other frame columns (volume, iv, ...) except prices and per-bar funding, (n-1,) each,
        carried as values
    ptr : int64 (n,), the prints of unit ``u`` are ``ptr[u] .. ptr[u+1]`` of the arrays below
    offset : int64 ms, raw print time minus its bar's open (exchange jitter kept)
    rate, interval : float64, the print's rate (fraction per interval) and interval (hours)
    mark_ratio : float64, the print's mark over the previous bar's mark close (NaN: unknown)
    """

    trade: np.ndarray
    mark: np.ndarray
    contiguous: np.ndarray
    extra: dict[str, np.ndarray]
    ptr: np.ndarray
    offset: np.ndarray
    rate: np.ndarray
    interval: np.ndarray
    mark_ratio: np.ndarray

    @property
    def n(self) -> int:
        """Number of units (bars after the first)."""
        return self.trade.shape[0]

    @classmethod
    def from_market_data(cls, md: MarketData) -> "BarUnits":
        f = md.frame
        if md.n < 2:
            raise ShockError(f"{md!r} has {md.n} bar(s); bar-relative paths need at least two bars")
        tr = np.column_stack([f[c].to_numpy(dtype=np.float64) for c in TRADE])
        mk = np.column_stack([f[c].to_numpy(dtype=np.float64) for c in MARK])
        trade = tr[1:] / tr[:-1, 3:4]
        mark = mk[1:] / mk[:-1, 3:4]
        ts = md.timestamps
        contiguous = np.diff(ts) == md.bar_ms
        extra = {c: f[c].to_numpy(dtype=np.float64)[1:] for c in f.columns if c not in PRICES + FUNDING_FRAME}
        bars = print_bars(md)
        keep = bars >= 1  # prints of bar 0 have no previous close: they stay with the start bar
        fund = md.funding[keep]
        b = bars[keep]
        # unit u is bar u + 1; prints are sorted by time, so by bar
        ptr = np.searchsorted(b, np.arange(1, md.n + 1), side="left").astype(np.int64)
        raw = fund["timestamp"].to_numpy(dtype=np.int64)
        return cls(trade=trade, mark=mark, contiguous=contiguous, extra=extra, ptr=ptr,
                   offset=raw - ts[b], rate=fund["funding_rate"].to_numpy(dtype=np.float64),
                   interval=fund["interval_hours"].to_numpy(dtype=np.float64),
                   mark_ratio=fund["mark_price"].to_numpy(dtype=np.float64) / mk[b - 1, 3])

    def prints_of(self, units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The prints of a sequence of units, in order: (position in ``units`` of each print,
        index of the print in this object's print arrays)."""
        units = np.asarray(units, dtype=np.int64)
        cnt = self.ptr[units + 1] - self.ptr[units]
        pos = np.repeat(np.arange(units.shape[0]), cnt)
        first = np.repeat(self.ptr[units] - np.concatenate([[0], np.cumsum(cnt)[:-1]]), cnt)
        return pos, first + np.arange(pos.shape[0])
