"""Executors of a sweep's chunks: local processes and a real Dask ``LocalCluster`` (2 worker
processes) give the in-process result bit for bit; a worker killed mid-sweep costs a retry, not
the result."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import cloudpickle
import pandas as pd
import pytest

from backtest.runner import parse_config
from backtest.runner.chunks import CHUNK_BYTES_PER_CELL
from backtest.runner.executors import DaskExecutor, InProcess, Processes, executor_for
from backtest.runner.sweep import run_sweep
from runner_kit import TINY

BARS = 354
MEMORY = BARS * CHUNK_BYTES_PER_CELL * 3  # chunks of 3 columns


def config(slow):
    doc = json.loads(json.dumps(TINY))
    doc["perp"][0]["strategy"]["params"]["slow_days"] = list(slow)
    doc["perp"][0]["policies"] = ["const(1)", "const(2)", "voltarget(0.5)"]
    doc["sweep"] = {"x": "slow_days"}
    return parse_config(doc)


@pytest.fixture(autouse=True)
def sample_data(monkeypatch, tmp_path):
    monkeypatch.setenv("BACKTEST_DATA_DIR", str(tmp_path / "empty"))  # the committed sample


def tables(out):
    return pd.read_parquet(out.out_dir / "sweep_metrics.parquet"), (out.out_dir / "sweep.csv").read_text()


def run(tmp_path, cfg, sub, **kw):
    return run_sweep(cfg, reports_dir=tmp_path / sub, log=lambda _m: None, quiet=True, memory=MEMORY, html=False,
                     **kw)


def _square(shared, item):
    return shared * item * item


def test_executors_map_every_item_once():
    items = [1, 2, 3, 4, 5]
    assert sorted(InProcess().map(_square, 10, items)) == [(i, 10 * x * x) for i, x in enumerate(items)]
    ex = Processes(2)
    try:
        assert sorted(ex.map(_square, 10, items)) == [(i, 10 * x * x) for i, x in enumerate(items)]
    finally:
        ex.close()


def test_executor_choice():
    assert isinstance(executor_for(None, None), InProcess)
    assert isinstance(executor_for(1, None), InProcess)
    assert isinstance(executor_for(3, None), Processes)
    with pytest.raises(ValueError, match="workers=0 must be at least 1"):
        Processes(0)


@pytest.mark.slow
def test_local_processes_give_the_in_process_result(tmp_path):
    cfg = config([5, 10, 20])
    local = run(tmp_path, cfg, "local")
    procs = run(tmp_path, cfg, "procs", workers=2)
    # the memory is shared by the chunks in flight: 2 workers, chunks of 1 column instead of 3
    assert procs.executor == "2 local processes" and (local.chunks, procs.chunks) == (3, 9)
    a, b = tables(local), tables(procs)
    pd.testing.assert_frame_equal(a[0], b[0], check_exact=True)
    assert a[1] == b[1]


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    cl = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  memory_limit="1GB")
    client = distributed.Client(cl)
    yield cl, client
    client.close()
    cl.close()


@pytest.mark.slow
def test_a_dask_cluster_gives_the_in_process_result(tmp_path, cluster):
    _, client = cluster
    cfg = config([5, 10, 20, 30])
    local = run(tmp_path, cfg, "local")
    dask = run(tmp_path, cfg, "dask", executor=DaskExecutor(client))
    assert dask.executor.startswith("Dask scheduler tcp://") and dask.computed == 4
    a, b = tables(local), tables(dask)
    pd.testing.assert_frame_equal(a[0], b[0], check_exact=True)
    assert a[1] == b[1]


# the workers do not have this test module on their path: send its functions by value
cloudpickle.register_pickle_by_value(__import__(__name__))


def _slow_chunk(task, bounds):
    """run_chunk, slowed so a worker can be killed while chunks are in flight."""
    from backtest.runner.chunks import run_chunk

    time.sleep(0.5)
    return run_chunk(task, bounds)


@pytest.mark.slow
def test_a_worker_killed_mid_sweep_costs_a_retry_not_the_result(tmp_path, cluster, monkeypatch):
    cl, client = cluster
    cfg = config([5, 10, 20, 30, 40, 50])  # 18 columns: 6 chunks
    local = run(tmp_path, cfg, "local")
    import backtest.runner.chunks as chunks

    monkeypatch.setattr(chunks, "run_chunk", _slow_chunk)
    killed: list[int] = []

    def kill_one():
        # once a chunk is running, SIGKILL the process of one worker (as a lost machine)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            processing = client.processing()
            busy = [w for w, tasks in processing.items() if tasks]
            if busy:
                pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.05)

    t = threading.Thread(target=kill_one)
    t.start()
    dask = run(tmp_path, cfg, "dask", executor=DaskExecutor(client))
    t.join()
    assert killed, "no worker was killed"
    a, b = tables(local), tables(dask)
    pd.testing.assert_frame_equal(a[0], b[0], check_exact=True)
    assert a[1] == b[1]
    assert dask.computed == 6
