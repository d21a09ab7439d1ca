"""The book kernels compiled ahead in a second process (``backtest/precompile.py``).

* numba's cache, unlocked, loses a signature when two processes save different signatures of one
  function at once (the interleaving is forced with two threads, the lock being a file lock like
  between processes); :func:`locked_cache` makes the second save wait and both survive;
* when the second process starts and when it does not;
* a child that fails, hangs or is killed leaves the run's numbers unchanged (the run compiles or
  loads the kernels itself);
* (slow) a cold run: the child compiles the book kernel, the run loads it instead of compiling it,
  and its numbers are those of a warm run.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from numba.core.caching import IndexDataCacheFile

import backtest.precompile as precompile
from backtest.runner import execute, parse_config

ROOT = Path(__file__).resolve().parents[1]

# A perpetual and a book on two months of 4h bars: the run simulates the perpetual first, then
# waits for the second process before the book.
PERP_AND_BOOK = {
    "title": "perp and book",
    "data": {"exchange": "binanceusdm", "symbol": "BTC/USDT:USDT", "timeframe": "4h",
             "start": "2022-01-01", "end": "2022-03-01"},
    "perp": [{"name": "short", "strategy": {"name": "short_hold", "params": {"rebalance": True}},
              "policies": ["const(1)", "const(2)"]}],
    "book": [{"name": "book", "symbols": ["BTC/USDT:USDT", "ETH/USDT:USDT"],
              "strategy": {"name": "basket_short", "params": {"weighting": "equal"}},
              "policies": ["voltarget(0.5)"], "rebalance_hours": 8,
              "account": {"initial_capital": 100000, "margin_mode": "cross", "leverage": 10}}],
}

PERP_AND_BOOK_TOML = """\
title = "perp and book"
[data]
exchange = "binanceusdm"
symbol = "BTC/USDT:USDT"
timeframe = "4h"
start = "2022-01-01"
end = "2022-03-01"
[[perp]]
name = "short"
strategy = { name = "short_hold", params = { rebalance = true } }
policies = ["const(1)", "const(2)"]
[[book]]
name = "book"
symbols = ["BTC/USDT:USDT", "ETH/USDT:USDT"]
strategy = { name = "basket_short", params = { weighting = "equal" } }
policies = ["voltarget(0.5)"]
rebalance_hours = 8
[book.account]
initial_capital = 100000
margin_mode = "cross"
leverage = 10
"""


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path_factory, monkeypatch):
    """Runs load the committed sample, never a developer's downloads."""
    monkeypatch.setenv("BACKTEST_DATA_DIR", str(tmp_path_factory.mktemp("empty-store")))


def cfg_of(doc: dict):
    return parse_config(copy.deepcopy(doc), source="test")


def numbers(run_dir: Path) -> dict:
    """metrics.json without the clock and the notes (which name local paths)."""
    m = json.loads((run_dir / "metrics.json").read_text())
    return {k: v for k, v in m.items() if k not in ("created_ms", "notes")}


# ---------------------------------------------------------------------------------------------
# the cache lock

def _interleaved_saves(folder: Path) -> tuple[dict, bool]:
    """Save key 'A' and key 'B' of one function from two cache-file objects (two processes'),
    'B' while 'A' has read the index and not written it yet; returns the final index and whether
    the second save had to wait for the first."""
    a = IndexDataCacheFile(str(folder), "f-1.py311", "stamp")
    b = IndexDataCacheFile(str(folder), "f-1.py311", "stamp")
    read, go = threading.Event(), threading.Event()
    load_index = a._load_index

    def paused_load_index():
        out = load_index()
        read.set()
        go.wait(10)
        return out

    a._load_index = paused_load_index
    ta = threading.Thread(target=a.save, args=("A", "data of A"))
    tb = threading.Thread(target=b.save, args=("B", "data of B"))
    ta.start()
    assert read.wait(10)
    tb.start()
    tb.join(1.0)
    waited = tb.is_alive()
    go.set()
    ta.join(10)
    tb.join(10)
    fresh = IndexDataCacheFile(str(folder), "f-1.py311", "stamp")
    index = fresh._load_index()
    return {k: fresh.load(k) for k in index}, waited


def test_numba_alone_loses_a_signature_when_two_saves_interleave(tmp_path):
    """The race the lock is for: both saves pick data file 1, the later index wins."""
    saved, waited = _interleaved_saves(tmp_path)
    assert not waited
    assert set(saved) != {"A", "B"}  # one of the two signatures is gone (or points at the other's code)


def test_locked_saves_wait_for_each_other_and_keep_both_signatures(tmp_path):
    with precompile.locked_cache():
        saved, waited = _interleaved_saves(tmp_path)
    assert waited
    assert saved == {"A": "data of A", "B": "data of B"}
    assert (tmp_path / precompile.LOCK_NAME).exists()


def test_the_lock_is_removed_after_the_block():
    before = IndexDataCacheFile.save, IndexDataCacheFile.load
    with precompile.locked_cache():
        assert IndexDataCacheFile.save is not before[0]
    assert (IndexDataCacheFile.save, IndexDataCacheFile.load) == before


# ---------------------------------------------------------------------------------------------
# when a second process starts

@pytest.mark.parametrize("doc", [
    {k: v for k, v in PERP_AND_BOOK.items() if k != "book"},   # no book
    {k: v for k, v in PERP_AND_BOOK.items() if k != "perp"},   # only books: nothing to do meanwhile
])
def test_none_without_a_book_or_without_other_work(doc, monkeypatch):
    monkeypatch.setattr(precompile, "book_cache_cold", lambda: True)
    assert precompile.start_book_precompile(cfg_of(doc)) is None


def test_none_on_a_warm_cache_or_when_turned_off(monkeypatch):
    cfg = cfg_of(PERP_AND_BOOK)
    monkeypatch.setattr(precompile, "book_cache_cold", lambda: False)
    assert precompile.start_book_precompile(cfg) is None
    monkeypatch.setattr(precompile, "book_cache_cold", lambda: None)  # cannot tell: do not start
    assert precompile.start_book_precompile(cfg) is None
    monkeypatch.setattr(precompile, "book_cache_cold", lambda: True)
    monkeypatch.setenv(precompile.ENV, "0")
    assert precompile.start_book_precompile(cfg) is None


def test_the_child_runs_the_books_only_and_leaves_option_legs_to_a_put_program():
    from backtest.runner import main_job

    cfg = main_job()
    assert cfg.puts and any(b.option for b in cfg.book)
    child = precompile.child_config(cfg)
    assert not (child.perp or child.puts or child.products)
    assert [b.name for b in child.book] == [b.name for b in cfg.book]
    assert all(not b.option for b in child.book)  # the run compiles the put kernel in its put program
    assert [b.model_copy(update={"option": []}) for b in cfg.book] == list(child.book)
    no_puts = cfg.model_copy(update={"puts": []})
    assert list(precompile.child_config(no_puts).book) == list(cfg.book)  # nobody else would: kept


def test_an_empty_cache_is_cold_and_a_loaded_kernel_is_not(tmp_path, monkeypatch):
    code = "from backtest.precompile import book_cache_cold; print(book_cache_cold())"
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "empty-cache"), PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.strip() == "True", out.stderr
    # this process: once a book has run, the kernel is in memory
    monkeypatch.setenv(precompile.ENV, "0")
    execute(cfg_of(PERP_AND_BOOK), reports_dir=tmp_path / "reports", log=lambda _m: None)
    assert precompile.book_cache_cold() is False


# ---------------------------------------------------------------------------------------------
# a second process that goes wrong leaves the run as it was

@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    """The run without a second process (the reference numbers)."""
    out = tmp_path_factory.mktemp("plain")
    mp = pytest.MonkeyPatch()
    mp.setenv(precompile.ENV, "0")
    mp.setenv("BACKTEST_DATA_DIR", str(tmp_path_factory.mktemp("empty-store")))
    try:
        return numbers(execute(cfg_of(PERP_AND_BOOK), reports_dir=out, log=lambda _m: None).out_dir)
    finally:
        mp.undo()


@pytest.mark.parametrize("child, says", [
    ([sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"], "failed (exit 3)"),
    ([sys.executable, "-c", "import time; time.sleep(120)"], None),                   # hangs: stopped
    ([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"], "failed (exit -9)"),
])
def test_a_failing_child_does_not_change_the_run(child, says, plain_run, tmp_path, monkeypatch):
    started = []
    real_start = precompile.start_book_precompile

    def start(cfg, status=None):
        w = real_start(cfg, status)
        started.append(w)
        return w

    monkeypatch.setattr(precompile, "book_cache_cold", lambda: True)
    monkeypatch.setattr(precompile, "CHILD", child)
    monkeypatch.setattr(precompile, "WAIT_LIMIT_S", 2.0)
    monkeypatch.setattr(precompile, "start_book_precompile", start)
    lines: list[str] = []
    out = execute(cfg_of(PERP_AND_BOOK), reports_dir=tmp_path, log=lambda _m: None, status=lines.append)
    (w,) = started
    assert w is not None and w.ok is False and w.proc.poll() is not None  # waited for, and not left running
    assert lines[0].startswith("compiling the book kernels in a second process (first run only)")
    if says:
        assert any(says in line for line in lines), lines
    assert numbers(out.out_dir) == plain_run


# ---------------------------------------------------------------------------------------------
# the real thing, from an empty cache

RUN_AND_LIST_COMPILES = """
import json, sys
from numba.core import event
compiled = []
class L(event.Listener):
    def on_start(self, ev):
        f = ev.data["dispatcher"].py_func
        compiled.append(f.__module__ + "." + f.__qualname__)
    def on_end(self, ev):
        pass
event.register("numba:compile", L())
from backtest.runner import execute, load_config
lines = []
out = execute(load_config(sys.argv[1]), reports_dir=sys.argv[2], log=lambda m: None, status=lines.append)
print(json.dumps({"compiled": compiled, "status": lines, "dir": str(out.out_dir)}))
"""


@pytest.mark.slow
def test_a_cold_run_loads_the_book_kernel_compiled_by_the_child(tmp_path, plain_run):
    """From an empty numba cache: the child compiles the book kernel while the run compiles the
    perpetual's; the run compiles no book kernel itself, and its numbers are the warm run's."""
    config = tmp_path / "run.toml"
    config.write_text(PERP_AND_BOOK_TOML)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(ROOT),
               BACKTEST_DATA_DIR=str(tmp_path / "empty-store"))
    env.pop(precompile.ENV, None)
    out = subprocess.run([sys.executable, "-c", RUN_AND_LIST_COMPILES, str(config), str(tmp_path / "reports")],
                         capture_output=True, text=True, env=env, timeout=1200, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["status"][0].startswith("compiling the book kernels in a second process")
    # the run compiled its perpetual kernel (a cold cache) and none of the book kernel's functions
    assert "backtest.engine.nb.simulate_dense_nb" in res["compiled"]
    assert not [f for f in res["compiled"] if f.startswith("backtest.book.")], res["compiled"]
    # nothing at all compiled while the book was simulated (compile_notice says so per simulation)
    assert not [line for line in res["status"] if line.startswith("compiling kernels for book ")], res["status"]
    assert numbers(Path(res["dir"])) == plain_run
