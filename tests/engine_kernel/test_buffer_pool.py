"""The engine's output buffers are lent from a pool and reused once a result is dropped: a
result that is alive, or any array taken from it, is never written by a later run."""

from __future__ import annotations

import numpy as np
import pytest

from backtest.engine import Account, simulate_perp
from backtest.engine import core as engine_core
from backtest.engine.buffers import MIN_BYTES, POOL, BufferPool
from backtest.engine.enums import RECORD_DTYPES
from tests.engine.scenario_kit import make_bars, make_spec

# every pooled output above the pool's minimum: the equity series 12.8 MB, fills (an order every
# 8 bars) 6.4 MB, position changes 3.2 MB, the funding store (a print every 8 bars) 1.6 MB
N, M = 1600, 1000


def _bars(seed: int):
    rng = np.random.default_rng(seed)
    rows, close = [], 100.0
    for _ in range(N):
        o = close
        close = o * np.exp(rng.normal(0, 0.01))
        rows.append((o, max(o, close) * 1.003, min(o, close) * 0.997, close))
    ts = make_bars(rows).timestamp
    return make_bars(rows, funding=[(t, 1e-4) for t in range(ts[0], ts[-1], 8 * 3_600_000)])


def _target(every: int, level: float) -> np.ndarray:
    t = np.full((N, M), np.nan)
    t[::every] = -np.linspace(0.5, level, M)
    return t


def _snapshot(res) -> dict:
    return {**{k: np.array(res.series[k]) for k in res.series}, **{k: np.array(res.records[k]) for k in RECORD_DTYPES}}


def _run(bars, target):
    return simulate_perp(bars, target, make_spec(lot=0.0), Account(leverage=20.0), series=("equity",))


def _data_address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


@pytest.fixture(autouse=True)
def pool(monkeypatch):
    """Each test lends from a pool of its own (the engine's, ``buffers.POOL``, is replaced)."""
    own = BufferPool(POOL.max_bytes)
    monkeypatch.setattr(engine_core, "POOL", own)
    return own


@pytest.mark.parametrize("every", [8, 1], ids=["sparse", "dense"])
def test_a_live_result_is_never_written_by_later_runs(every, monkeypatch):
    """Results kept alive side by side equal what they were when returned, however many runs
    come after them, and each run's outputs equal a run with the pool disabled."""
    bars = _bars(1)
    first = _run(bars, _target(every, 3.0))
    before = _snapshot(first)
    for k in range(4):
        other = _run(_bars(2 + k), _target(every, 1.0 + k))
        del other
    after = _snapshot(first)
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)
    later = _run(bars, _target(every, 3.0))
    monkeypatch.setattr(engine_core, "POOL", BufferPool(0))  # fresh memory for every output
    unpooled = _snapshot(_run(bars, _target(every, 3.0)))
    for k, v in _snapshot(later).items():
        np.testing.assert_array_equal(v, unpooled[k], err_msg=k)


def test_a_dropped_result_lends_its_memory_to_the_next_run(pool):
    bars = _bars(1)
    res = _run(bars, _target(8, 3.0))
    addr = _data_address(res.series.stored["equity"])
    assert pool.stats()["lent"] >= 1
    del res
    assert pool.stats()["lent"] == 0
    again = _run(bars, _target(8, 2.0))
    assert _data_address(again.series.stored["equity"]) == addr  # the same memory, written again


def test_an_array_kept_from_a_dropped_result_keeps_its_memory():
    """Keeping one series (a view of the buffer) is enough: the next run takes other memory."""
    bars = _bars(1)
    res = _run(bars, _target(8, 3.0))
    equity = res.series["equity"]
    kept = equity.copy()
    addr = _data_address(equity)
    del res
    nxt = _run(bars, _target(8, 1.0))
    assert _data_address(nxt.series.stored["equity"]) != addr
    np.testing.assert_array_equal(equity, kept)


def test_reused_funding_memory_is_zeroed(pool):
    """The funding store reads 0 as 'no payment': a run whose columns hold no position after a
    run that paid funding at every print has no funding records."""
    bars = _bars(1)
    paid = _run(bars, _target(8, 3.0))
    assert len(paid.records["funding"]) > 0
    del paid
    flat = _run(bars, np.full((N, M), np.nan))
    assert len(flat.records["funding"]) == 0
    assert pool.stats()["buffers"] >= 4  # the funding store was among the buffers lent again
    assert np.all(flat.series["cum_funding"] == 0.0)


def test_pool_limits_and_release():
    """Buffers of at least MIN_BYTES are pooled, a free one is lent for a request up to twice
    smaller, zeroed on request; the pool holds at most max_bytes (lent and idle), dropping the
    least recently lent idle buffers to make room, and lends fresh memory it does not keep
    beyond that; release() frees the idle ones; max_bytes=0 turns it off."""
    mb = MIN_BYTES
    pool = BufferPool(6 * mb)
    a = pool.empty((mb // 8,), np.float64)
    assert pool.stats() == {"buffers": 1, "bytes": mb, "lent": 1, "lent_bytes": mb}
    del a
    small = pool.empty(mb // 2, np.uint8)  # under the minimum: fresh memory, not pooled
    assert pool.stats()["buffers"] == 1 and small.base is None
    z = pool.empty((4, mb // 32), np.float64, zero=True)  # 1 MB: the idle buffer, zeroed
    assert pool.stats()["lent"] == 1 and pool.stats()["buffers"] == 1 and not z.any()
    assert z.shape == (4, mb // 32) and z.dtype == np.float64 and z.flags.c_contiguous
    big = pool.empty(4 * mb, np.uint8)  # more than twice the 1 MB one: a new buffer
    assert pool.stats() == {"buffers": 2, "bytes": 5 * mb, "lent": 2, "lent_bytes": 5 * mb}
    over = pool.empty(2 * mb, np.uint8)  # 5 + 2 > 6 and nothing idle to drop: lent, not kept
    assert pool.stats()["buffers"] == 2 and over.base is not None
    del z
    c = pool.empty(2 * mb, np.uint8)  # the idle 1 MB buffer (least recently lent) makes room
    assert pool.stats() == {"buffers": 2, "bytes": 6 * mb, "lent": 2, "lent_bytes": 6 * mb}
    del big, c, over
    assert pool.release() == 6 * mb and pool.stats()["buffers"] == 0
    off = BufferPool(0)
    d = off.empty(4 * mb, np.uint8)
    assert off.stats()["buffers"] == 0 and d.base is None
