"""Throughput of the perpetual engine against vectorbt and a plain Python loop, in one process.

Work: a short at a target exposure with fees, rebalanced every bar or every 8 hours, on
synthetic GBM bars. Workloads (bars x columns):

    W1 = 525,600 one-minute bars x 1      W2 = 8,760 hourly bars x 1,000      W3 = 100,000 bars x 100

Measured: bar-columns per second, median of ``--repeat`` runs after a warm-up run, the engines
taking turns run by run (numba compile time is measured separately, on a fresh process cache,
and reported apart).
vectorbt runs ``Portfolio.from_orders`` (target-percent orders at the open, same fees) with its
numba engine and, where ``vectorbt-rust`` is installed, its rust engine; vectorbt has no margin,
funding or liquidation logic, our engine runs its full mechanics (funding every 8 hours, tiered
maintenance margin, margin-call and liquidation checks on the mark extremes). The plain loop is
a straightforward Python implementation of a short with fees and a liquidation check, timed on
a slice of the work (its rate does not depend on the slice size); the bare numba loop is the
same loop compiled with numba, columns in parallel, writing an equity series and nothing else.

The engine runs three times: with every per-bar series (the default, what reports use) and with the
outputs of a large sweep (``series=("equity",)``: equity stored, and the position or its
changes, the other required series and the full records derived on access), and the second
once more with its buffer pool off (every output in fresh memory, as in a process's first
run; otherwise each run writes the memory of the previous, dropped, result). The write floor
is a kernel with no logic that writes the sweep outputs (the stored series, the compact fill
and position-change records, the position per funding print) into fresh memory: no engine
that returns those outputs can be faster on this machine.

Usage: ``python benchmarks/bench_engine.py [--repeat 7] [--only W2] [--out benchmarks/results/latest.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from numba import prange

WORKLOADS = {"W1": (525_600, 1, 60_000), "W2": (8_760, 1_000, 3_600_000), "W3": (100_000, 100, 3_600_000)}
FEE = 0.0005
# the outputs a large sweep needs: equity and position stored, the other series derived on access,
# every record; no per-bar margin ratio or liquidation price
LEAN = ("equity",)


def make_bars(n: int, bar_ms: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sigma = 0.6 * np.sqrt(bar_ms / (365 * 86_400_000))
    close = 30_000.0 * np.exp(np.cumsum(rng.normal(0, sigma, n)))
    open_ = np.concatenate([[30_000.0], close[:-1]])
    wig = np.abs(rng.normal(0, sigma, n))
    high = np.maximum(open_, close) * (1 + wig)
    low = np.minimum(open_, close) * (1 - wig)
    ts = np.arange(n, dtype=np.int64) * bar_ms + 1_640_995_200_000
    df = pd.DataFrame({"timestamp": ts, "open": open_, "high": high, "low": low, "close": close})
    for c in ("open", "high", "low", "close"):
        df["mark_" + c] = df[c]
    return df


def funding_events(df: pd.DataFrame) -> pd.DataFrame:
    ts = df["timestamp"].to_numpy()
    t = np.arange(ts[0] - ts[0] % 28_800_000 + 28_800_000, ts[-1], 28_800_000, dtype=np.int64)
    return pd.DataFrame({"timestamp": t, "funding_rate": np.full(t.shape, 1e-4)})


def make_target(n: int, m: int, bar_ms: int, every_bar: bool) -> np.ndarray:
    target = -np.linspace(1.0, 3.0, m)[None, :].repeat(n, axis=0)
    if not every_bar:
        step = max(1, 28_800_000 // bar_ms)
        keep = np.zeros(n, dtype=bool)
        keep[::step] = True
        target[~keep] = np.nan
    return target


def plain_loop(open_, high, close, target, fee, m_cols):
    """The obvious loop: short at a target exposure, fees, liquidation at 1/leverage move. Plain
    Python as it stands (``prange`` is ``range`` outside numba); compiled with numba it is the
    bare numba loop (:func:`bare_loop_nb`). Returns the equity, (bars, columns)."""
    n = len(open_)
    equity_out = np.empty((m_cols, n))  # each column's bars contiguous
    for j in prange(m_cols):
        cash, pos = 10_000.0, 0.0
        for i in range(n):
            t = target[i - 1, j] if i > 0 else np.nan
            if t == t:
                value = cash + pos * open_[i]
                want = t * value / open_[i]
                d = want - pos
                cash -= d * open_[i] + abs(d) * open_[i] * fee
                pos = want
            if pos < 0 and cash + pos * high[i] <= 0.004 * abs(pos) * high[i]:
                cash, pos = 0.0, 0.0
            equity_out[j, i] = cash + pos * close[i]
    return equity_out.T


def bare_loop_nb():
    """The plain loop compiled with numba, columns in parallel: a short at a target exposure
    with fees and a liquidation check at a fixed maintenance rate, writing an equity series and
    nothing else (no funding, tiers, exchange checks, margin calls or records): the speed of the
    arithmetic alone, for scale."""
    from numba import njit

    return njit(parallel=True, cache=False)(plain_loop)


def write_floor(n: int, m: int, every: int, fund_every: int, repeat: int) -> float:
    """Seconds to write what the lean engine run writes into fresh memory, with no logic at all:
    the memory floor under any engine that returns these outputs. Per bar and column the equity
    (and the position when an order comes every bar: the dense kernel stores the series, the
    sparse one a 16-byte change record per order), a 32-byte fill record per order and one
    float64 per funding print and column (the position that paid it)."""
    from numba import njit, prange

    from backtest.engine.enums import fill_nb_dt, position_change_dt

    dense = every == 1

    @njit(parallel=True, cache=False)
    def write_only(out, fills, fpos, pchg, every, fund_every, n, m, dense):
        per_f = (n + every - 1) // every
        for j in prange(m):
            nf = 0
            nu = 0
            for i in range(n):
                out[0, j, i] = i * 1.0
                if dense:
                    out[1, j, i] = -1.0
                if i % every == 0:
                    r = fills[j * per_f + nf]
                    r["bar"] = i
                    r["price"] = 1.0
                    r["size"] = 2.0
                    r["fee"] = 4.0
                    r["status"] = 0
                    r["reason"] = 0
                    if not dense:
                        q = pchg[j * per_f + nf]
                        q["bar"] = i
                        q["position"] = 3.0
                    nf += 1
                if i % fund_every == 0:
                    fpos[j, nu] = 3.0
                    nu += 1

    def run_once():
        per_f = (n + every - 1) // every
        out = np.empty((2 if dense else 1, m, n))
        fills = np.empty(m * per_f, fill_nb_dt)
        pchg = np.empty(0 if dense else m * per_f, position_change_dt)
        fpos = np.zeros((m, (n + fund_every - 1) // fund_every))
        write_only(out, fills, fpos, pchg, every, fund_every, n, m, dense)

    run_once()
    return timeit(run_once, repeat)


def without_pool(fn):
    """``fn()`` with the engine's buffer pool off: every output in fresh memory, as in the first
    run of a process (the pool lends a dropped result's memory to the next run)."""
    from backtest.engine.buffers import POOL

    saved = POOL.max_bytes
    POOL.max_bytes = 0
    try:
        return fn()
    finally:
        POOL.max_bytes = saved


def interleaved(runs: dict, repeat: int) -> dict[str, list[float]]:
    """Seconds of each run, ``repeat`` times, after a warm-up call each (compiled, cached), the
    runs taking turns: every engine sees the same stretches of the machine's speed (on this
    shared virtual machine, fresh memory costs vary several-fold from one second to the next)."""
    for fn in runs.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeat):
        for k, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times


def timeit(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def compile_time() -> float:
    """Compile time of the engine kernel in a fresh process with an empty numba cache dir."""
    code = (
        "import time, numpy as np, sys; sys.path.insert(0, %r)\n"
        "from benchmarks.bench_engine import make_bars, funding_events\n"
        "from backtest.engine import simulate_perp, PerpBars, Account\n"
        "from backtest.market import load_market\n"
        "df = make_bars(100, 3_600_000); bars = PerpBars.from_frame(df, funding_events(df))\n"
        "spec = load_market('binanceusdm', 'BTC/USDT:USDT')\n"
        "t0 = time.perf_counter(); simulate_perp(bars, np.full((100, 2), -1.0), spec, Account()); "
        "print(time.perf_counter() - t0)\n" % str(Path(__file__).resolve().parents[1])
    )
    env = dict(os.environ, NUMBA_CACHE_DIR=str(Path("/tmp") / f"bench-numba-cache-{os.getpid()}"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def run(repeat: int, only: list[str]) -> dict:
    import vectorbt as vbt

    from backtest.engine import Account, PerpBars, simulate_perp
    from backtest.market import load_market

    try:
        import vectorbt_rust  # noqa: F401
        engines = ["numba", "rust"]
    except ImportError:
        engines = ["numba"]
    spec = load_market("binanceusdm", "BTC/USDT:USDT").replace(lot_size=0.0, min_notional=0.0)
    bare = bare_loop_nb()
    rows = []
    for name, (n, m, bar_ms) in WORKLOADS.items():
        if only and name not in only:
            continue
        df = make_bars(n, bar_ms)
        bars = PerpBars.from_frame(df, funding_events(df))
        for every_bar in (True, False):
            target = make_target(n, m, bar_ms, every_bar)
            acc = Account(initial_capital=10_000.0, leverage=20.0, fee_rate=FEE)
            close = pd.DataFrame(np.repeat(df["close"].to_numpy()[:, None], m, axis=1))
            price = pd.DataFrame(np.repeat(df["open"].to_numpy()[:, None], m, axis=1))
            size = pd.DataFrame(target).shift(1)
            runs = {"engine": lambda: simulate_perp(bars, target, spec, acc),
                    "engine_lean": lambda: simulate_perp(bars, target, spec, acc, series=LEAN),
                    "engine_lean_fresh": lambda: without_pool(
                        lambda: simulate_perp(bars, target, spec, acc, series=LEAN))}
            for eng in engines:
                kw = dict(close=close, size=size, size_type="targetpercent", price=price, fees=FEE,
                          init_cash=10_000.0, direction="both", freq="1h", engine=eng)
                runs[f"vbt_{eng}"] = lambda kw=kw: vbt.Portfolio.from_orders(**kw)
            o, h, c = (df[k].to_numpy() for k in ("open", "high", "close"))
            runs["bare"] = lambda: bare(o, h, c, target, FEE, m)
            times = interleaved(runs, repeat)
            per_8h = max(1, 28_800_000 // bar_ms)
            t_floor = write_floor(n, m, 1 if every_bar else per_8h, per_8h, repeat)
            row = {"workload": name, "bars": n, "cols": m,
                   "rebalance": "every bar" if every_bar else "every 8h",
                   "write_floor_bc_per_s": n * m / t_floor}
            for key, ts in times.items():
                t = statistics.median(ts)
                row[f"{key}_s"] = t
                row[f"{key}_bc_per_s"] = n * m / t
                row[f"{key}_best_bc_per_s"] = n * m / min(ts)
                row[f"{key}_runs_s"] = [round(t, 6) for t in ts]  # every run, in order (the spread)
            # plain loop on a slice: enough bar-columns for a stable rate
            cols = max(1, min(m, 200_000 // n))
            nn = min(n, 200_000)
            t = timeit(lambda: plain_loop(df["open"].to_numpy()[:nn], df["high"].to_numpy()[:nn],
                                          df["close"].to_numpy()[:nn], target[:nn], FEE, cols), 1)
            row["loop_bc_per_s"] = nn * cols / t
            rows.append(row)
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}),
                  flush=True)
    return {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                        "numba_threads": int(os.environ.get("NUMBA_NUM_THREADS", os.cpu_count() or 1))},
            "versions": {"vectorbt": vbt.__version__, "numpy": np.__version__, "pandas": pd.__version__},
            "compile_s": compile_time(), "repeat": repeat, "rows": rows}


def table(res: dict) -> str:
    has_rust = any("vbt_rust_bc_per_s" in r for r in res["rows"])
    head = ("| work | rebalance | engine, all series | engine, sweep outputs | (fastest run) | (fresh memory) | "
            + "vbt numba | " + ("vbt rust | " if has_rust else "") + "plain loop | bare numba loop | write floor | sweep / vbt numba | "
            + ("sweep / vbt rust | " if has_rust else "") + "sweep / loop |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in res["rows"]:
        e, el, vn, lp = r["engine_bc_per_s"], r["engine_lean_bc_per_s"], r["vbt_numba_bc_per_s"], r["loop_bc_per_s"]
        fl = r["write_floor_bc_per_s"]
        cells = [f"{r['workload']} ({r['bars']:,} x {r['cols']:,})", r["rebalance"], f"{e / 1e6:.1f}",
                 f"{el / 1e6:.1f}", f"{r['engine_lean_best_bc_per_s'] / 1e6:.1f}",
                 f"{r['engine_lean_fresh_bc_per_s'] / 1e6:.1f}", f"{vn / 1e6:.1f}"]
        if has_rust:
            cells.append(f"{r.get('vbt_rust_bc_per_s', float('nan')) / 1e6:.1f}")
        cells += [f"{lp / 1e6:.2f}", f"{r['bare_bc_per_s'] / 1e6:.0f}", f"{fl / 1e6:.0f}", f"{el / vn:.1f}x"]
        if has_rust:
            cells.append(f"{el / r.get('vbt_rust_bc_per_s', float('nan')):.1f}x")
        cells.append(f"{el / lp:.0f}x")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--only", nargs="*", default=[])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "latest.json"))
    args = ap.parse_args()
    res = run(args.repeat, args.only)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(f"\ncompile time (fresh cache): {res['compile_s']:.1f} s\n")
    print(table(res))


if __name__ == "__main__":
    main()
