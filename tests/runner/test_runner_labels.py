"""Readable column labels: constant levels dropped (policy kept), key=value|..., unique."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from backtest.result import SimResult
from backtest.runner import execute, parse_config
from backtest.runner.labels import account_levels, level_frame, make_labels, readable_labels, relabel, result_labels
from runner_kit import TINY


def mi(tuples, names):
    return pd.MultiIndex.from_tuples(tuples, names=names)


def test_constant_levels_dropped_policy_kept():
    cols = mi([(True, "const(1)"), (True, "const(3)")], ["rebalance", "policy"])
    assert readable_labels(level_frame(cols)) == ["policy=const(1)", "policy=const(3)"]
    one = mi([(False, "const(10)")], ["rebalance", "policy"])
    assert readable_labels(level_frame(one)) == ["policy=const(10)"]


def test_varying_levels_joined_in_level_order():
    cols = mi([("price_ma", 10.0, 10.0, False, "const(1)"), ("price_ma", 20.0, 10.0, False, "const(1)"),
               ("price_ma", 10.0, 10.0, True, "voltarget(0.5)")],
              ["rule", "slow_days", "fast_days", "ewm", "policy"])
    assert readable_labels(level_frame(cols)) == [
        "slow_days=10|ewm=false|policy=const(1)",
        "slow_days=20|ewm=false|policy=const(1)",
        "slow_days=10|ewm=true|policy=voltarget(0.5)",
    ]


def test_flat_indexes_and_tuples_without_names():
    assert readable_labels(level_frame(pd.Index([-1.0, -3.0], name="leverage"))) == ["leverage=-1", "leverage=-3"]
    assert readable_labels(level_frame(pd.RangeIndex(1, name="column"))) == ["single"]
    lost = pd.Index([(True, "a"), (False, "a")], tupleize_cols=False)  # a MultiIndex flattened by pd.Index
    assert readable_labels(level_frame(lost)) == ["level_0=true", "level_0=false"]


def test_labels_stay_unique():
    # equal at 12 significant digits: printed in full
    close = level_frame(pd.Index([0.1, 0.1 + 1e-15], name="x"))
    labels = readable_labels(close)
    assert labels == ["x=0.1", f"x={0.1 + 1e-15!r}"]
    # a repeated grid point: numbered
    rep = level_frame(mi([(1.0, "const(1)"), (1.0, "const(1)"), (2.0, "const(1)")], ["k", "policy"]))
    assert readable_labels(rep) == ["k=1|policy=const(1)", "k=1|policy=const(1)#2", "k=2|policy=const(1)"]


def _result(columns) -> SimResult:
    n, m = 3, len(columns)
    z = np.zeros((n, m))
    series = {k: z.copy() for k in ("equity", "equity_usd", "position", "notional", "leverage", "cum_funding",
                                    "cum_fees", "capital_added")}
    rec = np.zeros(2, dtype=[("bar", "i8"), ("col", "i8"), ("x", "f8")])
    rec["col"] = [0, m - 1]
    return SimResult(kind="perp", currency="USDT", index=pd.date_range("2022", periods=n, freq="h", tz="UTC"),
                     columns=columns, series=series, records={"fills": rec}, price_usd=np.ones(n),
                     initial_capital=np.ones(m))


def test_relabel_keeps_data_and_returns_levels():
    cols = mi([(10.0, "const(1)"), (20.0, "const(1)")], ["slow_days", "policy"])
    res = _result(pd.Index(list(cols), tupleize_cols=False))  # as the engine hands them back: names lost
    new, levels = relabel(res, cols)
    assert list(new.columns) == ["slow_days=10|policy=const(1)", "slow_days=20|policy=const(1)"]
    assert new.series["equity"] is res.series["equity"] and new.records is res.records
    assert list(levels.columns) == ["slow_days", "policy"]
    assert levels.loc["slow_days=20|policy=const(1)", "slow_days"] == 20.0
    with pytest.raises(ValueError, match="3 column labels for a result of 2 columns"):
        relabel(res, mi([(1, "a"), (2, "a"), (3, "a")], ["k", "policy"]))


def test_reports_of_runs_use_the_readable_labels(tmp_path, quiet):
    doc = dict(TINY, products=[{"name": "inv", "settings": {"leverage": [-1.0, -2.0]}}])
    out = execute(parse_config(doc), reports_dir=tmp_path, log=quiet)
    metrics = json.loads((out.out_dir / "metrics.json").read_text())
    assert metrics["results"]["trend"]["columns"] == [
        "slow_days=10|policy=const(1)", "slow_days=10|policy=const(2)",
        "slow_days=20|policy=const(1)", "slow_days=20|policy=const(2)"]
    assert metrics["results"]["inv"]["columns"] == ["leverage=-1", "leverage=-2"]
    # the full grid (constant levels too) is kept in config.json
    cfg = json.loads((out.out_dir / "config.json").read_text())
    assert cfg["columns"]["trend"]["levels"] == ["rule", "slow_days", "fast_days", "ewm", "policy"]
    assert cfg["columns"]["trend"]["values"]["slow_days=20|policy=const(2)"] == [
        "price_ma", 20.0, 10.0, False, "const(2)"]
    events = pd.read_parquet(out.out_dir / "events.parquet")
    assert set(events.loc[events["result"] == "trend", "column"]) <= set(metrics["results"]["trend"]["columns"])


# --- the Python API: the same labels as `backtest run` ------------------------------------------

def _python_api_run(tmp_path, account_kw=None):
    """The README's Python flow on TINY's data: build_targets -> simulate_perp -> write_report."""
    from backtest.data import load_market_data
    from backtest.engine import Account, simulate_perp
    from backtest.market import load_market
    from backtest.report import write_report
    from strategies.policies import build_targets

    md = load_market_data("binanceusdm", "BTC/USDT:USDT", "4h", start="2022-01-01", end="2022-03-01")
    spec = load_market("binanceusdm", "BTC/USDT:USDT")
    target, policy, columns = build_targets(md, "trend_short", {"slow_days": [10, 20]}, ["const(1)", "const(2)"])
    res = simulate_perp(md, target, spec, Account(**(account_kw or {})), policy, columns=columns)
    out = write_report({"trend": res}, tmp_path / "py", html=False)
    return res, json.loads((out / "metrics.json").read_text())


def test_python_api_reports_the_cli_s_labels_and_numbers(tmp_path, quiet):
    res, py = _python_api_run(tmp_path)
    cli = execute(parse_config(dict(TINY, baselines=False)), reports_dir=tmp_path / "cli", log=quiet, html=False)
    want = ["slow_days=10|policy=const(1)", "slow_days=10|policy=const(2)",
            "slow_days=20|policy=const(1)", "slow_days=20|policy=const(2)"]
    assert py["results"]["trend"]["columns"] == want == cli.metrics["results"]["trend"]["columns"]
    # each label names the same column in both: its metrics are equal
    for lab in want:
        assert py["results"]["trend"]["usd"]["columns"][lab] == cli.metrics["results"]["trend"]["usd"]["columns"][lab]
    # events carry the readable label too, not a stringified tuple
    fills = res.events("fills")
    assert len(fills) and set(fills["column"]) <= set(want)


def test_per_column_account_settings_are_levels_of_the_label(tmp_path, quiet):
    lev = [5, 10, 5, 10]
    res, py = _python_api_run(tmp_path, {"leverage": lev, "margin_mode": ["cross", "cross", "isolated", "cross"]})
    want = ["slow_days=10|policy=const(1)|account.margin_mode=cross|account.leverage=5",
            "slow_days=10|policy=const(2)|account.margin_mode=cross|account.leverage=10",
            "slow_days=20|policy=const(1)|account.margin_mode=isolated|account.leverage=5",
            "slow_days=20|policy=const(2)|account.margin_mode=cross|account.leverage=10"]
    assert py["results"]["trend"]["columns"] == want
    doc = dict(TINY, baselines=False)
    doc["perp"] = [dict(TINY["perp"][0], account={"leverage": lev,
                                                   "margin_mode": ["cross", "cross", "isolated", "cross"]})]
    cli = execute(parse_config(doc), reports_dir=tmp_path / "cli", log=quiet, html=False)
    assert cli.metrics["results"]["trend"]["columns"] == want
    assert cli.levels["trend"].loc[want[2], "account.margin_mode"] == "isolated"
    assert list(cli.levels["trend"].columns)[-2:] == ["account.margin_mode", "account.leverage"]


def test_a_setting_list_without_a_grid_is_labelled_by_the_setting():
    """One target column and Account(leverage=[5, 10]): no column labels given, the engine numbers
    the columns; the report names them by the setting. Each equals its own run at that leverage."""
    from backtest.data import load_market_data
    from backtest.engine import Account, simulate_perp
    from backtest.market import load_market
    from backtest.metrics import column_labels

    md = load_market_data("binanceusdm", "BTC/USDT:USDT", "4h", start="2022-01-01", end="2022-03-01")
    spec = load_market("binanceusdm", "BTC/USDT:USDT")
    target = np.full(md.n, -3.0)
    both = simulate_perp(md, target, spec, Account(leverage=[5, 10], margin_mode="isolated"))
    assert column_labels(both) == ["account.leverage=5", "account.leverage=10"]
    for j, lev in enumerate([5, 10]):
        alone = simulate_perp(md, target, spec, Account(leverage=lev, margin_mode="isolated"))
        assert column_labels(alone) == ["0"]  # the engine's numbering: nothing varies
        np.testing.assert_array_equal(both.series["equity"][:, j], alone.series["equity"][:, 0])
    # a named Index (an inverse product's leverage) reads as the runner writes it
    assert make_labels(pd.Index([-1.0, -3.0], name="leverage"))[0] == ["leverage=-1", "leverage=-3"]
    # labels already readable are kept
    assert result_labels(_result(pd.Index(["a", "b"], name="column"))) == ["a", "b"]


def test_account_levels_keep_only_varying_per_column_lists():
    acc = {"leverage": [5.0, 5.0], "margin_mode": ["cross", "isolated"], "fee_rate": None, "lag": 1,
           "initial_capital": 10000}
    assert account_levels(acc, 2) == {"account.margin_mode": ["cross", "isolated"]}
    assert account_levels(acc, 3) == {}  # a list of another length is not per column of these
    assert account_levels(None, 2) == {}
