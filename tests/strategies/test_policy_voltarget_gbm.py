"""Volatility targeting on simulated constant-volatility GBM paths: the position's realised
volatility must hit the target within sampling error, whatever the bar size.

Tolerance: the sample standard deviation of N Gaussian returns has a relative standard error
of about 1/sqrt(2N); 4 of those, plus the small upward bias of scaling by 1/sigma_hat
(E[1/sigma_hat^2] ~ sigma^-2 (1 + 2/n_eff) for an estimate from n_eff returns), bound the
error. Annualising with 252 instead of 365 days would miss by 20 %.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from strategies.frame import MarketFrame
from strategies.policies import VolTarget


def realised_vol_of_targeted_returns(frame, lev: np.ndarray) -> tuple[float, int]:
    close = frame["close"].to_numpy()
    ret = close[1:] / close[:-1] - 1.0
    # The leverage decided at bar t's close is held over bar t+1 (open t+1 = close t here).
    pos = lev[:-1]
    used = pos > 0
    pnl = pos[used] * ret[used]
    bars_per_year = MarketFrame(frame).bars_per_year
    return float(np.std(pnl, ddof=1) * math.sqrt(bars_per_year)), int(used.sum())


@pytest.mark.parametrize("bar_hours,years,policy,n_eff", [
    (1.0, 2, VolTarget(target_vol=0.4, estimator="ewma", halflife_days=10), 2 * 240 / math.log(2)),
    (1.0, 2, VolTarget(target_vol=0.4, estimator="rolling", window_days=30), 720),
    (4.0, 6, VolTarget(target_vol=0.3, estimator="rolling", window_days=60), 360),
    (24.0, 10, VolTarget(target_vol=0.4, estimator="rolling", window_days=180), 180),
])
def test_voltarget_hits_the_target_on_gbm(make_gbm, bar_hours, years, policy, n_eff):
    sigma = 0.8
    n = int(years * 365 * 24 / bar_hours)
    frame = make_gbm(sigma, n, bar_hours=bar_hours, seed=11)
    lev = policy.compute(frame)
    vol, n_used = realised_vol_of_targeted_returns(frame, lev)
    tol = 4 / math.sqrt(2 * n_used) + 2 / n_eff
    assert vol == pytest.approx(policy.target_vol, rel=tol)
    # The leverage itself is about target / sigma (0.5 or 0.375) once warmed up.
    assert np.median(lev[lev > 0]) == pytest.approx(policy.target_vol / sigma, rel=0.05)


def test_voltarget_scales_down_when_vol_doubles(make_gbm):
    # First half vol 0.4, second half 0.8: the target holds in both halves (per-regime check).
    lo = make_gbm(0.4, 24 * 365, seed=3)
    hi = make_gbm(0.8, 24 * 365, seed=4, start="2021-01-01")
    hi[["open", "high", "low", "close", "mark_open", "mark_high", "mark_low", "mark_close"]] *= (
        lo["close"].iloc[-1] / 100.0)
    frame = pd.concat([lo, hi])
    pol = VolTarget(target_vol=0.4, halflife_days=5)
    lev = pol.compute(frame)
    half = len(lo)
    skip = 24 * 60  # let the forecast adapt after the switch
    v1, n1 = realised_vol_of_targeted_returns(frame.iloc[:half], lev[:half])
    v2, n2 = realised_vol_of_targeted_returns(frame.iloc[half + skip:], lev[half + skip:])
    n_eff = 2 * (5 * 24) / math.log(2)  # EWMA with a 120-bar half-life: (1 + lam) / (1 - lam)
    for v, n in ((v1, n1), (v2, n2)):
        assert v == pytest.approx(0.4, rel=4 / math.sqrt(2 * n) + 2 / n_eff)
    assert np.median(lev[:half][lev[:half] > 0]) == pytest.approx(1.0, rel=0.05)
    assert np.median(lev[half + skip:]) == pytest.approx(0.5, rel=0.05)
