"""load_market_data on the committed sample and on small hand-made stores, checked against
direct pandas computations on the sample files."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from backtest.data import MarketData, Store, load_market_data
from backtest.data.store import SAMPLE_ROOT

EX, SYM = "binanceusdm", "BTC/USDT:USDT"
SDIR = SAMPLE_ROOT / "binanceusdm" / "BTC_USDT_USDT"
H = 3_600_000
COLUMNS = ["open", "high", "low", "close", "volume", "mark_open", "mark_high", "mark_low", "mark_close",
           "funding_rate", "funding_interval_hours"]


@pytest.fixture(scope="module")
def md():
    return load_market_data(EX, SYM, root=SAMPLE_ROOT, iv=("deribit", "BTC-DVOL"))


def test_frame_layout_and_values_equal_the_sample_files(md):
    f = md.frame
    assert list(f.columns) == COLUMNS + ["iv"]
    assert f.index.name == "time" and str(f.index.tz) == "UTC" and md.n == 26280
    assert f.index[0] == pd.Timestamp("2021-01-01", tz="UTC")
    assert f.index[-1] == pd.Timestamp("2023-12-31 23:00", tz="UTC")
    trade = pd.read_parquet(SDIR / "ohlcv-1h.parquet")
    mark = pd.read_parquet(SDIR / "mark-1h.parquet")
    np.testing.assert_array_equal(md.timestamps, trade["timestamp"].to_numpy())
    for c in ("open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(f[c].to_numpy(), trade[c].to_numpy())
    for c in ("open", "high", "low", "close"):
        np.testing.assert_array_equal(f[f"mark_{c}"].to_numpy(), mark[c].to_numpy())
    assert (md.exchange, md.symbol, md.timeframe, md.bar_ms) == (EX, SYM, "1h", H)
    assert md.source == str(SDIR)


def test_funding_lands_on_the_bar_of_its_print(md):
    fund = pd.read_parquet(SDIR / "funding.parquet")
    f = md.frame
    at = pd.to_datetime(fund["timestamp"], unit="ms", utc=True)
    np.testing.assert_array_equal(f.loc[at, "funding_rate"].to_numpy(), fund["funding_rate"].to_numpy())
    np.testing.assert_array_equal(f.loc[at, "funding_interval_hours"].to_numpy(), 8.0)
    assert f["funding_rate"].notna().sum() == len(fund) == 3285
    # the 2022-11-10 00:00 print, -0.1192 % (FTX week), is where the upstream notes put it
    assert f.loc["2022-11-10 00:00", "funding_rate"] == pytest.approx(-0.001192, abs=5e-7)
    pd.testing.assert_frame_equal(md.funding, fund[["timestamp", "funding_rate", "interval_hours", "mark_price"]])


def test_jittered_prints_round_to_the_second(tmp_path):
    s = Store(tmp_path)
    trade = pd.read_parquet(SDIR / "ohlcv-1h.parquet").iloc[:24]
    t0 = int(trade["timestamp"].iloc[0])
    s.write(trade, EX, SYM, "ohlcv", "1h")
    s.write(pd.read_parquet(SDIR / "mark-1h.parquet").iloc[:24], EX, SYM, "mark", "1h")
    raw = np.array([t0 + 2, t0 + 8 * H - 1, t0 + 16 * H + 499, t0 + 24 * H - 1])
    s.write(pd.DataFrame({"timestamp": raw, "funding_rate": [1e-4, 2e-4, 3e-4, 4e-4],
                          "interval_hours": 8.0, "mark_price": np.nan}), EX, SYM, "funding")
    md = load_market_data(EX, SYM, root=tmp_path)
    got = md.frame["funding_rate"].dropna()
    # 07:59:59.999 rounds to 08:00:00 (bar 08:00); 23:59:59.999 rounds to 24:00, past the last bar
    assert list(got.index.hour) == [0, 8, 16] and got.tolist() == [1e-4, 2e-4, 3e-4]
    assert md.funding["timestamp"].tolist() == raw[:3].tolist()  # raw times kept
    bars = md.to_perp_bars()  # the engine's own mapping agrees
    np.testing.assert_array_equal(bars.fe_bar, [0, 8, 16])
    np.testing.assert_array_equal(bars.fe_rate, [1e-4, 2e-4, 3e-4])


def test_iv_is_dvol_close_over_100_aligned_and_filled_only_up_to_the_limit():
    dvol = pd.read_parquet(SAMPLE_ROOT / "deribit" / "BTC-DVOL" / "index-1h.parquet")
    s = dvol.set_index(pd.to_datetime(dvol["timestamp"], unit="ms", utc=True))["close"]
    for age, limit in (("24h", 24), ("6h", 6)):
        md = load_market_data(EX, SYM, root=SAMPLE_ROOT, iv=("deribit", "BTC-DVOL"), iv_max_age=age,
                              start="2021-01-01", end="2022-01-01")
        expected = s.reindex(md.frame.index).ffill(limit=limit) / 100.0
        np.testing.assert_array_equal(md.frame["iv"].to_numpy(), expected.to_numpy())
        assert np.isnan(md.frame.loc[:"2021-03-23 23:00", "iv"]).all()  # DVOL starts 2021-03-24
        assert any(f"limit iv_max_age={age}" in n for n in md.notes)
    assert any("left NaN" in n and "2021-01-01T00:00..2021-03-23T23:00" in n for n in md.notes)
    assert md.frame.loc["2021-03-24 00:00", "iv"] == 0.8488  # first DVOL close 84.88


def test_start_end_window():
    md = load_market_data(EX, SYM, root=SAMPLE_ROOT, start="2022-06-01", end="2022-06-02T00:00:00Z")
    assert md.n == 24 and md.frame.index[0].hour == 0 and md.frame.index[-1].hour == 23
    assert len(md.funding) == 3
    ms = load_market_data(EX, SYM, root=SAMPLE_ROOT, start=1654041600000, end=1654128000000)
    assert ms.fingerprint == md.fingerprint
    with pytest.raises(ValueError, match="not after start"):
        load_market_data(EX, SYM, root=SAMPLE_ROOT, start="2022-06-02", end="2022-06-01")


def test_coarser_timeframe_is_built_from_stored_hours():
    md = load_market_data(EX, SYM, "4h", root=SAMPLE_ROOT, start="2023-01-01", end="2023-02-01")
    trade = pd.read_parquet(SDIR / "ohlcv-1h.parquet")
    trade.index = pd.to_datetime(trade["timestamp"], unit="ms", utc=True)
    ref = trade.loc["2023-01-01":"2023-01-31"].resample("4h", origin="epoch").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
    assert md.n == 31 * 6 and md.bar_ms == 4 * H
    for c in ref.columns:
        np.testing.assert_allclose(md.frame[c].to_numpy(), ref[c].to_numpy(), rtol=1e-12)
    assert md.frame["funding_rate"].notna().sum() == 31 * 3
    assert any("built 4h bars from stored 1h candles" in n for n in md.notes)


def test_default_root_falls_back_to_the_sample(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKTEST_DATA_DIR", str(tmp_path))
    md = load_market_data(EX, SYM, start="2023-01-01", end="2023-01-02")
    assert md.source == str(SDIR)
    assert any(f"not in the default store {tmp_path}" in n and "committed sample" in n for n in md.notes)
    # once the default store holds the dataset, it wins
    s = Store(tmp_path)
    for kind, tf in (("ohlcv", "1h"), ("mark", "1h"), ("funding", None)):
        s.write(Store(SAMPLE_ROOT).read(EX, SYM, kind, tf), EX, SYM, kind, tf)
    md2 = load_market_data(EX, SYM, start="2023-01-01", end="2023-01-02")
    assert md2.source == str(tmp_path / "binanceusdm" / "BTC_USDT_USDT") and md2.fingerprint == md.fingerprint


def test_unknown_dataset_names_the_download_command(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"backtest download -e okx -s ETH/USDT:USDT -t 1h"):
        load_market_data("okx", "ETH/USDT:USDT", root=tmp_path)


def test_fingerprint_tracks_the_arrays(tmp_path):
    a = load_market_data(EX, SYM, root=SAMPLE_ROOT, start="2023-01-01", end="2023-01-03")
    b = load_market_data(EX, SYM, root=SAMPLE_ROOT, start="2023-01-01", end="2023-01-03")
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 64
    int(a.fingerprint, 16)
    s = Store(tmp_path)
    for kind, tf in (("ohlcv", "1h"), ("mark", "1h"), ("funding", None)):
        s.write(Store(SAMPLE_ROOT).read(EX, SYM, kind, tf), EX, SYM, kind, tf)
    trade = s.read(EX, SYM, "ohlcv", "1h")
    i = int(np.flatnonzero(trade["timestamp"] == 1672617600000)[0])  # 2023-01-02 00:00
    trade.loc[i, "volume"] += 0.001
    s.write(trade, EX, SYM, "ohlcv", "1h")
    c = load_market_data(EX, SYM, root=tmp_path, start="2023-01-01", end="2023-01-03")
    assert c.fingerprint != a.fingerprint
    d = load_market_data(EX, SYM, root=SAMPLE_ROOT, start="2023-01-01", end="2023-01-03", iv=("deribit", "BTC-DVOL"))
    assert d.fingerprint != a.fingerprint


def test_marketdata_is_frozen(md):
    assert isinstance(md, MarketData)
    with pytest.raises(dataclasses.FrozenInstanceError):
        md.symbol = "ETH/USDT:USDT"


def test_perp_bars_from_marketdata(md):
    bars = md.to_perp_bars()
    assert bars.n == md.n and bars.bar_ms == H
    np.testing.assert_array_equal(bars.mark_high, md.frame["mark_high"].to_numpy())
    assert bars.fe_rate.size == 3285 and bars.fe_at_open.all()  # every print falls on a bar open


def test_eth_sample_loads_clean():
    md = load_market_data(EX, "ETH/USDT:USDT", root=SAMPLE_ROOT)
    assert md.n == 26280 and md.notes == () and md.frame["funding_rate"].notna().sum() == 3285
