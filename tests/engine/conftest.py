"""Fixtures for the engine tests.

``simulate`` runs every scenario/property test once per implementation of the perpetual engine.
Each implementation takes ``(bars, target, spec, account, policy)`` and returns
``(series, records)`` like :func:`backtest.engine.reference.simulate_reference`. To test another
implementation with the same tests, add one entry to ``IMPLEMENTATIONS``.
"""

from __future__ import annotations

import pytest

from backtest.engine import simulate_perp
from backtest.engine.core import raw_outputs

from backtest.engine.reference import simulate_reference

def simulate_kernel(bars, target, spec, account, policy):
    """The numba engine behind the reference's signature."""
    return raw_outputs(simulate_perp(bars, target, spec, account, policy))


IMPLEMENTATIONS = {
    "reference": simulate_reference,
    "kernel": simulate_kernel,
}


@pytest.fixture(params=list(IMPLEMENTATIONS))
def simulate(request):
    return IMPLEMENTATIONS[request.param]
