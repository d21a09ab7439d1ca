"""Download candles, mark/index candles and funding history with ccxt into the store.

Guarantees (see docs/data.md):

* **Incremental.** Each dataset records the range it has verified against the exchange
  (``covered_from``/``covered_to`` in the file's metadata: every candle whose open time, or
  every print whose time, falls in ``[covered_from, covered_to)`` is stored or does not exist
  at the exchange). A run only requests what lies outside it: the tail from ``covered_to``
  (the last stored candle + 1 bar) and, if ``since`` is earlier, the head up to
  ``covered_from``. A run whose range is already covered makes no data request.
* **Resumable.** Pages are merged into the file one by one, atomically, and the tail's
  ``covered_to`` advances with each page (empty pages included); a run killed at any page
  leaves a valid file and the next run continues after the last stored row, with no gap and
  no duplicate, and asks for no page twice, except the page that revealed a gap (see below)
  when the kill hits the gap's first request.
* **Closed candles only.** A candle is kept only if it closed by ``min(until, now)``
  (open time + timeframe <= that instant); funding prints only if earlier than it.
* The store holds one contiguous verified range per dataset: a requested range that does
  not touch it is extended to reach it.

Pagination moves ``since``: the next page starts one bar (candles) or 1 ms (funding) after
the last row received. An empty page means the exchange has nothing in the page's window
(ccxt drops rows older than ``since``); the cursor then skips one page width (page size x
timeframe, or page size x 1 h for funding), which is how windowed endpoints such as Binance
COIN-M get past the time before listing. Results note where the exchange had no candles at
the start or end of the requested range.

Some endpoints answer a window with its *newest* rows (Bybit funding history, OKX funding
history; their lists are sorted newest first). A full page that starts after the cursor may
therefore have lost rows at its start, so the gap between the cursor and the page's first row
is requested again with an upper bound (ccxt's ``until``, or the raw parameter of
:data:`backtest.data.fetch.RAW_UNTIL`), page by page backwards until a page is not full. While
such a gap is open, the rows above it are stored with their verified range in the metadata
(``pending_from``/``pending_to``), so a run killed inside the gap resumes the gap and fetches
no page twice. An endpoint that ignores the upper bound is refused (it would leave a hole).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence, cast

import numpy as np
import pandas as pd

from backtest.data.fetch import (
    DEFAULT_PAGE_LIMIT, DownloadError, DownloadInputError, Retry, call, check_capability, check_symbol,
    check_timeframe, one_line, page_limit, until_params,
)
from backtest.data.store import (
    CANDLE_KINDS, KINDS, Store, StoreWriteError, check_writable, merge_rows, read_file, read_meta,
    remove_empty_folders, write_file,
)
from backtest.data.timeutil import iso, now_ms, parse_time, parse_timeframe
from backtest.data.validate import find_gaps, funding_holes

if TYPE_CHECKING:  # pragma: no cover
    import ccxt

DEFAULT_KINDS = ("ohlcv", "mark", "funding", "markets")
ALL_KINDS = KINDS + ("markets",)
HOUR_MS = 3_600_000

__all__ = ["DownloadError", "DownloadInputError", "Retry", "Progress", "DatasetResult", "download",
           "sync_dataset", "make_exchange", "DEFAULT_KINDS", "ALL_KINDS"]


@dataclass(frozen=True)
class Progress:
    """A progress report: the dataset ``label`` has verified up to ``at`` of ``[start, stop)`` (ms)."""

    label: str
    start: int
    stop: int
    at: int
    rows: int
    requests: int
    done: bool = False
    message: str = ""


@dataclass(frozen=True)
class DatasetResult:
    """Outcome of syncing one dataset (or the market snapshot, ``kind='markets'``)."""

    exchange: str
    symbol: str
    kind: str
    timeframe: str | None
    path: Path
    requests: int
    rows_added: int
    rows_total: int
    first: int | None = None
    last: int | None = None
    covered_from: int | None = None
    covered_to: int | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        tf = f" {self.timeframe}" if self.timeframe else ""
        head = f"{self.exchange} {self.symbol} {self.kind}{tf}"
        if self.kind == "markets":
            return f"{head}: {self.path}"
        span = f"{iso(self.first)} .. {iso(self.last)}" if self.rows_total else "no rows"
        return (f"{head}: +{self.rows_added} rows ({self.rows_total} stored, {span}), "
                f"{self.requests} request(s) -> {self.path}")


def make_exchange(exchange_id: str, config: dict[str, Any] | None = None) -> "ccxt.Exchange":
    """A ccxt exchange instance with ccxt's rate limiter on (``enableRateLimit=True``)."""
    import ccxt

    if exchange_id not in ccxt.exchanges:
        close = [e for e in ccxt.exchanges if exchange_id.lower()[:4] in e][:8]
        hint = f"; similar: {', '.join(close)}" if close else ""
        raise DownloadInputError(f"unknown ccxt exchange id {exchange_id!r}{hint}")
    return getattr(ccxt, exchange_id)({"enableRateLimit": True, **(config or {})})


# ---------------------------------------------------------------------------------------------
# rows from ccxt structures


def _candles_frame(rows: Sequence[Sequence[Any]], kind: str) -> pd.DataFrame:
    if not rows:
        arr = np.empty((0, 6))
    else:
        arr = np.array([[np.nan if v is None else v for v in (list(r) + [None] * 6)[:6]] for r in rows],
                       dtype=np.float64)
    out = pd.DataFrame({"timestamp": arr[:, 0].astype(np.int64), "open": arr[:, 1], "high": arr[:, 2],
                        "low": arr[:, 3], "close": arr[:, 4]})
    if kind == "ohlcv":
        out["volume"] = arr[:, 5]
    return out.sort_values("timestamp", kind="stable").reset_index(drop=True)


def _funding_frame(entries: Sequence[dict[str, Any]]) -> tuple[pd.DataFrame, int]:
    """Funding rows from ccxt FundingRateHistory structures; returns (frame, n_dropped)."""
    ts, rate, interval, mark = [], [], [], []
    dropped = 0
    for e in entries:
        if e.get("timestamp") is None or e.get("fundingRate") is None:
            dropped += 1
            continue
        ts.append(int(e["timestamp"]))
        rate.append(float(e["fundingRate"]))
        # ccxt's history structure has no interval field today; take it if an exchange adds one
        iv = e.get("interval")
        try:
            interval.append(parse_timeframe(iv) / HOUR_MS if isinstance(iv, str) else np.nan)
        except ValueError:
            interval.append(np.nan)
        info = e.get("info") or {}
        mp = info.get("markPrice") if isinstance(info, dict) else None
        try:
            mpf = float(mp) if mp is not None else np.nan
        except (TypeError, ValueError):
            mpf = np.nan
        mark.append(mpf if np.isfinite(mpf) and mpf > 0 else np.nan)
    frame = pd.DataFrame({"timestamp": np.array(ts, dtype=np.int64), "funding_rate": np.array(rate, dtype=float),
                          "interval_hours": np.array(interval, dtype=float),
                          "mark_price": np.array(mark, dtype=float)})
    return frame.sort_values("timestamp", kind="stable").reset_index(drop=True), dropped


def derive_intervals(ts: np.ndarray, starts: np.ndarray | None = None) -> np.ndarray:
    """Funding interval of each print in hours: the time since the previous print, on
    timestamps rounded to the whole second (the exchange's ms jitter removed).

    A print that starts a block (``starts[i]`` True; the first print always does) takes the time
    to the next print instead: its predecessor is unknown or lies across a range not yet
    downloaded. A block start without a successor gets NaN.
    """
    t = (np.asarray(ts, dtype=np.int64) + 500) // 1000 * 1000
    out = np.full(t.shape, np.nan)
    if t.size == 0:
        return out
    first = np.zeros(t.shape, dtype=bool) if starts is None else np.asarray(starts, dtype=bool).copy()
    first[0] = True
    if t.size >= 2:
        d = np.diff(t) / HOUR_MS
        out[1:] = d
        to_next = np.append(d, np.nan)
        out[first] = to_next[first]
    return out


def _block_starts(ts: np.ndarray, gap_ends: Iterable[int]) -> np.ndarray:
    """Mask of the prints that start a block: the first print, and the first print at or after
    each end of a range that is not downloaded yet."""
    starts = np.zeros(ts.shape, dtype=bool)
    if ts.size:
        starts[0] = True
        for g in gap_ends:
            j = int(np.searchsorted(ts, g, side="left"))
            if j < ts.size:
                starts[j] = True
    return starts


def _fill_intervals(frame: pd.DataFrame, starts: np.ndarray, redo: Iterable[int]) -> pd.DataFrame:
    """Fill ``interval_hours`` where unknown (NaN), at block starts and at the timestamps in
    ``redo`` (prints whose neighbour changed: former block starts), with :func:`derive_intervals`."""
    ts = frame["timestamp"].to_numpy()
    iv = frame["interval_hours"].to_numpy(dtype=np.float64).copy()
    fill = ~np.isfinite(iv) | starts | np.isin(ts, np.fromiter(redo, dtype=np.int64))
    if fill.any():
        iv[fill] = derive_intervals(ts, starts)[fill]
        frame = frame.assign(interval_hours=iv)
    return frame


# ---------------------------------------------------------------------------------------------
# one dataset


@dataclass
class _Ctx:
    exchange: Any
    store: Store
    retry: Retry
    clock: Callable[[], int]
    limit: int | None
    progress: Callable[[Progress], None] | None


def sync_dataset(exchange: Any, symbol: str, kind: str, timeframe: str | None = None, *,
                 since: int | str | None = None, until: int | str | None = None,
                 store: Store | None = None, limit: int | None = None, retry: Retry = Retry(),
                 clock: Callable[[], int] = now_ms,
                 progress: Callable[[Progress], None] | None = None) -> DatasetResult:
    """Bring one dataset up to date (markets must be loaded; see :func:`download`).

    Parameters
    ----------
    exchange : ccxt.Exchange with markets loaded
    symbol : ccxt symbol, e.g. ``BTC/USDT:USDT``
    kind : ``ohlcv``, ``mark``, ``index`` or ``funding``
    timeframe : ccxt timeframe for candle kinds; None for funding
    since, until : ms or ISO; ``since`` is needed for a new dataset unless ccxt knows the
        market's listing time; ``until`` (exclusive) defaults to now
    limit : page size; default: the largest ccxt declares in ``exchange.features``
    clock : returns now in ms (injectable for tests)
    """
    ctx = _Ctx(exchange, store or Store(), retry, clock, limit, progress)
    return _sync(ctx, symbol, kind, timeframe, parse_time(since, name="since"), parse_time(until, name="until"))


def _sync(ctx: _Ctx, symbol: str, kind: str, tf: str | None, since: int | None, until: int | None) -> DatasetResult:
    ex, store = ctx.exchange, ctx.store
    candle = kind in CANDLE_KINDS
    if candle and tf is None:
        raise DownloadInputError(f"{ex.id} {symbol} {kind}: candles need a timeframe, e.g. --timeframe 1h")
    tf_ms = parse_timeframe(tf) if candle and tf is not None else 0
    step = tf_ms if candle else 1
    path = store.path(ex.id, symbol, kind, tf)
    label = f"{symbol} {kind}{' ' + tf if tf else ''}"
    market = ex.markets[symbol]
    # a known page size is what tells a full (possibly cut) page from a complete one
    limit = int(ctx.limit or page_limit(ex, market, kind) or DEFAULT_PAGE_LIMIT)
    skip = limit * (tf_ms if candle else HOUR_MS)

    now = ctx.clock()
    end = now if until is None else min(until, now)
    stop = end - tf_ms + 1 if candle else end

    if path.is_file():
        old = read_file(path, kind)
        meta = read_meta(path)
    else:
        old, meta = None, {}
    rows_before = 0 if old is None else len(old)
    cov_from: int | None
    cov_to: int | None
    if "covered_from" in meta and "covered_to" in meta:
        cov_from, cov_to = int(meta["covered_from"]), int(meta["covered_to"])
    elif old is not None and len(old):
        ts = old["timestamp"].to_numpy()
        cov_from, cov_to = int(ts.min()), int(ts.max()) + step
    else:
        cov_from = cov_to = None
    pending = None
    if cov_to is not None and "pending_from" in meta and "pending_to" in meta:
        pf, pt = int(meta["pending_from"]), int(meta["pending_to"])
        pending = (pf, pt) if cov_to <= pf < pt else None

    segments: list[tuple[str, int, int]] = []
    if cov_from is None:
        start = since if since is not None else market.get("created")
        if start is None:
            raise DownloadInputError(
                f"{ex.id} {label}: a new dataset needs a start; pass --since (ISO date or ms)")
        cov_from = cov_to = int(start)
        segments.append(("tail", int(start), stop))
    else:
        if since is not None and since < cov_from:
            segments.append(("head", since, cov_from))
        segments.append(("tail", cast(int, cov_to), stop))  # set with cov_from above

    state: dict[str, Any] = {"rows": old if old is not None else None, "requests": 0, "cov_from": cov_from,
                             "cov_to": cov_to, "pending": pending, "dropped": 0, "starts": set()}
    notes: list[str] = []
    total_span = sum(max(0, b - a) for _, a, b in segments) or 1
    done_span = 0

    def gap_ends() -> list[int]:
        """Upper ends of the ranges inside the file that are not downloaded yet."""
        out = []
        rows = state["rows"]
        if rows is not None and len(rows) and int(rows["timestamp"].iloc[0]) < state["cov_from"]:
            out.append(state["cov_from"])  # a head being downloaded below the verified range
        if state["pending"] is not None:
            out.append(state["pending"][0])
        return out

    if kind == "funding" and old is not None and len(old):
        ts0 = old["timestamp"].to_numpy()
        state["starts"] = set(ts0[_block_starts(ts0, gap_ends())].tolist())

    def persist(new: pd.DataFrame | None) -> None:
        cur = state["rows"]
        if cur is None:
            cur = new.iloc[:0] if new is not None else _candles_frame([], kind) if candle else _funding_frame([])[0]
        merged = merge_rows(cur, new) if new is not None and len(new) else cur
        if kind == "funding" and len(merged):
            ts_m = merged["timestamp"].to_numpy()
            state["rows"] = merged  # gap_ends() reads the merged rows
            starts = _block_starts(ts_m, gap_ends())
            merged = _fill_intervals(merged, starts, state["starts"])
            state["starts"] = set(ts_m[starts].tolist())
        meta_out = {k: v for k, v in meta.items() if k not in ("pending_from", "pending_to")}
        meta_out.update({"exchange": ex.id, "symbol": symbol, "kind": kind,
                         "covered_from": str(state["cov_from"]), "covered_to": str(state["cov_to"])})
        if state["pending"] is not None:
            meta_out["pending_from"], meta_out["pending_to"] = (str(v) for v in state["pending"])
        if tf:
            meta_out["timeframe"] = tf
        write_file(path, merged, meta_out)
        state["rows"] = merged

    def report(at: int, msg: str = "", done: bool = False) -> None:
        if ctx.progress is not None:
            n = 0 if state["rows"] is None else len(state["rows"])
            ctx.progress(Progress(label, 0, total_span, min(total_span, done_span + at), n,
                                  state["requests"], done, msg))

    def fetch(cursor: int, upto: int | None = None) -> tuple[pd.DataFrame, int]:
        """One page from ``cursor`` (ms), bounded above by ``upto`` (inclusive) when given;
        returns (rows sorted by time, number of rows the exchange returned)."""
        what = f"{ex.id} {label} page from {iso(cursor)}" + ("" if upto is None else f" to {iso(upto)}")
        state["requests"] += 1
        retried = lambda k, e, d: report(0, f"retry {k} in {d:.1f}s after {one_line(e, 120)}")  # noqa: E731
        params = {} if upto is None else until_params(ex, kind, upto)
        if kind == "funding":
            raw = call(ex.fetch_funding_rate_history, symbol, cursor, limit, params, retry=ctx.retry, what=what,
                       on_retry=retried)
            page, dropped = _funding_frame(raw)
            state["dropped"] += dropped
        else:
            fn = {"ohlcv": ex.fetch_ohlcv, "mark": ex.fetch_mark_ohlcv, "index": ex.fetch_index_ohlcv}[kind]
            raw = call(fn, symbol, tf, cursor, limit, params, retry=ctx.retry, what=what, on_retry=retried)
            page = _candles_frame(raw, kind)
        return page, len(raw)

    def close_gap(seg: str, seg_start: int, lo: int, hi: int, above: pd.DataFrame | None, above_end: int) -> int:
        """Make ``[lo, hi)`` known, given that ``[hi, above_end)`` is (its rows: ``above``, not
        stored yet, or already stored as the pending block). Pages backwards with an upper
        bound; every page is stored at once. Returns ``above_end``."""
        while True:
            page, n_raw = fetch(lo, hi - 1)
            ts = page["timestamp"].to_numpy()
            if (ts >= hi).any():
                raise DownloadError(
                    f"{ex.id} {label}: asked for rows from {iso(lo)} but got a full page starting at {iso(hi)}, "
                    f"and a request bounded to end before {iso(hi)} still returned rows at or after it: this "
                    "endpoint neither pages forward from 'since' nor honours 'until' in ccxt, so the store would "
                    "get a hole; nothing after the last stored row was written")
            got = page[ts >= lo]
            first = int(got["timestamp"].iloc[0]) if len(got) else None
            rows = got if above is None else pd.concat([got, above], ignore_index=True)
            above = None
            if n_raw < limit or first is None or first <= lo:
                # the exchange had no more rows in [lo, hi): the gap is closed
                if seg == "tail":
                    state["cov_to"] = max(state["cov_to"], above_end)
                    state["pending"] = None
                persist(rows)
                report(above_end - seg_start)
                return above_end
            # a full page of the newest rows before `hi`: [first, above_end) is known now
            if seg == "tail":
                state["pending"] = (first, above_end)
            persist(rows)
            hi = first

    for seg, a, b in segments:
        if a >= b:
            continue
        cursor = a
        if seg == "tail" and state["pending"] is not None:
            pf, pt = state["pending"]
            cursor = close_gap(seg, a, cursor, pf, None, pt)
        while cursor < b:
            page, n_raw = fetch(cursor)
            ts = page["timestamp"].to_numpy()
            keep = page[(ts >= cursor) & (ts < b)]
            beyond = bool((ts >= b).any())
            if n_raw >= limit and len(ts) and int(ts[0]) > cursor:
                # a full page that starts after the cursor: rows at its start may have been
                # cut off (the endpoint answers with the newest rows of its window)
                above_end = b if beyond else int(keep["timestamp"].iloc[-1]) + step
                cursor = close_gap(seg, a, cursor, min(int(ts[0]), b), keep, above_end)
            elif len(keep):
                # resume point: one bar (1 ms for funding) after the last stored row
                nxt = int(keep["timestamp"].iloc[-1]) + step
                if seg == "tail":
                    state["cov_to"] = max(state["cov_to"], nxt)
                persist(keep)
                cursor = b if beyond else nxt
            elif beyond:
                cursor = b
            else:
                # nothing in this page's window (ccxt drops rows before `since`): skip one page
                # width; windowed endpoints (e.g. Binance COIN-M) answer empty for a hole
                # or for the time before listing
                cursor = min(b, cursor + skip)
                if seg == "tail":
                    # stored at once, so that a run killed at the next page does not ask again
                    state["cov_to"] = max(state["cov_to"], cursor)
                    persist(None)
            report(cursor - a)
        if seg == "head":
            state["cov_from"] = a
            persist(None)
        elif state["rows"] is None:
            persist(None)
        done_span += b - a

    dropped_funding = state["dropped"]
    if dropped_funding:
        notes.append(f"dropped {dropped_funding} funding print(s) without time or rate")
    frame = state["rows"]
    if frame is None:  # nothing to do and no file: e.g. until before since
        frame = _candles_frame([], kind) if candle else _funding_frame([])[0]
    if candle and len(frame) > 1:
        gaps = find_gaps(frame["timestamp"].to_numpy(), tf_ms)
        if gaps:
            worst = max(gaps, key=lambda g: g[1] - g[0])
            notes.append(f"{len(gaps)} gap(s) in the exchange's data, longest {iso(worst[0])} .. {iso(worst[1])}")
    if kind == "funding":
        holes, med = funding_holes(frame["timestamp"].to_numpy(), frame["interval_hours"].to_numpy())
        if holes:
            notes.append(f"{len(holes)} hole(s) longer than 1.5x the funding interval around them (each print "
                         f"judged against its own stretch's interval), first {iso(holes[0][0])} .. "
                         f"{iso(holes[0][1])}")
        if len(frame) >= 2 and med > 0:
            first = int(frame["timestamp"].iloc[0])
            # judged against the first print's own interval (the median of a history whose interval
            # changed from 8 h to 1 h would call an ordinary 8 h head a hole)
            iv0 = float(frame["interval_hours"].iloc[0]) * HOUR_MS
            if first - state["cov_from"] > 1.5 * (iv0 if iv0 > 0 else med):
                # e.g. OKX serves about three months of funding history only
                notes.append(f"the exchange has no funding print before {iso(first)} (asked from "
                             f"{iso(state['cov_from'])}); before listing, or history not served there")
    if candle and len(frame):
        first, last = int(frame["timestamp"].iloc[0]), int(frame["timestamp"].iloc[-1])
        if first - state["cov_from"] >= 2 * tf_ms:
            notes.append(f"the exchange has no candle before {iso(first)} (asked from {iso(state['cov_from'])})")
        if state["cov_to"] - (last + tf_ms) >= 2 * tf_ms:
            notes.append(f"the exchange has no candle after {iso(last)} (asked up to {iso(state['cov_to'])}); "
                         "delisted, or history not served there")
    report(total_span, done=True)
    ts = frame["timestamp"].to_numpy()
    return DatasetResult(
        exchange=ex.id, symbol=symbol, kind=kind, timeframe=tf, path=path, requests=state["requests"],
        rows_added=len(frame) - rows_before, rows_total=len(frame),
        first=int(ts.min()) if len(ts) else None, last=int(ts.max()) if len(ts) else None,
        covered_from=state["cov_from"], covered_to=state["cov_to"], notes=tuple(notes))


# ---------------------------------------------------------------------------------------------
# the command's engine


def download(exchange: "str | ccxt.Exchange", symbols: str | Iterable[str],
             kinds: Iterable[str] = DEFAULT_KINDS, timeframes: str | Iterable[str] = "1h", *,
             since: int | str | None = None, until: int | str | None = None,
             root: str | Path | None = None, limit: int | None = None, retry: Retry = Retry(),
             clock: Callable[[], int] = now_ms,
             progress: Callable[[Progress], None] | None = None) -> list[DatasetResult]:
    """Download datasets for one exchange into the store.

    Parameters
    ----------
    exchange : ccxt exchange id (an instance with ``enableRateLimit=True`` is created) or a
        ready ccxt instance (used as configured, e.g. with a recorded HTTP transport)
    symbols : one or many ccxt symbols
    kinds : any of ``ohlcv``, ``mark``, ``index``, ``funding``, ``markets`` (the contract-spec
        and tier snapshot ``<root>/markets/<exchange>.json``)
    timeframes : one or many ccxt timeframes for the candle kinds
    since, until : ISO date/time or ms UTC; ``until`` is exclusive and defaults to now
    root : store root (default: :func:`backtest.data.store.default_root`)
    limit : page size (default: the largest ccxt declares for the endpoint)
    retry : backoff policy for transient errors
    clock : now in ms (injectable)
    progress : called with a :class:`Progress` after every page, and with a message (the
        ``Progress.message``) before every retry, the market loading's included

    Returns
    -------
    list of DatasetResult, one per (symbol, kind, timeframe) plus one per markets snapshot

    Raises
    ------
    DownloadInputError
        (a :class:`DownloadError`) for input that cannot work: unknown exchange, symbol, kind or
        timeframe, a bad date, a kind the exchange does not offer, a data folder that cannot be
        written. Everything checkable (the folder, symbol, timeframe, ``exchange.has``) is
        checked before the first data request.
    DownloadError
        One line naming the dataset, the cause and the fix: the exchange or the network failed
        (after the retries), or the disk is full.
    """
    syms = [symbols] if isinstance(symbols, str) else list(symbols)
    tfs = [timeframes] if isinstance(timeframes, str) else list(timeframes)
    kinds = list(dict.fromkeys(kinds))
    if not syms:
        raise DownloadInputError("no symbol given; pass at least one --symbol such as BTC/USDT:USDT")
    unknown = [k for k in kinds if k not in ALL_KINDS]
    if unknown:
        raise DownloadInputError(f"unknown kind(s) {unknown}; choose from {', '.join(ALL_KINDS)}")
    for tf in tfs:
        try:
            parse_timeframe(tf)
        except ValueError as exc:
            raise DownloadInputError(str(exc)) from None
    try:
        since_ms, until_ms = parse_time(since, name="since"), parse_time(until, name="until")
    except ValueError as exc:
        raise DownloadInputError(str(exc)) from None
    if since_ms is not None and until_ms is not None and until_ms <= since_ms:
        raise DownloadInputError(f"--until {iso(until_ms)} is not after --since {iso(since_ms)}")

    ex = make_exchange(exchange) if isinstance(exchange, str) else exchange
    store = Store(root)
    try:
        # before the first request: a folder that cannot be written fails in the first second
        created = check_writable(store.root)
    except StoreWriteError as exc:
        raise _write_failure(exc) from exc
    try:
        return _download(ex, store, syms, kinds, tfs, since_ms, until_ms, limit, retry, clock, progress)
    except BaseException:
        remove_empty_folders(created)  # a run that stored nothing leaves no folder behind
        raise


def _download(ex: Any, store: Store, syms: list[str], kinds: list[str], tfs: list[str], since_ms: int | None,
              until_ms: int | None, limit: int | None, retry: Retry, clock: Callable[[], int],
              progress: Callable[[Progress], None] | None) -> list[DatasetResult]:
    """:func:`download` after the checks that need no exchange."""
    from backtest.data.snapshot import snapshot_markets

    def retried(label: str) -> Callable[[int, BaseException, float], None]:
        def on_retry(k: int, e: BaseException, d: float) -> None:
            if progress is not None:
                progress(Progress(label, 0, 0, 0, 0, 0, message=f"retry {k} in {d:.1f}s after {one_line(e, 120)}"))
        return on_retry

    call(ex.load_markets, retry=retry, what=f"{ex.id} load_markets", on_retry=retried(f"{ex.id} markets"))
    for s in syms:
        check_symbol(ex, s)
        for k in kinds:
            if k != "markets":
                check_capability(ex, k, s)
    if any(k in CANDLE_KINDS for k in kinds):
        for tf in tfs:
            check_timeframe(ex, tf)

    ctx = _Ctx(ex, store, retry, clock, limit, progress)
    results: list[DatasetResult] = []
    try:
        for s in syms:
            for k in kinds:
                if k == "markets":
                    continue
                frames: list[str | None] = list(tfs) if k in CANDLE_KINDS else [None]
                for frame in frames:
                    results.append(_sync(ctx, s, k, frame, since_ms, until_ms))
        if "markets" in kinds:
            path, notes, n_req = snapshot_markets(ex, syms, store, retry=retry, clock=clock,
                                                  on_retry=retried(f"{ex.id} markets"))
            results.append(DatasetResult(exchange=ex.id, symbol=",".join(syms), kind="markets", timeframe=None,
                                         path=path, requests=n_req, rows_added=0, rows_total=len(syms),
                                         notes=tuple(notes)))
    except StoreWriteError as exc:
        raise _write_failure(exc) from exc
    return results


def _write_failure(exc: StoreWriteError) -> DownloadError:
    """A store write failure as the download's error: invalid input (exit 2) when the folder is
    the user's choice to fix, else a failure (exit 1); every page stored before it is kept."""
    return (DownloadInputError if exc.setting else DownloadError)(str(exc))
