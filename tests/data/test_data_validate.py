"""Each class of bad input is caught with an error naming the file, column and first bad time."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from backtest.data import DataValidationError, load_market_data
from sample_kit import EX, SYM, T0, H, sample, sample_store
from backtest.data.validate import check_candles, check_funding, find_gaps




def iso(ms):
    return pd.Timestamp(ms, unit="ms", tz="UTC").isoformat()


# --- unit checks --------------------------------------------------------------------------------

def _dup(df):
    df.loc[5, "timestamp"] = df.loc[4, "timestamp"]
    return df


def _back(df):
    df.loc[[5, 6], "timestamp"] = df.loc[[6, 5], "timestamp"].to_numpy()
    return df


def _offgrid(df):
    df.loc[5:, "timestamp"] += 30 * 60_000
    return df


def _gap(df):
    return df.drop(index=[5, 6, 7]).reset_index(drop=True)


def _set(row, col, value):
    def f(df):
        df.loc[row, col] = value
        return df
    return f


# name: (mutation, column, first bad time in hours after T0, problem)
CASES = {
    "duplicate": (_dup, "timestamp", 4, "duplicate timestamp"),
    "non-monotonic": (_back, "timestamp", 5, r"goes back in time \(previous row 2023-01-01T06:00"),
    "off-grid": (_offgrid, "timestamp", 5.5, "not a whole number of 60-min bars"),
    "gap": (_gap, "timestamp", 5, r"1 gap\(s\), 3 missing bar\(s\)"),
    "nan price": (_set(7, "close", np.nan), "close", 7, "missing or not positive"),
    "zero price": (_set(8, "open", 0.0), "open", 8, "missing or not positive"),
    "negative price": (_set(9, "low", -1.0), "low", 9, "missing or not positive"),
    "high < low": (lambda df: _set(10, "high", df.loc[10, "low"] - 1)(df), "high", 10, "high is below low"),
    "high < close": (lambda df: _set(11, "close", df.loc[11, "high"] + 1)(df), "high", 11,
                     "high is below open or close"),
    "low > open": (lambda df: _set(12, "open", df.loc[12, "low"] - 1)(df), "low", 12, "low is above open or close"),
    "negative volume": (_set(13, "volume", -5.0), "volume", 13, "negative volume"),
}


def test_sample_window_is_clean():
    assert check_candles(sample("ohlcv-1h.parquet"), file="f", bar_ms=H) == []


@pytest.mark.parametrize("name", list(CASES))
def test_candle_problem_is_named(name):
    mutate, column, hours, problem = CASES[name]
    df = sample("ohlcv-1h.parquet")
    ts_bad = int(T0 + hours * H)
    df = mutate(df)
    with pytest.raises(DataValidationError, match=problem) as ei:
        check_candles(df, file="/store/x/ohlcv-1h.parquet", bar_ms=H)
    e = ei.value
    assert (e.file, e.column, e.timestamp) == ("/store/x/ohlcv-1h.parquet", column, ts_bad)
    msg = str(e)
    assert msg.startswith(f"/store/x/ohlcv-1h.parquet: column '{column}': ") and iso(ts_bad) in msg


def test_gaps_are_notes_when_allowed():
    df = _gap(sample("ohlcv-1h.parquet"))
    notes = check_candles(df, file="f", bar_ms=H, allow_gaps=True)
    assert len(notes) == 1 and "3 missing bar(s)" in notes[0] and "2023-01-01T05:00" in notes[0]
    assert find_gaps(df["timestamp"].to_numpy(), H) == [(T0 + 5 * H, T0 + 7 * H)]


def test_funding_problems_are_named():
    f = sample("funding.parquet")
    bad = f.copy()
    bad.loc[2, "funding_rate"] = np.nan
    with pytest.raises(DataValidationError, match="'funding_rate': rate nan is missing at 2023-01-01T16:00"):
        check_funding(bad, file="funding.parquet")
    bad = f.copy()
    bad.loc[3, "timestamp"] = bad.loc[2, "timestamp"] + 400  # same print twice, jitter apart
    with pytest.raises(DataValidationError, match="duplicate timestamp"):
        check_funding(bad, file="funding.parquet")
    bad = f.copy()
    bad.loc[1, "interval_hours"] = 0.0
    with pytest.raises(DataValidationError, match="'interval_hours'.*not positive at 2023-01-01T08:00"):
        check_funding(bad, file="funding.parquet")


# --- through the loader, on store files ------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    return sample_store(tmp_path)


def raw_write(path, df):
    """Write a file the way an outside tool might: no sorting, no de-duplication."""
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)


def test_loader_reports_a_corrupt_file_by_path(store):
    path = store.path(EX, SYM, "ohlcv", "1h")
    raw_write(path, _dup(sample("ohlcv-1h.parquet")))
    with pytest.raises(DataValidationError) as ei:
        load_market_data(EX, SYM, root=store.root)
    assert ei.value.file == str(path) and ei.value.column == "timestamp" and ei.value.timestamp == T0 + 4 * H


def test_missing_mark_is_an_error_naming_the_range_and_the_option(store):
    mark = sample("mark-1h.parquet").drop(index=range(10, 14))
    store.write(mark, EX, SYM, "mark", "1h")
    with pytest.raises(DataValidationError, match=r"mark price missing for 4 bar\(s\): "
                                                  r"2023-01-01T10:00\.\.2023-01-01T13:00.*allow_mark_fallback=True"):
        load_market_data(EX, SYM, root=store.root)
    md = load_market_data(EX, SYM, root=store.root, allow_mark_fallback=True)
    assert any("mark missing 2023-01-01T10:00..2023-01-01T13:00: used trade prices (allow_mark_fallback=True)" in n
               for n in md.notes)
    f = md.frame
    hole = f.index[10:14]
    for c in ("open", "high", "low", "close"):
        assert (f.loc[hole, f"mark_{c}"] == f.loc[hole, c]).all()
        np.testing.assert_array_equal(f[f"mark_{c}"].to_numpy()[:10], sample("mark-1h.parquet")[c].to_numpy()[:10])


def test_missing_mark_file_is_an_error(store):
    store.path(EX, SYM, "mark", "1h").unlink()
    with pytest.raises(DataValidationError, match="mark price missing for 48 bar"):
        load_market_data(EX, SYM, root=store.root)


def test_gap_in_trade_candles(store):
    store.write(_gap(sample("ohlcv-1h.parquet")), EX, SYM, "ohlcv", "1h")
    with pytest.raises(DataValidationError, match="gap.*allow_gaps=True") as ei:
        load_market_data(EX, SYM, root=store.root)
    assert ei.value.timestamp == T0 + 5 * H
    md = load_market_data(EX, SYM, root=store.root, allow_gaps=True)
    assert md.n == 45 and any("3 missing bar(s)" in n for n in md.notes)


def test_funding_missing_or_short(store):
    store.write(sample("funding.parquet").iloc[:3], EX, SYM, "funding")  # prints up to 2023-01-01T16:00
    with pytest.raises(DataValidationError, match="funding ends at 2023-01-01T16:00.*bars run to") as ei:
        load_market_data(EX, SYM, root=store.root)
    assert ei.value.column == "funding_rate" and ei.value.timestamp == T0 + 24 * H
    md = load_market_data(EX, SYM, root=store.root, allow_missing_funding=True)
    assert md.frame["funding_rate"].notna().sum() == 3
    store.path(EX, SYM, "funding").unlink()
    with pytest.raises(DataValidationError, match="no funding file.*allow_missing_funding=True"):
        load_market_data(EX, SYM, root=store.root)


def test_funding_hole_is_a_note(store):
    store.write(sample("funding.parquet").drop(index=[2]), EX, SYM, "funding")
    md = load_market_data(EX, SYM, root=store.root)
    assert any("1 funding hole(s) longer than 1.5x the prints' own interval, between prints "
               "2023-01-01T08:00..2023-01-02T00:00" in n for n in md.notes)
    assert md.frame["funding_rate"].notna().sum() == 5
