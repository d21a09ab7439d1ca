from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from data_fakes import END, NoSleep, usdm_exchange, usdm_server  # noqa: E402

from backtest.data.fetch import Retry  # noqa: E402


@pytest.fixture
def server():
    return usdm_server()


@pytest.fixture
def exchange(server):
    return usdm_exchange(server)


@pytest.fixture
def nosleep():
    return NoSleep()


@pytest.fixture
def retry(nosleep):
    return Retry(attempts=4, base_delay=1.0, max_delay=8.0, sleep=nosleep)


@pytest.fixture
def after_end():
    """A clock 30 min after the fixture's end: every fixture candle is closed."""
    return lambda: END + 30 * 60_000


@pytest.fixture
def fast_tmp(tmp_path):
    """A scratch folder on tmpfs when the machine has one: the store fsyncs every page, which
    costs milliseconds per call on a disk and nothing on tmpfs; the code path is the same."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="backtest-data-", dir=shm))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
