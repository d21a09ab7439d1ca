"""load_book_data: several symbols loaded by the single-symbol loader and aligned into a book.

Later listings, short histories and holes are made by cutting the committed sample's files into
a temporary store with pandas; expected bars and prints are counted from those files.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backtest.data import SAMPLE_ROOT, BookData, DataValidationError, load_book_data, load_market_data

EX = "binanceusdm"
BTC, ETH, COIN = "BTC/USDT:USDT", "ETH/USDT:USDT", "BTC/USD:BTC"
DIRS = {BTC: "BTC_USDT_USDT", ETH: "ETH_USDT_USDT"}
FILES = ("ohlcv-1h.parquet", "mark-1h.parquet", "funding.parquet")
H = 3_600_000


def ms(when: str) -> int:
    return pd.Timestamp(when, tz="UTC").value // 1_000_000


def make_store(root: Path, cuts: dict[str, tuple[str, str]], drop: dict[str, list[str]] | None = None) -> Path:
    """Copy the sample's BTC and ETH files into ``root``, each cut to ``[start, end)`` and with the
    candles (trade and mark) at the ``drop`` times removed."""
    for sym, (start, end) in cuts.items():
        folder = root / EX / DIRS[sym]
        folder.mkdir(parents=True)
        gone = [ms(t) for t in (drop or {}).get(sym, [])]
        for name in FILES:
            df = pd.read_parquet(SAMPLE_ROOT / EX / DIRS[sym] / name)
            df = df[(df["timestamp"] >= ms(start)) & (df["timestamp"] < ms(end))]
            if name != "funding.parquet":
                df = df[~df["timestamp"].isin(gone)]
            df.reset_index(drop=True).to_parquet(folder / name, index=False)
    return root


def assert_same_data(a, b):
    """Two MarketData hold the same arrays (the fingerprint covers bars, columns and prints)."""
    assert a.fingerprint == b.fingerprint
    pd.testing.assert_frame_equal(a.frame, b.frame)
    pd.testing.assert_frame_equal(a.funding, b.funding)


def test_btc_eth_book_equals_the_single_symbol_loads():
    book = load_book_data(EX, [BTC, ETH], "1h", "2022-01-01", "2022-02-01", root=SAMPLE_ROOT)
    assert isinstance(book, BookData) and book.symbols == (BTC, ETH) and book.exchange == EX
    for sym in (BTC, ETH):
        alone = load_market_data(EX, sym, root=SAMPLE_ROOT, start="2022-01-01", end="2022-02-01")
        assert_same_data(book[sym], alone)
        assert book[sym].notes == tuple(f"{sym}: {n}" for n in alone.notes)
    assert book.bars.n == 31 * 24 and book.bars.first_bar.tolist() == [0, 0]
    assert book.bars.symbols == (BTC, ETH)
    np.testing.assert_array_equal(book.bars.prices("close")[:, 1], book[ETH].frame["close"].to_numpy())
    assert book.notes == book[BTC].notes + book[ETH].notes  # nothing to say about the book itself
    with pytest.raises(KeyError, match=re.escape("'SOL/USDT:USDT' is not in the book")):
        book["SOL/USDT:USDT"]
    # the fingerprint identifies the data and the book's order (run ids derive from it)
    again = load_book_data(EX, [BTC, ETH], "1h", "2022-01-01", "2022-02-01", root=SAMPLE_ROOT)
    swapped = load_book_data(EX, [ETH, BTC], "1h", "2022-01-01", "2022-02-01", root=SAMPLE_ROOT)
    shorter = load_book_data(EX, [BTC, ETH], "1h", "2022-01-01", "2022-01-31", root=SAMPLE_ROOT)
    assert again.fingerprint == book.fingerprint
    assert len({book.fingerprint, swapped.fingerprint, shorter.fingerprint}) == 3


def test_a_later_listing_starts_at_its_first_stored_bar(tmp_path):
    root = make_store(tmp_path, {BTC: ("2022-01-01", "2022-03-01"), ETH: ("2022-02-01", "2022-03-01")})
    for start in ("2022-01-01", None):
        book = load_book_data(EX, [BTC, ETH], "1h", start, "2022-03-01", root=root)
        assert book.bars.n == 59 * 24 and book.bars.first_bar.tolist() == [0, 31 * 24]
        assert (f"{ETH}: listed later: its first stored bar 2022-02-01T00:00:00+00:00 is after the book's start "
                "2022-01-01T00:00:00+00:00; flat and untradeable before it") in book.notes
        assert_same_data(book[ETH], load_market_data(EX, ETH, root=root, start="2022-02-01", end="2022-03-01"))
        assert not book.bars.listed[: 31 * 24, 1].any() and book.bars.listed[31 * 24:, 1].all()
    # a start before every symbol's data: the earliest symbol's own refusal, unless allowed
    with pytest.raises(DataValidationError, match=re.escape(f"{BTC}: ") + ".*reaches past the stored data"):
        load_book_data(EX, [BTC, ETH], "1h", "2021-12-01", "2022-03-01", root=root)
    book = load_book_data(EX, [BTC, ETH], "1h", "2021-12-01", "2022-03-01", root=root, allow_partial_range=True)
    assert book.bars.first_bar.tolist() == [0, 31 * 24]
    assert any(n.startswith(f"{BTC}: requested 2021-12-01") for n in book.notes)
    assert any(n.startswith(f"{ETH}: listed later: its first stored bar 2022-02-01T00:00:00+00:00 is after the "
                            "book's start 2022-01-01T00:00:00+00:00") for n in book.notes)
    # a symbol stored only from after the end has no bar in the book
    with pytest.raises(ValueError, match=re.escape(f"{ETH}: its stored bars start at 2022-02-01T00:00:00+00:00, "
                                                   "not before end 2022-01-15T00:00:00+00:00")):
        load_book_data(EX, [BTC, ETH], "1h", "2022-01-01", "2022-01-15", root=root)


def test_a_shorter_history_is_refused_unless_the_partial_range_is_allowed(tmp_path):
    root = make_store(tmp_path, {BTC: ("2022-01-01", "2022-03-01"), ETH: ("2022-01-01", "2022-02-20")})
    # with an end: the single-symbol loader's refusal, prefixed with the symbol
    with pytest.raises(DataValidationError, match=re.escape(f"{ETH}: ") + ".*reaches past the stored data"):
        load_book_data(EX, [BTC, ETH], "1h", "2022-01-01", "2022-03-01", root=root)
    # without one: the book's refusal, naming each end
    with pytest.raises(DataValidationError, match=re.escape(
            f"the symbols' bars end at different times ({BTC} 2022-03-01T00:00:00+00:00, {ETH} "
            f"2022-02-20T00:00:00+00:00): {ETH} ends first") + ".*allow_partial_range=True"):
        load_book_data(EX, [BTC, ETH], "1h", "2022-01-01", root=root)
    for end in ("2022-03-01", None):
        book = load_book_data(EX, [BTC, ETH], "1h", "2022-01-01", end, root=root, allow_partial_range=True)
        assert book.bars.n == (31 + 19) * 24
        assert_same_data(book[BTC], load_market_data(EX, BTC, root=root, start="2022-01-01", end="2022-02-20"))
        assert any(n.startswith("the symbols' bars end at different times") and
                   n.endswith("every symbol cut to the common end 2022-02-20T00:00:00+00:00 "
                              "(allow_partial_range=True)") for n in book.notes)


def test_holes_are_refused_or_dropped_from_every_symbol(tmp_path):
    # ETH lacks 2022-01-10 08:00 (a funding print's bar), BTC lacks 2022-01-15 03:00
    root = make_store(tmp_path, {BTC: ("2022-01-01", "2022-02-01"), ETH: ("2022-01-01", "2022-02-01")},
                      drop={ETH: ["2022-01-10T08:00"], BTC: ["2022-01-15T03:00"]})
    with pytest.raises(DataValidationError, match=re.escape(f"{BTC}: ") + ".*1 gap.*allow_gaps=True"):
        load_book_data(EX, [BTC, ETH], "1h", root=root)
    book = load_book_data(EX, [BTC, ETH], "1h", root=root, allow_gaps=True)
    hours = pd.date_range("2022-01-01", "2022-02-01", freq="1h", tz="UTC", inclusive="left").as_unit("ms").asi8
    want = hours[~np.isin(hours, [ms("2022-01-10T08:00"), ms("2022-01-15T03:00")])]
    np.testing.assert_array_equal(book.bars.timestamp, want)
    for md in book.data:
        np.testing.assert_array_equal(md.timestamps, want)
    assert ("2 bar(s) missing in some listed symbol were dropped from every symbol (allow_gaps=True; no price is "
            "invented): 2022-01-10T08:00, 2022-01-15T03:00") in book.notes
    assert f"{BTC}: 1 bar(s) dropped as missing in another symbol; 1 funding print(s) in them are not paid" \
        in book.notes
    assert f"{ETH}: 1 bar(s) dropped as missing in another symbol" in book.notes
    # 31 days x 3 prints, less the one at 2022-01-10 08:00 (in a dropped bar) for both symbols
    for k in range(2):
        assert book.bars.legs[k].fe_bar.shape == (31 * 3 - 1,)
        assert ms("2022-01-10T08:00") not in book.bars.legs[k].fe_time
    assert f"{ETH}: 1 funding print(s) fall in missing bars and are not in the frame" in book.notes


def test_coin_margined_book_of_one_runs_offline_with_its_notes():
    with pytest.raises(DataValidationError, match=re.escape(f"{COIN}: ") + ".*10 gap"):
        load_book_data("binancecoinm", [COIN], root=SAMPLE_ROOT)
    with pytest.raises(DataValidationError, match=re.escape(f"{COIN}: ") + ".*mark price missing.*allow_mark_fallback"):
        load_book_data("binancecoinm", [COIN], root=SAMPLE_ROOT, allow_gaps=True)
    book = load_book_data("binancecoinm", [COIN], root=SAMPLE_ROOT, allow_gaps=True, allow_mark_fallback=True)
    assert book.bars.n == 8029 and book.bars.first_bar.tolist() == [0]
    notes = "\n".join(book.notes)
    assert "10 missing bar(s) in 10 gap(s)" in notes
    assert "mark missing 2021-07-01T01:00..2022-05-31T23:00: used trade prices (allow_mark_fallback=True)" in notes
    assert "10 funding print(s) fall in missing bars and are not in the frame" in notes
    leg = book.bars.legs[0]
    np.testing.assert_array_equal(leg.mark_close, leg.close)


def test_iv_is_loaded_for_the_symbols_that_ask_for_it():
    book = load_book_data(EX, [BTC, ETH], "1h", "2022-01-01", "2022-01-08", root=SAMPLE_ROOT,
                          iv={BTC: ("deribit", "BTC-DVOL")})
    assert "iv" in book[BTC].frame.columns and "iv" not in book[ETH].frame.columns
    with pytest.raises(ValueError, match=re.escape("iv is given for ['SOL/USDT:USDT'], which are not in the book")):
        load_book_data(EX, [BTC], root=SAMPLE_ROOT, iv={"SOL/USDT:USDT": ("deribit", "BTC-DVOL")})


@pytest.mark.parametrize("symbols, kw, error, message", [
    ([], {}, ValueError, "a book needs at least one instrument"),
    ([BTC, BTC], {}, ValueError, f"symbols ['{BTC}'] appear more than once in the book; list each once"),
    (BTC, {}, ValueError, f"symbols='{BTC}' is one string; give a list of symbols"),
    ([BTC], {"start": "2022-02-01", "end": "2022-01-01"}, ValueError,
     "end 2022-01-01T00:00:00+00:00 is not after start 2022-02-01T00:00:00+00:00"),
    ([BTC, "SOL/USDT:USDT"], {}, FileNotFoundError, "no binanceusdm SOL/USDT:USDT candles usable for timeframe 1h"),
], ids=["empty", "duplicate", "one-string", "empty-range", "unknown-symbol"])
def test_bad_arguments(symbols, kw, error, message):
    with pytest.raises(error, match=re.escape(message)):
        load_book_data(EX, symbols, "1h", root=SAMPLE_ROOT, **kw)
