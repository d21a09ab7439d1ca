"""A sweep killed (SIGKILL) after its first chunk is stored, run again, computes only the
missing chunks and gives the result of an uninterrupted sweep."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from backtest.runner import load_config
from backtest.runner.chunks import CHUNK_BYTES_PER_CELL
from backtest.runner.sweep import run_sweep
from runner_kit import TINY_TOML

BARS = 354
SLOW = list(range(5, 35))  # 30 windows x 3 policies = 90 columns
TOML = TINY_TOML.replace("slow_days = [10, 20]", f"slow_days = {SLOW}").replace(
    'policies = ["const(1)", "const(2)"]', 'policies = ["const(1)", "const(2)", "voltarget(0.5)"]'
) + '\n[sweep]\nx = "slow_days"\n'
MEMORY = str(BARS * CHUNK_BYTES_PER_CELL * 2)  # chunks of 2 columns: 45 chunks


@pytest.mark.slow
def test_a_killed_sweep_resumes_with_the_missing_chunks_only(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKTEST_DATA_DIR", str(tmp_path / "empty"))
    cfg_path = tmp_path / "sweep.toml"
    cfg_path.write_text(TOML)
    reports = tmp_path / "killed"
    cmd = [sys.executable, "-m", "backtest", "sweep", str(cfg_path), "-o", str(reports), "--memory", MEMORY,
           "-q", "--no-html"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "BACKTEST_DATA_DIR": str(tmp_path / "empty")})
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if list(reports.glob("*/chunks/metrics-*.parquet")):
                break
            time.sleep(0.002)
        assert proc.poll() is None, f"the sweep ended before it could be killed: {proc.stderr.read().decode()}"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    (run_dir,) = reports.iterdir()
    stored = list((run_dir / "chunks").glob("metrics-*.parquet"))
    assert 1 <= len(stored) < 45

    cfg = load_config(cfg_path)
    again = run_sweep(cfg, reports_dir=reports, log=lambda _m: None, quiet=True, memory=MEMORY, html=False)
    assert again.chunks == 45 and again.reused >= len(stored) and again.computed == 45 - again.reused
    fresh = run_sweep(cfg, reports_dir=tmp_path / "fresh", log=lambda _m: None, quiet=True, memory=MEMORY,
                      html=False)
    assert fresh.computed == 45 and fresh.run_id == again.run_id
    pd.testing.assert_frame_equal(pd.read_parquet(again.out_dir / "sweep_metrics.parquet"),
                                  pd.read_parquet(fresh.out_dir / "sweep_metrics.parquet"), check_exact=True)
    assert (again.out_dir / "sweep.csv").read_text() == (fresh.out_dir / "sweep.csv").read_text()
    # the finished report has no chunk folder, and no temporary is left beside it
    assert not (again.out_dir / "chunks").exists()
    assert sorted(p.name for p in reports.iterdir()) == [again.run_id]


def test_a_resumed_sweep_keeps_the_chunk_size_of_its_first_start(tmp_path, monkeypatch):
    """The memory (and so the chunk size) may differ between two starts: the stored chunks are
    used with the size they were made with."""
    from backtest.runner.chunks import ChunkStore

    monkeypatch.setenv("BACKTEST_DATA_DIR", str(tmp_path / "empty"))
    cfg_path = tmp_path / "sweep.toml"
    cfg_path.write_text(TOML.replace(f"slow_days = {SLOW}", "slow_days = [5, 10, 20]"))
    cfg = load_config(cfg_path)
    first = run_sweep(cfg, reports_dir=tmp_path / "a", log=lambda _m: None, quiet=True, memory=MEMORY, html=False)
    # an earlier start that stored chunks of 2 and stopped: its plan and first chunk, as left
    chunks = first.out_dir / "chunks"
    store = ChunkStore(chunks, first.run_id, 9)
    store.start(2)
    table = pd.read_parquet(first.out_dir / "sweep_metrics.parquet")
    from backtest.runner.chunks import ChunkOutput

    store.save((0, 2), ChunkOutput(metrics=table.iloc[0:2].reset_index(drop=True)))
    lines: list[str] = []
    again = run_sweep(cfg, reports_dir=tmp_path / "a", log=lines.append, quiet=True,
                      memory=str(BARS * CHUNK_BYTES_PER_CELL * 100), html=False)
    assert (again.chunk_columns, again.chunks, again.reused, again.computed) == (2, 5, 1, 4)
    assert any("1 already done, 4 to run" in line for line in lines)
    pd.testing.assert_frame_equal(pd.read_parquet(again.out_dir / "sweep_metrics.parquet"), table, check_exact=True)
