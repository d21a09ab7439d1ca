"""Readable column labels: constant levels dropped (policy kept), key=value|..., unique."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from backtest.result import SimResult
from backtest.runner import execute, parse_config
from backtest.runner.labels import level_frame, readable_labels, relabel
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
