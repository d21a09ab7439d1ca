"""Decimation of long series for display: min/max per bucket on one x grid shared by every column.

A plot about 1,200 px wide cannot show more than a point or two per pixel, so a series of
18,000 hourly bars is drawn from about one bucket per pixel. Each bucket keeps the minimum and
the maximum of every column (NaN ignored), so peaks, troughs and one-bar spikes (a liquidation,
a margin ratio touching 1.0) stay visible; the first and last points are kept exactly. The exact
data stays in ``equity.parquet``; metrics always use every bar.

The x grid is shared by every column of a figure (one timestamp array per figure instead of one
per line, which was half of a page's size): a bucket of bars ``[s, e]`` is drawn as two points at
the times of its first and last bar, carrying the bucket's two extremes in the order they
occurred. An extreme is therefore drawn up to one bucket (about one pixel) away from its bar;
its value is exact.

No library does this with a shared grid: ``tsdownsample``/``plotly-resampler`` pick per-series
indices (a different x array per line, which is what the shared grid removes), so this is a
small numpy function, vectorised over the columns.
"""

from __future__ import annotations

import numpy as np

MIN_POINTS = 4  # the first point, one bucket (two points), the last point


def bucket_edges(n: int, max_points: int) -> np.ndarray:
    """Start positions of the inner buckets and the end of the last one, shape (n_buckets + 1,).

    The inner bars ``1 .. n - 2`` are cut into ``(max_points - 2) // 2`` buckets of equal size
    (the last one may be shorter); bars 0 and ``n - 1`` are kept on their own. Only meaningful
    when ``n > max_points``.
    """
    n_b = (max_points - 2) // 2
    size = -(-(n - 2) // n_b)
    starts = np.arange(1, n - 1, size, dtype=np.int64)
    return np.append(starts, n - 1)


def grid_positions(n: int, max_points: int) -> np.ndarray:
    """Bar positions of the shared display grid, shape (k,), k <= max_points, non-decreasing.

    ``arange(n)`` when ``n <= max_points``; else 0, then for each inner bucket its first and
    last bar (the same bar twice for a bucket of one bar), then ``n - 1``.
    """
    _check(n, max_points)
    if n <= max_points:
        return np.arange(n, dtype=np.int64)
    edges = bucket_edges(n, max_points)
    pairs = np.stack([edges[:-1], edges[1:] - 1], axis=1).reshape(-1)
    return np.concatenate([[0], pairs, [n - 1]]).astype(np.int64)


def decimate(y: np.ndarray, max_points: int) -> np.ndarray:
    """The values of ``y`` on the grid of :func:`grid_positions`, every column at once.

    Parameters
    ----------
    y : float array (n,) or (n, m), bars on axis 0.
    max_points : most points per line (>= 4).

    Returns
    -------
    float64 array of shape (k,) or (k, m) with ``k = len(grid_positions(n, max_points))``:
    ``y`` itself when ``n <= max_points``; else row 0 is ``y[0]``, the last row ``y[n - 1]``,
    and each inner bucket gives two rows, its minimum and maximum (NaN ignored) in the order
    they occur in the bucket (the earlier first; the first occurrence of a repeated extreme).
    A bucket holding only NaN gives NaN twice (a gap in the line).
    """
    arr = np.asarray(y, dtype=np.float64)
    one = arr.ndim == 1
    if one:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"decimate: y has shape {np.shape(y)}; give (n_bars,) or (n_bars, n_columns)")
    n, m = arr.shape
    _check(n, max_points)
    if n <= max_points:
        out = arr.copy()
        return out[:, 0] if one else out
    edges = bucket_edges(n, max_points)
    n_b = len(edges) - 1
    size = int(edges[1] - edges[0])
    inner = np.full((n_b * size, m), np.nan)
    inner[: n - 2] = arr[1:n - 1]
    blocks = inner.reshape(n_b, size, m)
    nan = np.isnan(blocks)
    i_min = np.argmin(np.where(nan, np.inf, blocks), axis=1)   # (n_b, m); first occurrence
    i_max = np.argmax(np.where(nan, -np.inf, blocks), axis=1)
    lo = np.take_along_axis(blocks, i_min[:, None, :], axis=1)[:, 0, :]
    hi = np.take_along_axis(blocks, i_max[:, None, :], axis=1)[:, 0, :]
    empty = nan.all(axis=1)
    # an all-NaN bucket: argmin/argmax point at a NaN (or at a padding NaN): NaN either way
    lo[empty] = np.nan
    hi[empty] = np.nan
    min_first = i_min <= i_max
    first = np.where(min_first, lo, hi)
    second = np.where(min_first, hi, lo)
    pairs = np.stack([first, second], axis=1).reshape(2 * n_b, m)
    out = np.concatenate([arr[:1], pairs, arr[n - 1:]], axis=0)
    return out[:, 0] if one else out


def _check(n: int, max_points: int) -> None:
    if isinstance(max_points, bool) or not isinstance(max_points, (int, np.integer)) or max_points < MIN_POINTS:
        raise ValueError(f"max_points={max_points!r}: give an integer >= {MIN_POINTS} (the first point, "
                         "one bucket's minimum and maximum, the last point)")
    if n < 0:
        raise ValueError(f"n={n}: a series cannot have a negative length")
