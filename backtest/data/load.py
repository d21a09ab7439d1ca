"""Load validated, aligned market data from the store: :func:`load_market_data`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from backtest.data.marketdata import FUNDING_EVENT_COLUMNS, MarketData, funding_to_bars
from backtest.data.resample import ResampleError, _resample_arrays
from backtest.data.store import SAMPLE_ROOT, Store, conform, kind_columns, read_meta
from backtest.data.timeutil import is_calendar, iso, ms_index, parse_time, parse_timeframe
from backtest.data.validate import (
    DataValidationError, check_candles, check_funding, check_funding_rates, check_print_marks, fmt_ranges,
    funding_holes, numeric_column, ranges_of, timestamps_to_ms,
)

HOUR_MS = 3_600_000
OHLC = ("open", "high", "low", "close")


def _download_cmd(exchange: str, symbol: str, kind: str, timeframe: str | None, since: int | None = None,
                  root: Path | None = None) -> str:
    """The ``backtest download`` command that (re)creates a dataset, as the user types it."""
    tf = f" -t {timeframe}" if timeframe else ""
    frm = f" --since {iso(since)[:19]}Z" if since is not None else " --since ..."
    where = f" -d {root}" if root is not None else ""
    return f"`backtest download -e {exchange} -s {symbol} -k {kind}{tf}{frm}{where}`"


def read_dataset(path: Path, kind: str, *, fix: str) -> pd.DataFrame:
    """Read one store file into a conformed frame, converting what other tools write.

    Timestamps stored as datetimes or ISO strings become int64 ms UTC (a naive time is UTC);
    numbers stored as text become float64. A folder in the file's place, a file that is not
    Parquet, an unparsable timestamp or a non-numeric value is a
    :class:`DataValidationError` naming the file, the column and ``fix``.
    """
    if path.is_dir():
        raise DataValidationError(str(path), None, None, "the dataset path is a folder, not a Parquet file",
                                  f"move the folder away, then {fix}")
    try:
        df = pq.read_table(path).to_pandas()
    except (OSError, pa.ArrowException) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataValidationError(str(path), None, None, f"not a readable Parquet file ({first})",
                                  f"delete it, then {fix}") from exc
    if "timestamp" in df.columns:
        ts = timestamps_to_ms(df["timestamp"], file=str(path))
        out = {"timestamp": ts}
        known = set(sum(kind_columns(kind), []))
        for c in df.columns:
            # a column the kind does not have is left as it is: conform names it as unexpected
            if c != "timestamp":
                out[c] = numeric_column(df[c], ts, file=str(path), column=str(c)) if c in known else df[c]
        df = pd.DataFrame(out)
    return conform(df, kind, where=str(path))


def _read(store: Store, exchange: str, symbol: str, kind: str, timeframe: str | None = None, *,
          root: Path | None = None, empty_ok: bool = False) -> pd.DataFrame:
    path = store.path(exchange, symbol, kind, timeframe)
    fix = f"download it again ({_download_cmd(exchange, symbol, kind, timeframe, root=root)})"
    df = read_dataset(path, kind, fix=fix)
    if df.empty and not empty_ok:
        raise DataValidationError(str(path), "timestamp", None, "the file has no rows", fix)
    return df


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
                trade: pd.DataFrame, allow_mark_fallback: bool, start: int | None, end: int | None,
                root: Path | None) -> tuple[dict[str, np.ndarray], list[str]]:
    path = store.path(exchange, symbol, "mark", src_tf)
    notes: list[str] = []
    if path.exists():
        mark = _window(_read(store, exchange, symbol, "mark", src_tf, root=root, empty_ok=allow_mark_fallback),
                       start, end)
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


def _subtract(span: tuple[int, int], covered: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of the half-open ``span`` outside every half-open range of ``covered``."""
    out = [span]
    for a, b in covered:
        nxt = []
        for lo, hi in out:
            if b <= lo or a >= hi:
                nxt.append((lo, hi))
                continue
            if lo < a:
                nxt.append((lo, a))
            if b < hi:
                nxt.append((b, hi))
        out = nxt
    return [(lo, hi) for lo, hi in out if hi > lo]


def _expected_missing(a: int, b: int, t: np.ndarray, iv_ms: np.ndarray) -> list[int]:
    """Print times expected in ``[a, b)`` that are not stored.

    Expected times continue the stored prints at their own interval: forward from the last
    print before ``a`` (re-anchored on every stored print met), or, with none before, backward
    from the first stored print. ``t`` is sorted (ms, rounded to the second)."""
    out: list[int] = []
    n = t.size
    j = int(np.searchsorted(t, a, side="left"))  # first stored print at or after a
    if j == 0:
        back = []
        k = int(t[0] - iv_ms[0])
        while k >= a:
            if k < b:
                back.append(k)
            k -= int(iv_ms[0])
        out += back[::-1]
        if t[0] >= b:
            return out
        i = 0
    else:
        i = j - 1
    cur, step, nxt = int(t[i]), int(iv_ms[i]), i + 1
    while True:
        cand = cur + step
        if nxt < n and t[nxt] <= cand + 1000:  # a stored print comes first (or on time): follow it
            cur, step, nxt = int(t[nxt]), int(iv_ms[nxt]), nxt + 1
            if cur >= b:
                break
            continue
        if cand >= b:
            break
        if cand >= a:
            out.append(cand)
        cur = cand
    return out


def _fmt_prints(times: list[int], limit: int = 6) -> str:
    """Every missing print: each run of consecutive ones listed, or, for a long run, its first
    and last time and the count (minute precision)."""
    if len(times) <= limit:
        return ", ".join(iso(x)[:16] for x in times)
    runs: list[list[int]] = [[times[0]]]
    for x in times[1:]:
        step = runs[-1][-1] - runs[-1][-2] if len(runs[-1]) > 1 else x - runs[-1][-1]
        if x - runs[-1][-1] == step:
            runs[-1].append(x)
        else:
            runs.append([x])
    parts = []
    for r in runs:
        if len(r) <= 2:
            parts += [iso(x)[:16] for x in r]
        else:
            parts.append(f"{iso(r[0])[:16]}..{iso(r[-1])[:16]} every {(r[1] - r[0]) / HOUR_MS:g} h ({len(r)} prints)")
    return ", ".join(parts)


def _load_funding(store: Store, exchange: str, symbol: str, bars_start: int, bars_end: int,
                  allow_missing_funding: bool, allow_gaps: bool, root: Path | None
                  ) -> tuple[pd.DataFrame, list[str]]:
    path = store.path(exchange, symbol, "funding")
    fix = (f"download it ({_download_cmd(exchange, symbol, 'funding', None, bars_start, root)}) or pass "
           "allow_missing_funding=True to run without funding")
    if not path.exists():
        if not allow_missing_funding:
            raise DataValidationError(str(path), "funding_rate", None, "no funding file", fix)
        return pd.DataFrame({c: np.empty(0, dtype=np.int64 if c == "timestamp" else float)
                             for c in FUNDING_EVENT_COLUMNS}), [
            f"no funding data ({path}): funding_rate is NaN everywhere (allow_missing_funding=True)"]
    fund = _read(store, exchange, symbol, "funding", root=root, empty_ok=allow_missing_funding)
    if fund.empty:
        return fund, [f"{path}: the file has no rows: funding_rate is NaN everywhere (allow_missing_funding=True)"]
    notes = check_funding(fund, file=str(path))
    meta = read_meta(path)
    t = (fund["timestamp"].to_numpy(dtype=np.int64) + 500) // 1000 * 1000
    # unknown intervals: Binance's default 8 h (research/mechanics.md, 1 "Schedule")
    ivh = fund["interval_hours"].to_numpy(dtype=np.float64)
    iv_ms = (np.where(np.isfinite(ivh) & (ivh > 0), ivh, 8.0) * HOUR_MS).astype(np.int64)
    # The verified range: what the downloader checked against the exchange (every print in it
    # is stored), plus a pending block above a gap being completed backwards. A file without
    # that metadata (written by another tool) counts as verified from its first to its last print.
    has_meta = "covered_from" in meta and "covered_to" in meta
    pending = None
    if has_meta:
        cov_from, cov_to = int(meta["covered_from"]), int(meta["covered_to"])
        verified = [(cov_from, cov_to)]
        if "pending_from" in meta and "pending_to" in meta:
            pending = (int(meta["pending_from"]), int(meta["pending_to"]))
            verified.append(pending)
    else:
        cov_from, cov_to = int(t[0]), int(t[-1]) + 1
        verified = [(cov_from, cov_to)]
    unverified = _subtract((bars_start, bars_end), verified)
    missing = [x for a, b in unverified for x in _expected_missing(a, b, t, iv_ms)]
    since = min(bars_start, cov_from)
    complete = _download_cmd(exchange, symbol, "funding", None, since, root)
    if pending is not None and any(a < pending[0] and b > cov_to for a, b in unverified):
        why = (f"download interrupted: funding from {iso(cov_to)} to {iso(pending[0])} is not downloaded yet "
               f"(a gap completed backwards; prints {iso(pending[0])} .. {iso(pending[1])} stored)")
    elif has_meta:
        why = (f"funding verified only for {iso(cov_from)} .. {iso(cov_to)} (metadata covered_from/covered_to) "
               f"but the bars span {iso(bars_start)} .. {iso(bars_end)}")
    elif missing and missing[0] < t[0]:
        why = f"funding starts at {iso(int(t[0]))}, after the bars start"
    else:
        why = f"funding ends at {iso(int(t[-1]))} but the bars run to {iso(bars_end)}"
    if missing:
        if not (allow_gaps or allow_missing_funding):
            raise DataValidationError(
                str(path), "funding_rate", missing[0],
                f"{why}; {len(missing)} funding print(s) missing, first",
                f"complete it with {complete}, narrow start/end, or pass allow_gaps=True to load the bars "
                "without those prints (each listed in the notes)")
        flag = "allow_gaps=True" if allow_gaps else "allow_missing_funding=True"
        notes.append(f"{path}: {why}; loaded without them ({flag}; complete with {complete}): {len(missing)} "
                     f"funding print(s) missing (expected at the neighbouring prints' interval): "
                     f"{_fmt_prints(missing)}")
    elif unverified and has_meta:
        top = max(b for _, b in verified)
        where = (f"verified only up to {iso(top)}" if unverified[-1][1] == bars_end and unverified[-1][0] >= top
                 else f"not verified for {fmt_ranges([(a, b - 1) for a, b in unverified])}")
        notes.append(f"{path}: funding {where} (the bars run to {iso(bars_end)}): no print expected there at the "
                     f"prints' interval; {complete} verifies it")
    w = (t >= bars_start) & (t < bars_end)
    holes, _ = funding_holes(t[w], fund["interval_hours"].to_numpy(dtype=np.float64)[w])
    if holes:
        notes.append(f"{path}: {len(holes)} funding hole(s) longer than 1.5x the prints' own interval, between "
                     f"prints {fmt_ranges(holes)}")
    return fund, notes


def _load_iv(store_main: Store, root_given: bool, iv: tuple[str, ...], ts: np.ndarray, bar_ms: int,
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
    dv = _read(store, ex, name, "index", tf)
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
                     allow_missing_funding: bool = False, iv_max_age: str = "24h",
                     allow_partial_range: bool = False, allow_extreme_funding: bool = False) -> MarketData:
    """Load, validate and align one symbol's candles, mark candles, funding and (optionally)
    implied volatility.

    Parameters
    ----------
    exchange, symbol : ccxt exchange id and symbol (``'binanceusdm'``, ``'BTC/USDT:USDT'``)
    timeframe : bar size; if the store lacks it, a finer stored timeframe that divides it is
        resampled (noted)
    root : store root; None = the default store (:func:`~backtest.data.store.default_root`:
        ``$BACKTEST_DATA_DIR``, else ``<checkout>/data``, else ``./data``), falling back to the
        embedded sample (``SAMPLE_ROOT``, package data) when the dataset is not there
    start, end : bar open times to keep, ``start <= open < end`` (ISO string, ms, datetime);
        a range reaching before the first or past the last stored bar is an error (the
        message gives the stored range) unless ``allow_partial_range``
    iv : ``(exchange, name)`` of an index dataset in vol points, e.g. ``('deribit', 'BTC-DVOL')``;
        adds column ``iv`` = close / 100 of the last index candle closed by the bar's close,
        if not older than ``iv_max_age``; NaN otherwise (reported in notes)
    allow_mark_fallback : use trade prices where mark candles are missing (noted); otherwise
        missing mark is an error
    allow_gaps : load bars with missing bars in between (noted), and funding whose download
        was interrupted or does not cover the bars (every missing print noted); otherwise an error
    allow_missing_funding : accept a missing or short funding history (noted)
    allow_partial_range : run on the part of ``start``/``end`` that the store holds; a note
        gives the range requested, the range stored and the range used
    allow_extreme_funding : accept funding rates beyond
        :data:`~backtest.data.validate.FUNDING_RATE_BOUND` per interval (noted)

    Returns
    -------
    MarketData

    Raises
    ------
    DataValidationError
        Bad or missing data: names the file, the column, the first bad timestamp and the fix.
        Among others: funding not verified for the bars (an interrupted download: the error
        gives the command completing it), a funding rate beyond the bound, a print's mark
        outside its bars' mark range, a range past the stored data, a file that is a folder,
        not Parquet, has no rows, unparsable timestamps or non-numeric values.
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
    root_arg = Path(root) if root is not None else None
    stored = _read(store, exchange, symbol, "ohlcv", src_tf, root=root_arg)
    first, last_end = int(stored["timestamp"].iloc[0]), int(stored["timestamp"].iloc[-1]) + src_ms
    trade = _window(stored, start_ms, end_ms)
    if trade.empty:
        raise DataValidationError(str(path), "timestamp", start_ms, "no bars in the requested window",
                                  f"the file spans {iso(first)} .. {iso(last_end - src_ms)}; adjust start/end")
    partial = ((start_ms is not None and start_ms < first) or (end_ms is not None and end_ms > last_end))
    if partial:
        asked = f"{iso(start_ms) if start_ms is not None else 'the first bar'} .. " \
                f"{iso(end_ms) if end_ms is not None else 'the last bar'}"
        if not allow_partial_range:
            raise DataValidationError(
                str(path), "timestamp", start_ms if start_ms is not None and start_ms < first else end_ms,
                f"the requested range {asked} reaches past the stored data: the stored bars span "
                f"{iso(first)} .. {iso(last_end)}",
                f"narrow start/end to the stored range, download the rest "
                f"({_download_cmd(exchange, symbol, 'ohlcv', src_tf, start_ms, root_arg)}), or pass "
                "allow_partial_range=True (data.allow_partial_range = true) to run on the overlap")
    notes += check_candles(trade, file=str(path), bar_ms=src_ms, allow_gaps=allow_gaps,
                           gap_fix=(f"download the range again (`backtest download -e {exchange} -s {symbol} "
                                    f"-t {src_tf} --since ...`) or pass allow_gaps=True to load the bars as they are"))
    ts = trade["timestamp"].to_numpy(dtype=np.int64)
    mark, mnotes = _align_mark(store, exchange, symbol, src_tf, src_ms, ts, trade, allow_mark_fallback,
                               start_ms, end_ms, root_arg)
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
    if partial:
        notes.append(f"requested {asked}, the stored bars span {iso(first)} .. {iso(last_end)}: ran on "
                     f"{iso(bars_start)} .. {iso(bars_end)} (allow_partial_range=True)")
    fund, fnotes = _load_funding(store, exchange, symbol, bars_start, bars_end, allow_missing_funding, allow_gaps,
                                 root_arg)
    notes += fnotes
    rate, interval, inside = funding_to_bars(ts, tgt_ms, fund)
    fpath = str(store.path(exchange, symbol, "funding"))
    notes += check_funding_rates(fund[inside], file=fpath, allow_extreme=allow_extreme_funding)
    # the print's bar, as funding_to_bars places it
    ft = (fund["timestamp"].to_numpy(dtype=np.int64)[inside] + 500) // 1000 * 1000
    check_print_marks(fund["mark_price"].to_numpy(dtype=np.float64)[inside], fund["timestamp"].to_numpy()[inside],
                      np.searchsorted(ts, ft, side="right") - 1, cols["mark_low"], cols["mark_high"], file=fpath)
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
