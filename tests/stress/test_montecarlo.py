"""Monte Carlo runs of a perp config on bootstrap paths: liquidation within the horizon checked
path by path against the closed-form isolated liquidation price, the probability and its
binomial standard error, the metric quantiles, and the wiring (path k is the bootstrap's path k)."""

from __future__ import annotations

import numpy as np
import pytest

from backtest.engine import Account, simulate_perp
from backtest.mechanics import isolated_liquidation_price
from backtest.metrics import compute_metrics
from backtest.stress import ShockError, StationaryBootstrap, run_monte_carlo
from tests.stress.kit import btc_spec, sample

CONFIG = {"name": "hold", "strategy": {"name": "short_hold", "params": {"rebalance": False}},
          "policies": ["const(1)", "const(3)"],
          "account": {"margin_mode": "isolated", "leverage": 10, "initial_capital": 10_000}}
N_PATHS, BLOCK, SEED = 40, 24, 2


@pytest.fixture(scope="module")
def mc():
    return run_monte_carlo(CONFIG, sample(), btc_spec(), n_paths=N_PATHS, mean_block=BLOCK, seed=SEED)


def test_liquidation_within_the_horizon_matches_the_closed_form_price_path_by_path(mc):
    """A short opened at bar 1's open with isolated margin N/10 is liquidated when the mark
    reaches EP (1 + 1/10) / (1 + mmr) (tier 1: 0.4 %, cum 0, for both 1x and 3x of 10,000 USDT).
    Funding moves the isolated margin by well under 1 % of the price over two months, so paths
    whose highest mark is more than 1 % from that price are decided; both kinds must occur."""
    boot = StationaryBootstrap(sample(), BLOCK, seed=SEED)
    liq = mc.samples["liquidations"].unstack("column")
    decided = {True: 0, False: 0}
    for path in boot.paths(N_PATHS):
        f = path.data.frame
        lp = isolated_liquidation_price(-1, float(f["open"].iloc[1]), 10.0, 0.004)
        top = float(f["mark_high"].iloc[1:].max())
        if abs(top / lp - 1) > 0.01:
            want = top > lp
            decided[want] += 1
            assert ((liq.loc[path.index] > 0) == want).all(), path.index
    assert decided[True] >= 3 and decided[False] >= 3


def test_probability_and_standard_error_of_liquidation(mc):
    table = mc.liquidation()
    liq = mc.samples["liquidations"].unstack("column")
    for col in table.index:
        k = int((liq[col] > 0).sum())
        p = k / N_PATHS
        row = table.loc[col]
        assert row["paths"] == N_PATHS and row["liquidated"] == k
        assert row["probability"] == pytest.approx(p, rel=1e-15)
        assert row["std_error"] == pytest.approx(np.sqrt(p * (1 - p) / N_PATHS), rel=1e-12)
        assert 0 < p < 1


def test_quantiles_are_those_of_the_path_samples(mc):
    q = mc.quantiles()
    for col in ("policy=const(1)", "policy=const(3)"):
        for metric in ("total_return", "max_drawdown", "funding_net"):
            x = mc.samples.xs(col, level="column")[metric].to_numpy()
            np.testing.assert_allclose(q.loc[(col, metric), ["q05", "q25", "q50", "q75", "q95"]].to_numpy(dtype=float),
                                       np.quantile(x, [0.05, 0.25, 0.5, 0.75, 0.95]), rtol=1e-12)
            assert q.loc[(col, metric), "n"] == N_PATHS
    # 3x of the same hold loses more in its bad paths
    assert q.loc[("policy=const(3)", "max_drawdown"), "q95"] > q.loc[("policy=const(1)", "max_drawdown"), "q95"]


def test_path_k_of_the_run_is_the_bootstrap_s_path_k_and_history_is_the_plain_run(mc):
    spec = btc_spec()
    acc = Account(margin_mode="isolated", leverage=10, initial_capital=10_000)
    for k in (0, 17):
        md = StationaryBootstrap(sample(), BLOCK, seed=SEED).path(k).data
        target = np.full((md.n, 1), np.nan)
        target[0] = -3.0  # short_hold x const(3): -1 on the first bar times 3
        m = compute_metrics(simulate_perp(md, target, spec, acc))["columns"]
        direct = next(iter(m.values()))
        row = mc.samples.loc[(k, "policy=const(3)")]
        for key in ("total_return", "final_equity", "max_drawdown", "funding_net", "liquidations"):
            assert row[key] == pytest.approx(float(direct[key]), rel=1e-12, abs=1e-12), key
    assert set(mc.history.index) == {"policy=const(1)", "policy=const(3)"}
    assert mc.horizon_bars == sample().n - 1 and mc.horizon_days == pytest.approx((sample().n - 1) / 24)


def test_bad_monte_carlo_settings_are_refused():
    with pytest.raises(ShockError, match="n_paths=0"):
        run_monte_carlo(CONFIG, sample(), btc_spec(), n_paths=0, mean_block=24)
    with pytest.raises(ShockError, match="quantiles="):
        run_monte_carlo(CONFIG, sample(), btc_spec(), n_paths=1, mean_block=24, quantiles=(0.5, 1.5))
    with pytest.raises(ShockError, match="perp is a str"):
        run_monte_carlo("hold", sample(), btc_spec(), n_paths=1, mean_block=24)
