"""Registry, parameter grids -> columns, error messages, and the market-data view."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest
from pydantic import BaseModel

import strategies
from strategies import MarketDataError, MarketFrame, Strategy, StrategyError, StrategyParams
from strategies.base import expand_grid, per_column

BUILT_IN = {"trend_short", "breakdown_short", "funding_carry", "bear_regime", "long_put", "inverse_hold",
            "short_hold"}


def test_registry_lists_the_built_ins():
    assert BUILT_IN <= set(strategies.names())
    for name in BUILT_IN:
        s = strategies.get(name)
        assert s.name == name and issubclass(s.params, StrategyParams) and s.summary


def test_unknown_strategy_suggests_the_close_name():
    with pytest.raises(StrategyError, match=r"unknown strategy 'trend_shrot'; did you mean 'trend_short'"):
        strategies.get("trend_shrot")
    with pytest.raises(StrategyError, match=r"known: 'bear_regime'"):
        strategies.get("zzzz")


def test_unknown_parameter_suggests_the_close_name():
    with pytest.raises(StrategyError, match=r"unknown parameter 'slow_day'; did you mean 'slow_days'"):
        strategies.get("trend_short").grid({"slow_day": [10, 20]})


def test_invalid_values_name_every_bad_field():
    with pytest.raises(StrategyError) as exc:
        strategies.get("trend_short").grid({"slow_days": -5, "rule": "sideways"})
    msg = str(exc.value)
    assert "slow_days=-5" in msg and "rule='sideways'" in msg
    with pytest.raises(StrategyError, match=r"fast_days=60.0 must be below slow_days=50.0"):
        strategies.get("trend_short").grid({"rule": "ma_cross", "fast_days": 60})


def test_params_are_frozen_and_strict():
    p = strategies.get("trend_short").params()
    with pytest.raises(Exception):
        p.slow_days = 3  # type: ignore[misc]
    with pytest.raises(Exception):
        strategies.get("trend_short").params(window=3)


def test_grid_becomes_product_columns_in_key_order(make_gbm):
    frame = make_gbm(0.5, 24 * 30)
    out = strategies.get("trend_short").run(frame, {"rule": ["price_ma", "ma_cross"], "slow_days": [5, 10, 20],
                                                    "fast_days": 2})
    assert out.shape == (len(frame), 6)
    assert list(out.columns.names) == ["rule", "slow_days", "fast_days", "ewm"]
    assert out.columns.tolist() == [
        ("price_ma", 5.0, 2.0, False), ("price_ma", 10.0, 2.0, False), ("price_ma", 20.0, 2.0, False),
        ("ma_cross", 5.0, 2.0, False), ("ma_cross", 10.0, 2.0, False), ("ma_cross", 20.0, 2.0, False)]
    # Each column equals the single-parameter run.
    one = strategies.get("trend_short").run(frame, {"rule": "ma_cross", "slow_days": 10, "fast_days": 2})
    np.testing.assert_array_equal(out[("ma_cross", 10.0, 2.0, False)].to_numpy(), one.iloc[:, 0].to_numpy())
    # The labels rebuild the parameter sets.
    ps = strategies.get("trend_short").params_of(out.columns)
    assert ps[4].rule == "ma_cross" and ps[4].slow_days == 10.0


def test_list_of_sets_and_duplicates():
    s = strategies.get("breakdown_short")
    assert len(s.grid([{"entry_days": 5}, s.params(entry_days=7)])) == 2
    with pytest.raises(StrategyError, match="duplicates set 0"):
        s.grid({"entry_days": [5, 5.0]})
    with pytest.raises(StrategyError, match="empty list"):
        s.grid({"entry_days": []})


class _Hold(StrategyParams):
    level: float = -0.5


def test_custom_strategy_with_per_column(make_gbm):
    strat = Strategy("custom_hold", _Hold, per_column(lambda m, p: np.full(m.n, p.level)))
    out = strat.run(make_gbm(0.5, 10), {"level": [-0.5, 0.25]})
    np.testing.assert_array_equal(out.to_numpy()[0], [-0.5, 0.25])
    with pytest.raises(StrategyError, match="outside \\[-1, 1\\]"):
        strat.run(make_gbm(0.5, 10), {"level": -2})


def test_register_rejects_duplicates_and_loose_models():
    with pytest.raises(StrategyError, match="already registered"):
        strategies.register("trend_short", _Hold, lambda m, ps: None)

    class Loose(BaseModel):
        a: float = 1.0

    with pytest.raises(StrategyError, match="frozen"):
        strategies.register("loose_one", Loose, lambda m, ps: None)  # type: ignore[arg-type]


def test_expand_grid_rejects_other_models():
    with pytest.raises(StrategyError, match="expected _Hold"):
        expand_grid(_Hold, strategies.get("trend_short").params(), "x", StrategyError)


def test_market_frame_accepts_marketdata_like_objects_and_infers_bar_size(make_gbm):
    frame = make_gbm(0.5, 50, bar_hours=4)
    m = MarketFrame(SimpleNamespace(frame=frame))
    assert m.bar_seconds == 4 * 3600 and m.bars(1) == 6 and m.bars(0.01) == 1
    assert m.bars_per_year == pytest.approx(365 * 6)
    # A missing bar does not change the inferred size.
    assert MarketFrame(frame.drop(frame.index[10])).bar_seconds == 4 * 3600
    assert MarketFrame(SimpleNamespace(frame=frame, bar_ms=3_600_000)).bar_seconds == 3600


def test_market_frame_errors_name_the_fix(make_gbm):
    frame = make_gbm(0.5, 20)
    with pytest.raises(MarketDataError, match="tz_localize"):
        MarketFrame(frame.tz_localize(None))
    with pytest.raises(MarketDataError, match="strictly increasing at"):
        MarketFrame(frame.iloc[[0, 2, 1]])
    with pytest.raises(MarketDataError, match="no column 'funding_rate'.*needed by funding_carry"):
        strategies.get("funding_carry").run(frame.drop(columns="funding_rate"))
    with pytest.raises(MarketDataError, match="DatetimeIndex"):
        MarketFrame(frame.reset_index(drop=True))
    with pytest.raises(MarketDataError, match="a DataFrame"):
        MarketFrame(np.zeros((3, 3)))


def test_non_utc_index_is_converted(make_gbm):
    frame = make_gbm(0.5, 20)
    m = MarketFrame(frame.tz_convert("Asia/Tokyo"))
    assert str(m.index.tz) == "UTC" and m.index.equals(frame.index)


def test_signal_columns_document_the_strategy_idea():
    # Every built-in strategy module and parameter model is documented (the docs depend on it).
    for name in BUILT_IN:
        s = strategies.get(name)
        assert s.params.__doc__ and re.search(r"Attributes", s.params.__doc__)
        for field in s.params.model_fields:
            assert field in s.params.__doc__, f"{name}: parameter {field} undocumented"
