"""The book kernel's two drivers, serial (small books) and parallel (columns on the threads),
give the same numbers bit for bit on random books: every account series, per-position series
and record of every column (``backtest.book.core.PARALLEL_MIN_BAR_COLUMNS`` picks one)."""

from __future__ import annotations

import numpy as np
import pytest

from backtest.book import core, simulate_book
from backtest.book import nb as bnb
from tests.book.test_book_kernel import random_book


def _run(monkeypatch, bars, tgt, specs, s, threshold: int, expect):
    called = []
    for name in ("simulate_book_nb", "simulate_book_serial_nb"):
        real = getattr(bnb, name)
        monkeypatch.setattr(bnb, name, lambda *a, _r=real, _n=name: (called.append(_n), _r(*a))[1])
    monkeypatch.setattr(core, "PARALLEL_MIN_BAR_COLUMNS", threshold)
    res = simulate_book(bars, tgt, specs, s)
    monkeypatch.undo()
    assert called and set(called) == {expect}  # (a book whose record buffers fill up runs twice)
    return res


@pytest.mark.parametrize("seed", [3, 17, 40])
def test_serial_and_parallel_drivers_give_the_same_book(seed, monkeypatch):
    bars, tgt, specs, s = random_book(seed, n=40, m=5)
    ser = _run(monkeypatch, bars, tgt, specs, s, 10 ** 12, "simulate_book_serial_nb")
    par = _run(monkeypatch, bars, tgt, specs, s, 0, "simulate_book_nb")
    assert ser.series.keys() == par.series.keys() and ser.series
    for k in ser.series:
        np.testing.assert_array_equal(ser.series[k], par.series[k], err_msg=k)
    for k in ser.positions:
        np.testing.assert_array_equal(ser.positions[k], par.positions[k], err_msg=k)
    assert ser.records.keys() == par.records.keys()
    for k in ser.records:
        assert ser.records[k].dtype == par.records[k].dtype
        assert ser.records[k].tobytes() == par.records[k].tobytes(), k
    assert sum(len(r) for r in ser.records.values()) > 0  # the books trade


def test_the_main_job_size_runs_serially():
    # the main job's book: 3 columns x 18,984 hourly bars
    assert 3 * 18_984 < core.PARALLEL_MIN_BAR_COLUMNS
