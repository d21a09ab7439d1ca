"""Time and memory of ``compute_metrics`` (the compiled pass, ``backtest/metrics/nb.py``) against
the per-column implementation it replaced (``backtest.metrics.reference``), in one process.

Work: the embedded Binance BTC/USDT perp, 1h bars 2021-01-01 .. 2024-01-01 (26,280 bars), a
``trend_short`` grid (``slow_days`` from 5 to 200) x 4 policies (const(1), const(3), const(8),
voltarget(0.5)), cross margin at leverage 20, margin calls at 0.5 answered by top-ups from a
500 USDT reserve, trading on after a liquidation (so the records hold fills, funding, margin
calls and liquidations): ``--cols`` columns in one ``simulate_perp`` run (every series). Stages:

* ``simulate``: the engine run;
* ``derive``: the first read of the series and records the metrics read (the engine derives
  some on first access: ``leverage``, ``cum_fees``, the full ``fills`` records, ...); paid once
  per result, by whichever metrics call comes first, so it is measured apart;
* ``new`` and ``old``: ``compute_metrics(res, currency="usd")`` and the reference, median of
  ``--repeat`` runs taking turns (the old one runs once above ``--old-repeat-max`` columns and not
  at all above ``--old-max``: 80 s at 2,000 columns);
* peak memory of each metrics call: the peak of the memory allocated during the call
  (``tracemalloc``, which numpy reports to), in a separate call so that tracing does not slow the
  timed ones.

Both calls' outputs are compared (every metric of every column; floats to rtol 1e-9).

Usage: ``python benchmarks/bench_metrics.py [--cols 100 1000 5000] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import gc
import math
import statistics
import time
import tracemalloc

import numpy as np

from backtest.data import load_market_data
from backtest.engine import Account, simulate_perp
from backtest.market import load_market
from backtest.metrics import compute_metrics
from backtest.metrics.reference import compute_metrics_reference
from strategies.policies import build_targets

POLICIES = ["const(1)", "const(3)", "const(8)", "voltarget(0.5)"]


def sweep(m: int):
    """The ``m``-column result (m a multiple of 4) and its simulate time, s."""
    md = load_market_data("binanceusdm", "BTC/USDT:USDT", "1h", start="2021-01-01", end="2024-01-01")
    spec = load_market("binanceusdm", "BTC/USDT:USDT")
    slow = np.round(np.linspace(5.0, 200.0, m // len(POLICIES)), 6).tolist()
    target, policy, columns = build_targets(md, "trend_short", {"slow_days": slow}, POLICIES)
    t0 = time.perf_counter()
    account = Account(initial_capital=10_000.0, margin_mode="cross", leverage=20.0, margin_call_threshold=0.5,
                      margin_call_target=0.3, margin_call_response="top_up", reserve=500.0,
                      after_liquidation="continue")
    res = simulate_perp(md, target, spec, account, policy, columns=columns)
    return res, time.perf_counter() - t0


def derive(res) -> float:
    """Read every series and record array the metrics read; seconds."""
    t0 = time.perf_counter()
    for name in ("equity", "equity_usd", "capital_added", "cum_funding", "cum_fees", "position", "leverage"):
        res.series[name]
    for name in res.records:
        res.records[name]
    return time.perf_counter() - t0


def peak_mb(fn, *args, **kw) -> float:
    gc.collect()
    tracemalloc.start()
    fn(*args, **kw)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def same(a: dict, b: dict) -> int:
    """Number of metric values compared; raises on the first difference."""
    assert {k: v for k, v in a.items() if k != "columns"} == {k: v for k, v in b.items() if k != "columns"}
    assert list(a["columns"]) == list(b["columns"])
    n = 0
    for label, ca in a["columns"].items():
        cb = b["columns"][label]
        assert list(ca) == list(cb), label
        for k, x in ca.items():
            y = cb[k]
            assert type(x) is type(y), (label, k, x, y)
            ok = math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9) if isinstance(x, float) else x == y
            assert ok, (label, k, x, y)
            n += 1
    return n


def run(cols: list[int], repeat: int, old_max: int, old_repeat_max: int) -> list[dict]:
    compute_metrics(sweep(4)[0], currency="usd")  # compile (or load the numba cache)
    rows = []
    for m in cols:
        res, t_sim = sweep(m)
        t_derive = derive(res)
        runs = {"new": [], "old": []}
        old = m <= old_max
        for i in range(repeat):
            t0 = time.perf_counter()
            new_out = compute_metrics(res, currency="usd")
            runs["new"].append(time.perf_counter() - t0)
            if old and (i == 0 or m <= old_repeat_max):
                t0 = time.perf_counter()
                old_out = compute_metrics_reference(res, currency="usd")
                runs["old"].append(time.perf_counter() - t0)
        row = {"cols": m, "bars": res.n_bars, "simulate_s": t_sim, "derive_s": t_derive,
               "new_s": statistics.median(runs["new"]), "new_mb": peak_mb(compute_metrics, res, currency="usd")}
        if old:
            row.update(old_s=statistics.median(runs["old"]), old_runs=len(runs["old"]),
                       old_mb=peak_mb(compute_metrics_reference, res, currency="usd"),
                       compared=same(new_out, old_out))
        liq = res.records["liquidations"]
        row["liquidated_cols"] = int(len(np.unique(liq["col"])))
        row["margin_calls"] = int(len(res.records["margin_calls"]))
        rows.append(row)
        print(row, flush=True)
        del res, new_out
        gc.collect()
    return rows


def table(rows: list[dict]) -> str:
    out = ["| columns | simulate | derive (first read) | new | old | old / new | new peak | old peak |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        old = f"{r['old_s']:.2f} s" if "old_s" in r else "-"
        ratio = f"{r['old_s'] / r['new_s']:.0f}x" if "old_s" in r else "-"
        old_mb = f"{r['old_mb']:,.0f} MB" if "old_mb" in r else "-"
        out.append(f"| {r['cols']:,} | {r['simulate_s']:.2f} s | {r['derive_s']:.2f} s | {r['new_s']:.3f} s | {old} "
                   f"| {ratio} | {r['new_mb']:,.0f} MB | {old_mb} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cols", type=int, nargs="+", default=[100, 1000, 5000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--old-max", type=int, default=1000, help="largest column count the old implementation runs at")
    ap.add_argument("--old-repeat-max", type=int, default=100,
                    help="above this column count the old implementation runs once")
    a = ap.parse_args()
    bad = [m for m in a.cols if m <= 0 or m % len(POLICIES)]
    if bad:
        raise SystemExit(f"--cols {bad}: each must be a positive multiple of {len(POLICIES)} (the policies)")
    print(table(run(a.cols, a.repeat, a.old_max, a.old_repeat_max)))


if __name__ == "__main__":
    main()
