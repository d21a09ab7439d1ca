"""Time and peak memory of ``backtest sweep``, end to end (config to ranked table and report).

Work: the embedded Binance BTC/USDT perp, 1h bars 2021-01-01 .. 2024-01-01 (26,280 bars), a
``trend_short`` grid (``slow_days`` from 5 to 200, ``--cols / 4`` values) x 4 policies
(const(1), const(3), const(8), voltarget(0.5)), cross margin at leverage 20, as
``bench_metrics.py``. Each size runs ``backtest sweep CONFIG --no-html -q`` (``--html``: with the
pages) in a fresh process, from an empty reports folder (no chunk to resume), and reports the
wall time and the peak RSS of that process and its children (``wait4``'s ``ru_maxrss``: the
largest of them, not their sum; with ``--workers`` each worker is measured apart).

``--backtest`` picks the executable, so the same sizes can be run by another checkout (``main``
before the chunked sweep: ``--backtest /work/main/.venv/bin/backtest``).

Usage: ``python benchmarks/bench_sweep.py [--cols 1000 10000] [--memory 1GB] [--workers N]
[--backtest PATH] [--html]``
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

POLICIES = ["const(1)", "const(3)", "const(8)", "voltarget(0.5)"]


def config(m: int) -> str:
    slow = np.round(np.linspace(5.0, 200.0, m // len(POLICIES)), 6).tolist()
    return f"""title = "bench sweep {m}"
rank_by = "sharpe"
memory_limit = "off"

[data]
exchange = "binanceusdm"
symbol = "BTC/USDT:USDT"
timeframe = "1h"
start = "2021-01-01"
end = "2024-01-01"

[[perp]]
name = "trend"
strategy = {{ name = "trend_short", params = {{ slow_days = {slow} }} }}
policies = {POLICIES!r}

[perp.account]
initial_capital = 10000
margin_mode = "cross"
leverage = 20

[sweep]
x = "slow_days"
y = "policy"
metric = "sharpe"
"""


def run(exe: str, m: int, extra: list[str]) -> tuple[float, int, int]:
    """(wall s, peak RSS bytes, exit code) of one sweep of ``m`` columns."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "sweep.toml"
        cfg.write_text(config(m))
        cmd = [exe, "sweep", str(cfg), "-o", str(Path(tmp) / "reports"), "-q", *extra]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        err = proc.stderr.read().decode() if proc.stderr else ""
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            print(f"  exit {code}: {err.strip()[:300]}", file=sys.stderr)
        # ru_maxrss is in KiB on Linux; the children's (spawned workers) come from RUSAGE_CHILDREN
        peak = max(usage.ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) * 1024
        return wall, peak, code


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cols", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--backtest", default=str(Path(sys.executable).with_name("backtest")))
    ap.add_argument("--memory", default=None, help="--memory of the sweep (the chunked version only)")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--html", action="store_true", help="also write report.html and heatmap.html")
    args = ap.parse_args()
    extra = [] if args.html else ["--no-html"]
    if args.memory:
        extra += ["--memory", args.memory]
    if args.workers:
        extra += ["--workers", str(args.workers)]
    print(f"{args.backtest} sweep ... {' '.join(extra)}")
    print(f"{'columns':>8} {'time s':>8} {'peak RSS':>10} {'exit':>5}")
    for m in args.cols:
        wall, peak, code = run(args.backtest, m, extra)
        print(f"{m:>8} {wall:>8.1f} {peak / 1e9:>8.2f} GB {code:>5}", flush=True)


if __name__ == "__main__":
    main()
