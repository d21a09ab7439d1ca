"""Warnings a user needs (a column that never trades, a late first order from the indicators'
warm-up, puts priced from EWMA) and the ``[data] lookback_days`` warm-up that fixes the second."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from backtest.runner import execute, parse_config
from runner_kit import TINY

WINDOW = {"exchange": "binanceusdm", "symbol": "BTC/USDT:USDT", "timeframe": "4h",
          "start": "2022-01-15", "end": "2022-03-01"}
TREND = {"name": "trend", "strategy": {"name": "trend_short", "params": {"slow_days": 20}}, "policies": ["const(1)"]}


def _run(tmp_path, doc, name="r"):
    lines: list[str] = []
    out = execute(parse_config(doc), reports_dir=tmp_path / name, log=lines.append, html=False)
    return out, lines


def _first_fill(out, name="trend") -> int:
    fills = out.results[name].events("fills")
    return int(fills["bar"].min())


def test_lookback_warms_the_indicators_up_and_trades_from_start(tmp_path):
    from backtest.data import load_market_data
    from strategies.policies import build_targets

    plain, plain_log = _run(tmp_path, {"title": "t", "baselines": False, "data": WINDOW, "perp": [TREND]}, "a")
    warm, warm_log = _run(tmp_path, {"title": "t", "baselines": False, "data": dict(WINDOW, lookback_days=25),
                                     "perp": [TREND]}, "b")
    n_ma = 20 * 6  # bars of the 20-day average on 4h bars
    # without the earlier data the average is undefined for 120 bars: flat, then the late warning
    assert _first_fill(plain) >= n_ma
    late = [x for x in plain_log if x.startswith("warning: trend: 1 column(s) place their first order only after")]
    assert len(late) == 1 and "set [data] lookback_days = " in late[0]
    assert any(n.startswith("warning: trend: 1 column(s)") for n in plain.notes)  # also in the report's notes
    # with 25 days loaded before start the average exists from the first bar: BTC was below it
    assert _first_fill(warm) < n_ma and not any(x.startswith("warning:") for x in warm_log)
    assert any("warm-up: 150 bars (25 days) before 2022-01-15" in n for n in warm.notes)
    # trading starts at start: the same bars, the same starting capital
    res_p, res_w = plain.results["trend"], warm.results["trend"]
    assert res_w.index.equals(res_p.index) and res_w.series["equity"][0, 0] == res_p.series["equity"][0, 0]
    # the targets of both runs agree once the 20-day window lies inside the run (bar 120 on); the
    # warm one's first 120 rows are the average of the earlier load, computed here on its own
    long = load_market_data("binanceusdm", "BTC/USDT:USDT", "4h", start="2021-12-21", end="2022-03-01")
    t_long = build_targets(long, "trend_short", {"slow_days": 20}, ["const(1)"])[0].to_numpy()[-res_p.n_bars:, 0]
    t_plain = build_targets(load_market_data("binanceusdm", "BTC/USDT:USDT", "4h", start="2022-01-15",
                                             end="2022-03-01"), "trend_short", {"slow_days": 20},
                            ["const(1)"])[0].to_numpy()[:, 0]
    np.testing.assert_array_equal(t_long[n_ma:], t_plain[n_ma:])
    assert np.all(t_plain[:n_ma - 1] == 0) and np.any(t_long[:n_ma] != 0)
    # and the warm run traded exactly those targets: its first fill is the first non-zero row + lag 1
    assert _first_fill(warm) == int(np.argmax(t_long != 0)) + 1
    # the run id changes with the warm-up (the earlier bars change the targets)
    assert plain.run_id != warm.run_id


def test_lookback_is_a_number_of_days(tiny):
    from backtest.runner import ConfigError

    for bad in (-1, "30d", float("inf"), True):
        doc = copy.deepcopy(tiny)
        doc["data"]["lookback_days"] = bad
        with pytest.raises(ConfigError, match="data.lookback_days"):
            parse_config(doc)


def test_a_column_that_never_trades_is_named(tmp_path):
    never = {"name": "carry", "strategy": {"name": "funding_carry", "params": {"threshold": [0.0, 5.0],
                                                                                "full_at": 6.0}},
             "policies": ["const(1)"]}
    out, log = _run(tmp_path, dict(copy.deepcopy(TINY), baselines=False, perp=[never]))
    msg = [x for x in log if x.startswith("warning: carry: 1 of 2 column(s) never trade")]
    assert len(msg) == 1 and "threshold=5|policy=const(1)" in msg[0]
    # the named column really holds nothing, the other trades
    pos = out.results["carry"].series["position"]
    labels = list(out.results["carry"].columns)
    assert np.all(pos[:, labels.index("threshold=5|policy=const(1)")] == 0)
    assert np.any(pos[:, labels.index("threshold=0|policy=const(1)")] != 0)


@pytest.mark.parametrize("iv, warned", [(None, True), ("deribit/BTC-DVOL", False)])
def test_puts_priced_from_ewma_are_said(tmp_path, iv, warned):
    doc = {"title": "t", "baselines": False, "data": dict(TINY["data"], **({"iv": iv} if iv else {})),
           "puts": [{"name": "puts", "settings": {"moneyness": 0.9, "exposure": 1.0}}]}
    out, log = _run(tmp_path, doc)
    ewma = [x for x in log if x.startswith("warning: puts: puts priced from an EWMA volatility")]
    assert bool(ewma) == warned
    assert (out.results["puts"].meta["iv_used_share"] == 0.0) == warned
