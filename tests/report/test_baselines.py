"""Baselines on the run's window: closed forms for spot buy-and-hold and cash, the engine's
single-instrument reference for the held short, and their place in the runner and the report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from backtest.engine import Account, Policy
from backtest.engine.bars import PerpBars
from backtest.engine.reference import simulate_reference
from backtest.metrics import compute_metrics
from backtest.report import collect
from backtest.report.build import build_report, plotted_columns
from backtest.runner.baselines import CAPITAL, CASH, LABELS, NAME, SHORT, SPOT, baselines_result, short_target
from backtest.runner.config import ConfigError, parse_config
from tests.report.report_factories import from_equity


@pytest.fixture(scope="module")
def linear():
    from backtest.data import load_market_data
    from backtest.market import load_market

    md = load_market_data("binanceusdm", "BTC/USDT:USDT", "1h", start="2022-05-01", end="2022-06-15")
    spec = load_market("binanceusdm", "BTC/USDT:USDT")
    return md, spec, baselines_result(md, spec)


@pytest.fixture(scope="module")
def inverse():
    from backtest.data import load_market_data
    from backtest.market import load_market

    md = load_market_data("binancecoinm", "BTC/USD:BTC", "1h", start="2022-03-01", end="2022-04-01",
                          allow_mark_fallback=True)
    spec = load_market("binancecoinm", "BTC/USD:BTC")
    return md, spec, baselines_result(md, spec)


def test_three_columns_marked_as_baselines(linear):
    _, spec, res = linear
    assert list(res.columns) == [SPOT, SHORT, CASH] == list(LABELS)
    assert res.meta["baseline"] is True and res.kind == "baseline" and res.currency == spec.settle
    assert res.meta["spot_fee_rate"] == spec.taker_fee > 0


def test_spot_buy_and_hold_is_the_close_ratio_less_one_taker_fee(linear):
    md, spec, res = linear
    close = md.frame["close"].to_numpy()
    want = CAPITAL * (1 - spec.taker_fee) * close / close[0]
    np.testing.assert_allclose(res.series["equity_usd"][:, 0], want, rtol=1e-14)
    m = compute_metrics(res, currency="usd")["columns"][SPOT]
    assert m["total_return"] == pytest.approx((1 - spec.taker_fee) * close[-1] / close[0] - 1, rel=1e-12)
    assert m["fees"] == pytest.approx(CAPITAL * spec.taker_fee, rel=1e-12)
    assert m["funding_net"] == 0.0 and m["liquidations"] == 0 and m["max_leverage"] == 1.0
    assert m["turnover"] == pytest.approx(CAPITAL * (1 - spec.taker_fee), rel=1e-12)  # one purchase


def test_cash_is_constant(linear):
    _, _, res = linear
    assert np.all(res.series["equity_usd"][:, 2] == CAPITAL)
    m = compute_metrics(res, currency="usd")["columns"][CASH]
    assert m["total_return"] == 0.0 and m["max_drawdown"] == 0.0 and m["sharpe"] is None
    assert m["exposure_time"] == 0.0 and m["fees"] == 0.0 and m["beta"] == 0.0


def test_the_short_is_the_engines_reference_for_the_same_target(linear):
    md, spec, res = linear
    bars = md.to_perp_bars()
    series, records = simulate_reference(bars, short_target(bars.n), spec, Account(initial_capital=CAPITAL), Policy())
    for key in ("equity", "position", "cum_funding", "cum_fees", "margin_ratio", "liq_price"):
        np.testing.assert_allclose(res.series[key][:, 1], series[key][:, 0], rtol=1e-9, atol=1e-9 * CAPITAL,
                                   err_msg=key)
    # opened once (at the second bar's open: the default lag), held, funding included
    fills = res.records["fills"][res.records["fills"]["col"] == 1]
    assert len(fills) == len(records["fills"]) == 1 and fills["bar"][0] == 1
    assert fills["size"][0] < 0
    assert len(res.records["funding"][res.records["funding"]["col"] == 1]) == len(records["funding"]) > 0


def test_relative_metrics_of_the_baselines(linear):
    md, spec, res = linear
    m = compute_metrics(res, currency="usd")["columns"]
    mark = md.frame["mark_close"].to_numpy()
    # spot's excess over the underlying: the fee, and trade close against mark close
    close = md.frame["close"].to_numpy()
    assert m[SPOT]["excess_return"] == pytest.approx(
        (1 - spec.taker_fee) * close[-1] / close[0] - mark[-1] / mark[0], rel=1e-9)
    assert m[SPOT]["beta"] == pytest.approx(1.0, abs=0.02) and m[SPOT]["correlation"] > 0.99
    assert m[SHORT]["beta"] < -0.5 and m[SHORT]["correlation"] < -0.95
    assert m[CASH]["excess_return"] == pytest.approx(-(mark[-1] / mark[0] - 1), rel=1e-12)


def test_inverse_market_in_usd(inverse):
    md, spec, res = inverse
    assert res.currency == "BTC"
    close = md.frame["close"].to_numpy()
    np.testing.assert_allclose(res.series["equity_usd"][:, 0], CAPITAL * (1 - spec.taker_fee) * close / close[0],
                               rtol=1e-14)
    np.testing.assert_allclose(res.series["equity_usd"][:, 2], CAPITAL, rtol=0)
    usd = compute_metrics(res, currency="usd")["columns"]
    for label in LABELS:
        assert usd[label]["initial_capital"] == pytest.approx(CAPITAL, rel=1e-14)
    assert usd[CASH]["total_return"] == pytest.approx(0.0, abs=1e-14)
    # the short's coin capital is worth CAPITAL at the first mark close; it is the reference's
    bars = md.to_perp_bars()
    acc = Account(initial_capital=CAPITAL / bars.mark_close[0])
    series, _ = simulate_reference(bars, short_target(bars.n), spec, acc, Policy())
    np.testing.assert_allclose(res.series["equity"][:, 1], series["equity"][:, 0], rtol=1e-9)


def test_too_few_bars_and_a_bad_capital_are_refused(linear):
    md, spec, _ = linear
    with pytest.raises(ValueError, match="capital_usd=0"):
        baselines_result(md, spec, capital_usd=0)
    with pytest.raises(ValueError, match="at least 2"):
        baselines_result(PerpBars.from_arrays(np.array([0]), [1.0], [1.0], [1.0], [1.0], bar_ms=3_600_000), spec)


# -- the ranking: in place, without a rank number, never the best ----------------------------

def _ranked_run():
    # a strategy column that loses, one that gains a little; baselines that gain the most
    n = 48
    up = np.linspace(100.0, 130.0, n)
    strat = from_equity(np.column_stack([np.linspace(100.0, 90.0, n), np.linspace(100.0, 101.0, n)]),
                        columns=["loser", "winner"])
    base = from_equity(np.column_stack([up, np.full(n, 100.0)]), columns=["spot", "cash"],
                       meta={"baseline": True}, kind="baseline")
    return collect({"strategy": strat, NAME: base}, title="t", rank_by="total_return")


def test_baselines_take_their_place_without_a_rank():
    run = _ranked_run()
    rows = run.metrics["comparison"]["rows"]
    assert [(r["result"], r["column"], r["rank"], r["baseline"]) for r in rows] == [
        (NAME, "spot", None, True), ("strategy", "winner", 1, False), (NAME, "cash", None, True),
        ("strategy", "loser", 2, False)]


def test_baselines_do_not_take_a_top_slot_in_the_plots_and_are_tagged_in_the_page():
    run = _ranked_run()
    per, cmp = plotted_columns(run.metrics, top=1)
    assert cmp == {"strategy": [1], NAME: [0, 1]}  # the best strategy column, and every baseline
    assert per == {"strategy": [1], NAME: [0, 1]}
    doc = build_report(run, top=1)
    cmp_rows = doc["comparison"]["rows"]
    assert [r["baseline"] for r in cmp_rows] == [True, False, True, False]
    head = {r["name"]: r["headline"]["rows"] for r in doc["results"]}
    assert [(r["column"], r["rank"], r["baseline"]) for r in head[NAME]] == [("spot", None, True),
                                                                             ("cash", None, True)]
    from backtest.report import render_html

    html = render_html(doc)
    assert html.count('data-baseline="true"') == 4  # two rows in the summary, two in the ranking


# -- the config and the runner ---------------------------------------------------------------

def test_config_baselines_key_and_name_clash():
    cfg = parse_config({"perp": [{"name": "a"}]})
    assert cfg.baselines is True and "baselines" not in cfg.content()
    off = parse_config({"baselines": False, "perp": [{"name": "a"}]})
    assert off.content()["baselines"] is False and off.digest() != cfg.digest()
    with pytest.raises(ConfigError, match="named 'baselines'.*rename it, or set baselines = false"):
        parse_config({"perp": [{"name": "baselines"}]})
    assert parse_config({"baselines": False, "perp": [{"name": "baselines"}]}).perp[0].name == "baselines"
    with pytest.raises(ConfigError, match="baselines"):
        parse_config({"baselines": "yes", "perp": [{"name": "a"}]})


def test_a_run_adds_the_baselines_result_unless_turned_off(tmp_path):
    from backtest.runner import execute

    doc = {"title": "base", "data": {"start": "2022-05-01", "end": "2022-05-08"},
           "perp": [{"name": "short", "policies": ["const(2)"]}]}
    out = execute(parse_config(doc), reports_dir=tmp_path, log=lambda m: None)
    metrics = json.loads((out.out_dir / "metrics.json").read_text())
    assert list(metrics["results"]) == ["short", NAME]
    assert metrics["results"][NAME]["meta"]["baseline"] is True
    assert list(metrics["results"][NAME]["columns"]) == list(LABELS)
    assert all(r["rank"] is None for r in metrics["comparison"]["rows"] if r["result"] == NAME)
    assert [r["rank"] for r in metrics["comparison"]["rows"] if r["result"] == "short"] == [1]
    # the runner's held short and the [[perp]] short_hold (rebalance = false) under const(1) agree
    doc1 = {**doc, "baselines": False, "perp": [{"name": "hold", "strategy": {"name": "short_hold"}}]}
    out1 = execute(parse_config(doc1), reports_dir=tmp_path, log=lambda m: None)
    assert list(out1.results) == ["hold"]
    np.testing.assert_array_equal(out1.results["hold"].series["equity"][:, 0],
                                  out.results[NAME].series["equity"][:, 1])
