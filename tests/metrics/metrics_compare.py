"""Comparison of two metrics blocks: the compiled ``compute_metrics`` against the per-column
reference (``backtest.metrics.reference``), every metric of every column."""

from __future__ import annotations

import numpy as np

# Floats agree to this relative tolerance. The return statistics (vectorbt's definitions:
# total return, CAGR, volatility, Sharpe, Sortino, max drawdown), Calmar, the durations, worst
# bar and day, extremes and exposure come out bit for bit on every result of these tests (the
# same operations in the same order). Sums do not: the reference sums a column with numpy
# (pairwise summation for a column copied out, ulcer index, average leverage, funding,
# turnover, liquidation sums, Greek means; numpy's own order for `fees`), the kernel bar by bar
# in order, which changes the last bits (relative differences of about 1e-16 seen; a reordered
# sum of 26,280 positive terms is bounded by ~3e-12).
RTOL = 1e-12
# Where the summed terms have both signs the error is relative to the sum of their absolute
# values, not to the net: funding_net is checked against 1e-12 x (paid + received).
SIGNED_SUMS = {"funding_net": ("funding_paid", "funding_received")}


def assert_same_metrics(new: dict, ref: dict) -> int:
    """Assert ``new`` equals ``ref`` (keys, order, types, None, values); returns the number of
    per-column values compared (so that a caller can check the comparison covered something)."""
    assert {k: v for k, v in new.items() if k != "columns"} == {k: v for k, v in ref.items() if k != "columns"}
    assert list(new["columns"]) == list(ref["columns"])
    compared = 0
    for label, b in ref["columns"].items():
        a = new["columns"][label]
        assert list(a) == list(b), f"column {label!r}: keys {list(a)} != {list(b)}"
        for key, want in b.items():
            got = a[key]
            where = f"column {label!r} metric {key!r}: {got!r} != reference {want!r}"
            assert type(got) is type(want), where
            if isinstance(want, float):
                atol = 0.0
                if key in SIGNED_SUMS:
                    atol = RTOL * sum(abs(b[k]) for k in SIGNED_SUMS[key])
                np.testing.assert_allclose(got, want, rtol=RTOL, atol=atol, err_msg=where)
            else:
                assert got == want, where
            compared += 1
    return compared
