"""Grids users can write: range strings expanded to the lists they stand for, in strategy,
filter and policy parameters; the run id of a range is that of its list; bad ranges refused by
name; the plan line (columns, memory, time) printed before a sweep starts."""

from __future__ import annotations

import copy
import math

import numpy as np

import pytest

from backtest.runner import ConfigError, parse_config
from backtest.runner.grid import GridError, estimate_seconds, expand_range, is_range, plan_line
from runner_kit import TINY


@pytest.mark.parametrize("text, want", [
    ("10:50:10", [10, 20, 30, 40, 50]),               # stop included when on the grid
    ("10:45:10", [10, 20, 30, 40]),                   # and left out when not
    ("5:5:1", [5]),
    ("0.2:0.5:0.1", [0.2, 0.3, 0.4, 0.5]),            # no 0.30000000000000004
    ("-1:1:0.5", [-1.0, -0.5, 0.0, 0.5, 1.0]),
    ("1e-3:3e-3:1e-3", [0.001, 0.002, 0.003]),
])
def test_linear_ranges(text, want):
    got = expand_range(text)
    assert got == want
    assert all(type(g) is type(w) for g, w in zip(got, want))  # integers stay integers


def test_log_ranges_are_even_in_the_logarithm():
    got = expand_range("log:1:100:5")
    # 10 ** (2 i / 4): 1, 10 ** 0.5, 10, 10 ** 1.5, 100
    assert got == pytest.approx([1, math.sqrt(10), 10, 10 * math.sqrt(10), 100], rel=1e-12)
    assert got[0] == 1 and got[-1] == 100
    ratios = [b / a for a, b in zip(got, got[1:])]
    assert ratios == pytest.approx([math.sqrt(10)] * 4, rel=1e-10)
    assert expand_range("intlog:10:200:4") == [10, 27, 74, 200]  # 10 * 20 ** (i / 3), rounded
    assert expand_range("intlog:1:3:5") == [1, 2, 3]  # 1, 1.32, 1.73, 2.28, 3 -> repeats dropped


@pytest.mark.parametrize("text, message", [
    ("10:50:0", "the step 0 must be > 0"),
    ("50:10:10", "the stop 10 is before the start 50"),
    ("1:1000000:1", "has 1000000 values, more than 100000"),
    ("log:0:10:3", "a log range needs start and stop > 0"),
    ("log:1:10:1", "the count 1 must be a whole number >= 2"),
    ("log:10:1:3", "the stop 1 must be after the start 10"),
])
def test_bad_ranges_name_the_value_and_the_fix(text, message):
    with pytest.raises(GridError, match=message):
        expand_range(text, "slow_days")


def test_strings_that_are_not_ranges_are_left_alone():
    assert not is_range("price_ma") and not is_range("const(2)") and not is_range("1:2")
    assert is_range("1:2:1") and is_range("log:1:2:2") and is_range(" 1 : 2 : 1 ")


def doc_with(params=None, policies=None):
    doc = copy.deepcopy(TINY)
    if params is not None:
        doc["perp"][0]["strategy"]["params"] = params
    if policies is not None:
        doc["perp"][0]["policies"] = policies
    return doc


def test_a_config_range_is_its_list_and_has_its_run_id():
    ranged = parse_config(doc_with({"slow_days": "10:30:10", "rule": "price_ma"},
                                   ["const(1)", {"name": "voltarget", "target_vol": "0.2:0.4:0.1"}]))
    listed = parse_config(doc_with({"slow_days": [10, 20, 30], "rule": "price_ma"},
                                   ["const(1)", {"name": "voltarget", "target_vol": [0.2, 0.3, 0.4]}]))
    assert ranged.perp[0].strategy.params == {"slow_days": [10, 20, 30], "rule": "price_ma"}
    assert ranged.perp[0].policies[1]["target_vol"] == [0.2, 0.3, 0.4]
    assert ranged.run_id("x") == listed.run_id("x")


def test_ranges_multiply_the_columns():
    from backtest.runner.chunks import sweep_grid

    cfg = parse_config(doc_with({"slow_days": "intlog:5:20:3"},
                                [{"name": "voltarget", "target_vol": "0.25:0.75:0.25"}, "const(1)"]))
    grid = sweep_grid(cfg.perp[0])
    assert grid.n_cols == 3 * (3 + 1)
    assert sorted(set(grid.levels()["slow_days"])) == [5, 10, 20]


def test_a_bad_range_in_a_config_is_reported_with_its_path():
    with pytest.raises(ConfigError) as err:
        parse_config(doc_with({"slow_days": "50:10:10"}, [{"name": "voltarget", "target_vol": "0.5:0.6:0"}]))
    text = str(err.value)
    assert "2 invalid field(s)" in text
    assert "perp[0].strategy.params: slow_days='50:10:10': the stop 10 is before the start 50" in text
    assert "perp[0].policies: policies[0].target_vol='0.5:0.6:0': the step 0 must be > 0" in text


def test_time_estimate_stages_follow_the_model():
    """Each stage by hand from the constants: the cells' part is linear in bars x columns and
    shared by the workers; the fixed costs (kernels loaded, data, report, folds per chunk) are not."""
    from backtest.runner import grid as g

    cold = estimate_seconds(1000, 100, folds=3, chunks=2, report_columns=10)
    assert cold["start"] == pytest.approx(g.WARMUP_S + g.LOAD_S)
    assert cold["chunks"] == pytest.approx(1000 * 100 * g.SECONDS_PER_CELL)
    assert cold["folds"] == pytest.approx(3 * (2 * g.FOLD_CHUNK_S + 1000 * 100 * g.FOLD_CELL_S))
    assert cold["report"] == pytest.approx(g.REPORT_S + 1000 * 10 * g.REPORT_CELL_S + g.OOS_WINNERS_S)
    assert cold["total"] == pytest.approx(cold["start"] + cold["chunks"] + cold["folds"] + cold["report"])
    two = estimate_seconds(1000, 100, workers=2, folds=3, chunks=2, report_columns=10)
    assert two["chunks"] == pytest.approx(cold["chunks"] / 2) and two["folds"] == pytest.approx(cold["folds"] / 2)
    assert two["report"] == cold["report"] and two["start"] == cold["start"]
    assert estimate_seconds(1000, 100, warm=True)["start"] == pytest.approx(g.LOAD_S)
    big = estimate_seconds(26_280, 10_000)  # the benchmark's 10,000 columns: measured 89.6 s (README)
    assert 89.6 / 2 < big["total"] < 89.6 * 2


def test_plan_line_states_columns_memory_and_time():
    line = plan_line("trend", columns=12, bars=354, chunks=3, per_chunk=5, chunk_memory=2_000_000,
                     report_memory=400_000_000, workers=1, folds=2, report_columns=4, warm=True)
    assert line.startswith("plan of trend: 12 columns x 354 bars = 4,248 bar-columns in 3 chunk(s) of up to 5;")
    assert "estimated peak memory 402.0 MB (chunks 2.0 MB + report 400.0 MB)" in line
    t = estimate_seconds(354, 12, folds=2, chunks=3, report_columns=4, warm=True)
    assert f"time about {t['total']:.1f} s (start {t['start']:.1f} s, chunks {t['chunks']:.1f} s, " \
           f"2 out-of-sample folds {t['folds']:.1f} s, report {t['report']:.1f} s)" in line


def test_the_time_estimate_is_within_a_factor_5_of_a_measured_sweep(tmp_path, monkeypatch):
    """The plan's estimate against the wall time of the sweep it plans (a walk-forward of 30
    columns on 4h bars, in this process: kernels loaded or not, as the estimate is told). A factor
    of 5 either way: the machine is shared, the constants were measured on it under load."""
    import re

    from backtest.runner.sweep import run_sweep

    monkeypatch.setenv("BACKTEST_DATA_DIR", str(tmp_path / "empty"))
    doc = copy.deepcopy(TINY)
    doc["data"].update(start="2021-06-01", end="2023-01-01")
    doc["perp"][0]["strategy"]["params"]["slow_days"] = [10, 20, 30, 50, 80, 120]
    doc["perp"][0]["policies"] = ["const(1)", "const(2)", "voltarget(0.3)", "voltarget(0.5)", "voltarget(0.7)"]
    doc["sweep"] = {"x": "slow_days", "metric": "sharpe", "split": "walk_forward", "train": "180d", "test": "90d"}
    lines: list[str] = []
    out = run_sweep(parse_config(doc), reports_dir=tmp_path / "r", log=lines.append, quiet=True)
    plan = next(x for x in lines if x.startswith("plan of "))
    assert "30 columns" in plan and "out-of-sample folds" in plan
    m = re.search(r"time about ([0-9.]+) s", plan)
    assert m, plan
    est = float(m.group(1))
    assert out.seconds / 5 <= est <= out.seconds * 5, (est, out.seconds)


# --- account settings as grid axes ([sweep.grid]) ----------------------------------------------

AXES_TOML = """
[sweep]
x = "account.leverage"
y = "policy"
metric = "sharpe"

[sweep.grid]
account.leverage = [5, 20]
"account.fee_rate" = "0.0004:0.002:0.0016"
"""


def _axes_cfg(tmp_path, text=AXES_TOML):
    from backtest.runner.config import load_config
    from runner_kit import TINY_TOML

    path = tmp_path / "axes.toml"
    path.write_text(TINY_TOML + text)
    return load_config(path)


def test_grid_axes_read_dotted_quoted_and_ranged(tmp_path):
    cfg = _axes_cfg(tmp_path)
    assert cfg.sweep.grid == {"account.leverage": [5, 20], "account.fee_rate": [0.0004, 0.002]}
    listed = _axes_cfg(tmp_path, AXES_TOML.replace('"0.0004:0.002:0.0016"', "[0.0004, 0.002]"))
    assert listed.run_id() == cfg.run_id()  # a range is its list
    no_axis = _axes_cfg(tmp_path, AXES_TOML.split("[sweep.grid]")[0].replace("account.leverage", "slow_days"))
    plain = parse_config({**copy.deepcopy(TINY), "sweep": {"x": "slow_days", "y": "policy", "metric": "sharpe"}})
    assert no_axis.run_id() == plain.run_id()  # no [sweep.grid]: the id it had before the key existed


@pytest.mark.parametrize("grid, message", [
    ({"account": {"levrage": [5, 10]}}, "grid.account.levrage: not a grid axis (did you mean 'account.leverage'?)"),
    ({"symbols": ["BTC/USDT:USDT"]}, "grid.symbols: not a grid axis"),
    ({"account": {"leverage": []}}, "an axis is a non-empty list or a range string"),
    ({"account": {"leverage": [5, 5]}}, "repeats a value"),
    ({"account": {"lag": [1, 2]}}, "account.lag takes one value for all columns"),
    ({"account": {"margin_mode": ["cross", "isolatd"]}}, "grid.account.margin_mode=['cross', 'isolatd']"),
])
def test_bad_grid_axes_are_refused_by_name(grid, message):
    doc = {**copy.deepcopy(TINY), "sweep": {"x": "slow_days", "grid": grid}}
    with pytest.raises(ConfigError) as err:
        parse_config(doc)
    assert message in str(err.value)


def test_an_axis_and_a_per_column_list_of_the_same_setting_are_refused():
    from backtest.runner.chunks import sweep_grid

    doc = {**copy.deepcopy(TINY), "sweep": {"x": "slow_days", "grid": {"account.leverage": [5, 10]}}}
    doc["perp"][0]["account"] = {"leverage": [1, 2, 3, 4]}
    cfg = parse_config(doc)
    with pytest.raises(ConfigError, match="sweep.grid.account.leverage is an axis and .perp.account. leverage lists"):
        sweep_grid(cfg.perp[0], cfg.sweep.grid)


def test_account_axes_multiply_the_columns_with_readable_labels(tmp_path):
    from backtest.runner.chunks import sweep_grid

    cfg = _axes_cfg(tmp_path)
    g = sweep_grid(cfg.perp[0], cfg.sweep.grid)
    assert g.n_cols == 2 * 2 * 2 * 2  # slow_days x policies x leverage x fee_rate
    assert g.labels[:3] == ("slow_days=10|policy=const(1)|account.leverage=5|account.fee_rate=0.0004",
                            "slow_days=10|policy=const(1)|account.leverage=5|account.fee_rate=0.002",
                            "slow_days=10|policy=const(1)|account.leverage=20|account.fee_rate=0.0004")
    lv = g.levels()
    assert "slow_days" in lv.columns and list(lv.columns)[-3:] == ["policy", "account.leverage", "account.fee_rate"]
    assert g.axis_values(np.arange(4)) == {"leverage": [5, 5, 20, 20], "fee_rate": [0.0004, 0.002, 0.0004, 0.002]}


def test_an_account_axis_column_is_the_run_with_that_setting(tmp_path, monkeypatch):
    """Every column of a sweep with account axes (in chunks of 3 columns: axes split across
    chunks) has the metrics `backtest run` gives the same grid with those settings written once
    in [perp.account]; the heatmap's x is the axis; the fee axis changes the numbers."""
    import pandas as pd

    from backtest.runner import execute
    from backtest.runner.sweep import run_sweep

    monkeypatch.setenv("BACKTEST_DATA_DIR", str(tmp_path / "empty"))
    cfg = _axes_cfg(tmp_path)
    out = run_sweep(cfg, reports_dir=tmp_path / "s", log=lambda m: None, quiet=True, memory=354 * 128 * 3)
    assert out.chunks == 6
    table = pd.read_parquet(out.out_dir / "sweep_metrics.parquet").set_index("column")
    assert "account.leverage" in (out.out_dir / "heatmap.html").read_text()
    for lev in (5, 20):
        for fee in (0.0004, 0.002):
            doc = copy.deepcopy(TINY)
            doc["perp"][0]["account"] = {"leverage": lev, "fee_rate": fee}
            run = execute(parse_config(doc), reports_dir=tmp_path / f"r{lev}-{fee}", log=lambda m: None, html=False)
            cols = run.metrics["results"]["trend"]["usd"]["columns"]
            for label, m in cols.items():
                row = table.loc[f"{label}|account.leverage={lev}|account.fee_rate={fee:g}"]
                for k in ("total_return", "max_drawdown", "fees", "liquidations"):
                    assert row[k] == m[k], (label, lev, fee, k)
    cheap = table.filter(like="account.fee_rate=0.0004", axis=0)["fees"].to_numpy()
    dear = table.filter(like="account.fee_rate=0.002", axis=0)["fees"].to_numpy()
    assert (dear > cheap).any()
