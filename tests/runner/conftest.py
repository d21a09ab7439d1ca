"""Fixtures of the runner tests: small configs on the committed sample, an isolated data store."""

from __future__ import annotations

import copy
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from runner_kit import ROOT, SAMPLE, TINY  # noqa: E402

# The repository root first, so `strategies` is the package and not tests/strategies.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path_factory, monkeypatch):
    """An empty default store, so every run loads the committed sample (whatever a developer
    has downloaded into data/) and tests never read the local store."""
    empty = tmp_path_factory.mktemp("empty-store")
    monkeypatch.setenv("BACKTEST_DATA_DIR", str(empty))


@pytest.fixture
def tiny() -> dict:
    return copy.deepcopy(TINY)


@pytest.fixture
def quiet():
    return lambda msg: None


@pytest.fixture
def sample_copy(tmp_path) -> Path:
    """A private copy of the BTC sample (a store root), free to modify or delete."""
    root = tmp_path / "store"
    src = SAMPLE / "binanceusdm" / "BTC_USDT_USDT"
    shutil.copytree(src, root / "binanceusdm" / "BTC_USDT_USDT")
    return root
