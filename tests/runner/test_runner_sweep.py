"""`backtest sweep`: ranked table, sweep.csv, heatmap.html with one cell per (x, y) pair."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from backtest.cli import app
from backtest.runner import ConfigError, heatmap_grid, load_config
from backtest.runner.checks import check_settings
from runner_kit import ROOT, TINY_TOML, tree

SWEEP_TOML = TINY_TOML.replace("slow_days = [10, 20]", "slow_days = [5, 10, 20]").replace(
    'policies = ["const(1)", "const(2)"]', 'policies = ["const(1)", "const(2)", "voltarget(0.5)"]'
) + '\n[sweep]\nx = "slow_days"\ny = "policy"\nmetric = "sharpe"\n'


def sweep(tmp_path: Path, text: str, *extra):
    cfg = tmp_path / "sweep.toml"
    cfg.write_text(text)
    return CliRunner().invoke(app, ["sweep", str(cfg), "-o", str(tmp_path / "reports"), *extra])


def heatmap_trace(html: str) -> dict:
    """The heatmap trace (x, y, z) embedded in plotly's page."""
    i = html.index('"type":"heatmap"') if '"type":"heatmap"' in html else None
    assert i is not None, "no heatmap trace in the page"
    start = html.rfind("[{", 0, i)
    data, _ = json.JSONDecoder().raw_decode(html[start:])
    (trace,) = [t for t in data if t.get("type") == "heatmap"]
    return trace


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BACKTEST_DATA_DIR", str(tmp / "empty"))  # the committed sample, as in every test here
        res = sweep(tmp, SWEEP_TOML)
    assert res.exit_code == 0, res.stderr
    (run_dir,) = (tmp / "reports").iterdir()
    return res, run_dir


def test_sweep_writes_csv_and_heatmap_and_prints_the_path(swept):
    res, run_dir = swept
    assert {"sweep.csv", "heatmap.html", "metrics.json", "report.html"} <= {p.name for p in run_dir.iterdir()}
    assert res.stdout.splitlines()[-1] == str(run_dir / "heatmap.html")


def test_ranked_table_is_sorted_by_the_metric_and_matches_metrics_json(swept):
    res, run_dir = swept
    table = pd.read_csv(run_dir / "sweep.csv")
    metrics = json.loads((run_dir / "metrics.json").read_text())["results"]["trend"]
    assert len(table) == 9 and list(table["rank"]) == list(range(1, 10))
    values = table["sharpe"].to_numpy()
    assert all(values[i] >= values[i + 1] for i in range(len(values) - 1))  # higher Sharpe first
    for _, row in table.iterrows():
        assert row["sharpe"] == metrics["usd"]["columns"][row["column"]]["sharpe"]
        assert row["column"] == f"slow_days={row['slow_days']:g}|policy={row['policy']}"
    assert sorted(table["col"]) == list(range(9))
    # the printed table: header, then rows in the same order
    printed = res.stdout.splitlines()[:-1]
    assert printed[0].split() == ["rank", "column", "sharpe", "total_return", "max_drawdown", "calmar"]
    assert [line.split()[1] for line in printed[1:]] == list(table["column"])


def test_heatmap_has_one_cell_per_pair(swept):
    _, run_dir = swept
    table = pd.read_csv(run_dir / "sweep.csv")
    trace = heatmap_trace((run_dir / "heatmap.html").read_text())
    assert trace["x"] == ["5", "10", "20"]  # grid order
    assert trace["y"] == ["const(1)", "const(2)", "voltarget(0.5)"]
    z = trace["z"]
    assert len(z) == 3 and all(len(row) == 3 for row in z)
    for i, pol in enumerate(trace["y"]):
        for j, x in enumerate(trace["x"]):
            (want,) = table.loc[(table["policy"] == pol) & (table["slow_days"] == float(x)), "sharpe"]
            assert z[i][j] == pytest.approx(want, rel=1e-12, abs=0)


def test_quiet_sweep_prints_only_the_path(tmp_path):
    res = sweep(tmp_path, SWEEP_TOML, "--quiet")
    assert res.exit_code == 0 and res.stderr == ""
    (line,) = res.stdout.splitlines()
    assert line.endswith("heatmap.html")


def test_best_over_other_levels_and_direction():
    table = pd.DataFrame({
        "col": [0, 1, 2, 3], "a": [1, 1, 2, 2], "b": ["p", "p", "p", "q"], "c": [0, 1, 0, 0],
        "sharpe": [0.5, 0.7, None, 0.1], "max_drawdown": [0.3, 0.2, 0.4, 0.1]})
    g = heatmap_grid(table, "a", "b", "sharpe", "best")
    assert g.loc["p", 1] == 0.7 and math.isnan(g.loc["p", 2]) and math.isnan(g.loc["q", 1])
    assert g.loc["q", 2] == 0.1
    assert heatmap_grid(table, "a", "b", "max_drawdown", "best").loc["p", 1] == 0.2  # lower is better


@pytest.mark.parametrize("swap, message", [
    (('x = "slow_days"', 'x = "slow_dys"'), "sweep.x: 'slow_dys' is not a column level of [[perp]] 'trend' "
                                            "(did you mean 'slow_days'?)"),
    (('y = "policy"', 'y = "polcy"'), "sweep.y: 'polcy' is not a column level"),
    (('metric = "sharpe"', 'metric = "sharp_ratio"'), "sweep.metric: 'sharp_ratio' is not a rankable metric"),
])
def test_bad_sweep_names_exit_2_with_a_clear_error(tmp_path, swap, message):
    res = sweep(tmp_path, SWEEP_TOML.replace(*swap))
    assert res.exit_code == 2
    assert message in res.stderr
    assert "loading" not in res.stderr  # found before any data was loaded
    assert tree(tmp_path / "reports") == set()


def test_sweep_without_sweep_table_exits_2(tmp_path):
    res = sweep(tmp_path, TINY_TOML)
    assert res.exit_code == 2 and res.stderr.startswith("error: a sweep needs a [sweep] table")


def test_example_sweep_config_is_valid():
    cfg = load_config(ROOT / "examples" / "sweep_trend.toml")
    assert check_settings(cfg) == []
    assert cfg.sweep is not None and cfg.sweep.x == "slow_days"
    assert len(cfg.perp[0].strategy.params["slow_days"]) >= 3 and len(cfg.perp[0].policies) >= 3


def test_sweep_files_need_a_sweep_table():
    from backtest.runner.config import parse_config
    from backtest.runner.sweep import sweep_files

    with pytest.raises(ConfigError, match=re.escape("a sweep needs a [sweep] table")):
        sweep_files(parse_config({"perp": [{"name": "a"}]}))
