"""Typed, validated in-loop policy settings and the look-ahead rule of ``Account.lag``.

* ``Policy.ratchet`` is a bool (one meaning in the kernel and the reference); anything else is
  refused with the field, the value and the fix.
* The policy factor is one formula (``backtest.engine.nb.policy_target_nb``) that both
  implementations call; its values are pinned here by hand.
* ``Account.lag = 0`` trades a close-based target at the open of the bar whose close computed it:
  refused unless ``allow_lookahead=True``, which the result's meta then states; a lag that leaves
  no target row to fill is refused.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from backtest.engine import Account, Policy, SettingsError, simulate_perp
from backtest.engine.nb import policy_target_nb
from backtest.engine.reference import simulate_reference
from backtest.engine.settings import PolicyKind
from .scenario_kit import make_bars, make_spec, targets

FLAT = (100.0, 100.0, 100.0, 100.0)


def _both(bars, tgt, spec, account, policy):
    """Run the kernel and the reference (the same refusal is expected from both)."""
    return simulate_perp(bars, tgt, spec, account, policy), simulate_reference(bars, tgt, spec, account, policy)


@pytest.mark.parametrize("bad", [0.3, 1.0, 0, 1, "yes", np.nan])
def test_ratchet_must_be_a_bool(bad):
    bars = make_bars([FLAT] * 4)
    tgt = targets([-1.0, -1.0, None, None])
    for run in (simulate_perp, simulate_reference):
        with pytest.raises(SettingsError, match=r"Policy\.ratchet=.* must be True or False"):
            run(bars, tgt, make_spec(), Account(), Policy(kind="cppi", ratchet=bad))


def test_ratchet_per_column_bools_and_numpy_bools_are_accepted():
    bars = make_bars([FLAT, (100, 100, 80, 80), (80, 100, 80, 100), FLAT])
    tgt = targets(*[[-1.0, -1.0, -1.0, None]] * 2)
    pol = Policy(kind="cppi", floor=0.5, multiplier=2.0, ratchet=np.array([False, True]))
    res = simulate_perp(bars, tgt, make_spec(lot=0.1), Account(initial_capital=1000.0), pol)
    # see test_policy_factor_from_previous_close_and_running_peak: bar 3 -7 (fixed floor), -6 (ratchet)
    np.testing.assert_allclose(res.series["position"][3], [-7.0, -6.0], atol=1e-12)
    assert res.meta["settings"]["ratchet"] == [False, True]


@pytest.mark.parametrize("field, bad, what", [
    ("max_drawdown", True, "a number"),
    ("floor", False, "a number"),
    ("multiplier", True, "a number"),
    ("max_exposure", True, "a number"),
])
def test_numeric_policy_fields_refuse_bools(field, bad, what):
    # ``floor=True`` is a typo, not 1.0 (which would also be out of range for floor)
    with pytest.raises(SettingsError, match=rf"Policy\.{field}=.*{what}"):
        simulate_perp(make_bars([FLAT] * 3), targets([-1.0, None, None]), make_spec(), Account(),
                      Policy(kind="cppi", **{field: bad}))


@pytest.mark.parametrize("kw, key", [
    ({"kind": "drawdown", "max_drawdown": 0.0}, "max_drawdown"),
    ({"kind": "drawdown", "max_drawdown": np.nan}, "max_drawdown"),
    ({"kind": "cppi", "multiplier": np.inf}, "multiplier"),
    ({"kind": "cppi", "floor": 1.0}, "floor"),
    ({"kind": "drawdown", "floor": -0.1}, "floor"),
    ({"kind": "none", "max_exposure": np.nan}, "max_exposure"),
    ({"kind": "none", "max_exposure": 0.0}, "max_exposure"),
])
def test_out_of_range_policy_values_are_refused_by_both(kw, key):
    bars = make_bars([FLAT] * 3)
    for run in (simulate_perp, simulate_reference):
        with pytest.raises(SettingsError, match=rf"Policy\.{key}="):
            run(bars, targets([-1.0, None, None]), make_spec(), Account(), Policy(**kw))


def _factor(kind, e, peak, *, maxdd=0.5, floor=0.0, mult=1.0, ratchet=False, maxexp=math.inf, init=1000.0,
            target=-1.0):
    return policy_target_nb(target, PolicyKind.names[kind], maxdd, floor, mult, ratchet, maxexp, e, peak, init)


def test_policy_formula_values():
    # drawdown: dd = 1 - 900/1200 = 0.25; factor 1 - 0.25/0.5 = 0.5
    assert _factor("drawdown", 900.0, 1200.0) == pytest.approx(-0.5, rel=1e-15)
    # beyond max_drawdown the factor stops at the floor (0.2), never below, never above 1
    assert _factor("drawdown", 300.0, 1200.0, floor=0.2) == pytest.approx(-0.2, rel=1e-15)
    assert _factor("drawdown", 1200.0, 1200.0) == -1.0
    # CPPI fixed floor 0.5 x 1000 = 500: 2 * (850 - 500) / 850
    assert _factor("cppi", 850.0, 1200.0, floor=0.5, mult=2.0) == pytest.approx(-700.0 / 850.0, rel=1e-15)
    # ratchet: floor 0.5 x peak 1200 = 600: 2 * (900 - 600) / 900
    assert _factor("cppi", 900.0, 1200.0, floor=0.5, mult=2.0, ratchet=True) == pytest.approx(-600 / 900, rel=1e-15)
    # below the floor: no exposure; equity <= 0: no exposure
    assert _factor("cppi", 400.0, 1200.0, floor=0.5, mult=2.0) == 0.0
    assert _factor("cppi", 0.0, 1200.0, floor=0.5, mult=2.0) == 0.0
    # max_exposure caps |target| whatever the kind, keeping its sign
    assert _factor("none", 1000.0, 1000.0, maxexp=3.0, target=-7.0) == -3.0
    assert _factor("cppi", 1000.0, 1000.0, mult=5.0, maxexp=3.0, target=1.0) == 3.0


# ------------------------------------------------------------------------------------------
# lag and look-ahead
# ------------------------------------------------------------------------------------------

def test_lag_zero_is_refused_without_allow_lookahead():
    bars = make_bars([FLAT] * 4)
    for run in (simulate_perp, simulate_reference):
        with pytest.raises(SettingsError) as err:
            run(bars, targets([-1.0, None, None, None]), make_spec(), Account(lag=0), Policy())
        msg = str(err.value)
        assert "Account.lag=0" in msg and "allow_lookahead=True" in msg and "lag=1" in msg


def test_lag_zero_with_allow_lookahead_runs_and_says_so():
    bars = make_bars([FLAT, (100, 100, 80, 80), FLAT])
    res = simulate_perp(bars, targets([-1.0, None, None]), make_spec(), Account(lag=0, allow_lookahead=True))
    assert res.series["position"][0, 0] == pytest.approx(-100.0)  # filled at bar 0's own open
    assert res.meta["allow_lookahead"] is True and res.meta["lag"] == 0
    assert any("look-ahead" in note for note in res.meta["notes"])
    # the default states that it trades at the next open
    res1 = simulate_perp(bars, targets([-1.0, None, None]), make_spec(), Account())
    assert res1.meta["allow_lookahead"] is False and res1.meta["notes"] == []


@pytest.mark.parametrize("lag", [3, 4, 10])
def test_lag_not_shorter_than_the_data_is_refused(lag):
    bars = make_bars([FLAT] * 3)
    for run in (simulate_perp, simulate_reference):
        with pytest.raises(SettingsError, match=rf"Account\.lag={lag} .*3 bars"):
            run(bars, targets([-1.0, None, None]), make_spec(), Account(lag=lag), Policy())


@pytest.mark.parametrize("bad", [-1, 1.5, True, "1"])
def test_lag_must_be_a_non_negative_integer(bad):
    with pytest.raises(SettingsError, match=r"Account\.lag="):
        simulate_perp(make_bars([FLAT] * 3), targets([-1.0, None, None]), make_spec(), Account(lag=bad))


def test_allow_lookahead_must_be_a_bool():
    with pytest.raises(SettingsError, match=r"Account\.allow_lookahead=1 must be True or False"):
        simulate_perp(make_bars([FLAT] * 3), targets([-1.0, None, None]), make_spec(),
                      Account(lag=0, allow_lookahead=1))
