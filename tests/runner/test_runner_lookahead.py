"""``lag = 0`` in a run config: refused (exit 2, the key and the fix) unless
``allow_lookahead = true``, which the report then states (config.json and the result's notes);
a lag longer than the loaded data is refused with exit 2 too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from runner_kit import TINY_TOML


def backtest_cmd() -> list[str]:
    script = Path(sys.executable).with_name("backtest")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "backtest"]


def run_cli(tmp_path: Path, account: str) -> subprocess.CompletedProcess:
    cfg = tmp_path / "run.toml"
    cfg.write_text(TINY_TOML + "[perp.account]\n" + account, encoding="utf-8")
    env = dict(os.environ, BACKTEST_DATA_DIR=str(tmp_path / "empty"))
    env.pop("PYTHONPATH", None)
    return subprocess.run([*backtest_cmd(), "run", str(cfg), "-o", str(tmp_path / "r")], capture_output=True,
                          text=True, cwd=tmp_path, env=env, timeout=300)


def test_lag_zero_exits_2_naming_the_key_and_the_fix(tmp_path):
    proc = run_cli(tmp_path, "lag = 0\n")
    assert proc.returncode == 2, proc.stderr
    first = proc.stderr.splitlines()[0]
    assert first.startswith("error: ") and first.endswith("perp[0].account.lag")
    assert "look-ahead" in proc.stderr and "allow_lookahead" in proc.stderr and "lag=1" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "r").exists()


def test_lag_zero_with_allow_lookahead_runs_and_the_report_says_so(tmp_path):
    proc = run_cli(tmp_path, "lag = 0\nallow_lookahead = true\n")
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (tmp_path / "r").iterdir()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["config"]["perp"][0]["account"]["allow_lookahead"] is True
    assert config["config"]["perp"][0]["account"]["lag"] == 0
    meta = json.loads((run_dir / "metrics.json").read_text())["results"]["trend"]["meta"]
    assert meta["allow_lookahead"] is True and any("look-ahead" in n for n in meta["notes"])
    # stated where a reader sees it: the run's notes (printed, in config.json and on the page)
    assert "note: trend: lag = 0 with allow_lookahead = true" in proc.stderr
    assert any(n.startswith("trend: lag = 0") for n in config["data"]["notes"])
    assert "trend: lag = 0 with allow_lookahead = true" in (run_dir / "report.html").read_text()


def test_lag_longer_than_the_data_exits_2(tmp_path):
    proc = run_cli(tmp_path, "lag = 100000\n")  # the tiny config loads 354 bars
    assert proc.returncode == 2, proc.stderr
    assert "Account.lag=100000 is not shorter than the data (354 bars)" in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "perp[0]" in errors[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()
