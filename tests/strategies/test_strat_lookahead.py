"""The look-ahead check: every built-in strategy and precomputed policy passes it on the
committed sample, and it catches strategies that peek at the future."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import strategies
from strategies import LookAheadError, Strategy, StrategyParams, lookahead
from strategies.base import per_column
from strategies.policies import parse

# Small grids with non-default values so every code path of each strategy is checked.
GRIDS = {
    "trend_short": {"rule": ["price_ma", "ma_cross"], "slow_days": [20, 50], "fast_days": 5, "ewm": [False, True]},
    "breakdown_short": {"entry_days": [5, 20], "exit_days": [2, 10]},
    "funding_carry": {"mode": ["gate", "scale"], "window_days": [1, 7], "threshold": [0.0, 0.1], "full_at": 0.3},
    "bear_regime": {"ma_days": [50, 200], "slope_days": [5, 20], "ewm": [False, True]},
    "long_put": {"trigger": ["always", "below_ma", "bear_regime"], "ma_days": [30, 200]},
    "inverse_hold": {"leverage": [-1, -3], "reset": ["daily", "bar"], "rebalance_hour": [0, 8]},
    "short_hold": {"rebalance": [False, True]},
}

POLICIES = [
    "const(3)", "voltarget(0.5)", "voltarget(0.4,estimator=rolling,window_days=10)", "voltarget(0.5,estimator=iv)",
    "kelly(0.5)", "kelly(0.25,window_days=30,side=long)", "liqcap(3)", "liqcap(4,method=atr,horizon_days=2)",
    "liqcap(3,contract=inverse,estimator=iv)", "min(voltarget(0.5),liqcap(3))",
]


def test_every_built_in_strategy_is_covered():
    assert set(GRIDS) == set(strategies.names())


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_built_in_strategies_do_not_look_ahead(btc, name):
    assert lookahead.check(name, btc, GRIDS[name], n_cuts=12) == 12


@pytest.mark.parametrize("label", POLICIES)
def test_precomputed_policies_do_not_look_ahead(btc, label):
    # DVOL starts on 2021-03-24: an implied-vol policy refuses data without any iv value.
    data = btc.loc["2021-03-24":] if "iv" in label else btc
    assert lookahead.check(parse(label), data, n_cuts=12) == 12


def test_tier_cap_and_filtered_targets_do_not_look_ahead(btc_2022):
    from backtest.market import load_market

    spec = load_market("binanceusdm", "BTC/USDT:USDT")
    assert lookahead.check(parse("tiercap(100000)"), btc_2022, n_cuts=5, spec=spec) == 5

    def targets(frame):
        return strategies.build_targets(frame, "trend_short", {"slow_days": [10, 30]},
                                        ["const(2)", "voltarget(0.5)", "drawdown(0.3)", "tiercap(10000)"],
                                        filter="bear_regime", filter_params={"ma_days": 50}, spec=spec)[0]

    assert lookahead.check(targets, btc_2022, n_cuts=8) == 8


class _Peek(StrategyParams):
    size: float = 1.0


def _peeking(market, p):
    close = market.series("close")
    # Tomorrow's close is not known at today's close.
    return np.where(close.shift(-1) < close, -p.size, 0.0)


def test_check_catches_a_strategy_using_the_next_close(btc):
    peek = Strategy("peek_next_close", _Peek, per_column(_peeking))
    with pytest.raises(LookAheadError) as exc:
        lookahead.check(peek, btc, {"size": [0.5, 1.0]}, n_cuts=10)
    # The first cut keeps bars 0-1. In the sample the close falls from bar 1 to bar 2, so on the
    # full data bar 1 is short; without bar 2 the comparison is with NaN and bar 1 is flat.
    assert btc["close"].iloc[2] < btc["close"].iloc[1]
    assert str(exc.value).startswith(
        f"peek_next_close looks ahead: column (0.5,) at {btc.index[1].isoformat()} (bar 1) is -0.5 on the "
        "full data but 0.0")


def test_check_catches_full_sample_statistics(btc):
    def above_full_sample_mean(frame: pd.DataFrame) -> pd.Series:
        c = frame["close"]
        return pd.Series(np.where(c > c.mean(), -1.0, 0.0), index=frame.index, name="mean_filter")

    with pytest.raises(LookAheadError, match=r"above_full_sample_mean looks ahead: column 'mean_filter' at 20"):
        lookahead.check(above_full_sample_mean, btc, n_cuts=10)


def test_check_names_the_first_changed_timestamp(make_bars):
    frame = make_bars(np.arange(1.0, 21.0))

    def backfilled(f: pd.DataFrame) -> pd.DataFrame:
        # Value at bar t = the last close of the data: changes every past row when data grows.
        return pd.DataFrame({"x": np.full(len(f), f["close"].iloc[-1])}, index=f.index)

    with pytest.raises(LookAheadError) as exc:
        lookahead.check(backfilled, frame, n_cuts=3)
    # First cut: 2 bars -> bar 0 is 2.0 instead of 20.0.
    assert f"at {frame.index[0].isoformat()} (bar 0) is 20.0 on the full data but 2.0" in str(exc.value)


def test_check_passes_a_causal_callable_and_rejects_junk(make_bars):
    frame = make_bars(np.arange(1.0, 21.0))
    assert lookahead.check(lambda f: f["close"].rolling(3).mean(), frame, n_cuts=5) == 5
    with pytest.raises(TypeError):
        lookahead.check(42, frame)
