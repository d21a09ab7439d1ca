"""CLI conventions on every command: --version, -h, -q; paths printed absolute; the summary
after `backtest run`; percentages in the sweep table; the heatmap centred on 0; top_n."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backtest.cli import app
from runner_kit import TINY_TOML

runner = CliRunner()
COMMANDS = ["run", "sweep", "report", "download"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("command", [[], *[[c] for c in COMMANDS]])
def test_version_on_every_command(command):
    from importlib.metadata import version

    res = invoke(*command, "--version")
    assert res.exit_code == 0 and res.stdout == f"backtest {version('bearish-backtest')}\n"


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_and_quiet_on_every_command(command, flag):
    res = invoke(command, flag)
    assert res.exit_code == 0 and f"Usage: backtest {command}" in res.stdout
    assert re.search(r"-q\b", res.stdout) and "--quiet" in res.stdout and "--version" in res.stdout


def test_run_prints_the_best_columns_on_stderr_and_an_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.toml").write_text(TINY_TOML + "\n")
    res = invoke("run", "run.toml", "-o", "reports", "--top", "2", "--no-html")
    assert res.exit_code == 0, res.stderr
    (folder,) = (tmp_path / "reports").iterdir()
    assert res.stdout == f"{folder.resolve()}\n"  # given relative, printed absolute
    metrics = json.loads((folder / "metrics.json").read_text())
    lines = res.stderr.splitlines()
    head = lines.index("best 2 column(s) by calmar (USD), with the baselines:")
    table = lines[head + 2:]
    ranked = [r for r in metrics["comparison"]["rows"] if not r["baseline"]][:2]
    for r in ranked:  # the two best, with their return in percent as metrics.json has it
        m = metrics["results"][r["result"]]["usd"]["columns"][r["column"]]
        row = next(x for x in table if r["column"] in x)
        assert f"{100 * m['total_return']:.2f} %" in row and row.split()[0] == str(r["rank"])
    assert sum(1 for x in table if x.split()[0].isdigit()) == 2
    assert any(x.split()[0] == "-" and "baselines" in x for x in table)  # baselines in their place
    # -q: nothing on stderr, the path alone on stdout
    quiet = invoke("run", "run.toml", "-o", "reports", "-q", "--no-html")
    assert quiet.exit_code == 0 and quiet.stderr == "" and quiet.stdout == res.stdout


def test_report_prints_an_absolute_path_and_takes_top(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.toml").write_text("top_n = 1\n" + TINY_TOML)
    out = Path(invoke("run", "run.toml", "-o", "reports", "-q").stdout.strip())
    page = out.read_text()
    rel = os.path.relpath(out.parent, tmp_path)
    res = invoke("report", rel, "-q")
    assert res.exit_code == 0 and res.stdout == f"{out}\n" and res.stderr == ""
    assert out.read_text() == page  # the stored top_n is used again
    res = invoke("report", rel, "--top", "4")
    assert res.exit_code == 0 and out.read_text() != page


def test_top_n_sets_the_columns_plotted(tmp_path):
    from backtest.report.build import build_report
    from backtest.report.store import load_stored

    for n in (1, 3):
        res = invoke("run", _write(tmp_path, f"top_n = {n}\n" + TINY_TOML), "-o", tmp_path / f"r{n}", "-q")
        assert res.exit_code == 0, res.stderr
        folder = Path(res.stdout.strip()).parent
        cfg = json.loads((folder / "config.json").read_text())
        assert cfg["config"]["top_n"] == n
    # the page of each equals the page built with that top: the key reaches build_report
    run = load_stored(folder)
    assert build_report(run, top=3) != build_report(run, top=1)
    # not part of the run id: what is computed is the same
    assert {p.name for p in (tmp_path / "r1").iterdir()} == {p.name for p in (tmp_path / "r3").iterdir()}
    bad = invoke("run", _write(tmp_path, "top_n = 0\n" + TINY_TOML), "-o", tmp_path / "r0")
    assert bad.exit_code == 2 and "top_n" in bad.stderr


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cfg.toml"
    p.write_text(text)
    return p


def test_sweep_table_in_percent_and_heatmap_centred_on_zero(tmp_path):
    from backtest.runner.sweep import heatmap_html, _signed

    text = TINY_TOML + '\n[sweep]\nx = "slow_days"\nmetric = "total_return"\n'
    res = invoke("sweep", _write(tmp_path, text), "-o", tmp_path / "r", "--no-html")
    assert res.exit_code == 0, res.stderr
    table = [x for x in res.stdout.splitlines() if re.match(r"\s*\d+\s", x)]
    assert len(table) == 4 and all(re.search(r"-?\d+\.\d\d %", x) for x in table)
    csv = (Path(res.stdout.splitlines()[-1]) / "sweep.csv").read_text().splitlines()
    assert "%" not in csv[1]  # the files keep fractions; only the printed table is in percent
    assert _signed("total_return") and _signed("sharpe") and not _signed("max_drawdown")
    import pandas as pd

    grid = pd.DataFrame([[-0.1, 0.3]], index=["const(1)"], columns=[10, 20])
    assert '"zmid":0.0' in heatmap_html(grid, "slow_days", "policy", "total_return", "t").replace(" ", "")
    assert '"zmid"' not in heatmap_html(grid, "slow_days", "policy", "max_drawdown", "t")
