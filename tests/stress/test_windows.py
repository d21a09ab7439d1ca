"""Crisis windows: the library's entries, which windows a data span covers, and a window's measures
checked on a hand-made equity path (every number computed by hand below)."""

from __future__ import annotations

import numpy as np
import pytest

from backtest.report import collect
from backtest.stress import ShockError
from backtest.stress.windows import CRISIS_WINDOWS, CrisisWindow, select_windows, window_frame, windows_named
from tests.report.report_factories import H, from_equity

MS = {"2021-01-01": 1_609_459_200_000, "2024-01-01": 1_704_067_200_000, "2021-11-01": 1_635_724_800_000}


def test_every_library_window_has_a_source_a_description_and_a_span():
    names = [w.name for w in CRISIS_WINDOWS]
    assert len(set(names)) == len(names)
    for w in CRISIS_WINDOWS:
        a, b = w.span_ms()
        assert 0 < b - a <= 14 * 86_400_000, w.name  # a crisis, not a regime
        assert len(w.description) > 40 and len(w.source) > 20, w.name
    issue = {"crash-2021-05-19", "flash-crash-2021-12-04", "terra-luna-2022-05", "celsius-3ac-2022-06",
             "ftx-2022-11", "usdc-depeg-2023-03"}
    assert issue <= set(names)


def test_the_sample_covers_the_2021_to_2023_windows_and_skips_later_ones_with_the_reason():
    covered, skipped = select_windows(CRISIS_WINDOWS, MS["2021-01-01"], MS["2024-01-01"])
    assert {w.name for w in covered} == {"crash-2021-05-19", "flash-crash-2021-12-04", "terra-luna-2022-05",
                                          "celsius-3ac-2022-06", "ftx-2022-11", "usdc-depeg-2023-03",
                                          "flash-crash-2023-08-17"}
    (late,) = skipped
    assert late["name"] == "tariff-crash-2025-10-10"
    assert late["reason"] == ("2025-10-10T00:00:00+00:00 .. 2025-10-14T00:00:00+00:00 is after the run's data "
                              "(2021-01-01T00:00:00+00:00 .. 2024-01-01T00:00:00+00:00)")
    # the main job's data starts 2021-11-01: the May 2021 crash is before it
    _, skipped = select_windows(CRISIS_WINDOWS, MS["2021-11-01"], MS["2024-01-01"])
    assert [s["name"] for s in skipped] == ["crash-2021-05-19", "tariff-crash-2025-10-10"]
    assert "is before the run's data" in skipped[0]["reason"]
    part = CrisisWindow("part", "2023-12-30", "2024-01-03", "x", "y")
    _, (s,) = select_windows([part], MS["2021-01-01"], MS["2024-01-01"])
    assert "only partly inside" in s["reason"]


def test_unknown_names_and_empty_windows_are_refused_naming_them():
    with pytest.raises(ShockError, match=r"unknown crisis window 'ftx-2022'; did you mean 'ftx-2022-11'\?"):
        windows_named(["ftx-2022"])
    with pytest.raises(ShockError, match=r"end 2022-01-01T00:00:00\+00:00 is not after start"):
        CrisisWindow("w", "2022-01-02", "2022-01-01")
    mine = CrisisWindow("mine", "2022-01-01", "2022-01-02")
    assert windows_named(["mine", "ftx-2022-11"], [mine])[0] is mine


# Hand path: hourly bars from 2022-03-01 00:00 (start of report_factories.from_equity), equity
# before bar 0 = 100 (initial capital). The window [01:00, 04:00) holds bars 1, 2, 3.
EQUITY = [100.0, 110.0, 99.0, 121.0, 120.0, 90.0]
T0 = 1_646_092_800_000  # 2022-03-01 00:00 UTC


def _hand_run():
    rec = np.zeros(3, dtype=[("bar", "i8"), ("col", "i8")])
    rec["bar"], rec["col"] = [2, 2, 5], [0, 0, 0]  # two margin calls in the window, one after
    liq = np.zeros(1, dtype=[("bar", "i8"), ("col", "i8")])
    liq["bar"] = [3]
    cum_funding = np.array([[0.0], [1.0], [3.0], [2.5], [2.5], [4.0]])
    res = from_equity(EQUITY, records={"margin_calls": rec, "liquidations": liq},
                      extra={"cum_funding": cum_funding})
    return collect({"r": res}, title="hand")


def test_a_window_is_measured_on_its_bars_from_the_close_before_it():
    run = _hand_run()
    w = CrisisWindow("w", "2022-03-01T01:00:00Z", "2022-03-01T04:00:00Z")
    t = window_frame(run.metrics, run.series, run.events, [w])
    row = t[(t["basis"] == "usd")].iloc[0]
    assert row["bars"] == 3
    assert row["return"] == pytest.approx(121.0 / 100.0 - 1.0, rel=1e-14)   # bar 3's close over bar 0's
    assert row["max_drawdown"] == pytest.approx(1.0 - 99.0 / 110.0, rel=1e-14)  # peak 110 (bar 1), trough 99
    assert row["worst_bar_return"] == pytest.approx(99.0 / 110.0 - 1.0, rel=1e-14)
    assert row["worst_bar_ms"] == T0 + 2 * H
    assert row["liquidations"] == 1 and row["margin_calls"] == 2
    assert row["funding_net"] == pytest.approx(2.5 - 0.0, abs=1e-12)  # cum funding 0 (bar 0) -> 2.5 (bar 3)
    # a window starting with the run: the start (100) is the level and the first peak
    first = CrisisWindow("f", "2022-03-01", "2022-03-01T01:00:00Z")
    row = window_frame(run.metrics, run.series, run.events, [first]).iloc[0]
    assert row["return"] == pytest.approx(0.0, abs=1e-15) and row["max_drawdown"] == 0.0
    assert row["liquidations"] == 0 and row["margin_calls"] == 0


def test_a_result_that_does_not_hold_the_whole_window_gets_no_row():
    run = _hand_run()
    w = CrisisWindow("w", "2022-03-01T04:00:00Z", "2022-03-01T08:00:00Z")  # bars 4, 5 of 6 and two more
    assert len(window_frame(run.metrics, run.series, run.events, [w])) == 0
