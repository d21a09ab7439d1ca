"""The kernel tests choose the specialisation by the order share alone (``SPARSE_MAX_ORDER_SHARE``,
forced to 0 or 2 by several tests), on cases far below the size floor under which a real run
always uses the dense one (``SPARSE_MIN_BAR_COLUMNS``, tested in test_specialisation_choice.py):
the floor is off here, so small cases keep exercising both specialisations."""

import pytest

from backtest.engine import core as engine_core


@pytest.fixture(autouse=True)
def _no_sparse_size_floor(monkeypatch):
    monkeypatch.setattr(engine_core, "SPARSE_MIN_BAR_COLUMNS", 0)
