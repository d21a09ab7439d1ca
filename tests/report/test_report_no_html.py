"""`backtest run --no-html` and `backtest sweep --no-html` in a subprocess (the batch job's
view): the machine outputs are written, no HTML is, and stdout is the folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

# two months of 4h bars on the committed sample, a grid of 2 windows x 2 policies
TOML = """\
title = "no html"

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
SWEEP = TOML + '\n[sweep]\nx = "slow_days"\ny = "policy"\nmetric = "sharpe"\n'
MACHINE = {"metrics.json", "config.json", "equity.parquet", "events.parquet", "periods.parquet", "drawdowns.parquet",
           "trades.parquet"}


def backtest(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("backtest")
    cmd = [str(script)] if script.is_file() else [sys.executable, "-m", "backtest"]
    # an empty default store: the committed sample is read, never a developer's downloads
    env = dict(os.environ, BACKTEST_DATA_DIR=str(tmp_path / "empty"))
    env.pop("PYTHONPATH", None)
    return subprocess.run([*cmd, *args], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)


def test_run_no_html_writes_the_machine_outputs_only(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text(TOML)
    proc = backtest(tmp_path, "run", str(cfg), "-o", str(tmp_path / "reports"), "--no-html")
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (tmp_path / "reports").iterdir()
    assert proc.stdout == f"{run_dir}\n"
    assert {p.name for p in run_dir.iterdir()} == MACHINE
    doc = json.loads((run_dir / "metrics.json").read_text())
    periods = pd.read_parquet(run_dir / "periods.parquet")
    labels = doc["results"]["trend"]["columns"]
    assert len(labels) == 4
    # Jan and Feb 2022 per column and basis, and the year 2022
    periods = periods[periods["result"] == "trend"]  # the run's baselines have their own rows
    months = periods[(periods["freq"] == "month") & (periods["basis"] == "usd")]
    assert sorted(set(months["period"])) == ["2022-01", "2022-02"]
    assert sorted(set(months["column"])) == sorted(labels)
    years = periods[(periods["freq"] == "year") & (periods["basis"] == "usd")].set_index("column")["return"]
    for label in labels:
        assert years[label] == pytest.approx(doc["results"]["trend"]["usd"]["columns"][label]["total_return"],
                                             rel=1e-9, abs=1e-12)
    assert len(pd.read_parquet(run_dir / "drawdowns.parquet")) > 0
    # the page can still be made later from the stored files
    again = backtest(tmp_path, "report", str(run_dir))
    assert again.returncode == 0, again.stderr
    assert (run_dir / "report.html").is_file()


def test_sweep_no_html_writes_no_html_file(tmp_path):
    cfg = tmp_path / "sweep.toml"
    cfg.write_text(SWEEP)
    proc = backtest(tmp_path, "sweep", str(cfg), "-o", str(tmp_path / "reports"), "--no-html", "-q")
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (tmp_path / "reports").iterdir()
    assert proc.stdout == f"{run_dir}\n"
    assert {p.name for p in run_dir.iterdir()} == MACHINE | {"sweep.csv", "sweep_metrics.parquet"}
    table = pd.read_csv(run_dir / "sweep.csv")
    assert len(table) == 4 and table["rank"].tolist() == [1, 2, 3, 4]
