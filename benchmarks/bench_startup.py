"""Start-up cost of ``backtest run``: cold (empty numba cache) and warm, with the stage split.

Every measured run is a fresh interpreter (``subprocess``), as a user's ``backtest run`` is. The
child runs the real command (``backtest.cli.app(["run", ...])``, as the console script does),
with timers wrapped around the run's stages:

``startup``  interpreter start-up (the parent's wall time less the child's own)
``import``   ``import backtest.cli`` and the modules the run command imports first
``setup``    config parsing, settings checks, reports folder (before the data)
``load``     market data and market spec (``load_data`` until the first simulation)
``targets``  strategy targets and leverage policies (``strategies.policies.build_targets``)
``compile``  numba compilation of the simulation kernels (numba's ``numba:compile`` events,
             outermost only; zero on a warm run: a cache load is no compile)
``kernel``   the simulations less their targets and compilation (cache loads included)
``book wait`` a cold run of a config with books: the wait for the book kernels compiling in a
             second process (``backtest/precompile.py``), including the metrics kernels compiled
             meanwhile (the second process's CPU time is in the CPU seconds: it is a child)
``metrics``  ``backtest.report.collect`` less its compilation (``compile (metrics)``)
``stress``   the run's ``[stress]`` section (``backtest.runner.run._run_stress``: Monte Carlo paths,
             crisis windows, shocks, cascade), zero without one
``report``   writing the report folder (figures, HTML, Parquet, JSON)

Cold: ``NUMBA_CACHE_DIR`` set to a new empty temporary folder; warm: the same folder afterwards.
``--warm-cache DIR`` skips the cold run and times warm runs on a cache folder a run already filled
(``NUMBA_CACHE_DIR=DIR backtest run``), printing the minimum and the median of each stage: the
minimum is the number to compare on a shared machine (the other jobs only ever add time).
CPU seconds (user + system, all threads) are shown with the wall seconds: on a shared machine the
wall time depends on the other jobs, the CPU time much less.

``--imports`` adds ``python -X importtime`` of one warm run: the slowest top-level imports
(cumulative) and the slowest modules (self time).

``--book`` measures the book kernel (``backtest.book.simulate_book``) alone, cold: a two-symbol,
two-column book of a year of hourly bars, first call (compile) and second call, with the numba pipeline passes
that cost the most in the column kernel's compilation (the driver is the one ``backtest.book.core`` picks for
this size: the serial one since PARALLEL_MIN_BAR_COLUMNS).

Usage::

    .venv/bin/python benchmarks/bench_startup.py                  # cold once, warm 3 times
    .venv/bin/python benchmarks/bench_startup.py --repeat 5 --imports --json /tmp/startup.json
    .venv/bin/python benchmarks/bench_startup.py --book           # the book kernel's compile
    NUMBA_CACHE_DIR=/tmp/nbc .venv/bin/backtest run -q             # fill a cache once, then
    .venv/bin/python benchmarks/bench_startup.py --warm-cache /tmp/nbc --repeat 5
    .venv/bin/python benchmarks/bench_startup.py --config examples/some.toml
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("startup", "import", "setup", "load", "targets", "compile", "kernel", "book wait", "compile (metrics)",
          "metrics", "stress", "report", "other")


# ----------------------------------------------------------------------------------------------
# child side: one run, timed by stage
# ----------------------------------------------------------------------------------------------

class _Compiles:
    """Wall seconds of outermost numba compilations, by the stage they happened in, and every
    compilation (nested ones too) by function: its count (one per signature) and own seconds
    (its duration less its nested compilations')."""

    def __init__(self) -> None:
        self.depth = 0
        self.t0 = 0.0
        self.stage = "other"
        self.seconds: dict[str, float] = {}
        self.count: dict[str, int] = {}
        self.stack: list[list[float]] = []  # [start, nested seconds] of each open compilation
        self.own: dict[str, float] = {}
        self.sigs: dict[str, int] = {}

    def listener(self):
        from numba.core import event

        outer = self

        class L(event.Listener):
            def on_start(self, ev):  # noqa: ARG002 - numba's Listener interface
                if outer.depth == 0:
                    outer.t0 = time.perf_counter()
                outer.depth += 1
                outer.stack.append([time.perf_counter(), 0.0])

            def on_end(self, ev):
                outer.depth -= 1
                t0, nested = outer.stack.pop()
                dt = time.perf_counter() - t0
                if outer.stack:
                    outer.stack[-1][1] += dt
                py = ev.data["dispatcher"].py_func
                name = f"{py.__module__}.{py.__qualname__}"
                outer.own[name] = outer.own.get(name, 0.0) + dt - nested
                outer.sigs[name] = outer.sigs.get(name, 0) + 1
                if outer.depth == 0:
                    outer.seconds[outer.stage] = outer.seconds.get(outer.stage, 0.0) + time.perf_counter() - outer.t0
                    outer.count[outer.stage] = outer.count.get(outer.stage, 0) + 1

        return L()


def _child_run(config: str | None, out_dir: str) -> dict:
    t_start, c_start = time.perf_counter(), time.process_time()
    from numba.core import event

    comp = _Compiles()
    event.register("numba:compile", comp.listener())

    import backtest.cli as cli
    import backtest.report as report
    import backtest.runner.run as run
    import strategies.policies as policies
    try:
        import backtest.precompile as precompile
    except ImportError:  # a version without it (the "before" of benchmarks/README.md)
        precompile = None

    t_import, c_import = time.perf_counter(), time.process_time()
    spans: dict[str, float] = {}
    marks: dict[str, float] = {}
    cspans: dict[str, float] = {}  # the same with the process's CPU clock (all its threads)
    cmarks: dict[str, float] = {}

    def timed(module, name, stage, mark=None):
        fn = getattr(module, name)

        def wrapper(*a, **k):
            if mark:
                marks.setdefault(mark, time.perf_counter())
                cmarks.setdefault(mark, time.process_time())
            prev, comp.stage = comp.stage, stage
            t, c = time.perf_counter(), time.process_time()
            try:
                return fn(*a, **k)
            finally:
                spans[stage] = spans.get(stage, 0.0) + time.perf_counter() - t
                cspans[stage] = cspans.get(stage, 0.0) + time.process_time() - c
                comp.stage = prev
        setattr(module, name, wrapper)

    timed(run, "load_data", "load_data", mark="load")
    timed(run, "simulate_all", "simulate", mark="simulate")
    timed(policies, "build_targets", "targets")
    timed(report, "collect", "metrics")
    timed(run, "_publish", "report")
    if hasattr(run, "_run_stress"):
        timed(run, "_run_stress", "stress")
    if precompile is not None:  # the wait for the book kernels compiled in a second process
        timed(precompile.BookPrecompile, "ready", "book wait")
    # each simulation of the run by its kind (its compilations are counted in its own stage)
    for fn, stage in (("_perp", "sim perp"), ("simulate_perp_config", "sim perp"), ("_puts", "sim puts"), ("_products", "sim products"),
                      ("_book", "sim book"), ("simulate_baselines", "sim baselines")):
        if hasattr(run, fn):
            timed(run, fn, stage)
    args = ["run", "-q", "-o", out_dir] + ([config] if config else [])
    t_cmd, c_cmd = time.perf_counter(), time.process_time()
    cli.app(args, standalone_mode=False)
    t_end, c_end = time.perf_counter(), time.process_time()

    sims = [k for k in spans if k.startswith("sim ")]
    c_sim = sum(comp.seconds.get(k, 0.0) for k in ("simulate", "targets", *sims))

    def split(spans, marks, t_start, t_import, t_cmd, t_end):
        # the stages by one clock (compilations are timed on the wall clock only: single-threaded,
        # about their CPU time; zero on a warm run)
        stages = {
            "import": t_import - t_start,
            "setup": marks.get("load", t_end) - t_cmd,
            "load": marks.get("simulate", t_end) - marks.get("load", t_end),
            "targets": spans.get("targets", 0.0),
            "compile": c_sim,
            "kernel": (spans.get("simulate", 0.0) + spans.get("sim baselines", 0.0) - spans.get("targets", 0.0)
                       - c_sim - spans.get("book wait", 0.0)),
            "book wait": spans.get("book wait", 0.0),
            "compile (metrics)": comp.seconds.get("metrics", 0.0),
            "metrics": spans.get("metrics", 0.0) - comp.seconds.get("metrics", 0.0),
            "stress": spans.get("stress", 0.0),
            "report": spans.get("report", 0.0) - comp.seconds.get("report", 0.0),
        }
        stages["other"] = t_end - t_start - sum(stages.values())
        return stages

    stages = split(spans, marks, t_start, t_import, t_cmd, t_end)
    cpu_stages = split(cspans, cmarks, c_start, c_import, c_cmd, c_end)
    total = t_end - t_start
    # the simulations by kind: wall seconds (targets, compile, run) and compile seconds
    by_sim = {k[4:]: {"seconds": spans[k], "compile": comp.seconds.get(k, 0.0)} for k in sims}
    kernels = {k: {"own_seconds": round(v, 3), "compilations": comp.sigs[k]}
               for k, v in sorted(comp.own.items(), key=lambda kv: -kv[1])}
    return {"total": total, "stages": stages, "cpu_stages": cpu_stages, "compiles": sum(comp.count.values()),
            "compile_seconds": sum(comp.seconds.values()), "simulations": by_sim, "kernels": kernels}


def _child_book() -> dict:
    """Compile the book kernel on a small book; the first and second call, and the passes."""
    import numpy as np

    from benchmarks.bench_book import make_bars, spec
    from backtest.book import BookBars, BookSettings, simulate_book
    from backtest.book import nb as book_nb
    from backtest.engine.settings import Account

    k, m = 2, 2
    legs = [make_bars(s, 100.0 * (s + 1)) for s in range(k)]
    bars = BookBars.from_legs([f"S{s}" for s in range(k)], legs)
    n = bars.n
    tgt = np.full((n, k, m), np.nan)
    tgt[::8] = -np.array([1.0, 2.0])[None, None, :] / k
    settings = BookSettings(account=Account(initial_capital=10_000.0, leverage=10.0, margin_mode="cross", lag=1))
    t = time.perf_counter()
    simulate_book(bars, tgt, [spec()] * k, settings)
    first = time.perf_counter() - t
    t = time.perf_counter()
    simulate_book(bars, tgt, [spec()] * k, settings)
    second = time.perf_counter() - t
    # every book kernel compiled here, by its own compile time (a caller's includes its callees'):
    # the column kernel (book_col_nb) holds the bar loop and, with inline="always", every helper
    own: dict[str, float] = {}
    passes: dict[str, dict[str, float]] = {}
    for name in dir(book_nb):
        disp = getattr(book_nb, name)
        for cres in getattr(disp, "overloads", {}).values():
            if cres.metadata is None:  # loaded from the cache (a warm process): nothing to break down
                continue
            own[name] = own.get(name, 0.0) + cres.metadata["timers"]["compiler_lock"]
            p = passes.setdefault(name, {})
            for pname, v in cres.metadata["pipeline_times"]["nopython"].items():
                p[pname] = p.get(pname, 0.0) + v.init + v.run + v.finalize
    top = sorted(own.items(), key=lambda kv: -kv[1])[:4]
    col = "book_col_nb" if "book_col_nb" in passes else (top[0][0] if top else "")
    col_passes = dict(sorted(passes.get(col, {}).items(), key=lambda kv: -kv[1])[:6])
    return {"first_call": first, "second_call": second, "compile_seconds": dict(top), "passes": col_passes,
            "passes_of": col, "module": book_nb.__file__}


# ----------------------------------------------------------------------------------------------
# parent side
# ----------------------------------------------------------------------------------------------

def _spawn(mode: str, cache: Path, extra: list[str], python_flags: list[str] = ()) -> tuple[dict, float, float, str]:
    """Run a child; (its report, wall seconds, CPU seconds of the child, its stderr)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    out = subprocess.run([sys.executable, *python_flags, str(Path(__file__).resolve()), mode, *extra],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise SystemExit(f"child {mode} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return json.loads(out.stdout.strip().splitlines()[-1]), wall, cpu, out.stderr


def _importtime(stderr: str, top: int = 12) -> dict:
    """The slowest top-level imports (cumulative) and modules (self), in ms, from -X importtime."""
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cum_us, name = line[len("import time:"):].split("|", 2)
        rows.append((len(name) - len(name.lstrip()) - 1, name.strip(), int(self_us) / 1e3, int(cum_us) / 1e3))
    level0 = sorted((r for r in rows if r[0] == 0), key=lambda r: -r[3])[:top]
    by_self = sorted(rows, key=lambda r: -r[2])[:top]
    return {"top_level_cumulative_ms": {r[1]: round(r[3], 1) for r in level0},
            "self_ms": {r[1]: round(r[2], 1) for r in by_self}}


def _stage_row(res: dict, wall: float) -> dict:
    stages = dict(res["stages"])
    stages["startup"] = max(wall - res["total"], 0.0)
    return {s: stages.get(s, 0.0) for s in STAGES}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child-run":
        config = sys.argv[3] if len(sys.argv) > 3 else None
        print(json.dumps(_child_run(config or None, sys.argv[2])))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--child-book":
        print(json.dumps(_child_book()))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="warm runs (median shown)")
    ap.add_argument("--config", default="", help="run config (default: the main job)")
    ap.add_argument("--imports", action="store_true", help="add -X importtime of a warm run")
    ap.add_argument("--book", action="store_true", help="measure the book kernel's cold compile instead")
    ap.add_argument("--top", type=int, default=12, help="compilations listed (cold run)")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers to this file")
    ap.add_argument("--warm-cache", type=Path, default=None,
                    help="a numba cache folder a run already filled: warm runs only (min and median)")
    a = ap.parse_args()
    result: dict = {"python": sys.version.split()[0], "cpus": os.cpu_count(), "load_avg_before": os.getloadavg()}

    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        cache, out = Path(tmp) / "numba-cache", Path(tmp) / "reports"
        cache.mkdir()
        if a.warm_cache is not None:
            if not a.warm_cache.is_dir():
                raise SystemExit(f"--warm-cache {a.warm_cache}: no such folder; fill one first with "
                                 f"NUMBA_CACHE_DIR={a.warm_cache} backtest run -q")
            extra = [str(out)] + ([str(Path(a.config).resolve())] if a.config else [])
            runs = []
            for _ in range(a.repeat):
                res, wall, cpu, _ = _spawn("--child-run", a.warm_cache, extra)
                cs = dict(res["cpu_stages"])
                cs["startup"] = max(cpu - sum(cs.values()), 0.0)  # the interpreter's start, before the timers
                runs.append({"wall": wall, "cpu": cpu, "compiles": res["compiles"], "stages": _stage_row(res, wall),
                             "cpu_stages": cs})
                print(f"warm run: {wall:6.2f} s wall, {cpu:6.2f} s CPU, {res['compiles']} kernel compilations",
                      flush=True)
            result["warm"] = runs
            print(f"\n{'stage':18s} {'wall min':>9s} {'median':>8s} {'CPU min':>9s} {'median':>8s}")
            for s in STAGES:
                v = [r["stages"][s] for r in runs]
                c = [r["cpu_stages"][s] for r in runs]
                print(f"{s:18s} {min(v):9.2f} {statistics.median(v):8.2f} {min(c):9.2f} {statistics.median(c):8.2f}")
            for k, label in (("wall", "total (wall)"), ("cpu", "CPU (user+sys)")):
                v = [r[k] for r in runs]
                print(f"{label:18s} {min(v):8.2f} {statistics.median(v):8.2f}")
        elif a.book:
            res, wall, cpu, _ = _spawn("--child-book", cache, [])
            warm, wall_w, cpu_w, _ = _spawn("--child-book", cache, [])
            result["book"] = {"cold": res | {"wall": wall, "cpu": cpu}, "warm": warm | {"wall": wall_w, "cpu": cpu_w}}
            print(f"book kernel ({res['module']}): cold process {wall:.1f} s wall, {cpu:.1f} s CPU; "
                  f"first call {res['first_call']:.1f} s, second {res['second_call'] * 1e3:.1f} ms; "
                  f"warm process {wall_w:.1f} s wall, first call {warm['first_call']:.2f} s (cache load)")
            print("  compile time (each includes its callees'):",
                  ", ".join(f"{k} {v:.1f} s" for k, v in res["compile_seconds"].items()))
            print(f"  slowest passes of {res['passes_of']}:", ", ".join(f"{k} {v:.1f} s" for k, v in res["passes"].items()))
        else:
            extra = [str(out)] + ([str(Path(a.config).resolve())] if a.config else [])
            runs = []
            for k in range(1 + a.repeat):
                res, wall, cpu, _ = _spawn("--child-run", cache, extra)
                runs.append({"wall": wall, "cpu": cpu, "compiles": res["compiles"],
                             "stages": _stage_row(res, wall)})
                print(f"{'cold' if k == 0 else 'warm'} run: {wall:6.1f} s wall, {cpu:6.1f} s CPU, "
                      f"{res['compiles']} kernel compilations", flush=True)
                if k == 0:
                    cold_detail = res
            cold, warm = runs[0], runs[1:]
            result |= {"cold": cold, "warm": warm, "cold_simulations": cold_detail["simulations"],
                       "cold_kernels": cold_detail["kernels"]}
            print("\ncold run by simulation (wall s: all of it / its compilations):")
            for name, v in cold_detail["simulations"].items():
                print(f"  {name:12s} {v['seconds']:7.2f} {v['compile']:7.2f}")
            print("slowest compilations (own wall s, without nested ones; compilations = signatures):")
            for name, v in list(cold_detail["kernels"].items())[:a.top]:
                print(f"  {v['own_seconds']:7.2f}  x{v['compilations']}  {name}")
            again = {k: v["compilations"] for k, v in cold_detail["kernels"].items() if v["compilations"] > 1}
            if again:
                print("compiled more than once:", ", ".join(f"{k} x{n}" for k, n in again.items()))
            print(f"\n{'stage':18s} {'cold s':>8s} {'warm s (median)':>16s}")
            for s in STAGES:
                med = statistics.median(r["stages"][s] for r in warm) if warm else float("nan")
                print(f"{s:18s} {cold['stages'][s]:8.2f} {med:16.2f}")
            wmed = statistics.median(r["wall"] for r in warm) if warm else float("nan")
            cmed = statistics.median(r["cpu"] for r in warm) if warm else float("nan")
            print(f"{'total (wall)':18s} {cold['wall']:8.2f} {wmed:16.2f}")
            print(f"{'CPU (user+sys)':18s} {cold['cpu']:8.2f} {cmed:16.2f}")
            if a.imports:
                env_flags = ["-X", "importtime"]
                _, _, _, err = _spawn("--child-run", cache, extra, env_flags)
                result["importtime"] = _importtime(err)
                print("\nslowest top-level imports (cumulative ms):")
                for k, v in result["importtime"]["top_level_cumulative_ms"].items():
                    print(f"  {v:8.1f}  {k}")
                print("slowest modules (self ms):")
                for k, v in result["importtime"]["self_ms"].items():
                    print(f"  {v:8.1f}  {k}")
    result["load_avg_after"] = os.getloadavg()
    print(f"\nload average before {result['load_avg_before'][0]:.1f}, after {result['load_avg_after'][0]:.1f} "
          f"({result['cpus']} CPUs)")
    if a.json:
        a.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
