"""Clean failures for data files: timestamps stored as pandas datetimes or ISO
strings are converted (naive = UTC); a non-numeric price, a zero-row file, a dataset path that
is a folder or not Parquet give one error naming the file, the column and the fix; through
``backtest run`` they exit 2 with one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from backtest.data import DataValidationError, load_market_data
from sample_kit import EX, SYM, T0, H, sample_store

REPO = Path(__file__).resolve().parents[2]



def raw_write(path, df):
    """Write a file the way pandas or another tool would: whatever dtypes the frame has."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)


@pytest.fixture
def store(tmp_path):
    return sample_store(tmp_path)


@pytest.fixture
def reference(store):
    return load_market_data(EX, SYM, root=store.root)


def as_datetimes(df, tz):
    out = df.copy()
    out["timestamp"] = pd.to_datetime(out["timestamp"], unit="ms", utc=True)
    if tz is None:
        out["timestamp"] = out["timestamp"].dt.tz_localize(None)
    else:
        out["timestamp"] = out["timestamp"].dt.tz_convert(tz)
    return out


@pytest.mark.parametrize("kind, tf", [("ohlcv", "1h"), ("mark", "1h"), ("funding", None)])
@pytest.mark.parametrize("tz", [None, "UTC", "Asia/Tokyo"], ids=["naive", "utc", "tokyo"])
def test_datetime_timestamps_are_converted(store, reference, kind, tf, tz):
    path = store.path(EX, SYM, kind, tf)
    df = as_datetimes(store.read(EX, SYM, kind, tf), tz)
    raw_write(path, df)
    assert pq.read_schema(path).field("timestamp").type != pa.int64()
    md = load_market_data(EX, SYM, root=store.root)
    assert md.fingerprint == reference.fingerprint


@pytest.mark.parametrize("fmt", ["%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S+00:00"])
def test_iso_string_timestamps_are_converted(store, reference, fmt):
    path = store.path(EX, SYM, "ohlcv", "1h")
    df = store.read(EX, SYM, "ohlcv", "1h")
    df["timestamp"] = pd.to_datetime(df["timestamp"], unit="ms", utc=True).dt.strftime(fmt)
    raw_write(path, df)
    assert load_market_data(EX, SYM, root=store.root).fingerprint == reference.fingerprint


def test_a_gap_in_datetime_timestamps_names_the_right_year(store):
    # today the nanoseconds are read as milliseconds and the error message itself crashes
    path = store.path(EX, SYM, "ohlcv", "1h")
    df = as_datetimes(store.read(EX, SYM, "ohlcv", "1h"), None).drop(index=[5, 6]).reset_index(drop=True)
    raw_write(path, df)
    with pytest.raises(DataValidationError, match=r"first missing 2023-01-01T05:00\.\.2023-01-01T06:00") as ei:
        load_market_data(EX, SYM, root=store.root)
    assert ei.value.timestamp == T0 + 5 * H


@pytest.mark.parametrize("value, problem", [
    ("2023-02-30T00:00:00", "'2023-02-30T00:00:00' is not an ISO date/time"),
    ("yesterday", "'yesterday' is not an ISO date/time"),
])
def test_a_bad_timestamp_string_is_named(store, value, problem):
    path = store.path(EX, SYM, "ohlcv", "1h")
    df = store.read(EX, SYM, "ohlcv", "1h")
    df["timestamp"] = pd.to_datetime(df["timestamp"], unit="ms", utc=True).dt.strftime("%Y-%m-%dT%H:%M:%S")
    df.loc[7, "timestamp"] = value
    raw_write(path, df)
    with pytest.raises(DataValidationError) as ei:
        load_market_data(EX, SYM, root=store.root)
    assert ei.value.file == str(path) and ei.value.column == "timestamp"
    assert problem in str(ei.value) and "row 7" in str(ei.value)


@pytest.mark.parametrize("scale, unit", [(1 / 1000, "seconds"), (1000, "microseconds"), (1_000_000, "nanoseconds")])
def test_integer_timestamps_in_another_unit_are_refused(store, scale, unit):
    path = store.path(EX, SYM, "ohlcv", "1h")
    df = store.read(EX, SYM, "ohlcv", "1h")
    df["timestamp"] = (df["timestamp"] * scale).astype(np.int64)
    raw_write(path, df)
    with pytest.raises(DataValidationError, match=f"look like {unit}") as ei:
        load_market_data(EX, SYM, root=store.root)
    assert ei.value.file == str(path) and ei.value.column == "timestamp"


def test_sub_millisecond_datetimes_are_refused_not_truncated(store):
    path = store.path(EX, SYM, "funding")
    df = as_datetimes(store.read(EX, SYM, "funding"), "UTC")
    df.loc[2, "timestamp"] += pd.Timedelta(microseconds=250)
    raw_write(path, df)
    with pytest.raises(DataValidationError, match="not a whole number of milliseconds") as ei:
        load_market_data(EX, SYM, root=store.root)
    assert ei.value.file == str(path) and ei.value.timestamp == T0 + 16 * H


@pytest.mark.parametrize("kind, tf, col", [("ohlcv", "1h", "close"), ("mark", "1h", "high"),
                                           ("funding", None, "funding_rate")])
def test_a_non_numeric_string_is_named(store, kind, tf, col):
    path = store.path(EX, SYM, kind, tf)
    df = store.read(EX, SYM, kind, tf)
    df[col] = df[col].map(repr).astype(object)
    df.loc[4, col] = "12,5"
    raw_write(path, df)
    with pytest.raises(DataValidationError) as ei:
        load_market_data(EX, SYM, root=store.root)
    e = ei.value
    assert (e.file, e.column, e.timestamp) == (str(path), col, int(df.loc[4, "timestamp"]))
    assert "'12,5' is not a number" in str(e)


def test_numbers_stored_as_strings_load(store, reference):
    path = store.path(EX, SYM, "ohlcv", "1h")
    df = store.read(EX, SYM, "ohlcv", "1h")
    df["close"] = df["close"].map(repr)
    raw_write(path, df)
    assert load_market_data(EX, SYM, root=store.root).fingerprint == reference.fingerprint


@pytest.mark.parametrize("kind, tf", [("ohlcv", "1h"), ("mark", "1h"), ("funding", None)])
def test_a_zero_row_file_is_named(store, kind, tf):
    path = store.path(EX, SYM, kind, tf)
    raw_write(path, store.read(EX, SYM, kind, tf).iloc[:0])
    with pytest.raises(DataValidationError, match="the file has no rows") as ei:
        load_market_data(EX, SYM, root=store.root)
    assert ei.value.file == str(path)
    assert "backtest download -e binanceusdm -s BTC/USDT:USDT -k" in str(ei.value)


@pytest.mark.parametrize("kind, tf", [("ohlcv", "1h"), ("mark", "1h"), ("funding", None)])
def test_a_dataset_path_that_is_a_folder_is_named(store, kind, tf):
    path = store.path(EX, SYM, kind, tf)
    path.unlink()
    path.mkdir()
    with pytest.raises(DataValidationError, match="is a folder, not a Parquet file") as ei:
        load_market_data(EX, SYM, root=store.root)
    assert ei.value.file == str(path)


def test_a_file_that_is_not_parquet_is_named(store):
    path = store.path(EX, SYM, "mark", "1h")
    path.write_text("timestamp,open,high,low,close\n")
    with pytest.raises(DataValidationError, match="not a readable Parquet file") as ei:
        load_market_data(EX, SYM, root=store.root)
    assert ei.value.file == str(path)


# --- through the CLI: exit 2 and one line -------------------------------------------------------

TOML = """title = "t"
[data]
timeframe = "1h"
root = "{root}"
[[perp]]
name = "short"
"""


@pytest.mark.parametrize("breakage", ["datetime-gap", "non-numeric", "zero-rows", "folder"])
def test_the_cli_exits_2_with_one_line(store, tmp_path, breakage):
    path = store.path(EX, SYM, "ohlcv", "1h")
    df = store.read(EX, SYM, "ohlcv", "1h")
    if breakage == "datetime-gap":
        raw_write(path, as_datetimes(df, None).drop(index=[5]))
    elif breakage == "non-numeric":
        df["close"] = df["close"].map(repr).astype(object)
        df.loc[3, "close"] = "n/a"
        raw_write(path, df)
    elif breakage == "zero-rows":
        raw_write(path, df.iloc[:0])
    else:
        path.unlink()
        path.mkdir()
    cfg = tmp_path / "run.toml"
    cfg.write_text(TOML.format(root=store.root))
    out = tmp_path / "reports"
    env = {**os.environ, "BACKTEST_DATA_DIR": str(tmp_path / "empty")}
    res = subprocess.run([sys.executable, "-m", "backtest", "run", str(cfg), "-o", str(out), "-q"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: ")
    assert not out.exists() or not any(out.iterdir())


def test_datetimes_past_2262_are_named_not_a_pandas_overflow(store):
    # datetime64[ms] holds times pandas' nanosecond datetimes cannot (a unit mistake upstream)
    path = store.path(EX, SYM, "ohlcv", "1h")
    df = store.read(EX, SYM, "ohlcv", "1h")
    ms = df["timestamp"].to_numpy().copy()
    ms[3] = 10**13 * 1000  # year ~2286 in ms
    df["timestamp"] = ms.astype("datetime64[ms]")
    raw_write(path, df)
    with pytest.raises(DataValidationError, match="outside 1677..2262") as ei:
        load_market_data(EX, SYM, root=store.root)
    assert ei.value.file == str(path)


def test_an_extra_text_column_is_named_as_unexpected_not_as_a_bad_number(store):
    # files written by other tools often carry a symbol column
    path = store.path(EX, SYM, "ohlcv", "1h")
    df = store.read(EX, SYM, "ohlcv", "1h").assign(symbol="BTCUSDT")
    raw_write(path, df)
    with pytest.raises(Exception, match=r"unexpected column\(s\) \['symbol'\]") as ei:
        load_market_data(EX, SYM, root=store.root)
    assert str(path) in str(ei.value)
