"""Load validated, aligned market data from the store: :func:`load_market_data`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backtest.data.marketdata import FUNDING_EVENT_COLUMNS, MarketData, funding_to_bars
from backtest.data.resample import ResampleError, _resample_arrays
from backtest.data.store import SAMPLE_ROOT, Store, read_meta
from backtest.data.timeutil import is_calendar, iso, ms_index, parse_time, parse_timeframe
from backtest.data.validate import (
    DataValidationError, check_candles, check_funding, fmt_ranges, funding_holes, ranges_of,
)

HOUR_MS = 3_600_000
OHLC = ("open", "high", "low", "close")


def _usable_timeframe(store: Store, exchange: str, symbol: str, kind: str, timeframe: str) -> str | None:
    """The stored timeframe to build ``timeframe`` from: itself, else the coarsest stored
    timeframe that divides it."""
    tgt = parse_timeframe(timeframe)
    have = store.timeframes(exchange, symbol, kind) if store.symbol_path(exchange, symbol).is_dir() else []
    if timeframe in have:
        return timeframe
    fits = [tf for tf in have if tgt % parse_timeframe(tf) == 0 and not is_calendar(tf)]
    return fits[-1] if fits else None


def _pick_store(root: str | Path | None, exchange: str, symbol: str, timeframe: str) -> tuple[Store, list[str]]:
    if root is not None:
        return Store(root), []
    main = Store()
    if _usable_timeframe(main, exchange, symbol, "ohlcv", timeframe):
        return main, []
    sample = Store(SAMPLE_ROOT)
    if _usable_timeframe(sample, exchange, symbol, "ohlcv", timeframe):
        return sample, [f"{exchange} {symbol} is not in the default store {main.root}: loaded the committed "
                        f"sample {sample.root}"]
    return main, []


def _window(df: pd.DataFrame, start: int | None, end: int | None) -> pd.DataFrame:
    ts = df["timestamp"].to_numpy()
    m = np.ones(ts.shape, dtype=bool)
    if start is not None:
        m &= ts >= start
    if end is not None:
        m &= ts < end
    return df[m].reset_index(drop=True)


def _align_mark(store: Store, exchange: str, symbol: str, src_tf: str, src_ms: int, ts: np.ndarray,
                trade: pd.DataFrame, allow_mark_fallback: bool, start: int | None, end: int | None
                ) -> tuple[dict[str, np.ndarray], list[str]]:
    path = store.path(exchange, symbol, "mark", src_tf)
    notes: list[str] = []
    if path.is_file():
        mark = _window(store.read(exchange, symbol, "mark", src_tf), start, end)
        notes += check_candles(mark, file=str(path), bar_ms=src_ms, allow_gaps=True)
        m = mark.set_index("timestamp").reindex(ts)
        cols = {f"mark_{c}": m[c].to_numpy(dtype=np.float64) for c in OHLC}
        extra = len(mark) - int(np.isin(mark["timestamp"].to_numpy(), ts).sum())
        if extra:
            notes.append(f"{path}: {extra} mark bar(s) without a trade bar were ignored")
    else:
        cols = {f"mark_{c}": np.full(ts.shape, np.nan) for c in OHLC}
    missing = ~np.isfinite(cols["mark_close"])
    if missing.any():
        rng = ranges_of(ts, missing)
        where = fmt_ranges(rng)
        if not allow_mark_fallback:
            others = store.timeframes(exchange, symbol, "mark")
            have = f" (mark timeframes stored: {', '.join(others)})" if others else ""
            raise DataValidationError(
                str(path), "mark_close", rng[0][0],
                f"mark price missing for {int(missing.sum())} bar(s): {where}{have}",
                f"download it (`backtest download -e {exchange} -s {symbol} -k mark -t {src_tf} --since ...`) or pass "
                "allow_mark_fallback=True to use trade prices there")
        for c in OHLC:
            cols[f"mark_{c}"] = np.where(missing, trade[c].to_numpy(dtype=np.float64), cols[f"mark_{c}"])
        notes.append(f"mark missing {where}: used trade prices (allow_mark_fallback=True)")
    return cols, notes


def _load_funding(store: Store, exchange: str, symbol: str, bars_start: int, bars_end: int,
                  allow_missing_funding: bool) -> tuple[pd.DataFrame, list[str]]:
    path = store.path(exchange, symbol, "funding")
    fix = (f"download it (`backtest download -e {exchange} -s {symbol} -k funding --since ...`) or pass "
           "allow_missing_funding=True to run without funding")
    if not path.is_file():
        if not allow_missing_funding:
            raise DataValidationError(str(path), "funding_rate", None, "no funding file", fix)
        return pd.DataFrame({c: np.empty(0, dtype=np.int64 if c == "timestamp" else float)
                             for c in FUNDING_EVENT_COLUMNS}), [
            f"no funding data ({path}): funding_rate is NaN everywhere (allow_missing_funding=True)"]
    fund = store.read(exchange, symbol, "funding")
    notes = check_funding(fund, file=str(path))
    meta = read_meta(path)
    t = (fund["timestamp"].to_numpy(dtype=np.int64) + 500) // 1000 * 1000
    iv_ms = np.nan_to_num(fund["interval_hours"].to_numpy(dtype=np.float64), nan=8.0) * HOUR_MS
    cov_from = int(meta["covered_from"]) if "covered_from" in meta else None
    cov_to = int(meta["covered_to"]) if "covered_to" in meta else None
    problems: list[tuple[int, str]] = []
    if t.size == 0:
        problems.append((bars_start, "no funding print at all"))
    else:
        # a print at t pays for (t - interval, t]: the prints must span the bars
        first_cover = t[0] - iv_ms[0]
        if cov_from is not None:
            first_cover = min(first_cover, cov_from)
        last_cover = t[-1] + iv_ms[-1]
        if cov_to is not None:
            last_cover = max(last_cover, cov_to)
        if first_cover > bars_start:
            problems.append((bars_start, f"funding starts at {iso(int(t[0]))}, after the bars start"))
        if last_cover < bars_end:
            problems.append((int(t[-1] + iv_ms[-1]),
                             f"funding ends at {iso(int(t[-1]))} but the bars run to {iso(bars_end)}"))
    if problems:
        ts0, what = problems[0]
        if not allow_missing_funding:
            raise DataValidationError(str(path), "funding_rate", ts0, what,
                                      fix.replace("run without funding", "accept bars without funding")
                                      + ", or narrow start/end")
        notes.append(f"{path}: {what} (allow_missing_funding=True: those bars have no funding)")
    holes, med = funding_holes(t[(t >= bars_start) & (t < bars_end)])
    if holes:
        notes.append(f"{path}: {len(holes)} funding hole(s) longer than 1.5x the usual {med / HOUR_MS:g} h "
                     f"interval, between prints {fmt_ranges(holes)}")
    return fund, notes


def _load_iv(store_main: Store, root_given: bool, iv: tuple[str, str], ts: np.ndarray, bar_ms: int,
             max_age_ms: int, max_age: str) -> tuple[np.ndarray, list[str]]:
    ex, name = iv
    stores = [store_main] if root_given else [store_main, Store(SAMPLE_ROOT)]
    for st in stores:
        if st.symbol_path(ex, name).is_dir() and st.timeframes(ex, name, "index"):
            store = st
            break
    else:
        raise FileNotFoundError(
            f"iv dataset {ex}/{name}: no index-<timeframe>.parquet under {', '.join(str(s.root) for s in stores)}; "
            "download it or drop the iv argument")
    tf = store.timeframes(ex, name, "index")[0]
    tf_ms = parse_timeframe(tf)
    path = store.path(ex, name, "index", tf)
    dv = store.read(ex, name, "index", tf)
    check_candles(dv, file=str(path), bar_ms=tf_ms, allow_gaps=True)
    close_t = dv["timestamp"].to_numpy(dtype=np.int64) + tf_ms
    val = dv["close"].to_numpy(dtype=np.float64) / 100.0  # vol points -> fraction
    bar_end = ts + bar_ms
    j = np.searchsorted(close_t, bar_end, side="right") - 1
    ok = j >= 0
    age = np.where(ok, bar_end - close_t[np.clip(j, 0, None)], np.iinfo(np.int64).max)
    fresh = ok & (age <= max_age_ms)
    out = np.where(fresh, val[np.clip(j, 0, None)], np.nan)
    notes = []
    filled = fresh & (age > 0)
    if filled.any():
        notes.append(f"iv: {int(filled.sum())} bar(s) forward-filled from an older {name} close "
                     f"(oldest {age[filled].max() / HOUR_MS:g} h; limit iv_max_age={max_age})")
    if (~fresh).any():
        rng = ranges_of(ts, ~fresh)
        notes.append(f"iv: no {name} value within iv_max_age={max_age} for {int((~fresh).sum())} bar(s), "
                     f"left NaN: {fmt_ranges(rng)}")
    return out, [f"iv from {path} (close / 100, as of each bar's close)"] + notes


def load_market_data(exchange: str, symbol: str, timeframe: str = "1h", *, root: str | Path | None = None,
                     start: Any = None, end: Any = None, iv: tuple[str, str] | None = None,
                     allow_mark_fallback: bool = False, allow_gaps: bool = False,
                     allow_missing_funding: bool = False, iv_max_age: str = "24h") -> MarketData:
    """Load, validate and align one symbol's candles, mark candles, funding and (optionally)
    implied volatility.

    Parameters
    ----------
    exchange, symbol : ccxt exchange id and symbol (``'binanceusdm'``, ``'BTC/USDT:USDT'``)
    timeframe : bar size; if the store lacks it, a finer stored timeframe that divides it is
        resampled (noted)
    root : store root; None = the default store (``$BACKTEST_DATA_DIR`` or ``<repo>/data``),
        falling back to the committed sample ``data/sample`` when the dataset is not there
    start, end : bar open times to keep, ``start <= open < end`` (ISO string, ms, datetime)
    iv : ``(exchange, name)`` of an index dataset in vol points, e.g. ``('deribit', 'BTC-DVOL')``;
        adds column ``iv`` = close / 100 of the last index candle closed by the bar's close,
        if not older than ``iv_max_age``; NaN otherwise (reported in notes)
    allow_mark_fallback : use trade prices where mark candles are missing (noted); otherwise
        missing mark is an error
    allow_gaps : load bars with missing bars in between (noted); otherwise an error
    allow_missing_funding : accept a missing or short funding history (noted)

    Returns
    -------
    MarketData

    Raises
    ------
    DataValidationError
        Bad or missing data: names the file, the column, the first bad timestamp and the fix.
    FileNotFoundError
        The dataset exists in no searched store.
    """
    tgt_ms = parse_timeframe(timeframe)
    if is_calendar(timeframe):
        raise ValueError(f"timeframe {timeframe!r} has bars of varying length; use s, m, h, d or w timeframes")
    start_ms, end_ms = parse_time(start, name="start"), parse_time(end, name="end")
    if start_ms is not None and end_ms is not None and end_ms <= start_ms:
        raise ValueError(f"end {iso(end_ms)} is not after start {iso(start_ms)}")
    max_age_ms = parse_timeframe(iv_max_age)
    store, notes = _pick_store(root, exchange, symbol, timeframe)
    src_tf = _usable_timeframe(store, exchange, symbol, "ohlcv", timeframe)
    if src_tf is None:
        where = [str(store.root)] + ([str(SAMPLE_ROOT)] if root is None else [])
        have = store.timeframes(exchange, symbol, "ohlcv") if store.symbol_path(exchange, symbol).is_dir() else []
        raise FileNotFoundError(
            f"no {exchange} {symbol} candles usable for timeframe {timeframe} in {', '.join(where)}"
            + (f" (stored: {', '.join(have)})" if have else "")
            + f"; run `backtest download -e {exchange} -s {symbol} -t {timeframe} --since ...`")
    src_ms = parse_timeframe(src_tf)
    path = store.path(exchange, symbol, "ohlcv", src_tf)
    trade = _window(store.read(exchange, symbol, "ohlcv", src_tf), start_ms, end_ms)
    if trade.empty:
        info = store.info(exchange, symbol, "ohlcv", src_tf)
        raise DataValidationError(str(path), "timestamp", start_ms, "no bars in the requested window",
                                  f"the file spans {iso(info.first)} .. {iso(info.last)}; adjust start/end")
    notes += check_candles(trade, file=str(path), bar_ms=src_ms, allow_gaps=allow_gaps,
                           gap_fix=(f"download the range again (`backtest download -e {exchange} -s {symbol} "
                                    f"-t {src_tf} --since ...`) or pass allow_gaps=True to load the bars as they are"))
    ts = trade["timestamp"].to_numpy(dtype=np.int64)
    mark, mnotes = _align_mark(store, exchange, symbol, src_tf, src_ms, ts, trade, allow_mark_fallback,
                               start_ms, end_ms)
    notes += mnotes
    cols = {c: trade[c].to_numpy(dtype=np.float64) for c in ("open", "high", "low", "close", "volume")}
    cols.update(mark)
    if src_ms != tgt_ms:
        try:
            ts, cols, rnotes = _resample_arrays(ts, cols, src_ms, tgt_ms)
        except ResampleError as exc:
            raise DataValidationError(str(path), "timestamp", None, str(exc), "load the stored timeframe") from exc
        if ts.size == 0:
            raise DataValidationError(str(path), "timestamp", start_ms,
                                      f"no complete {timeframe} bar in the requested window", "widen start/end")
        notes += [f"built {timeframe} bars from stored {src_tf} candles"] + rnotes
    bars_start, bars_end = int(ts[0]), int(ts[-1]) + tgt_ms
    fund, fnotes = _load_funding(store, exchange, symbol, bars_start, bars_end, allow_missing_funding)
    notes += fnotes
    rate, interval, inside = funding_to_bars(ts, tgt_ms, fund)
    rt = (fund["timestamp"].to_numpy(dtype=np.int64) + 500) // 1000 * 1000
    n_lost = int(((rt >= bars_start) & (rt < bars_end)).sum() - inside.sum())
    if n_lost:
        notes.append(f"{n_lost} funding print(s) fall in missing bars and are not in the frame")
    cols["funding_rate"], cols["funding_interval_hours"] = rate, interval
    if iv is not None:
        cols["iv"], ivnotes = _load_iv(store, root is not None, tuple(iv), ts, tgt_ms, max_age_ms, iv_max_age)
        notes += ivnotes
    index = ms_index(ts)
    frame = pd.DataFrame(cols, index=index)
    funding = fund[inside].reset_index(drop=True)[list(FUNDING_EVENT_COLUMNS)]
    md = MarketData(exchange=exchange, symbol=symbol, timeframe=timeframe, bar_ms=tgt_ms,
                    source=str(store.symbol_path(exchange, symbol)), frame=frame, funding=funding,
                    notes=tuple(notes))
    return md.replace()
