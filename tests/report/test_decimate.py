"""Decimation for display (backtest.report.decimate): closed-form checks on hand arrays and a
property test: every bucket keeps its minimum and maximum, the first and last points are exact."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backtest.report.decimate import bucket_edges, decimate, grid_positions

NAN = np.nan


def test_hand_array_two_buckets():
    # n = 10, max_points = 6: bars 0 and 9 alone, inner bars 1..8 in (6 - 2) // 2 = 2 buckets of 4
    y = np.array([5.0, 3, 9, 1, 4, 2, 2, 8, 7, 6])
    assert bucket_edges(10, 6).tolist() == [1, 5, 9]
    assert grid_positions(10, 6).tolist() == [0, 1, 4, 5, 8, 9]
    # bucket 1..4 = (3, 9, 1, 4): max 9 (bar 2) before min 1 (bar 3); bucket 5..8 = (2, 2, 8, 7):
    # min 2 (first at bar 5) before max 8 (bar 7)
    assert decimate(y, 6).tolist() == [5.0, 9.0, 1.0, 2.0, 8.0, 6.0]


def test_hand_array_short_last_bucket_and_nan():
    # n = 9, max_points = 6: inner bars 1..7 in 2 buckets of 4 -> (1..4) and a short (5..7)
    y = np.array([0.0, NAN, -2, NAN, 3, NAN, NAN, NAN, 1])
    assert bucket_edges(9, 6).tolist() == [1, 5, 8]
    assert grid_positions(9, 6).tolist() == [0, 1, 4, 5, 7, 8]
    out = decimate(y, 6)
    # bucket 1: NaN ignored, min -2 (bar 2) before max 3 (bar 4); bucket 2 all NaN: a gap
    np.testing.assert_array_equal(out, [0.0, -2.0, 3.0, NAN, NAN, 1.0])


def test_columns_are_decimated_independently_on_one_grid():
    y = np.array([[5.0, 0], [3, 0], [9, 0], [1, 7], [4, 0], [2, 0], [2, -1], [8, 0], [7, 0], [6, 0]])
    out = decimate(y, 6)
    assert out.shape == (6, 2)
    assert out[:, 0].tolist() == [5.0, 9.0, 1.0, 2.0, 8.0, 6.0]
    # column 1: bucket 1..4 = (0, 0, 7, 0): min 0 first (bar 1) then max 7; bucket 5..8 =
    # (0, -1, 0, 0): max 0 first (bar 5) then min -1 (bar 6)
    assert out[:, 1].tolist() == [0.0, 0.0, 7.0, 0.0, -1.0, 0.0]


def test_short_series_are_kept_whole():
    y = np.arange(6.0)
    assert grid_positions(6, 6).tolist() == list(range(6))
    np.testing.assert_array_equal(decimate(y, 6), y)
    assert decimate(np.empty(0), 4).shape == (0,)


@pytest.mark.parametrize("bad", [3, 0, -5, 2.5, True, None])
def test_bad_max_points_is_refused_by_name(bad):
    with pytest.raises(ValueError, match=f"max_points={bad!r}.*>= 4"):
        decimate(np.arange(10.0), bad)


def test_bad_shape_is_refused():
    with pytest.raises(ValueError, match=r"shape \(2, 2, 2\)"):
        decimate(np.zeros((2, 2, 2)), 10)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(5, 400), max_points=st.integers(4, 60), m=st.integers(1, 3), seed=st.integers(0, 2**32 - 1),
       nan_share=st.sampled_from([0.0, 0.3, 0.95]))
def test_every_bucket_keeps_its_min_and_max(n, max_points, m, seed, nan_share):
    rng = np.random.default_rng(seed)
    y = rng.integers(-5, 6, (n, m)).astype(float)  # repeated values: ties are exercised
    y[rng.random((n, m)) < nan_share] = np.nan
    pos = grid_positions(n, max_points)
    out = decimate(y, max_points)
    assert len(pos) == len(out) <= max_points
    assert np.all(np.diff(pos) >= 0) and pos[0] == 0 and pos[-1] == n - 1
    np.testing.assert_array_equal(out[0], y[0])      # the first and last points, exact
    np.testing.assert_array_equal(out[-1], y[-1])
    if n <= max_points:
        np.testing.assert_array_equal(out, y)
        return
    edges = bucket_edges(n, max_points)
    assert edges[0] == 1 and edges[-1] == n - 1 and np.all(np.diff(edges) > 0)
    for b in range(len(edges) - 1):
        s, e = edges[b], edges[b + 1]
        assert pos[1 + 2 * b] == s and pos[2 + 2 * b] == e - 1  # drawn at the bucket's first and last bar
        block = y[s:e]
        pair = out[1 + 2 * b: 3 + 2 * b]
        for j in range(m):
            col = block[:, j]
            if np.all(np.isnan(col)):
                assert np.all(np.isnan(pair[:, j]))
                continue
            lo, hi = np.nanmin(col), np.nanmax(col)
            assert sorted(pair[:, j].tolist()) == [lo, hi]
            # in the order they occur (the first occurrence of each)
            i_lo = int(np.flatnonzero(col == lo)[0])
            i_hi = int(np.flatnonzero(col == hi)[0])
            want = [lo, hi] if i_lo <= i_hi else [hi, lo]
            assert pair[:, j].tolist() == want
