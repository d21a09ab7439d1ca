"""ResultFrames.get and _columns_of gather a result's series from the long table as pandas does.

The reference is pandas itself: ``pivot(bar, col)`` reindexed on every bar and the plotted
columns (what ResultFrames did before it scattered with numpy), and a boolean filter then a
sort by (col, bar) for _columns_of. Rows come shuffled, with another result interleaved, a
missing bar and repeated plotted columns.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from backtest.report.figures import ResultFrames
from backtest.report.periods import _columns_of


def _table(n_bars: int, n_cols: int, rng: np.random.Generator, name: str) -> pd.DataFrame:
    bar = np.tile(np.arange(n_bars), n_cols)
    col = np.repeat(np.arange(n_cols), n_bars)
    return pd.DataFrame({
        "result": pd.array([name] * len(bar), dtype="string"), "col": col.astype(np.int32),
        "bar": bar.astype(np.int32), "timestamp": 1_600_000_000_000 + bar.astype(np.int64) * 3_600_000,
        "price_usd": 1.0 + 0 * bar, "underlying_price": 100.0 + bar, "equity": rng.normal(size=len(bar)),
        "growth": rng.normal(size=len(bar)), "growth_usd": rng.normal(size=len(bar))})


def _doc(n_cols: int) -> dict:
    return {"columns": [f"c{j}" for j in range(n_cols)], "series": ["equity"], "currency": "USDT"}


@pytest.mark.parametrize("cols", [None, [2, 0], [1, 1, 3]])
def test_get_equals_pandas_pivot(cols) -> None:
    rng = np.random.default_rng(7)
    a, b = _table(50, 4, rng, "a"), _table(30, 2, rng, "b")
    a = a[~((a["col"] == 3) & (a["bar"] == 17))]  # a missing bar of column 3: NaN there
    series = pd.concat([a, b]).sample(frac=1.0, random_state=3).reset_index(drop=True)
    rf = ResultFrames("a", _doc(4), series, pd.DataFrame(), cols=cols, max_points=20)
    plotted = list(range(4)) if cols is None else cols
    part = series[series["result"] == "a"]
    expected = (part[part["col"].isin(plotted)].pivot(index="bar", columns="col", values="equity").sort_index()
                .reindex(index=range(50), columns=plotted).to_numpy(dtype=np.float64))
    got = rf.get("equity")
    assert got.shape == (50, len(plotted))
    np.testing.assert_array_equal(got, expected)  # NaN in the same places, every value exact
    assert np.isnan(got).sum() == (plotted.count(3))
    np.testing.assert_array_equal(rf.x, 1_600_000_000_000 + np.arange(50) * 3_600_000)
    np.testing.assert_array_equal(rf.price, 100.0 + np.arange(50))
    assert rf.get("no_such_series") is None


def test_a_pair_stored_twice_is_refused() -> None:
    series = _table(5, 2, np.random.default_rng(0), "a")
    series = pd.concat([series, series.iloc[[3]]])
    with pytest.raises(ValueError, match="'a'.*stored twice"):
        ResultFrames("a", _doc(2), series, pd.DataFrame())


def test_columns_of_equals_filter_and_sort() -> None:
    rng = np.random.default_rng(1)
    series = pd.concat([_table(40, 3, rng, "a"), _table(40, 2, rng, "b")])
    shuffled = series.sample(frac=1.0, random_state=5).reset_index(drop=True)
    for s in (series, shuffled):
        ms, arr = _columns_of(s, "a", 3, ("growth", "growth_usd"))
        ref = s[s["result"] == "a"].sort_values(["col", "bar"])
        np.testing.assert_array_equal(ms, ref["timestamp"].to_numpy()[:40])
        for k in ("growth", "growth_usd"):
            np.testing.assert_array_equal(arr[k], ref[k].to_numpy().reshape(3, 40).T)
    with pytest.raises(ValueError, match="'a': 119 rows, expected 40 bars x 3 columns"):
        _columns_of(series.iloc[1:], "a", 3, ("growth",))
