"""Stationary bootstrap of bars: a path rebuilt by hand, the block structure against the
geometric law of Politis and Romano, funding kept on its own bars, and path statistics against
the history within their sampling error."""

from __future__ import annotations

import numpy as np
import pytest

from backtest.stress import ShockError, StationaryBootstrap, stationary_bootstrap_indices
from backtest.stress.common import print_bars
from tests.stress.kit import HOUR, T0, hand, sample

TRADE = ["open", "high", "low", "close"]
MARK = ["mark_open", "mark_high", "mark_low", "mark_close"]


def test_a_path_is_rebuilt_from_the_previous_close_by_hand():
    boot = StationaryBootstrap(hand(), mean_block=2)
    # path bars 1..5 are history bars 4, 5, 1, 2, 3 (units 3, 4, 0, 1, 2)
    md = boot.assemble(np.array([3, 4, 0, 1, 2]))
    c = [101.0]                       # closes: bar 0 is the history's
    for num, den in ((98, 95), (99, 98), (103, 101), (97, 103), (95, 97)):
        c.append(c[-1] * num / den)
    want_trade = [
        (100, 102, 99, 101),
        tuple(c[0] * x / 95 for x in (95, 99, 95, 98)),
        tuple(c[1] * x / 98 for x in (98, 100, 97, 99)),
        tuple(c[2] * x / 101 for x in (101, 104, 100, 103)),
        tuple(c[3] * x / 103 for x in (100, 101, 96, 97)),
        tuple(c[4] * x / 97 for x in (97, 98, 94, 95)),
    ]
    np.testing.assert_allclose(md.frame[TRADE].to_numpy(), want_trade, rtol=1e-14)
    # the mark closes equal the trade closes in this table, so the mark chain is c as well
    np.testing.assert_allclose(md.frame["mark_high"].to_numpy()[1:],
                               [c[0] * 98.5 / 95, c[1] * 99.5 / 98, c[2] * 103.5 / 101, c[3] * 100.5 / 103,
                                c[4] * 97.5 / 97], rtol=1e-14)
    # prints: history bar 4's (mid-bar, mark 96 over the mark close 95 before it) on path bar 1,
    # bar 1's (+3 ms) on path bar 3, bar 3's (-2 ms, rounded into the bar) on path bar 5
    f = md.funding
    np.testing.assert_array_equal(f["timestamp"], [T0 + HOUR + 1_800_000, T0 + 3 * HOUR + 3, T0 + 5 * HOUR - 2])
    np.testing.assert_array_equal(f["funding_rate"], [-0.0001, 0.0001, 0.0002])
    np.testing.assert_allclose(f["mark_price"], [c[0] * 96 / 95, c[2] * 101 / 101, c[4] * 97 / 97], rtol=1e-14)
    np.testing.assert_array_equal(md.frame["funding_rate"].to_numpy()[[1, 3, 5]], [-0.0001, 0.0001, 0.0002])
    assert md.frame["funding_rate"].isna().to_numpy()[[0, 2, 4]].all()
    np.testing.assert_array_equal(md.timestamps, hand().timestamps)


def test_block_lengths_are_geometric_with_the_stated_mean():
    n, horizon, mean_block = 50, 200_000, 8.0
    p = 1.0 / mean_block
    idx, new = stationary_bootstrap_indices(n, horizon, mean_block, np.random.default_rng(11))
    assert new[0]
    # inside a block the next unit follows the previous one, wrapping from the last to the first
    cont = ~new[1:]
    np.testing.assert_array_equal(idx[1:][cont], (idx[:-1][cont] + 1) % n)
    # a block starts at each later step independently with probability p: binomial count
    k = int(new[1:].sum())
    se = np.sqrt(p * (1 - p) / (horizon - 1))
    assert abs(k / (horizon - 1) - p) < 4 * se
    # complete blocks (the last is cut by the horizon): mean L, sd sqrt(1-p)/p, P(1) = p
    starts = np.flatnonzero(new)
    lengths = np.diff(starts)
    m = lengths.shape[0]
    assert abs(lengths.mean() - mean_block) < 4 * np.sqrt(1 - p) / p / np.sqrt(m)
    assert abs(np.var(lengths) - (1 - p) / p**2) < 0.05 * (1 - p) / p**2
    for length in (1, 8, 20):
        pmf = p * (1 - p) ** (length - 1)
        assert abs((lengths == length).mean() - pmf) < 4 * np.sqrt(pmf * (1 - pmf) / m)
    # block starts are independent uniform draws (so, with the wrap, every step is uniform):
    # chi-square of their units over 50 cells, 49 degrees of freedom, 99.9 % quantile 85.35
    counts = np.bincount(idx[new], minlength=n)
    e = counts.sum() / n
    assert ((counts - e) ** 2 / e).sum() < 85.35


def test_every_print_of_a_path_comes_from_its_bar_s_history_bar():
    md = sample()
    boot = StationaryBootstrap(md, mean_block=12, seed=3)
    hist_bars = print_bars(md)
    hist_off = md.funding["timestamp"].to_numpy() - md.timestamps[hist_bars]
    hist = {}
    for b, o, r in zip(hist_bars, hist_off, md.funding["funding_rate"].to_numpy()):
        hist.setdefault(int(b), []).append((int(o), float(r)))
    for path in boot.paths(20):
        d = path.data
        pb = print_bars(d)
        off = d.funding["timestamp"].to_numpy() - d.timestamps[pb]
        got = {}
        for b, o, r in zip(pb, off, d.funding["funding_rate"].to_numpy()):
            got.setdefault(int(b), []).append((int(o), float(r)))
        source = np.concatenate([[0], path.units + 1])  # history bar behind each path bar
        for j in range(d.n):
            assert got.get(j, []) == hist.get(int(source[j]), []), (path.index, j)
        assert len(d.funding) == sum(len(hist.get(int(s), [])) for s in source)


def test_path_mean_return_and_volatility_match_the_history_within_sampling_error():
    """History: the sample's 2022 (8,760 hourly bars). Over 200 paths the grand mean of the
    per-path mean log return must lie within 4 standard errors of the history's mean log return
    (the standard error estimated from the 200 independent path means), and the mean per-path
    variance (ddof 0) within 4 standard errors of its expectation under the bootstrap, the
    history's variance less the variance of a path mean. 4 standard errors are 2.3 % of the
    variance here: a volatility 1.2 % off would fail."""
    md = sample("2022-01-01", "2023-01-01")
    r = np.diff(np.log(md.frame["close"].to_numpy()))
    means, variances = [], []
    for path in StationaryBootstrap(md, mean_block=24, seed=7).paths(200):
        rp = np.diff(np.log(path.data.frame["close"].to_numpy()))
        means.append(rp.mean())
        variances.append(rp.var())
    means, variances = np.array(means), np.array(variances)
    se_mean = means.std(ddof=1) / np.sqrt(means.size)
    assert abs(means.mean() - r.mean()) < 4 * se_mean
    expected_var = r.var() - means.var()
    se_var = variances.std(ddof=1) / np.sqrt(variances.size)
    assert 4 * se_var < 0.03 * r.var()  # the tolerance can fail
    assert abs(variances.mean() - expected_var) < 4 * se_var
    # every path return, trade and mark (chained on its own closes), is its history bar's
    for col, hist in (("close", r), ("mark_close", np.diff(np.log(md.frame["mark_close"].to_numpy())))):
        rp = np.diff(np.log(path.data.frame[col].to_numpy()))
        np.testing.assert_allclose(rp, hist[path.units], rtol=1e-9, atol=1e-12)


def test_path_k_depends_on_the_seed_and_k_only():
    md = sample()
    a = StationaryBootstrap(md, mean_block=24, seed=5)
    b = StationaryBootstrap(md, mean_block=24, seed=5)
    p3 = [p for p in a.paths(4)][3]
    np.testing.assert_array_equal(p3.units, b.path(3).units)
    assert p3.data.fingerprint == b.path(3).data.fingerprint
    assert not np.array_equal(a.path(2).units, p3.units)
    assert not np.array_equal(StationaryBootstrap(md, mean_block=24, seed=6).path(3).units, p3.units)
    assert p3.data.n == md.n and p3.units.shape == (md.n - 1,)
    assert StationaryBootstrap(md, 24, horizon=100).path(0).data.n == 101


def test_bad_bootstrap_settings_are_refused():
    md = sample()
    gappy = md.replace(frame=md.frame.drop(md.frame.index[10]),
                       funding=md.funding[print_bars(md) != 10])
    with pytest.raises(ShockError, match="missing bars after 2022-05-01T09:00"):
        StationaryBootstrap(gappy, 24)
    with pytest.raises(ShockError, match=r"mean_block=0.5 is out of range"):
        StationaryBootstrap(md, 0.5)
    with pytest.raises(ShockError, match=r"horizon=1464 must be a whole number of bars in 1 \.\. 1463"):
        StationaryBootstrap(md, 24, horizon=md.n)
    with pytest.raises(ShockError, match=r"seed=-1"):
        StationaryBootstrap(md, 24, seed=-1)
