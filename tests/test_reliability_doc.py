"""docs/reliability.md stays true: every bad-input row with a cheap reproduction is tried with the
real console script in a subprocess, and its exit code and key words are the table's.

The expected exit code and key words are read from the table itself (the ``exit`` column and the
backticked words of the ``message names`` column), so the page and the behaviour cannot drift.
A row whose fix is not in yet goes into ``PENDING`` (an expected failure that errors as soon as
it passes, so the set cannot go stale); it is empty.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"
SAMPLE = ROOT / "data" / "sample" / "binanceusdm" / "BTC_USDT_USDT"
MARKETS = ROOT / "backtest" / "markets" / "binanceusdm.json"

# Rows whose fix is not in yet (strict xfail: one that starts passing fails the suite until its id
# is deleted here, so the set never lies).
PENDING: set[str] = set()


def table_rows() -> dict[str, dict]:
    """Rows of the bad-input table: id -> {'exit': int, 'words': [...]}."""
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 4 or not re.fullmatch(r"[A-Z]\d+", cells[0]):
            continue
        m = re.fullmatch(r"(\d+)", cells[2])
        if m is None:
            continue  # a fault row (no single exit code), or a usage row described in words
        rows[cells[0]] = {"exit": int(m[1]), "words": re.findall(r"`([^`]+)`", cells[3])}
    return rows


# ---------------------------------------------------------------------------------------------
# reproductions: each builds its files under tmp and returns the command-line arguments

TOML = """\
title = "reliability"
{top}
[data]
exchange = "binanceusdm"
symbol = "BTC/USDT:USDT"
timeframe = "4h"
start = "2022-01-01"
end = "2022-01-15"
root = "{root}"

[[perp]]
name = "p"
policies = [{policy}]
{account}
"""


def store(tmp: Path) -> Path:
    root = tmp / "store"
    shutil.copytree(SAMPLE, root / "binanceusdm" / "BTC_USDT_USDT")
    return root


def config(tmp: Path, root: Path | None = None, *, top: str = "", policy: str = '"const(1)"',
           account: str = "", name: str = "run.toml") -> Path:
    root = root or store(tmp)
    p = tmp / name
    p.write_text(TOML.format(top=top, root=root, policy=policy, account=account), encoding="utf-8")
    return p


def run(tmp: Path, **kw) -> list:
    return ["run", config(tmp, **kw), "-o", tmp / "reports"]


def with_ohlcv(change: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], list]:
    def make(tmp: Path) -> list:
        root = store(tmp)
        path = root / "binanceusdm" / "BTC_USDT_USDT" / "ohlcv-1h.parquet"
        change(pd.read_parquet(path)).to_parquet(path, index=False)
        return run(tmp, root=root)
    return make


def with_market(change: Callable[[dict], object], raw: str | None = None) -> Callable[[Path], list]:
    def make(tmp: Path) -> list:
        root = store(tmp)
        (root / "markets").mkdir()
        path = root / "markets" / "binanceusdm.json"
        if raw is not None:
            path.write_text(raw, encoding="utf-8")
        else:
            doc = json.loads(MARKETS.read_text(encoding="utf-8"))
            path.write_text(json.dumps(change(doc)), encoding="utf-8")
        return run(tmp, root=root)
    return make


def btc(doc: dict) -> dict:
    return doc["markets"]["BTC/USDT:USDT"]


def setting(doc: dict, **kv) -> dict:
    btc(doc).update(kv)
    return doc


def bad_tier(doc: dict) -> dict:
    btc(doc)["tiers"][0]["maxLeverage"] = 500.0  # 0.4 % maintenance >= 1/500: liquidated on opening
    btc(doc).pop("tier_history", None)
    return doc


def with_funding(change: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], list]:
    def make(tmp: Path) -> list:
        root = store(tmp)
        path = root / "binanceusdm" / "BTC_USDT_USDT" / "funding.parquet"
        change(pd.read_parquet(path)).to_parquet(path, index=False)
        return run(tmp, root=root)
    return make


def run_range(tmp: Path) -> list:
    """start inside the stored data (it ends 2023-12-31), end a year past it."""
    p = config(tmp)
    p.write_text(p.read_text().replace('start = "2022-01-01"', 'start = "2023-12-01"')
                 .replace('end = "2022-01-15"', 'end = "2025-01-01"'))
    return ["run", p, "-o", tmp / "reports"]


def no_mark(tmp: Path) -> list:
    root = store(tmp)
    (root / "binanceusdm" / "BTC_USDT_USDT" / "mark-1h.parquet").unlink()
    return run(tmp, root=root)


def dataset_is_a_folder(tmp: Path) -> list:
    root = store(tmp)
    path = root / "binanceusdm" / "BTC_USDT_USDT" / "ohlcv-1h.parquet"
    path.unlink()
    path.mkdir()
    return run(tmp, root=root)


def write(tmp: Path, name: str, data: bytes | str) -> Path:
    p = tmp / name
    p.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return p


def report_folder(tmp: Path, change: Callable[[Path], None]) -> list:
    """A real report folder of a tiny run, then damaged by ``change``."""
    proc = subprocess.run([*backtest(), "run", str(config(tmp)), "-o", str(tmp / "reports"), "-q"],
                          capture_output=True, text=True, cwd=tmp, env=env(tmp), timeout=300)
    assert proc.returncode == 0, proc.stderr
    run_dir = Path(proc.stdout.strip()).parent
    change(run_dir / "metrics.json")
    return ["report", run_dir]


def drop_comparison(path: Path) -> None:
    doc = json.loads(path.read_text())
    del doc["comparison"]
    path.write_text(json.dumps(doc))


def in_the_way(tmp: Path) -> list:
    (tmp / "afile").write_text("x")
    return ["run", config(tmp), "-o", tmp / "afile"]


DOWNLOAD = ["download", "-e", "binanceusdm", "-s", "BTC/USDT:USDT", "--since", "2024-01-01", "--until", "2024-01-02"]

CASES: dict[str, Callable[[Path], list]] = {
    # data files
    "D1": with_ohlcv(lambda df: df.assign(timestamp=pd.to_datetime(df["timestamp"], unit="ms"))),
    "D2": with_ohlcv(lambda df: df.assign(timestamp=pd.to_datetime(df["timestamp"], unit="ms").dt.strftime(
        "%Y-%m-%dT%H:%M:%SZ"))),
    "D3": with_ohlcv(lambda df: df.assign(close=df["close"].astype(str).where(df.index != 5, "n/a"))),
    "D4": with_ohlcv(lambda df: df.iloc[:0]),
    "D5": dataset_is_a_folder,
    "D6": no_mark,
    "D7": lambda tmp: run(tmp, root=tmp / "no-store"),
    "D9": run_range,
    # a print inside the run's window (2022-01-01 .. 2022-01-15): prints outside it are not read
    "D10": with_funding(lambda df: df.assign(funding_rate=df["funding_rate"].where(
        pd.to_datetime(df["timestamp"], unit="ms") < pd.Timestamp("2022-01-05"), 0.5))),
    # market specs
    "M1": with_market(None, raw='{"exchange": "binanceusdm", "markets": {'),
    "M2": with_market(lambda doc: [doc]),
    "M3": with_market(lambda doc: setting(doc, contractSize=0)),
    "M4": with_market(bad_tier),
    "M5": with_market(lambda doc: setting(doc, taker="0.05%")),
    # configs
    "C1": lambda tmp: ["run", tmp / "missing.toml"],
    "C2": lambda tmp: ["run", write(tmp, "run.toml", "title = ")],
    "C3": lambda tmp: ["run", write(tmp, "run.toml", 'title = "caf\u00e9"\n'.encode("latin-1"))],
    "C4": lambda tmp: ["run", write(tmp, "run.toml", "x = " + "[" * 3000 + "]" * 3000 + "\n")],
    "C5": lambda tmp: ["run", write(tmp, "run.toml", 'titel = "x"\n')],
    "C6": lambda tmp: run(tmp, policy='"cnst(2)"'),
    "C7": lambda tmp: run(tmp, policy='"' + "min(" * 2000 + "const(1)" + ")" * 2000 + '"'),
    "C8": lambda tmp: run(tmp, account="[perp.account]\nlag = 0\n"),
    "C9": lambda tmp: run(tmp, top='memory_limit = "1MB"'),
    "C10": lambda tmp: run(tmp, top='memory_limit = "lots"'),
    # command line
    "A1": lambda tmp: ["run", "--no-such-option"],
    "A2": in_the_way,
    "A3": lambda tmp: ["run", config(tmp), "-o", tmp / "no-such" / "reports"],
    "A5": lambda tmp: ["report", tmp / "nope"],
    "A6": lambda tmp: report_folder(tmp, drop_comparison),
    "A7": lambda tmp: report_folder(tmp, lambda p: p.write_text('{"schema_version": 1, "results": {')),
    # download arguments (checked before any network access; proxies point nowhere anyway)
    "W1": lambda tmp: ["download", "-e", "nosuchexchange", *DOWNLOAD[3:]],
    "W2": lambda tmp: [*DOWNLOAD[:5], "--since", "2024-13-45"],
    "W3": lambda tmp: [*DOWNLOAD, "-k", "candles"],
    "W4": lambda tmp: [*DOWNLOAD, "-t", "7x"],
}


def backtest() -> list[str]:
    script = Path(sys.executable).with_name("backtest")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "backtest"]


def env(tmp: Path) -> dict:
    out = dict(os.environ, BACKTEST_DATA_DIR=str(tmp / "empty-store"))
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        out[var] = "http://127.0.0.1:9"  # nothing listens there: no request can leave the machine
    out.pop("PYTHONPATH", None)
    out.pop("BACKTEST_MEMORY_LIMIT", None)
    return out


ROWS = table_rows()


def test_every_reproduction_is_a_row_of_the_table():
    assert set(CASES) <= set(ROWS), sorted(set(CASES) - set(ROWS))
    assert PENDING <= set(CASES)
    assert len(ROWS) >= 30


@pytest.mark.parametrize("row", [
    pytest.param(r, marks=pytest.mark.xfail(strict=True, reason="its fix is not in yet"))
    if r in PENDING else r for r in sorted(CASES)])
def test_row(row, tmp_path):
    want = ROWS[row]
    args = CASES[row](tmp_path)
    proc = subprocess.run([*backtest(), *map(str, args)], capture_output=True, text=True, cwd=tmp_path,
                          env=env(tmp_path), timeout=300)
    assert proc.returncode == want["exit"], proc.stderr
    assert "Traceback" not in proc.stderr
    if want["exit"] == 2 and row != "A1":  # A1 is click's usage message
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and "unexpected" not in errors[0], proc.stderr
    missing = [w for w in want["words"] if w not in proc.stderr]
    assert not missing, (missing, proc.stderr)
    # a refused run leaves nothing behind (a converted file runs and writes its report)
    assert want["exit"] == 0 or not (tmp_path / "reports").exists() \
        or not any((tmp_path / "reports").iterdir()) or args[0] == "report"
