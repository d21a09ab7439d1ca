"""Fixtures for the engine tests.

``simulate`` runs every scenario/property test once per implementation of the perpetual engine.
Each implementation takes ``(bars, target, spec, account, policy)`` and returns
``(series, records)`` like :func:`backtest.engine.reference.simulate_reference`. To test another
implementation with the same tests, add one entry to ``IMPLEMENTATIONS``. The kernel runs as
both of its specialisations (dense, and sparse with quiet stretches between target orders).
"""

from __future__ import annotations

import pytest

from backtest.engine import core as engine_core
from backtest.engine import simulate_perp
from backtest.engine.core import raw_outputs
from backtest.engine.reference import simulate_reference


def kernel_with(share: float):
    """The numba engine behind the reference's signature, its specialisation forced:
    ``share`` 0 = dense always, 2 = sparse (quiet stretches) always."""
    def simulate_kernel(bars, target, spec, account, policy):
        saved = engine_core.SPARSE_MAX_ORDER_SHARE
        engine_core.SPARSE_MAX_ORDER_SHARE = share
        try:
            return raw_outputs(simulate_perp(bars, target, spec, account, policy))
        finally:
            engine_core.SPARSE_MAX_ORDER_SHARE = saved
    return simulate_kernel


IMPLEMENTATIONS = {
    "reference": simulate_reference,
    "kernel": kernel_with(0.0),
    "kernel_sparse": kernel_with(2.0),
}


@pytest.fixture(autouse=True)
def _no_sparse_size_floor(monkeypatch):
    """Small cases choose the specialisation by the order share alone (``kernel_with``), as if
    they were large: a real run under ``SPARSE_MIN_BAR_COLUMNS`` bar-columns is always dense."""
    monkeypatch.setattr(engine_core, "SPARSE_MIN_BAR_COLUMNS", 0)


@pytest.fixture(params=list(IMPLEMENTATIONS))
def simulate(request):
    return IMPLEMENTATIONS[request.param]
