"""Store layout, schema, merges and atomic writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backtest.data.store import (
    SAMPLE_ROOT, Store, StoreError, StoreWriteError, check_writable, default_root, merge_rows,
    remove_empty_folders, symbol_dir,
)


def candles(ts, base=100.0):
    ts = np.asarray(ts, dtype=np.int64)
    px = base + np.arange(ts.size, dtype=float)
    return pd.DataFrame({"timestamp": ts, "open": px, "high": px + 1, "low": px - 1, "close": px + 0.5,
                         "volume": np.ones(ts.size)})


@pytest.mark.parametrize("symbol, folder", [
    ("BTC/USDT:USDT", "BTC_USDT_USDT"), ("BTC/USD:BTC", "BTC_USD_BTC"), ("ETH/USDT", "ETH_USDT"),
    ("BTC-DVOL", "BTC-DVOL"),
])
def test_symbol_dir(symbol, folder):
    assert symbol_dir(symbol) == folder


def test_paths_follow_the_layout(tmp_path):
    s = Store(tmp_path)
    d = tmp_path / "binanceusdm" / "BTC_USDT_USDT"
    assert s.path("binanceusdm", "BTC/USDT:USDT", "ohlcv", "1h") == d / "ohlcv-1h.parquet"
    assert s.path("binanceusdm", "BTC/USDT:USDT", "mark", "4h") == d / "mark-4h.parquet"
    assert s.path("binancecoinm", "BTC/USD:BTC", "index", "1d") == \
        tmp_path / "binancecoinm" / "BTC_USD_BTC" / "index-1d.parquet"
    assert s.path("binanceusdm", "BTC/USDT:USDT", "funding") == d / "funding.parquet"
    assert s.markets_path("okx") == tmp_path / "markets" / "okx.json"


@pytest.mark.parametrize("args", [
    ("binanceusdm", "BTC/USDT:USDT", "trades", "1h"),
    ("binanceusdm", "BTC/USDT:USDT", "ohlcv", None),
    ("binanceusdm", "BTC/USDT:USDT", "funding", "8h"),
    ("binanceusdm", "BTC/USDT:USDT", "ohlcv", "1hour"),
    ("../etc", "BTC/USDT:USDT", "ohlcv", "1h"),
    ("binanceusdm", "..", "ohlcv", "1h"),
])
def test_bad_paths_are_refused(tmp_path, args):
    with pytest.raises((StoreError, ValueError)):
        Store(tmp_path).path(*args)


REPO = Path(__file__).resolve().parents[2]


def test_default_root_honours_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKTEST_DATA_DIR", str(tmp_path))
    assert default_root() == tmp_path and Store().root == tmp_path
    monkeypatch.delenv("BACKTEST_DATA_DIR")
    # a source checkout keeps its own data/ whatever the working directory (an installed
    # package uses ./data instead: tests/test_install.py)
    monkeypatch.chdir(tmp_path)
    assert default_root() == REPO / "data"


def test_the_sample_is_package_data_and_the_checkout_links_to_it():
    """The sample lives inside the package (so a wheel carries it); data/sample in the checkout
    is the same folder."""
    assert SAMPLE_ROOT == REPO / "backtest" / "data" / "sample"
    assert (SAMPLE_ROOT / "binanceusdm" / "BTC_USDT_USDT" / "ohlcv-1h.parquet").is_file()
    assert (REPO / "data" / "sample").resolve() == SAMPLE_ROOT
    assert {str(d.path.relative_to(SAMPLE_ROOT)) for d in Store(SAMPLE_ROOT).datasets()} == {
        f"binanceusdm/{s}_USDT_USDT/{f}.parquet" for s in ("BTC", "ETH") for f in ("ohlcv-1h", "mark-1h", "funding")
    } | {"deribit/BTC-DVOL/index-1h.parquet", "binancecoinm/BTC_USD_BTC/ohlcv-1h.parquet",
         "binancecoinm/BTC_USD_BTC/funding.parquet"}


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_get_the_mode_of_a_plain_open(tmp_path, umask):
    old = os.umask(umask)
    try:
        s = Store(tmp_path)
        paths = [s.write(candles([0, 3_600_000]), "binanceusdm", "BTC/USDT:USDT", "ohlcv", "1h"),
                 s.write_markets("binanceusdm", {"markets": {}})]
        with open(tmp_path / "plain.txt", "w") as fh:
            fh.write("x")
    finally:
        os.umask(old)
    want = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert want == 0o666 & ~umask
    for p in paths:
        assert stat.S_IMODE(p.stat().st_mode) == want, p
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == \
        ["binanceusdm.json", "ohlcv-1h.parquet", "plain.txt"]  # no temporary file left


def test_a_file_in_the_way_of_the_store_is_named_with_the_fix(tmp_path):
    blocker = tmp_path / "data"
    blocker.write_text("x")
    with pytest.raises(StoreWriteError) as err:
        check_writable(blocker / "store")
    assert err.value.setting and str(blocker / "store") in str(err.value) and "--data-dir" in str(err.value)
    with pytest.raises(StoreWriteError) as err:
        Store(blocker).write(candles([0]), "binanceusdm", "BTC/USDT:USDT", "ohlcv", "1h")
    assert err.value.setting and "a file is in the way" in str(err.value)
    created = check_writable(tmp_path / "new" / "store")
    assert created == [tmp_path / "new" / "store", tmp_path / "new"]
    assert list((tmp_path / "new" / "store").iterdir()) == []  # the probe file is gone
    remove_empty_folders(created)
    assert not (tmp_path / "new").exists()


def test_write_stores_schema_and_symbol_metadata(tmp_path):
    s = Store(tmp_path)
    df = candles([3_600_000 * 2, 3_600_000 * 1])
    df["timestamp"] = df["timestamp"].astype("int32")  # coerced to int64
    path = s.write(df, "binanceusdm", "BTC/USDT:USDT", "ohlcv", "1h")
    table = pq.read_table(path)
    assert [f.name for f in table.schema] == ["timestamp", "open", "high", "low", "close", "volume"]
    assert str(table.schema.field("timestamp").type) == "int64"
    assert all(str(table.schema.field(c).type) == "double" for c in ["open", "high", "low", "close", "volume"])
    md = table.schema.metadata
    assert md[b"symbol"] == b"BTC/USDT:USDT" and md[b"exchange"] == b"binanceusdm"
    assert md[b"kind"] == b"ohlcv" and md[b"timeframe"] == b"1h"
    assert table.column("timestamp").to_pylist() == [3_600_000, 7_200_000]  # sorted on write


def test_schema_errors_name_the_column(tmp_path):
    s = Store(tmp_path)
    with pytest.raises(StoreError, match="missing column.*volume"):
        s.write(candles([0]).drop(columns="volume"), "binanceusdm", "BTC/USDT:USDT", "ohlcv", "1h")
    with pytest.raises(StoreError, match="unexpected column.*oi"):
        s.write(candles([0]).assign(oi=1.0), "binanceusdm", "BTC/USDT:USDT", "ohlcv", "1h")
    # mark candles may omit volume; funding gets NaN interval/mark when absent
    s.write(candles([0]).drop(columns="volume"), "binanceusdm", "BTC/USDT:USDT", "mark", "1h")
    s.write(pd.DataFrame({"timestamp": [8], "funding_rate": [1e-4]}), "binanceusdm", "BTC/USDT:USDT", "funding")
    f = s.read("binanceusdm", "BTC/USDT:USDT", "funding")
    assert list(f.columns) == ["timestamp", "funding_rate", "interval_hours", "mark_price"]
    assert np.isnan(f["mark_price"].iloc[0]) and np.isnan(f["interval_hours"].iloc[0])


def test_append_dedups_sorts_and_new_rows_win(tmp_path):
    s = Store(tmp_path)
    h = 3_600_000
    s.append(candles([0, h, 2 * h], base=100), "x", "A/B", "ohlcv", "1h", meta={"covered_to": 3 * h})
    s.append(candles([4 * h, 2 * h, 3 * h], base=200), "x", "A/B", "ohlcv", "1h")
    out = s.read("x", "A/B", "ohlcv", "1h")
    assert out["timestamp"].tolist() == [0, h, 2 * h, 3 * h, 4 * h]
    # the re-sent 2h row replaced the stored one (it is the 2nd row of the second batch: 201)
    assert out["open"].tolist() == [100, 101, 201, 202, 200]
    assert s.meta("x", "A/B", "ohlcv", "1h")["covered_to"] == str(3 * h)  # kept across appends


def test_sample_is_a_store():
    s = Store(SAMPLE_ROOT)
    assert s.timeframes("binanceusdm", "BTC/USDT:USDT", "ohlcv") == ["1h"]
    df = s.read("binanceusdm", "ETH/USDT:USDT", "ohlcv", "1h")
    assert len(df) == 26280 and df["timestamp"].iloc[0] == 1609459200000
    assert s.read("deribit", "BTC-DVOL", "index", "1h")["close"].iloc[0] == 84.88
    kinds = {(d.symbol, d.kind) for d in s.datasets()}
    assert ("BTC_USDT_USDT", "funding") in kinds and ("BTC-DVOL", "index") in kinds


def test_missing_dataset_names_the_download_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="backtest download -e okx -s BTC/USDT:USDT -k ohlcv -t 1h"):
        Store(tmp_path).read("okx", "BTC/USDT:USDT", "ohlcv", "1h")


# --- atomic writes --------------------------------------------------------------------------


def _crash(*_a, **_k):
    raise OSError("simulated crash")


@pytest.mark.parametrize("where", ["replace", "write_table", "fsync"])
def test_a_crash_mid_write_leaves_the_old_file_intact(tmp_path, monkeypatch, where):
    s = Store(tmp_path)
    path = s.write(candles([0, 3_600_000]), "x", "A/B", "ohlcv", "1h")
    before = path.read_bytes()
    if where == "replace":
        monkeypatch.setattr(os, "replace", _crash)
    elif where == "fsync":
        monkeypatch.setattr(os, "fsync", _crash)
    else:
        import backtest.data.store as store_mod

        real = store_mod.pq.write_table

        def half_then_crash(table, where_, **kw):
            real(table.slice(0, 1), where_, **kw)  # a partial file reaches the disk
            raise OSError("simulated crash")

        monkeypatch.setattr(store_mod.pq, "write_table", half_then_crash)
    with pytest.raises(OSError, match="simulated crash"):
        s.append(candles([7_200_000], base=500), "x", "A/B", "ohlcv", "1h")
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert s.read("x", "A/B", "ohlcv", "1h")["timestamp"].tolist() == [0, 3_600_000]
    assert sorted(p.name for p in path.parent.iterdir()) == ["ohlcv-1h.parquet"]  # no temp file left


def test_markets_json_is_written_atomically(tmp_path, monkeypatch):
    s = Store(tmp_path)
    s.write_markets("x", {"exchange": "x", "markets": {}})
    monkeypatch.setattr(os, "replace", _crash)
    with pytest.raises(OSError):
        s.write_markets("x", {"exchange": "x", "markets": {"A/B": {}}})
    monkeypatch.undo()
    assert s.read_markets("x") == {"exchange": "x", "markets": {}}


@settings(max_examples=200, deadline=None)
@given(old=st.lists(st.integers(0, 40), max_size=15), new=st.lists(st.integers(0, 40), max_size=15))
def test_merge_equals_the_obvious_union(old, new):
    def frame(ts, tag):
        ts = np.array(sorted(set(ts)), dtype=np.int64)
        return pd.DataFrame({"timestamp": ts, "open": ts + tag, "high": ts + tag, "low": ts + tag,
                             "close": ts + tag, "volume": np.full(ts.size, float(tag))})
    a, b = frame(old, 0.25), frame(new, 0.5)
    got = merge_rows(a, b)
    ref = {int(t): 0.25 for t in a["timestamp"]} | {int(t): 0.5 for t in b["timestamp"]}  # new wins
    assert got["timestamp"].tolist() == sorted(ref)
    assert got["volume"].tolist() == [ref[t] for t in sorted(ref)]
