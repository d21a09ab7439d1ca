"""Rebuild the committed sample from the team's shared market-data folder.

Run once by hand from the repository root (``python backtest/data/sample/build_sample.py
../shared/data/market``); it writes next to itself (``backtest/data/sample/``, package data;
``data/sample`` in a checkout is a link to it). Nothing at run or test time depends on the
source folder. The output follows the store layout
(see README, "Data store"): ``<exchange>/<symbol-dir>/<kind>-<timeframe>.parquet``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

START = pd.Timestamp("2021-01-01", tz="UTC").value // 1_000_000
END = pd.Timestamp("2024-01-01", tz="UTC").value // 1_000_000
OUT = Path(__file__).resolve().parent


def _cut(df: pd.DataFrame) -> pd.DataFrame:
    return df[(df["timestamp"] >= START) & (df["timestamp"] < END)].reset_index(drop=True)


def _write(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path, index=False, compression="zstd")
    print(f"{path.relative_to(OUT)}: {len(df)} rows")


def main(src: Path) -> None:
    for base in ("BTC", "ETH"):
        sym_dir = OUT / "binanceusdm" / f"{base}_USDT_USDT"
        ohlcv = _cut(pd.read_parquet(src / f"binance_usdm_{base}USDT_1h.parquet"))
        cols = ["timestamp", "open", "high", "low", "close", "volume"]
        _write(ohlcv[cols].astype({"timestamp": "int64"} | {c: "float64" for c in cols[1:]}),
               sym_dir / "ohlcv-1h.parquet")
        mark = _cut(pd.read_parquet(src / f"binance_usdm_{base}USDT_mark_1h.parquet"))
        cols = ["timestamp", "open", "high", "low", "close"]
        _write(mark[cols].astype({"timestamp": "int64"} | {c: "float64" for c in cols[1:]}),
               sym_dir / "mark-1h.parquet")
        fund = _cut(pd.read_parquet(src / f"binance_usdm_{base}USDT_funding_8h.parquet"))
        out = pd.DataFrame({
            "timestamp": fund["timestamp"].astype("int64"),
            "funding_rate": fund["funding_rate"].astype("float64"),
            "interval_hours": fund["funding_interval_hours"].astype("float64"),
            "mark_price": float("nan"),
        })
        _write(out, sym_dir / "funding.parquet")
    # Binance COIN-M BTCUSD_PERP (BTC/USD:BTC): the source spans 2021-07-01 01:00 .. 2022-05-31 23:00,
    # inside the cut, and is kept whole. It has no mark klines (the loader falls back to trade
    # prices only where the user allows it) and ten missing hours, kept as they are (never filled
    # here: the loader refuses them or, with allow_gaps, loads the bars as they are and says so).
    sym_dir = OUT / "binancecoinm" / "BTC_USD_BTC"
    ohlcv = _cut(pd.read_parquet(src / "binance_coinm_BTCUSD_PERP_1h_2021-07_2022-05.parquet"))
    cols = ["timestamp", "open", "high", "low", "close", "volume"]
    _write(ohlcv[cols].astype({"timestamp": "int64"} | {c: "float64" for c in cols[1:]}),
           sym_dir / "ohlcv-1h.parquet")
    fund = _cut(pd.read_parquet(src / "binance_coinm_BTCUSD_PERP_funding_8h_2021-07_2022-05.parquet"))
    _write(pd.DataFrame({
        "timestamp": fund["timestamp"].astype("int64"),
        "funding_rate": fund["funding_rate"].astype("float64"),
        "interval_hours": fund["funding_interval_hours"].astype("float64"),
        "mark_price": float("nan"),
    }), sym_dir / "funding.parquet")
    dvol = _cut(pd.read_parquet(src / "deribit_BTC_DVOL_1h_2021-2023.parquet"))
    cols = ["timestamp", "open", "high", "low", "close"]
    _write(dvol[cols].astype({"timestamp": "int64"} | {c: "float64" for c in cols[1:]}),
           OUT / "deribit" / "BTC-DVOL" / "index-1h.parquet")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/market"))
