"""A user's own strategy and policy modules, named by a config's ``module`` key: the worked
example of docs/strategies.md run through the CLI, its numbers checked by hand, and every way
a module can be wrong (exit 2 naming the file and what is missing)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from backtest.cli import app
from runner_kit import ROOT, TINY_TOML

EXAMPLE = ROOT / "examples" / "carry_policy.toml"
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(autouse=True)
def _registries_restored():
    """What a test's modules register is taken out afterwards (with the loader's memory of
    them), so the other tests of the process see the built-in strategies and policies only."""
    from strategies import base, book, modules
    from strategies.policies import base as policy_base
    from strategies.policies import book as policy_book

    tables = (base._REGISTRY, book._BOOK_REGISTRY, policy_base._POLICIES, policy_book._BOOK_POLICIES, modules._LOADED)
    saved = [dict(t) for t in tables]
    yield
    for table, before in zip(tables, saved):
        table.clear()
        table.update(before)


def test_the_worked_example_runs_through_the_cli_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the module path is relative to the config's folder, not here
    res = invoke("run", EXAMPLE, "-o", tmp_path / "reports", "-q", "--no-html")
    assert res.exit_code == 0, res.stderr
    metrics = json.loads((Path(res.stdout.strip()) / "metrics.json").read_text())
    cols = metrics["results"]["carry-tilt"]["columns"]
    assert cols == ["policy=const(1)", "policy=const(3)", "policy=carrytilt(1,3)"]
    # the tilt holds 1x or 3x: its exposure lies between the constant policies' (by funding)
    lev = metrics["results"]["carry-tilt"]["settle"]["columns"]
    assert lev["policy=const(1)"]["avg_leverage"] < lev["policy=carrytilt(1,3)"]["avg_leverage"] \
        < lev["policy=const(3)"]["avg_leverage"]


def test_the_example_policy_against_a_hand_loop():
    import strategies
    from backtest.data import load_market_data
    from strategies import policies as P

    strategies.load_module(str(ROOT / "examples" / "carry_policy.py"))
    md = load_market_data("binanceusdm", "BTC/USDT:USDT", "4h", start="2022-01-01", end="2022-07-01")
    pol = P.parse("carrytilt(1,3,window_days=2)")
    got = pol.compute(md)
    funding = md.frame["funding_rate"].fillna(0.0).to_numpy()
    n = 12  # 2 days of 4h bars
    want = np.zeros(md.n)
    for t in range(md.n):
        if t >= n - 1:
            total = sum(funding[t - n + 1: t + 1])
            want[t] = 3.0 if total > 0 else 1.0
    np.testing.assert_array_equal(got, want)
    assert {1.0, 3.0} <= set(got)  # both branches taken on this window
    strategies.lookahead.check(pol, md)  # uses data up to each close only


def test_the_docs_show_the_example_file_as_it_is():
    text = (ROOT / "docs" / "strategies.md").read_text()
    block = re.search(r"```python no-run: this is examples/carry_policy.py[^\n]*\n(.*?)```", text, re.S)
    assert block is not None
    assert block[1] == (ROOT / "examples" / "carry_policy.py").read_text()


STRATEGY_MODULE = '''
import numpy as np
from strategies import StrategyParams, per_column, register

class EveryOtherParams(StrategyParams):
    pass

def every_other(m, p):
    return np.where(np.arange(m.n) % 2 == 0, -1.0, 0.0)

register("every_other_bar", EveryOtherParams, per_column(every_other), "short on even bars")
'''


def test_a_user_strategy_module_by_path_and_by_dotted_name(tmp_path, monkeypatch, quiet):
    from backtest.runner import execute, parse_config

    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "my_strats.py").write_text(STRATEGY_MODULE)
    cfg = tmp_path / "run.toml"
    cfg.write_text('module = "lib/my_strats.py"\n' + TINY_TOML.replace(
        'strategy = { name = "trend_short", params = { slow_days = [10, 20] } }',
        'strategy = { name = "every_other_bar" }'))
    res = invoke("run", cfg, "-o", tmp_path / "reports", "-q", "--no-html")
    assert res.exit_code == 0, res.stderr
    events = json.loads((Path(res.stdout.strip()) / "metrics.json").read_text())["results"]["trend"]
    assert events["columns"] == ["policy=const(1)", "policy=const(2)"]
    # a dotted name on sys.path (the same file is imported once more under its module name:
    # it registers the strategy again, which the registry refuses, naming it)
    (lib / "other_strats.py").write_text(STRATEGY_MODULE.replace("every_other_bar", "every_other_bar_2"))
    monkeypatch.syspath_prepend(str(lib))
    doc = {"module": "other_strats", "title": "t",
           "data": {"timeframe": "4h", "start": "2022-01-01", "end": "2022-02-01"},
           "perp": [{"name": "p", "strategy": {"name": "every_other_bar_2"}}]}
    out = execute(parse_config(doc), reports_dir=tmp_path / "r2", log=quiet, html=False)
    fills = out.results["p"].events("fills")
    assert set(np.diff(fills["bar"].to_numpy())) == {1}  # a trade every bar: short, flat, short, ...


@pytest.mark.parametrize("case, body, ref, message", [
    ("missing file", None, "nowhere/my_policy.py", r"module file .*nowhere/my_policy\.py does not exist \(relative to "),
    ("not python", "x = 1", "notes.txt/", r"is not a Python file|does not exist"),
    ("fails loading", "import numpy\n1 / 0\n", "broken.py",
     r"module file .*broken\.py failed while loading: ZeroDivisionError: division by zero"),
    ("registers nothing", "X = 1\n", "empty.py", r".*empty\.py registers no strategy or leverage policy; register"),
    ("dotted name", None, "no_such_pkg.policies", r"module 'no_such_pkg\.policies' cannot be imported"),
])
def test_a_bad_module_is_an_error_naming_the_file(tmp_path, case, body, ref, message):
    if body is not None:
        (tmp_path / ref.rstrip("/")).write_text(body)
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'module = "{ref}"\n' + TINY_TOML)
    res = invoke("run", cfg, "-o", tmp_path / "reports")
    assert res.exit_code == 2, (case, res.stderr)
    (first, *rest) = res.stderr.splitlines()
    assert first.startswith("error: ") and "module" in first
    assert re.search(message, res.stderr), res.stderr
    assert not (tmp_path / "reports").exists()


def test_module_is_left_out_of_the_run_id_when_absent(tiny):
    from backtest.runner import parse_config

    cfg = parse_config(tiny)
    assert "module" not in cfg.content() and "top_n" not in cfg.content()
    assert "lookback_days" not in cfg.content()["data"]
