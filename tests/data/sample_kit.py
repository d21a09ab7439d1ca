"""A small real store for loader tests: two days of the embedded BTC/USDT:USDT sample (candles,
mark candles, funding) from 2023-01-01, written into a temporary store."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from backtest.data import Store
from backtest.data.store import SAMPLE_ROOT

H = 3_600_000
T0 = 1672531200000  # 2023-01-01T00:00Z
EX, SYM = "binanceusdm", "BTC/USDT:USDT"


def sample(name: str, n_hours: int = 48, t0: int = T0) -> pd.DataFrame:
    """``n_hours`` hours of one sample file from ``t0``."""
    df = pd.read_parquet(SAMPLE_ROOT / "binanceusdm" / "BTC_USDT_USDT" / name)
    return df[(df["timestamp"] >= t0) & (df["timestamp"] < t0 + n_hours * H)].reset_index(drop=True)


def sample_store(root: Path) -> Store:
    """A store at ``root`` holding the two days of candles, mark candles and funding."""
    s = Store(root)
    s.write(sample("ohlcv-1h.parquet"), EX, SYM, "ohlcv", "1h")
    s.write(sample("mark-1h.parquet"), EX, SYM, "mark", "1h")
    s.write(sample("funding.parquet"), EX, SYM, "funding")
    return s
