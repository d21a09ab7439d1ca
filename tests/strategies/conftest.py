"""Fixtures for the strategy and policy tests: the committed real sample as a market frame.

The loader is written separately; this helper reads the sample Parquet files with pandas and
builds the frame the strategies expect (bar open times as a UTC index, trade and mark OHLC,
funding summed per bar with NaN where none, DVOL / 100 as ``iv``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample"

# This folder is named like the package it tests. If pytest puts ``tests/`` on sys.path (it does
# for a ``tests/conftest.py`` without ``tests/__init__.py``), ``import strategies`` would find this
# folder as a namespace package unless the project root comes first.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def load_sample(base: str = "BTC") -> pd.DataFrame:
    d = SAMPLE / "binanceusdm" / f"{base}_USDT_USDT"
    ohlcv = pd.read_parquet(d / "ohlcv-1h.parquet")
    mark = pd.read_parquet(d / "mark-1h.parquet")
    fund = pd.read_parquet(d / "funding.parquet")
    idx = pd.DatetimeIndex(pd.to_datetime(ohlcv["timestamp"], unit="ms", utc=True), name="time")
    frame = pd.DataFrame({c: ohlcv[c].to_numpy() for c in ("open", "high", "low", "close", "volume")}, index=idx)
    mark = mark.set_index(pd.to_datetime(mark["timestamp"], unit="ms", utc=True))
    for c in ("open", "high", "low", "close"):
        frame[f"mark_{c}"] = mark[c].reindex(idx).to_numpy()
    # Funding prints belong to the hourly bar containing them (rounded to the second first).
    ft = pd.to_datetime(((fund["timestamp"] + 500) // 1000) * 1000, unit="ms", utc=True).dt.floor("1h")
    per_bar = fund.assign(bar=ft).groupby("bar")["funding_rate"].sum()
    frame["funding_rate"] = per_bar.reindex(idx).to_numpy()
    if base == "BTC":
        dvol = pd.read_parquet(SAMPLE / "deribit" / "BTC-DVOL" / "index-1h.parquet")
        dvol = dvol.set_index(pd.to_datetime(dvol["timestamp"], unit="ms", utc=True))
        frame["iv"] = dvol["close"].reindex(idx).to_numpy() / 100.0
    return frame


@pytest.fixture(scope="session")
def btc() -> pd.DataFrame:
    return load_sample("BTC")


@pytest.fixture(scope="session")
def btc_2022(btc) -> pd.DataFrame:
    """One year of hourly bars, for the slower checks."""
    return btc.loc["2022-01-01":"2022-12-31"]


def gbm_frame(sigma: float, n: int, bar_hours: float = 1.0, seed: int = 0, mu: float = 0.0,
              start: str = "2020-01-01") -> pd.DataFrame:
    """A seeded GBM close path with constant annual vol ``sigma`` (365-day years)."""
    rng = np.random.default_rng(seed)
    dt = bar_hours / (24 * 365)
    r = (mu - 0.5 * sigma**2) * dt + sigma * np.sqrt(dt) * rng.standard_normal(n)
    close = 100.0 * np.exp(np.cumsum(r))
    idx = pd.date_range(start, periods=n, freq=pd.Timedelta(hours=bar_hours), tz="UTC")
    opn = np.r_[100.0, close[:-1]]
    hi, lo = np.maximum(opn, close), np.minimum(opn, close)
    return pd.DataFrame({"open": opn, "high": hi, "low": lo, "close": close, "volume": 1.0,
                         "mark_open": opn, "mark_high": hi, "mark_low": lo, "mark_close": close,
                         "funding_rate": np.nan}, index=idx)


@pytest.fixture(scope="session")
def make_gbm():
    """The :func:`gbm_frame` factory (a fixture, so tests need no import of this file)."""
    return gbm_frame


def bars_frame(close, high=None, low=None, *, bar_hours: float = 24.0, funding=None, iv=None,
               start: str = "2022-01-01") -> pd.DataFrame:
    """A hand-made candle table: close (and optional high/low/funding/iv) per bar."""
    close = np.asarray(close, dtype=float)
    n = len(close)
    idx = pd.date_range(start, periods=n, freq=pd.Timedelta(hours=bar_hours), tz="UTC")
    high = close if high is None else np.asarray(high, dtype=float)
    low = close if low is None else np.asarray(low, dtype=float)
    frame = pd.DataFrame({"open": close, "high": high, "low": low, "close": close, "volume": 1.0,
                          "mark_open": close, "mark_high": high, "mark_low": low, "mark_close": close,
                          "funding_rate": np.nan if funding is None else np.asarray(funding, dtype=float)},
                         index=idx)
    if iv is not None:
        frame["iv"] = np.asarray(iv, dtype=float)
    return frame


@pytest.fixture(scope="session")
def make_bars():
    """The :func:`bars_frame` factory."""
    return bars_frame
