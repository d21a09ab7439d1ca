"""Monte Carlo paths as engine columns (backtest.stress.paths): the paths' arrays are the bootstrap
paths' MarketData bit for bit, and the numbers of each path and column are those of the per-path
route (the path's MarketData through ``simulate_perp`` and ``compute_metrics``) to the last bit,
for shared targets, targets read from each path's prices (a volatility-targeting policy, a trend
strategy), in-loop policies, a strategy grid and liquidations; and the route compiles nothing the
run has not compiled already."""

from __future__ import annotations

import numpy as np
import pytest

from backtest.engine import simulate_perp
from backtest.engine.core import raw_outputs
from backtest.metrics import compute_metrics
from backtest.stress import StationaryBootstrap, run_monte_carlo, run_monte_carlo_perps
from backtest.stress.paths import PATH_METRICS
from tests.stress.kit import btc_spec, sample

SEED, BLOCK, HORIZON, KEYS = 3, 24, 700, (0, 4, 9)

# a held 10x isolated short (liquidated on some paths), a rebalanced one under a precomputed
# policy that reads the path's closes (voltarget, warm-up shortened to fit the path), an in-loop
# one (cppi) and two constant ones, on a strategy grid of two columns
GRID = {"name": "grid", "strategy": {"name": "short_hold", "params": {"rebalance": [False, True]}},
        "policies": ["const(1)", "voltarget(0.5,warmup_days=3)", "cppi(3,0.7)", "const(8)"],
        "account": {"margin_mode": "isolated", "leverage": 10, "initial_capital": 10_000}}
TREND = {"name": "trend", "strategy": {"name": "trend_short", "params": {"slow_days": 5}},
         "policies": ["const(2)", "drawdown(0.2,floor=0.3,leverage=2)"],
         "account": {"margin_mode": "cross", "leverage": 20, "initial_capital": 5_000, "margin_call_threshold": 0.8}}


def test_the_batch_holds_each_path_s_data_bit_for_bit():
    boot = StationaryBootstrap(sample(), BLOCK, horizon=HORIZON, seed=SEED)
    batch = boot.batch(list(KEYS))
    for r, k in enumerate(KEYS):
        md = boot.path(k).data
        frame = batch.frame(r)
        assert list(frame.columns) == list(md.frame.columns) and frame.index.equals(md.frame.index)
        for c in md.frame.columns:
            assert frame[c].to_numpy().tobytes() == md.frame[c].to_numpy().tobytes(), (k, c)
        prints = batch.funding(r)
        for c in md.funding.columns:
            assert np.asarray(prints[c]).tobytes() == md.funding[c].to_numpy().tobytes(), (k, c)
        want, got = md.to_perp_bars(), batch.perp_bars(r)
        for f in ("timestamp", "open", "mark_high", "mark_low", "mark_close", "fe_bar", "fe_at_open", "fe_rate",
                  "fe_mark"):
            assert getattr(got, f).tobytes() == getattr(want, f).tobytes(), (k, f)


@pytest.fixture(scope="module")
def both():
    kw = dict(n_paths=max(KEYS) + 1, mean_block=BLOCK, horizon=HORIZON, seed=SEED, history=False)
    fast = run_monte_carlo_perps([GRID, TREND], sample(), btc_spec(), **kw)
    slow = run_monte_carlo_perps([GRID, TREND], sample(), btc_spec(), every_metric=True, **kw)
    return fast, slow


@pytest.mark.parametrize("table", [0, 1], ids=["grid", "trend"])
def test_each_path_and_column_has_the_per_path_route_s_numbers_bit_for_bit(both, table):
    fast, slow = both[0][table].samples, both[1][table].samples
    assert fast.index.equals(slow.index)
    for key in ("total_return", "max_drawdown", "worst_bar_return", "funding_net", "final_equity", "liquidations",
                "margin_calls"):
        a, b = fast[key].to_numpy(), slow[key].to_numpy(dtype=np.float64)
        assert a.tobytes() == b.tobytes(), key
    # the first liquidation's bar is the bar of compute_metrics' first_liquidation_ms
    ts = sample().timestamps
    first = slow["first_liquidation_ms"].to_numpy()
    want = np.where(np.isnan(first), np.nan, np.searchsorted(ts, np.nan_to_num(first).astype(np.int64)))
    np.testing.assert_array_equal(fast["first_liquidation_bar"].to_numpy(), want)
    assert list(fast.columns) == list(PATH_METRICS)


def test_the_cases_the_comparison_needs_occur(both):
    grid, trend = both[0][0].samples, both[0][1].samples
    liq = grid["liquidations"].unstack("column")
    held = liq["rebalance=false|policy=const(8)"]  # isolated margin N/10: liquidated by a +9 % move
    assert (held > 0).any() and (held == 0).any()
    # voltarget's leverage differs between paths (its targets are each path's own)
    vt = grid["total_return"].unstack("column")["rebalance=true|policy=voltarget(0.5,warmup_days=3)"]
    assert vt.nunique() > 1
    # the trend strategy trades on some paths and not always the same way
    assert trend["total_return"].nunique() > 2


def test_path_k_of_the_fast_route_is_simulate_perp_on_the_bootstrap_s_path_k(both):
    """Independent of the runner: path 4's 1x held short simulated directly on the path's data."""
    spec = btc_spec()
    md = StationaryBootstrap(sample(), BLOCK, horizon=HORIZON, seed=SEED).path(4).data
    from backtest.engine import Account

    target = np.full((md.n, 1), np.nan)
    target[0] = -8.0
    res = simulate_perp(md, target, spec, Account(margin_mode="isolated", leverage=10, initial_capital=10_000))
    direct = next(iter(compute_metrics(res)["columns"].values()))
    row = both[0][0].samples.loc[(4, "rebalance=false|policy=const(8)")]
    assert row["final_equity"] == raw_outputs(res)[0]["equity"][-1, 0]
    for key in ("total_return", "max_drawdown", "funding_net", "liquidations"):
        assert row[key] == direct[key], key


def test_the_route_compiles_nothing_the_run_has_not():
    """After the run's own simulation and metrics (the history), the Monte Carlo adds no
    compiled variant of any kernel (a read-only array where the run has a writable one would
    compile the kernel again: about 30 s on an empty cache)."""
    import gc

    from numba.core.registry import CPUDispatcher

    from backtest.runner.config import PerpConfig
    from backtest.runner.run import simulate_perp_config

    def overloads() -> dict[str, int]:
        out = {}
        for obj in gc.get_objects():
            try:
                if type(obj) is CPUDispatcher:
                    out[f"{obj.py_func.__module__}.{obj.py_func.__name__}"] = len(obj.overloads)
            except ReferenceError:
                continue
        return out

    cfg = PerpConfig.model_validate(GRID)
    res, _ = simulate_perp_config(cfg, sample(), btc_spec())
    compute_metrics(res)
    before = overloads()
    run_monte_carlo(GRID, sample(), btc_spec(), n_paths=2, mean_block=BLOCK, horizon=HORIZON, history=False)
    after = overloads()
    assert {k: v for k, v in after.items() if before.get(k, 0) != v} == {}
