"""Load a book's data: several symbols of one exchange on one bar index, :func:`load_book_data`.

Each symbol goes through :func:`~backtest.data.load.load_market_data` (every check and note of
the single-symbol loader applies unchanged); this module only decides each symbol's range and
aligns the results into a :class:`~backtest.book.bars.BookBars`:

* **later listing**: a symbol whose stored bars start after ``start`` (or, with no ``start``,
  after the earliest symbol's first bar) is loaded from its first bar; the book holds it flat
  and untradeable before that bar (noted);
* **common end**: a symbol whose bars end before ``end`` (or, with no ``end``, before the
  others') is refused unless ``allow_partial_range``; then every symbol is cut to the common
  last bar (noted);
* **holes**: with ``allow_gaps`` each symbol's missing bars are loaded as they are (the
  single-symbol policy); a bar that one listed symbol lacks while another has it is then
  dropped from every symbol, so that no price is invented (noted, with the funding prints that
  fell in those bars and are therefore not paid). Without ``allow_gaps`` a missing bar is
  refused by the single-symbol loader.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from backtest.data.load import _pick_store, _usable_timeframe, load_market_data, read_dataset
from backtest.data.marketdata import MarketData, funding_to_bars
from backtest.data.timeutil import iso, parse_time, parse_timeframe
from backtest.data.validate import DataValidationError, fmt_ranges, ranges_of

if TYPE_CHECKING:  # pragma: no cover
    from backtest.book.bars import BookBars


@dataclass(frozen=True, eq=False)
class BookData:
    """A book's market data: one :class:`MarketData` per symbol and their aligned bars.

    Attributes
    ----------
    exchange : ccxt exchange id (one account lives on one exchange)
    symbols : the K symbols, in the book's order
    data : the K symbols' MarketData, in that order; each one's bars are exactly its leg of
        ``bars`` (``data[k].timestamps == bars.timestamp[bars.first_bar[k]:]``) and each one's
        ``notes`` are prefixed with its symbol
    bars : the engine's aligned inputs (:class:`~backtest.book.bars.BookBars`)
    notes : every symbol's notes (prefixed) followed by the book's own (listing, common end,
        dropped bars)
    """

    exchange: str
    symbols: tuple[str, ...]
    data: tuple[MarketData, ...]
    bars: "BookBars"
    notes: tuple[str, ...]

    def __getitem__(self, symbol: str) -> MarketData:
        """The MarketData of one symbol."""
        if symbol not in self.symbols:
            raise KeyError(f"{symbol!r} is not in the book; its symbols are {list(self.symbols)}")
        return self.data[self.symbols.index(symbol)]

    @property
    def fingerprint(self) -> str:
        """sha256 hex over the symbols' own fingerprints, in the book's order."""
        import hashlib

        h = hashlib.sha256()
        for md in self.data:
            h.update(md.fingerprint.encode() + b"\0")
        return h.hexdigest()


def _first_stored_bar(exchange: str, symbol: str, timeframe: str, root: str | Path | None) -> int | None:
    """Open time (ms) of the first stored candle the loader would read for ``symbol``, or None when
    there is none (the loader then raises its own error naming the stores searched)."""
    store, _ = _pick_store(root, exchange, symbol, timeframe)
    src = _usable_timeframe(store, exchange, symbol, "ohlcv", timeframe)
    if src is None:
        return None
    path = store.path(exchange, symbol, "ohlcv", src)
    df = read_dataset(path, "ohlcv", fix=f"download it again (`backtest download -e {exchange} -s {symbol} "
                                         f"-t {src} --since ...`)")
    return int(df["timestamp"].min()) if len(df) else None


def _cut(md: MarketData, keep: np.ndarray) -> tuple[MarketData, int]:
    """``md`` restricted to the bars where ``keep`` (bool, n_bars) is True, its funding prints
    restricted to those inside the kept bars (the rule of :func:`funding_to_bars`); returns the
    new MarketData and the number of funding prints dropped."""
    frame = md.frame[keep]
    ts = frame.index.as_unit("ms").asi8
    _, _, inside = funding_to_bars(ts, md.bar_ms, md.funding)
    funding = md.funding[inside].reset_index(drop=True)
    return md.replace(frame=frame, funding=funding), int((~inside).sum())


def load_book_data(exchange: str, symbols: Sequence[str], timeframe: str = "1h", start: Any = None,
                   end: Any = None, *, root: str | Path | None = None, allow_gaps: bool = False,
                   allow_mark_fallback: bool = False, allow_missing_funding: bool = False,
                   allow_partial_range: bool = False, allow_extreme_funding: bool = False,
                   iv: Mapping[str, tuple[str, str]] | None = None, iv_max_age: str = "24h") -> BookData:
    """Load several symbols of one exchange and align them into a book.

    Parameters
    ----------
    exchange : ccxt exchange id (``'binanceusdm'``, ``'binancecoinm'``)
    symbols : the book's K ccxt symbols, each once (``['BTC/USDT:USDT', 'ETH/USDT:USDT']``)
    timeframe : bar size of every symbol (resampled from a finer stored one where needed, noted)
    start, end : bar open times to keep, ``start <= open < end`` (ISO string, ms, datetime).
        A symbol listed after ``start`` starts at its first stored bar (noted). A symbol whose
        data ends before ``end`` is refused unless ``allow_partial_range``.
    root : store root; None = the default store, falling back to the committed sample
    allow_gaps : load each symbol's missing bars as they are (single-symbol policy), and drop
        from every symbol a bar that a listed symbol lacks (noted, with the funding prints lost)
    allow_mark_fallback, allow_missing_funding, allow_extreme_funding, iv_max_age : as in
        :func:`~backtest.data.load.load_market_data`, for every symbol
    allow_partial_range : run each symbol on the part of ``start``/``end`` it has, then cut every
        symbol to the common last bar (noted); otherwise symbols ending at different bars are
        refused
    iv : optional ``{symbol: (exchange, name)}`` of implied-volatility indices (e.g.
        ``{'BTC/USDT:USDT': ('deribit', 'BTC-DVOL')}``); those symbols' frames get column ``iv``

    Returns
    -------
    BookData

    Raises
    ------
    ValueError
        No symbol, a symbol given twice, an ``iv`` key that is not a symbol of the book, an empty
        date range, a symbol whose stored bars start at or after ``end``.
    DataValidationError
        Any single-symbol refusal (prefixed with the symbol), symbols ending at different bars
        without ``allow_partial_range``.
    FileNotFoundError
        A symbol's data is in no searched store.
    """
    from backtest.book.bars import BookBars, check_book_symbols

    syms = check_book_symbols(symbols, error=ValueError)
    iv = dict(iv or {})
    unknown = sorted(set(iv) - set(syms))
    if unknown:
        raise ValueError(f"iv is given for {unknown}, which are not in the book {list(syms)}; "
                         "key it by the book's symbols")
    start_ms, end_ms = parse_time(start, name="start"), parse_time(end, name="end")
    if start_ms is not None and end_ms is not None and end_ms <= start_ms:
        raise ValueError(f"end {iso(end_ms)} is not after start {iso(start_ms)}")
    bar_ms = parse_timeframe(timeframe)

    # 1. each symbol's first bar: a symbol stored from after the book's start is a later listing
    first = {s: _first_stored_bar(exchange, s, timeframe, root) for s in syms}
    known = [f for f in first.values() if f is not None]
    earliest = min(known) if known else None
    # A start before every symbol's data is not a later listing but a range past the stored data:
    # the earliest symbols keep the requested start, so that their loader refuses it (or, with
    # allow_partial_range, notes it); the others are later listings relative to the book's start.
    if start_ms is None or earliest is None:
        book_start = earliest if start_ms is None else start_ms
    else:
        book_start = max(start_ms, earliest)
    book_notes: list[str] = []
    own_start: dict[str, int | None] = {}
    for s in syms:
        f = first[s]
        if f is not None and end_ms is not None and f >= end_ms:
            raise ValueError(f"{s}: its stored bars start at {iso(f)}, not before end {iso(end_ms)}: no bar of it "
                             "in the book; move end later or leave the symbol out")
        later = f is not None and book_start is not None and f > book_start
        own_start[s] = f if later else start_ms
        if later:
            book_notes.append(f"{s}: listed later: its first stored bar {iso(f)} is after the book's start "
                              f"{iso(book_start)}; flat and untradeable before it")

    # 2. every check of the single-symbol loader, per symbol
    def load(s: str, until: int | None) -> MarketData:
        try:
            return load_market_data(
                exchange, s, timeframe, root=root, start=own_start[s], end=until, iv=iv.get(s),
                allow_mark_fallback=allow_mark_fallback, allow_gaps=allow_gaps,
                allow_missing_funding=allow_missing_funding, iv_max_age=iv_max_age,
                allow_partial_range=allow_partial_range, allow_extreme_funding=allow_extreme_funding)
        except DataValidationError as exc:
            raise _prefixed(exc, s) from exc

    mds = {s: load(s, end_ms) for s in syms}

    # 3. one common last bar
    ends = {s: int(md.timestamps[-1]) + bar_ms for s, md in mds.items()}
    common = min(ends.values())
    if len(set(ends.values())) > 1:
        listing = ", ".join(f"{s} {iso(e)}" for s, e in ends.items())
        if not allow_partial_range:
            short = min(ends, key=lambda s: ends[s])
            raise DataValidationError(
                mds[short].source, "timestamp", common,
                f"the symbols' bars end at different times ({listing}): {short} ends first",
                f"give an end at or before {iso(common)}, download the rest of {short}, or pass "
                "allow_partial_range=True (data.allow_partial_range = true) to cut every symbol to the common end")
        for s in syms:
            if ends[s] > common:
                mds[s] = load(s, common)
        book_notes.append(f"the symbols' bars end at different times ({listing}): every symbol cut to the common "
                          f"end {iso(common)} (allow_partial_range=True)")

    # 4. holes: bars a listed symbol lacks while another has them (only with allow_gaps)
    union = np.unique(np.concatenate([md.timestamps for md in mds.values()]))
    hole = np.zeros(union.shape, dtype=bool)
    for md in mds.values():
        ts = md.timestamps
        hole |= (union >= ts[0]) & ~np.isin(union, ts)
    if hole.any():
        where = fmt_ranges(ranges_of(union, hole))
        book_notes.append(f"{int(hole.sum())} bar(s) missing in some listed symbol were dropped from every symbol "
                          f"(allow_gaps=True; no price is invented): {where}")
        for s in syms:
            keep = ~np.isin(mds[s].timestamps, union[hole])
            if not keep.all():
                mds[s], lost = _cut(mds[s], keep)
                book_notes.append(f"{s}: {int((~keep).sum())} bar(s) dropped as missing in another symbol"
                                  + (f"; {lost} funding print(s) in them are not paid" if lost else ""))

    data = tuple(md.replace(notes=tuple(f"{s}: {n}" for n in md.notes)) for s, md in mds.items())
    bars = BookBars.from_legs(syms, [md.to_perp_bars() for md in data])
    notes = tuple(n for md in data for n in md.notes) + tuple(book_notes)
    return BookData(exchange=exchange, symbols=syms, data=data, bars=bars, notes=notes)


def _prefixed(exc: DataValidationError, symbol: str) -> DataValidationError:
    """The same error (file, column, timestamp kept) with its message prefixed by the symbol."""
    out = DataValidationError.__new__(DataValidationError)
    ValueError.__init__(out, f"{symbol}: {exc}")
    out.file, out.column, out.timestamp = exc.file, exc.column, exc.timestamp
    return out
