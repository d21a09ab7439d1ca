"""Progress for a person at a terminal: a first run says that kernels are compiling.

``compile_notice`` listens to numba's compile events; the functions compiled here are defined in
the test (``cache=False``), so they compile at their first call whatever the numba cache holds.
"""

from __future__ import annotations

import io
import re

import numpy as np
from numba import njit

from backtest.runner import cli as runner_cli
from backtest.runner.run import COMPILING, compile_notice


def _fresh_pair():
    """A kernel calling a helper: compiling the kernel compiles the helper inside it (a nested
    compile event), as the simulation kernels do."""
    @njit(cache=False)
    def helper(x):
        return x * 2.0

    @njit(cache=False)
    def kernel(a):
        s = 0.0
        for v in a:
            s += helper(v)
        return s

    return kernel


def test_a_block_that_compiles_says_so_once_and_how_long():
    lines: list[str] = []
    kernel = _fresh_pair()
    with compile_notice(lines.append, "short-cross"):
        assert kernel(np.arange(4.0)) == 12.0
        kernel(np.arange(3, dtype=np.int64))  # a second signature: a second compile, no second notice
    assert lines[0] == COMPILING.format(what="short-cross")
    assert "first run only" in lines[0] and "short-cross" in lines[0]
    assert len(lines) == 2 and re.fullmatch(r"  compiled in \d+\.\d s", lines[1]), lines


def test_a_block_that_compiles_nothing_says_nothing():
    kernel = _fresh_pair()
    kernel(np.arange(4.0))  # compiled before the block
    lines: list[str] = []
    with compile_notice(lines.append, "short-cross"):
        assert kernel(np.arange(5.0)) == 20.0
    assert lines == []


def test_no_status_means_no_listener_and_no_lines():
    kernel = _fresh_pair()
    with compile_notice(None, "short-cross"):
        assert kernel(np.arange(2.0)) == 2.0  # compiles, nobody told


def test_the_notice_is_for_a_terminal_only(monkeypatch):
    """Batch jobs (stderr not a terminal) and --quiet get no status channel: their stderr keeps
    its lines; a terminal gets the run's own log as the status channel."""
    def log(_msg: str) -> None:
        return None

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(runner_cli.sys, "stderr", io.StringIO())
    assert runner_cli._status_for(False, log) is None
    monkeypatch.setattr(runner_cli.sys, "stderr", Tty())
    assert runner_cli._status_for(False, log) is log
    assert runner_cli._status_for(True, log) is None
