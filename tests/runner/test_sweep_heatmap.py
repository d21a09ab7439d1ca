"""The sweep heatmap holds a statistic (the median by default) over the levels not on its axes,
and its title says which."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from backtest.runner import ConfigError
from backtest.runner.sweep import cell_count, heatmap_grid, heatmap_title

# x = a (1, 2), y = b (p, q), a third level c (0, 1, 2): 3 columns per cell
TABLE = pd.DataFrame({
    "col": range(12),
    "a": [1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2],
    "b": ["p", "p", "p", "q", "q", "q"] * 2,
    "c": [0, 1, 2] * 4,
    "sharpe": [0.1, 0.9, 0.2, None, None, None, -1.0, 3.0, 0.5, 0.4, None, 0.6],
    "max_drawdown": [0.5, 0.1, 0.3, 0.2, 0.2, 0.2, 0.9, 0.8, 0.7, 0.1, 0.2, 0.3],
})


@pytest.mark.parametrize("stat, cell_a1_p, cell_a2_p, cell_a2_q", [
    ("median", 0.2, 0.5, 0.5),     # (0.1, 0.9, 0.2) -> 0.2; (-1, 3, 0.5) -> 0.5; (0.4, 0.6), a null left out -> 0.5
    ("mean", 0.4, 2.5 / 3, 0.5),
    ("best", 0.9, 3.0, 0.6),
    ("worst", 0.1, -1.0, 0.4),
    ("max", 0.9, 3.0, 0.6),
    ("min", 0.1, -1.0, 0.4),
])
def test_each_cell_holds_the_statistic_over_the_other_levels(stat, cell_a1_p, cell_a2_p, cell_a2_q):
    g = heatmap_grid(TABLE, "a", "b", "sharpe", stat)
    assert list(g.index) == ["p", "q"] and list(g.columns) == [1, 2]
    assert g.loc["p", 1] == pytest.approx(cell_a1_p)
    assert g.loc["p", 2] == pytest.approx(cell_a2_p)
    assert g.loc["q", 2] == pytest.approx(cell_a2_q)
    assert math.isnan(g.loc["q", 1])  # every value null: an empty cell


def test_median_is_the_default_and_best_follows_the_metrics_direction():
    assert heatmap_grid(TABLE, "a", "b", "sharpe").equals(heatmap_grid(TABLE, "a", "b", "sharpe", "median"))
    # max_drawdown: lower is better, so best = min and worst = max
    assert heatmap_grid(TABLE, "a", "b", "max_drawdown", "best").loc["p", 1] == 0.1
    assert heatmap_grid(TABLE, "a", "b", "max_drawdown", "worst").loc["p", 1] == 0.5
    assert heatmap_grid(TABLE, "a", "b", "max_drawdown", "max").loc["p", 1] == 0.5


def test_title_says_what_a_cell_holds():
    assert cell_count(TABLE, "a", "b") == 3
    assert heatmap_title("T", "sharpe", "a", "b", "median", 3) == (
        "T: sharpe (USD) by a and b; median over the 3 columns of each cell (levels not on the axes)")
    assert heatmap_title("T", "sharpe", "a", "b", "median", 1).endswith("; one column per cell")


def test_an_unknown_statistic_is_refused():
    with pytest.raises(ConfigError, match="sweep.heatmap_stat: 'mode' is not one of"):
        heatmap_grid(TABLE, "a", "b", "sharpe", "mode")
    from backtest.runner import parse_config

    with pytest.raises(ConfigError, match="heatmap_stat"):
        parse_config({"perp": [{"name": "a"}], "sweep": {"x": "policy", "y": "strategy", "heatmap_stat": "mode"}})
