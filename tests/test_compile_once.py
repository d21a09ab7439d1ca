"""Kernel helpers compile once per argument type they really take, not once per literal.

numba types a literal argument (``0``, ``True``, a global int constant) as its own type
(``Literal[int](0)``), so a helper called with a literal at one call site and a variable at
another compiles twice, and every callee inside it again: seconds of a first run
(benchmarks/README.md, "Start-up"). Checked in a fresh process with an empty numba cache (a
kernel loaded from the cache does not compile, so it lists no helper signatures).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import json
import numpy as np
import pandas as pd
from backtest.options import PutSettings, simulate_puts
from backtest.options import nb as onb
from backtest.products import ProductSettings, simulate_product
from backtest.products import nb as pnb

n = 24 * 200
t = pd.date_range("2022-01-01", periods=n, freq="h", tz="UTC")
rng = np.random.default_rng(7)
close = 30000.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
frame = pd.DataFrame({"open": close, "high": close * 1.01, "low": close * 0.99, "close": close,
                      "funding_rate": np.where(np.arange(n) % 8 == 0, 1e-4, np.nan)}, index=t)
simulate_product(frame, ProductSettings(leverage=[-1.0, -3.0]), price="close")
import dataclasses
from backtest.options.inputs import as_underlying
puts = PutSettings(moneyness=0.9, exposure=1.0, expiry="monthly")
iv = pd.Series(0.6, index=t)
u = as_underlying(frame, price="close", iv=iv)
assert not u.price.flags.writeable                   # the loaded data's arrays are read-only
simulate_puts(u, puts)
w = dataclasses.replace(u, price=u.price.copy())     # a book's option legs pass writable ones
assert w.price.flags.writeable
simulate_puts(w, puts)
print(json.dumps({
    "options._grow": [str(s) for s in onb._grow.signatures],
    "options.simulate_puts_nb": [str(s) for s in onb.simulate_puts_nb.signatures],
    "products._grow": [str(s) for s in pnb._grow.signatures],
    "products._rebalance_nb": [str(s) for s in pnb._rebalance_nb.signatures],
}))
"""


@pytest.mark.slow
def test_put_and_product_helpers_compile_once_per_real_type(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "empty-cache"), PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    sigs = json.loads(out.stdout.strip().splitlines()[-1])
    # the put kernel's record buffers: one int64 and one float64 buffer, an int64 row count
    assert len(sigs["options._grow"]) == 2, sigs["options._grow"]
    assert all("int64)" in s and "Literal" not in s for s in sigs["options._grow"])
    # one put kernel whether the data arrays are writable or read-only
    assert len(sigs["options.simulate_puts_nb"]) == 1, sigs["options.simulate_puts_nb"]
    # the product kernel's rebalance and buffer growth: one signature each, no literal in it
    assert len(sigs["products._grow"]) == 1 and "Literal" not in sigs["products._grow"][0], sigs
    assert len(sigs["products._rebalance_nb"]) == 1 and "Literal" not in sigs["products._rebalance_nb"][0], sigs
