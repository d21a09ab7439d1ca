"""Which compiled specialisation of the kernel a run uses (dense, or sparse with quiet stretches).

Each specialisation is a separate numba compilation (about half a minute of CPU on an empty cache,
benchmarks/README.md "Start-up"), so a small run uses the dense one whatever its orders: a run of
small simulations (the main job) compiles one kernel. The two give the same numbers.
"""

from __future__ import annotations

import numpy as np
import pytest

from backtest.engine import core as engine_core
from backtest.engine import nb as engine_nb
from backtest.engine import simulate_perp
from backtest.engine.core import raw_outputs
from backtest.engine.enums import RECORD_DTYPES, SERIES
from tests.engine_kernel.test_kernel_vs_reference import make_case


@pytest.fixture(autouse=True)
def _default_rule(monkeypatch):
    """This file tests the rule itself: the size floor the other kernel tests switch off."""
    monkeypatch.setattr(engine_core, "SPARSE_MIN_BAR_COLUMNS", 1_000_000)


def _which(monkeypatch) -> list[str]:
    """Names of the kernel entry points called, in order (each still runs)."""
    called: list[str] = []
    for name in ("simulate_dense_nb", "simulate_sparse_nb"):
        fn = getattr(engine_nb, name)
        monkeypatch.setattr(engine_nb, name, lambda *a, _fn=fn, _name=name: called.append(_name) or _fn(*a))
    return called


def _held_short(seed: int):
    """A case whose target orders once (bar 0) and then keeps the position (NaN): the held
    short of the main job, 0 % of bars with an order after the first."""
    bars, target, spec, account, policy = make_case(seed)
    held = np.full_like(target, np.nan)
    held[0] = -1.0
    return bars, held, spec, account, policy


def test_a_small_run_with_few_orders_uses_the_dense_specialisation(monkeypatch):
    called = _which(monkeypatch)
    bars, target, spec, account, policy = _held_short(11)
    assert bars.n * target.shape[1] < engine_core.SPARSE_MIN_BAR_COLUMNS
    simulate_perp(bars, target, spec, account, policy)
    assert called == ["simulate_dense_nb"]


def test_a_run_at_the_size_floor_with_few_orders_uses_the_sparse_specialisation(monkeypatch):
    """At SPARSE_MIN_BAR_COLUMNS bar-columns (floor lowered to this case's size) the order share
    decides: one order in n bars is under SPARSE_MAX_ORDER_SHARE, so sparse; one bar-column fewer
    than the floor, dense."""
    called = _which(monkeypatch)
    bars, target, spec, account, policy = _held_short(11)
    size = bars.n * target.shape[1]
    monkeypatch.setattr(engine_core, "SPARSE_MIN_BAR_COLUMNS", size)
    simulate_perp(bars, target, spec, account, policy)
    monkeypatch.setattr(engine_core, "SPARSE_MIN_BAR_COLUMNS", size + 1)
    simulate_perp(bars, target, spec, account, policy)
    assert called == ["simulate_sparse_nb", "simulate_dense_nb"]


def test_a_run_with_an_order_every_bar_uses_the_dense_specialisation_at_any_size(monkeypatch):
    called = _which(monkeypatch)
    bars, target, spec, account, policy = make_case(11)
    full = np.where(np.isnan(target), -1.0, target)
    monkeypatch.setattr(engine_core, "SPARSE_MIN_BAR_COLUMNS", 0)
    simulate_perp(bars, full, spec, account, policy)
    assert called == ["simulate_dense_nb"]


@pytest.mark.parametrize("seed", [3, 11, 230])
def test_the_choice_does_not_change_the_numbers(seed, monkeypatch):
    """The held short run below the floor (dense) equals, bit for bit, the same run with the
    floor at 0 (sparse): every series and every record."""
    called = _which(monkeypatch)
    bars, target, spec, account, policy = _held_short(seed)
    dense = raw_outputs(simulate_perp(bars, target, spec, account, policy))
    monkeypatch.setattr(engine_core, "SPARSE_MIN_BAR_COLUMNS", 0)
    sparse = raw_outputs(simulate_perp(bars, target, spec, account, policy))
    assert called == ["simulate_dense_nb", "simulate_sparse_nb"]
    for k in SERIES:
        np.testing.assert_array_equal(dense[0][k], sparse[0][k], err_msg=k)
    for k in RECORD_DTYPES:
        np.testing.assert_array_equal(dense[1][k], sparse[1][k], err_msg=k)
    assert len(dense[1]["fills"]) >= 1  # the order was placed (a run that never trades proves nothing)


def test_a_read_only_target_uses_the_same_compiled_kernel():
    """numba types a read-only array apart from a writable one; a target pandas hands out
    read-only (copy-on-write) must not compile the kernel a second time (it did in the main job:
    40 s of its first run). Both runs give the same numbers."""
    bars, target, spec, account, policy = make_case(5)
    writable = np.array(target, dtype=np.float64)
    a = raw_outputs(simulate_perp(bars, writable, spec, account, policy))
    before = {name: len(getattr(engine_nb, name).signatures) for name in ("simulate_dense_nb", "target_scan_nb")}
    frozen = np.array(target, dtype=np.float64)
    frozen.flags.writeable = False
    b = raw_outputs(simulate_perp(bars, frozen, spec, account, policy))
    after = {name: len(getattr(engine_nb, name).signatures) for name in ("simulate_dense_nb", "target_scan_nb")}
    assert after == before
    for name in SERIES:
        if name in a[0]:
            np.testing.assert_array_equal(a[0][name], b[0][name])
