"""`backtest run` / `report` from the command line: exit codes, stdout, stderr, batch use."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backtest.cli import app
from runner_kit import ROOT, TINY_TOML, tree

runner = CliRunner()


def write(tmp_path: Path, text: str, name: str = "run.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_run_success_prints_only_the_report_path(tmp_path):
    cfg = write(tmp_path, TINY_TOML)
    res = invoke("run", cfg, "-o", tmp_path / "reports")
    assert res.exit_code == 0, res.stderr
    (run_dir,) = (tmp_path / "reports").iterdir()
    assert res.stdout == f"{run_dir / 'report.html'}\n"
    assert (run_dir / "report.html").is_file()
    # progress went to stderr as plain lines (no terminal here): no ANSI escapes
    assert res.stderr.startswith("loading binanceusdm BTC/USDT:USDT 4h")
    assert "\x1b[" not in res.stderr
    assert "simulating trend" in res.stderr.splitlines()


def test_quiet_prints_the_path_and_nothing_else(tmp_path):
    cfg = write(tmp_path, TINY_TOML)
    res = invoke("run", cfg, "-o", tmp_path / "reports", "--quiet")
    assert res.exit_code == 0
    assert res.stderr == ""
    (line,) = res.stdout.splitlines()
    assert line.endswith("report.html") and Path(line).is_file()


TYPO = TINY_TOML.replace('timeframe = "4h"', 'timeframe = "4h"\nstrat = "2022-01-01"').replace(
    'title = "tiny"', 'title = "tiny"\nrank_bi = "calmar"')


@pytest.mark.parametrize("case, text, head, detail", [
    ("typos", TYPO, "run.toml: 2 invalid field(s): data.strat, rank_bi",
     "  data.strat: unknown key (did you mean 'start'?)"),
    ("bad TOML", "title = ", "not valid TOML", None),
    ("unknown symbol", TINY_TOML.replace("BTC/USDT:USDT", "DOGE/USDT:USDT"),
     "no binanceusdm DOGE/USDT:USDT candles usable for timeframe 4h", None),
    ("empty range", TINY_TOML.replace('end = "2022-03-01"', 'end = "2022-01-01"'),
     "1 invalid field(s): data.end", "  data.end: the date range is empty"),
    ("no bars in range", TINY_TOML.replace("2022-01-01", "2030-01-01").replace("2022-03-01", "2030-03-01"),
     "no bars in the requested window", None),
    ("bad policy", TINY_TOML.replace('"const(2)"', '"cnst(2)"'),
     "1 problem(s) in the run's settings: perp[0].policies[1]",
     "  perp[0].policies[1]: unknown policy 'cnst'; did you mean 'const'?"),
])
def test_invalid_input_exits_2_with_an_error_line(tmp_path, case, text, head, detail):
    """One ``error:`` line naming the problem (or every problem's key path); details indented."""
    cfg = write(tmp_path, text)
    res = invoke("run", cfg, "-o", tmp_path / "reports")
    assert res.exit_code == 2, (case, res.stderr)
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and head in errors[0], res.stderr
    after = lines[lines.index(errors[0]) + 1:]
    assert all(line.startswith("  ") for line in after)
    if detail is not None:
        assert any(line.startswith(detail) for line in after), res.stderr
    assert tree(tmp_path / "reports") == set()


def test_missing_config_file_exits_2(tmp_path):
    res = invoke("run", tmp_path / "nope.toml")
    assert res.exit_code == 2
    assert res.stderr == (f"error: config file {tmp_path / 'nope.toml'} does not exist; "
                          "pass the path of a TOML run config\n")


def test_missing_data_file_exits_2(tmp_path, sample_copy):
    (sample_copy / "binanceusdm" / "BTC_USDT_USDT" / "mark-1h.parquet").unlink()
    text = TINY_TOML.replace('exchange = "binanceusdm"', f'exchange = "binanceusdm"\nroot = "{sample_copy}"')
    res = invoke("run", write(tmp_path, text), "-o", tmp_path / "reports")
    assert res.exit_code == 2
    assert res.stderr.splitlines()[-1].startswith("error: ") and "mark price missing" in res.stderr
    assert "allow_mark_fallback" in res.stderr  # the fix is named


def test_unexpected_errors_exit_1_with_one_line(tmp_path, monkeypatch):
    import backtest.report

    def broken(*a, **k):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(backtest.report, "collect", broken)
    res = invoke("run", write(tmp_path, TINY_TOML), "-o", tmp_path / "reports", "-q")
    assert res.exit_code == 1
    assert res.stderr == ("error: unexpected RuntimeError: disk on fire "
                          "(run again with --debug for the traceback)\n")
    res = invoke("run", write(tmp_path, TINY_TOML), "-o", tmp_path / "reports", "-q", "--debug")
    assert isinstance(res.exception, RuntimeError)
    assert tree(tmp_path / "reports") == set()


def test_version_and_short_help():
    from importlib.metadata import version

    res = invoke("--version")
    assert res.exit_code == 0 and res.output.strip() == f"backtest {version('bearish-backtest')}"
    for args in (["-h"], ["run", "-h"], ["download", "-h"], ["report", "-h"], ["sweep", "-h"]):
        res = invoke(*args)
        assert res.exit_code == 0 and "Usage:" in res.output, args


def test_unknown_option_is_a_usage_error():
    res = invoke("run", "--no-such-option")
    assert res.exit_code == 2


def test_report_of_a_missing_folder_exits_2(tmp_path):
    res = invoke("report", tmp_path / "nope")
    assert res.exit_code == 2 and res.stderr.startswith("error: ") and "not a folder" in res.stderr
    (tmp_path / "empty").mkdir()
    res = invoke("report", tmp_path / "empty")
    assert res.exit_code == 2 and "not a complete report folder" in res.stderr


# ---------------------------------------------------------------------------------------------
# the real console script, in a subprocess without a terminal

def backtest_cmd() -> list[str]:
    script = Path(sys.executable).with_name("backtest")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "backtest"]


def subprocess_env(store: Path) -> dict:
    env = dict(os.environ, BACKTEST_DATA_DIR=str(store))
    env.pop("PYTHONPATH", None)
    return env


def test_subprocess_run_batch_job(tmp_path):
    cfg = write(tmp_path, TINY_TOML)
    reports = tmp_path / "reports"
    proc = subprocess.run([*backtest_cmd(), "run", str(cfg), "-o", str(reports)], capture_output=True, text=True,
                          cwd=tmp_path, env=subprocess_env(tmp_path / "empty"), timeout=120)
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = reports.iterdir()
    assert proc.stdout == f"{run_dir / 'report.html'}\n"
    lines = proc.stderr.splitlines()
    assert lines[0] == "loading binanceusdm BTC/USDT:USDT 4h (2022-01-01 .. 2022-03-01)"
    # the progress ends with the time taken, then the summary of the best columns
    summary = lines.index("best 4 column(s) by calmar (USD), with the baselines:")
    assert lines[summary - 1].startswith("done in ") and "\x1b[" not in proc.stderr
    assert {p.name for p in run_dir.iterdir()} == {"config.json", "equity.parquet", "events.parquet",
                                                  "metrics.json", "periods.parquet", "drawdowns.parquet",
                                                  "trades.parquet", "report.html"}


def test_subprocess_config_typo_exits_2(tmp_path):
    proc = subprocess.run([*backtest_cmd(), "run", str(write(tmp_path, TYPO)), "-o", str(tmp_path / "r")],
                          capture_output=True, text=True, cwd=ROOT, env=subprocess_env(tmp_path / "empty"),
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines()[0] == f"error: {tmp_path / 'run.toml'}: 2 invalid field(s): data.strat, rank_bi"
    assert "  data.strat: unknown key (did you mean 'start'?)" in proc.stderr
