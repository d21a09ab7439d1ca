"""Shared constants and helpers of the runner tests."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample"

# Two months of 4h bars (354 bars): a trend-short grid of 2 windows x 2 policies.
TINY = {
    "title": "tiny",
    "data": {"exchange": "binanceusdm", "symbol": "BTC/USDT:USDT", "timeframe": "4h",
             "start": "2022-01-01", "end": "2022-03-01"},
    "perp": [{"name": "trend", "strategy": {"name": "trend_short", "params": {"slow_days": [10, 20]}},
              "policies": ["const(1)", "const(2)"]}],
}

TINY_TOML = """\
title = "tiny"

[data]
exchange = "binanceusdm"
symbol = "BTC/USDT:USDT"
timeframe = "4h"
start = "2022-01-01"
end = "2022-03-01"

[[perp]]
name = "trend"
strategy = { name = "trend_short", params = { slow_days = [10, 20] } }
policies = ["const(1)", "const(2)"]
"""


def tree(folder: Path) -> set[str]:
    """Every path under ``folder`` (hidden ones too), relative."""
    if not folder.exists():
        return set()
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}
