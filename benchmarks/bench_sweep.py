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

``--stages`` runs the same sweep in a fresh interpreter of this checkout with timers wrapped
around the sweep's own functions and prints where the wall time went (each stage's time
excludes the stages nested in it, so the stages sum to the wall time):

* ``import``: the interpreter's imports of ``backtest.cli`` and the sweep's modules;
* ``load``: the data, the market and the run id (``load_inputs``);
* ``targets``: the strategy signals times the policies (``build_targets``), every chunk and the
  report's best columns;
* ``simulate``: the engine runs (``simulate_perp``);
* ``derive``: the series and records the engine derives on first read (``cum_fees``, the leverage,
  ...), read by the metrics (a chunk's fill records are not built: turnover reads the kernel's
  compact fills; the report's best columns build theirs);
* ``metrics``: every chunk's metrics table (``metrics_frame``) and the report's (``collect``);
* ``store``: the chunks written to and read back from ``chunks/`` (Parquet);
* ``report``: the report folder (``_publish_sweep``: Parquet, JSON, and the pages with ``--html``);
* ``other``: the rest (the CLI, the config, the grid, ranking, the heatmap's table).

``--vectorbt`` also times vectorbt doing less, end to end in a fresh process: the same data,
the same target exposures (``build_targets``), ``Portfolio.from_orders`` (target-percent
orders at the open, the taker fee, from the same initial capital; no funding, margin or
liquidation) and total return, Sharpe ratio and max drawdown of every column; the whole run
twice in that process (the first pays the compilation of the vectorbt kernels it does not
cache; the second is warm, the fairest figure for vectorbt), each with its stage split.

Usage: ``python benchmarks/bench_sweep.py [--cols 1000 10000] [--memory 1GB] [--workers N]
[--backtest PATH] [--html] [--stages] [--vectorbt] [--repeat N]``
"""

from __future__ import annotations

import argparse
import json
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


def run(exe: str, m: int, extra: list[str]) -> tuple[float, int, int, float]:
    """(wall s, peak RSS bytes, exit code, CPU s) of one sweep of ``m`` columns (CPU: user +
    system of the process, all its threads; on this shared machine the steadier figure)."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "sweep.toml"
        cfg.write_text(config(m))
        cmd = [exe, "sweep", str(cfg), "-o", str(Path(tmp) / "reports"), "-q", *extra]
        t0 = time.perf_counter()
        # no PYTHONPATH: the executable imports its own checkout (its venv's editable install)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        err = proc.stderr.read().decode() if proc.stderr else ""
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            print(f"  exit {code}: {err.strip()[:300]}", file=sys.stderr)
        # ru_maxrss is in KiB on Linux; the children's (spawned workers) come from RUSAGE_CHILDREN
        peak = max(usage.ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) * 1024
        return wall, peak, code, usage.ru_utime + usage.ru_stime


# ----------------------------------------------------------------------------------------------
# --stages: the sweep in a child interpreter with timers around its functions
# ----------------------------------------------------------------------------------------------

def _child_stages(cfg_path: str, out_dir: str, extra: list[str]) -> dict:
    t_start = time.perf_counter()
    import backtest.cli as cli
    import backtest.engine as engine
    import backtest.report as report
    import backtest.runner.chunks as chunks
    import backtest.runner.run as run
    import backtest.runner.sweep as sweep
    import strategies.policies as policies
    from backtest.result import LazyMapping

    t_import = time.perf_counter()
    own: dict[str, float] = {}
    stack: list[list] = []  # [stage, start, time of the stages nested in it]

    def enter(stage: str) -> None:
        stack.append([stage, time.perf_counter(), 0.0])

    def leave() -> None:
        stage, t0, nested = stack.pop()
        dt = time.perf_counter() - t0
        own[stage] = own.get(stage, 0.0) + dt - nested
        if stack:
            stack[-1][2] += dt

    def timed(owner, name: str, stage: str) -> None:
        fn = getattr(owner, name)

        def wrapper(*a, **k):
            enter(stage)
            try:
                return fn(*a, **k)
            finally:
                leave()
        setattr(owner, name, wrapper)

    timed(run, "load_inputs", "load")
    timed(policies, "build_targets", "targets")
    timed(engine, "simulate_perp", "simulate")
    timed(chunks, "metrics_frame", "metrics")
    timed(report, "collect", "metrics")
    timed(chunks.ChunkStore, "save", "store")
    timed(chunks.ChunkStore, "metrics", "store")
    timed(sweep, "_publish_sweep", "report")
    get = LazyMapping.__getitem__

    def lazy_get(self, name):
        if name in self.stored:
            return self.stored[name]
        enter("derive")
        try:
            return get(self, name)
        finally:
            leave()
    LazyMapping.__getitem__ = lazy_get

    t_cmd = time.perf_counter()
    cli.app(["sweep", cfg_path, "-o", out_dir, "-q", *extra], standalone_mode=False)
    t_end = time.perf_counter()
    stages = {"import": t_import - t_start, **{k: own.get(k, 0.0) for k in STAGES[1:-1]}}
    stages["other"] = (t_end - t_start) - sum(stages.values())
    return {"wall": t_end - t_start, "stages": stages, "cmd": t_end - t_cmd}


STAGES = ("import", "load", "targets", "simulate", "derive", "metrics", "store", "report", "other")


def stages(m: int, extra: list[str]) -> tuple[dict, float, int]:
    """(stage seconds, wall s of the child, peak RSS bytes) of one sweep of ``m`` columns."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "sweep.toml"
        cfg.write_text(config(m))
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child-stages", str(cfg), str(Path(tmp) / "reports"),
               *extra]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out = proc.stdout.read().decode() if proc.stdout else ""
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        if os.waitstatus_to_exitcode(status) != 0:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise SystemExit(f"stage run failed: {err.strip()[-2000:]}")
        return json.loads(out.strip().splitlines()[-1])["stages"], wall, usage.ru_maxrss * 1024


# ----------------------------------------------------------------------------------------------
# --vectorbt: vectorbt doing less, end to end, in a child interpreter
# ----------------------------------------------------------------------------------------------

def _child_vectorbt(m: int) -> dict:
    """vectorbt's run of ``m`` columns, twice in this process: the first call pays vectorbt's
    import and the compilation of its kernels that it does not cache, the second does not."""
    t0 = time.perf_counter()
    import pandas as pd
    import vectorbt as vbt

    from backtest.data import load_market_data
    from backtest.market import load_market
    from strategies.policies import build_targets

    def once() -> dict:
        t = [time.perf_counter()]
        md = load_market_data("binanceusdm", "BTC/USDT:USDT", "1h", start="2021-01-01", end="2024-01-01")
        spec = load_market("binanceusdm", "BTC/USDT:USDT")
        t.append(time.perf_counter())
        slow = np.round(np.linspace(5.0, 200.0, m // len(POLICIES)), 6).tolist()
        target, _, _ = build_targets(md, "trend_short", {"slow_days": slow}, POLICIES, spec=spec)
        t.append(time.perf_counter())
        frame = md.frame
        m_cols = target.shape[1]
        wide = {k: pd.DataFrame(np.repeat(frame[k].to_numpy()[:, None], m_cols, axis=1), index=frame.index)
                for k in ("close", "open")}
        # row t of the target is filled at bar t+1's open (the engine's lag 1)
        size = pd.DataFrame(target.to_numpy(), index=frame.index).shift(1)
        pf = vbt.Portfolio.from_orders(close=wide["close"], size=size, size_type="targetpercent", price=wide["open"],
                                       fees=spec.taker_fee, init_cash=10_000.0, direction="both", freq="1h")
        t.append(time.perf_counter())
        tr, sh, dd = pf.total_return(), pf.sharpe_ratio(), pf.max_drawdown()
        t.append(time.perf_counter())
        if not len(tr) == len(sh) == len(dd) == m_cols:
            raise RuntimeError("vectorbt returned the wrong number of columns")
        return {"load": t[1] - t[0], "targets": t[2] - t[1], "simulate": t[3] - t[2], "metrics": t[4] - t[3],
                "total": t[4] - t[0]}

    t_import = time.perf_counter() - t0
    first = once()
    second = once()
    return {"wall": time.perf_counter() - t0, "import": t_import, "first": first, "second": second}


def vectorbt_run(m: int) -> tuple[dict, int]:
    """(times of the child, peak RSS bytes) of vectorbt's run of ``m`` columns, in a fresh
    process: import, then the whole run twice (``first``: with the compilation of the vectorbt
    kernels it does not cache; ``second``: warm), each split into load, targets, simulate, metrics."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child-vectorbt", str(m)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = proc.stdout.read().decode() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"vectorbt run failed: {err.strip()[-2000:]}")
    return json.loads(out.strip().splitlines()[-1]), usage.ru_maxrss * 1024


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child-stages":
        print(json.dumps(_child_stages(sys.argv[2], sys.argv[3], sys.argv[4:])))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--child-vectorbt":
        print(json.dumps(_child_vectorbt(int(sys.argv[2]))))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cols", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--backtest", default=str(Path(sys.executable).with_name("backtest")))
    ap.add_argument("--memory", default=None, help="--memory of the sweep (the chunked version only)")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--html", action="store_true", help="also write report.html and heatmap.html")
    ap.add_argument("--stages", action="store_true", help="also the stage split (a run of this checkout)")
    ap.add_argument("--vectorbt", action="store_true", help="also vectorbt from_orders + 3 metrics, end to end")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each size, taking turns")
    args = ap.parse_args()
    extra = [] if args.html else ["--no-html"]
    if args.memory:
        extra += ["--memory", args.memory]
    if args.workers:
        extra += ["--workers", str(args.workers)]
    print(f"{args.backtest} sweep ... {' '.join(extra)}")
    print(f"{'columns':>8} {'time s':>8} {'peak RSS':>10} {'exit':>5} {'CPU s':>7}")
    for m in args.cols:
        for _ in range(args.repeat):
            wall, peak, code, cpu = run(args.backtest, m, extra)
            print(f"{m:>8} {wall:>8.1f} {peak / 1e9:>8.2f} GB {code:>5} {cpu:>7.1f}", flush=True)
            if args.vectorbt:
                vt, vpeak = vectorbt_run(m)
                print(f"{'':>8} {vt['wall']:>8.1f} {vpeak / 1e9:>8.2f} GB        vectorbt from_orders + 3 metrics: "
                      f"import {vt['import']:.1f} s, first run {vt['first']['total']:.1f} s, second (warm) "
                      + ", ".join(f"{k} {v:.2f}" for k, v in vt["second"].items()), flush=True)
            if args.stages:
                st, sw, speak = stages(m, extra)
                print(f"{'':>8} {sw:>8.1f} {speak / 1e9:>8.2f} GB        stages: "
                      + ", ".join(f"{k} {v:.2f}" for k, v in st.items()), flush=True)


if __name__ == "__main__":
    main()
