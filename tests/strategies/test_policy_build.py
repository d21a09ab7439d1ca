"""build_targets: a strategy grid x a policy grid becomes the engine's target columns and
per-column Policy settings."""

from __future__ import annotations

import math

import numpy as np
import pytest

import strategies
from backtest.engine.settings import PolicyKind, policy_arrays
from strategies.policies import PolicyError, VolTarget, make

POLICY_GRID = [
    "const(2)",
    {"name": "voltarget", "target_vol": [0.3, 0.5]},
    "kelly(0.5)",
    "liqcap(3)",
    "drawdown(0.3,leverage=2)",
    ("cppi", {"multiplier": [3, 5], "max_exposure": 4}),
]
LABELS = ["const(2)", "voltarget(0.3)", "voltarget(0.5)", "kelly(0.5)", "liqcap(3)", "drawdown(0.3,leverage=2)",
          "cppi(3,0.8,max_exposure=4)", "cppi(5,0.8,max_exposure=4)"]


@pytest.fixture(scope="module")
def built(btc_2022):
    return strategies.build_targets(btc_2022, "trend_short", {"slow_days": [20, 50]}, POLICY_GRID)


def test_columns_are_strategy_params_times_policy_variants(built, btc_2022):
    target, policy, cols = built
    assert target.shape == (len(btc_2022), 2 * 8)
    assert target.columns.equals(cols) and target.index.equals(btc_2022.index)
    assert list(cols.names) == ["rule", "slow_days", "fast_days", "ewm", "policy"]
    assert cols.get_level_values("policy").tolist() == LABELS * 2
    assert cols.get_level_values("slow_days").tolist() == [20.0] * 8 + [50.0] * 8


def test_target_is_signal_times_leverage(built, btc_2022):
    target, _, cols = built
    sig = strategies.get("trend_short").run(btc_2022, {"slow_days": [20, 50]})
    for i, slow in enumerate((20.0, 50.0)):
        s = sig.iloc[:, i].to_numpy()
        col = lambda label: target[("price_ma", slow, 10.0, False, label)].to_numpy()  # noqa: E731
        np.testing.assert_array_equal(col("const(2)"), np.where(s == 0, 0.0, 2 * s))
        lev = VolTarget(target_vol=0.5).compute(btc_2022)
        np.testing.assert_array_equal(col("voltarget(0.5)"), np.where(s == 0, 0.0, s * lev))
        lev = make("liqcap", k=3).compute(btc_2022)
        np.testing.assert_array_equal(col("liqcap(3)"), np.where(s == 0, 0.0, s * lev))
        # In-loop policies: the engine applies the equity-path factor; the target carries the base scale.
        np.testing.assert_array_equal(col("drawdown(0.3,leverage=2)"), np.where(s == 0, 0.0, 2 * s))
        np.testing.assert_array_equal(col("cppi(5,0.8,max_exposure=4)"), s)
        assert (s == -1).any() and (s == 0).any()


def test_policy_has_per_column_engine_fields(built):
    target, policy, cols = built
    m = len(cols)
    arrays = policy_arrays(policy, m)  # the engine's own validation accepts it
    kinds = arrays["policy_kind"].reshape(2, 8)
    expected = [PolicyKind.NONE] * 5 + [PolicyKind.DRAWDOWN, PolicyKind.CPPI, PolicyKind.CPPI]
    assert (kinds == expected).all()
    assert arrays["max_drawdown"][5] == 0.3 and arrays["multiplier"][6:8].tolist() == [3.0, 5.0]
    assert arrays["floor"][6] == 0.8 and arrays["max_exposure"][7] == 4.0
    assert math.isinf(arrays["max_exposure"][0]) and arrays["max_exposure"][8 + 6] == 4.0


def test_nan_signal_stays_nan_and_default_policy_is_const_1(btc_2022):
    target, policy, cols = strategies.build_targets(btc_2022, "short_hold")
    assert cols.get_level_values("policy").tolist() == ["const(1)"]
    col = target.iloc[:, 0].to_numpy()
    assert col[0] == -1.0 and np.isnan(col[1:]).all()
    assert policy.kind == ["none"]


def test_filter_levels_and_tier_cap_spec(btc_2022):
    from backtest.market import load_market

    spec = load_market("binanceusdm", "BTC/USDT:USDT")
    target, _, cols = strategies.build_targets(
        btc_2022, "funding_carry", {"window_days": [3, 7]}, ["tiercap(10000)", "min(const(5),voltarget(0.6))"],
        filter="bear_regime", filter_params={"ma_days": [50, 100]}, spec=spec)
    assert target.shape[1] == 2 * 2 * 2
    assert cols.names[-1] == "policy" and "filter" in cols.names and "filter.ma_days" in cols.names
    assert (target.abs().max() <= 75.0).all()


def test_build_targets_errors(btc_2022):
    with pytest.raises(PolicyError, match="did you mean 'voltarget'"):
        strategies.build_targets(btc_2022, "trend_short", None, ["voltargte(0.5)"])
    with pytest.raises(strategies.StrategyError, match="did you mean 'trend_short'"):
        strategies.build_targets(btc_2022, "trend-short", None, ["const(1)"])
    with pytest.raises(PolicyError, match="needs the market spec"):
        strategies.build_targets(btc_2022, "trend_short", None, ["tiercap(10000)"])
