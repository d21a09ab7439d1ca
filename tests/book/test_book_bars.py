"""BookBars: several instruments' bars on one index (later listings, holes, refusals).

Expected values come from the committed sample's Parquet files read directly with pandas, and
from hourly calendars built with ``pd.date_range``, not from the code under test.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from backtest.book import BookBars
from backtest.data import SAMPLE_ROOT, load_market_data
from backtest.engine.bars import EngineInputError, PerpBars

H = 3_600_000
BTC, ETH, COIN = "BTC/USDT:USDT", "ETH/USDT:USDT", "BTC/USD:BTC"
USDM = SAMPLE_ROOT / "binanceusdm"
FE = ("fe_bar", "fe_time", "fe_at_open", "fe_rate", "fe_mark")


def ms(when: str) -> int:
    return pd.Timestamp(when, tz="UTC").value // 1_000_000


def sample_file(sym_dir: str, name: str, start: str, end: str) -> pd.DataFrame:
    df = pd.read_parquet(USDM / sym_dir / name)
    return df[(df["timestamp"] >= ms(start)) & (df["timestamp"] < ms(end))].reset_index(drop=True)


@pytest.fixture(scope="module")
def book():
    """BTC from 2022-01-01, ETH loaded from 2022-02-01 (a later listing), both to 2022-03-01."""
    btc = load_market_data("binanceusdm", BTC, root=SAMPLE_ROOT, start="2022-01-01", end="2022-03-01")
    eth = load_market_data("binanceusdm", ETH, root=SAMPLE_ROOT, start="2022-02-01", end="2022-03-01")
    return BookBars.from_legs([BTC, ETH], [btc.to_perp_bars(), eth.to_perp_bars()])


def test_later_listing_is_aligned_on_the_book_index(book):
    hours = pd.date_range("2022-01-01", "2022-03-01", freq="1h", tz="UTC", inclusive="left")
    assert book.n == len(hours) == (31 + 28) * 24
    np.testing.assert_array_equal(book.timestamp, hours.as_unit("ms").asi8)
    assert book.bar_ms == H and book.k == 2 and book.symbols == (BTC, ETH)
    assert book.first_bar.tolist() == [0, 31 * 24]
    np.testing.assert_array_equal(book.legs[1].timestamp, book.timestamp[31 * 24:])
    assert book.index[31 * 24] == pd.Timestamp("2022-02-01", tz="UTC")


def test_prices_match_the_sample_files_and_are_nan_before_listing(book):
    btc = sample_file("BTC_USDT_USDT", "ohlcv-1h.parquet", "2022-01-01", "2022-03-01")
    eth = sample_file("ETH_USDT_USDT", "ohlcv-1h.parquet", "2022-02-01", "2022-03-01")
    eth_mark = sample_file("ETH_USDT_USDT", "mark-1h.parquet", "2022-02-01", "2022-03-01")
    close, mark_high = book.prices("close"), book.prices("mark_high")
    assert close.shape == mark_high.shape == (book.n, 2)
    np.testing.assert_array_equal(close[:, 0], btc["close"].to_numpy())
    assert np.isnan(close[: 31 * 24, 1]).all() and np.isnan(mark_high[: 31 * 24, 1]).all()
    np.testing.assert_array_equal(close[31 * 24:, 1], eth["close"].to_numpy())
    np.testing.assert_array_equal(mark_high[31 * 24:, 1], eth_mark["high"].to_numpy())
    with pytest.raises(EngineInputError, match=r"unknown price field 'vwap'; one of \['open'"):
        book.prices("vwap")


def test_listed_mask(book):
    listed = book.listed
    assert listed.shape == (book.n, 2) and listed.dtype == bool
    assert listed[:, 0].all()
    assert not listed[: 31 * 24, 1].any() and listed[31 * 24:, 1].all()
    assert not listed.flags.writeable  # cached and shared: a caller cannot change the listing


def test_each_legs_funding_is_the_single_instrument_funding(book):
    for k, (sym, start) in enumerate([(BTC, "2022-01-01"), (ETH, "2022-02-01")]):
        alone = load_market_data("binanceusdm", sym, root=SAMPLE_ROOT, start=start, end="2022-03-01").to_perp_bars()
        for f in FE:
            np.testing.assert_array_equal(getattr(book.legs[k], f), getattr(alone, f), err_msg=f"{sym} {f}")
    # on the book's index: every print of the file in the range sits at its own bar's open
    eth_prints = sample_file("ETH_USDT_USDT", "funding.parquet", "2022-02-01", "2022-03-01")["timestamp"]
    assert len(eth_prints) == 28 * 3
    np.testing.assert_array_equal(book.timestamp[book.funding_bar(1)], eth_prints.to_numpy())
    assert book.funding_bar(1)[0] == 31 * 24  # 2022-02-01 00:00, ETH's first bar
    btc_prints = sample_file("BTC_USDT_USDT", "funding.parquet", "2022-01-01", "2022-03-01")["timestamp"]
    np.testing.assert_array_equal(book.timestamp[book.funding_bar(0)], btc_prints.to_numpy())


def test_a_book_of_one_gapped_instrument_keeps_its_gaps():
    """COIN-M BTCUSD_PERP misses ten hours: the book of it alone has the leg's own bars (as the
    single-instrument engine runs them), not an hourly calendar."""
    md = load_market_data("binancecoinm", COIN, root=SAMPLE_ROOT, allow_gaps=True, allow_mark_fallback=True)
    leg = md.to_perp_bars()
    book = BookBars.from_legs([COIN], [leg])
    stored = pd.read_parquet(SAMPLE_ROOT / "binancecoinm" / "BTC_USD_BTC" / "ohlcv-1h.parquet")["timestamp"]
    np.testing.assert_array_equal(book.timestamp, stored.to_numpy())
    assert book.n == 8029 and book.first_bar.tolist() == [0]
    assert int((np.diff(book.timestamp) == 2 * H).sum()) == 10


# --- small synthetic legs for the refusals ------------------------------------------------------

T0 = ms("2024-01-01")


def leg(hours, bar_ms: int = H, phase: int = 0) -> PerpBars:
    """A leg with bars opening at ``T0 + h * bar_ms + phase`` for each h in ``hours``."""
    hours = np.asarray(list(hours))
    ts = T0 + hours * bar_ms + phase
    p = 100.0 + hours
    return PerpBars.from_arrays(ts, p, p + 1, p - 1, p, bar_ms=bar_ms)


def test_a_gap_common_to_every_listed_instrument_is_kept_as_a_gap():
    hours = [0, 1, 2, 4, 5]  # hour 3 missing in both (an exchange-wide outage)
    book = BookBars.from_legs(["A", "B"], [leg(hours), leg(hours[1:])])
    np.testing.assert_array_equal(book.timestamp, T0 + np.array(hours) * H)
    assert book.first_bar.tolist() == [0, 1]


def test_a_later_listing_after_a_gap_of_the_others():
    book = BookBars.from_legs(["A", "B"], [leg([0, 1, 3, 4, 5]), leg([3, 4, 5])])
    assert book.timestamp.tolist() == (T0 + np.array([0, 1, 3, 4, 5]) * H).tolist()
    assert book.first_bar.tolist() == [0, 2]
    np.testing.assert_array_equal(book.prices("open")[:, 1], [np.nan, np.nan, 103.0, 104.0, 105.0])
    # the listing bar itself missing in A (which is listed then) is a hole in A
    with pytest.raises(EngineInputError, match=r"A has no bar at 2024-01-01T03:00:00\+00:00 \(book bar 2, 1 such"):
        BookBars.from_legs(["A", "B"], [leg([0, 1, 4, 5]), leg([3, 4, 5])])


@pytest.mark.parametrize("symbols, legs, message", [
    ([], [], "a book needs at least one instrument"),
    (["A", "B"], [leg(range(4))], "2 symbols for 1 instruments; give one symbol each"),
    (["A"], [leg(range(4)), leg(range(4))], "1 symbols for 2 instruments; give one symbol each"),
    (["A", "B", "A"], [leg(range(4))] * 3, "symbols ['A'] appear more than once in the book; list each once"),
    (["A", ""], [leg(range(4))] * 2, "symbol '' is not a non-empty string"),
    (["A", None], [leg(range(4))] * 2, "symbol None is not a non-empty string"),
    ("AB", [leg(range(4))] * 2, "symbols='AB' is one string; give a list of symbols"),
    (["A", "B"], [leg(range(4)), "bars"], "B: the instrument is a str, not PerpBars"),
    (["A", "B"], [leg(range(8)), leg(range(2), bar_ms=4 * H)],
     "the instruments have different bar sizes {'A': 3600000, 'B': 14400000} ms; load every symbol with the "
     "same timeframe"),
    (["A", "B"], [leg(range(6)), leg(range(5))],
     "the instruments end at different bars {'A': '2024-01-01T05:00:00+00:00', 'B': '2024-01-01T04:00:00+00:00'}; "
     "load them with the same end"),
    (["A", "B"], [leg(range(6)), leg(range(6), phase=H // 2)],
     "the instruments' bars open at different offsets within the 3600000 ms bar"),
    (["A", "B"], [leg(range(6)), leg([0, 1, 3, 4, 5])],
     "B has no bar at 2024-01-01T02:00:00+00:00 (book bar 2, 1 such bar(s) after its first bar "
     "2024-01-01T00:00:00+00:00), which A has: a hole inside its history; complete the data, or load the book "
     "with load_book_data(..., allow_gaps=True)"),
    (["A", "B", "C"], [leg(range(6)), leg([0, 2, 3, 5]), leg(range(6))],
     "B has no bar at 2024-01-01T01:00:00+00:00 (book bar 1, 2 such bar(s) after its first bar "
     "2024-01-01T00:00:00+00:00), which A, C has"),
], ids=["empty", "fewer-legs", "fewer-symbols", "duplicate", "empty-name", "none-name", "one-string", "not-bars",
        "bar-sizes", "ends", "phase", "hole", "holes-named"])
def test_refusals_name_the_value_and_the_fix(symbols, legs, message):
    with pytest.raises(EngineInputError, match=re.escape(message)):
        BookBars.from_legs(symbols, legs)


def test_a_bar_off_the_grid_is_refused():
    a = PerpBars.from_arrays(T0 + np.array([0, H, 2 * H + 60_000]), [1.0] * 3, [1.0] * 3, [1.0] * 3, [1.0] * 3,
                             bar_ms=H)
    with pytest.raises(EngineInputError, match=r"bar 2024-01-01T02:01:00\+00:00 is not a whole number of 3600000 ms"):
        BookBars.from_legs(["A"], [a])


# --- property: any set of listings over a common calendar (with common gaps) ----------------------


@st.composite
def listings(draw):
    """A calendar of bar hours (gaps allowed, common to every instrument), K = 1..4 instruments
    each listed from one of its bars, and optionally one instrument's bar removed (a hole)."""
    hours = sorted(draw(st.sets(st.integers(0, 40), min_size=2, max_size=25)))
    k = draw(st.integers(1, 4))
    firsts = [draw(st.integers(0, len(hours) - 1)) for _ in range(k)]
    hole = draw(st.none() | st.tuples(st.integers(0, k - 1), st.integers(0, len(hours) - 1)))
    return hours, firsts, hole


@given(listings())
def test_alignment_property(case):
    hours, firsts, hole = case
    own = [hours[f:] for f in firsts]
    holed = None
    if hole is not None:
        j, i = hole
        # removing a bar after the leg's first and before its last, which another listed leg has
        if firsts[j] < i < len(hours) - 1 and any(f <= i for m, f in enumerate(firsts) if m != j):
            own[j] = [h for h in own[j] if h != hours[i]]
            holed = (j, hours[i])
    names = [f"S{m}" for m in range(len(own))]
    legs = [leg(h) for h in own]
    if holed is not None:
        when = pd.Timestamp(T0 + holed[1] * H, unit="ms", tz="UTC").isoformat()
        with pytest.raises(EngineInputError, match=re.escape(f"S{holed[0]} has no bar at {when} ")):
            BookBars.from_legs(names, legs)
        return
    book = BookBars.from_legs(names, legs)
    start = min(firsts)
    np.testing.assert_array_equal(book.timestamp, T0 + np.array(hours[start:]) * H)
    assert book.first_bar.tolist() == [f - start for f in firsts]
    opens = book.prices("open")
    for m, f in enumerate(firsts):
        b = f - start
        assert np.isnan(opens[:b, m]).all()
        np.testing.assert_array_equal(opens[b:, m], 100.0 + np.array(hours[f:]))
        assert not book.listed[:b, m].any() and book.listed[b:, m].all()
