"""Policy expressions are read with a bounded nesting depth: a deeply nested label
(``min(min(min(...)))`` thousands deep) is refused with the depth limit and the expression,
never a RecursionError; the CLI turns it into exit 2 and one ``error:`` line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from strategies.policies import MinOf, PolicyError, min_of, parse
from strategies.policies.base import MAX_POLICY_DEPTH

ROOT = Path(__file__).resolve().parents[2]


def nested(depth: int) -> str:
    return "min(" * depth + "const(2)" + ")" * depth


def test_nesting_up_to_the_limit_is_read():
    p = parse(nested(MAX_POLICY_DEPTH - 1))  # the innermost const(2) is one more level
    assert isinstance(p, MinOf)
    assert parse(p.label()).label() == p.label()


@pytest.mark.parametrize("depth", [MAX_POLICY_DEPTH, 5000])
def test_deeper_nesting_is_refused_with_the_limit(depth):
    with pytest.raises(PolicyError) as err:
        parse(nested(depth))
    msg = str(err.value)
    assert f"nests {depth + 1} levels deep" in msg and f"at most {MAX_POLICY_DEPTH}" in msg
    assert msg.count("min(") < 30  # the expression is shown shortened, not 5000 times
    assert len(msg) < 400


@pytest.mark.parametrize("text, what", [
    ("min(const(1),const(2)", "unbalanced parentheses"),
    ("min(const(1)),const(2))", "unbalanced parentheses"),
    ("const(1))(", "unbalanced parentheses"),
])
def test_unbalanced_parentheses_are_refused(text, what):
    with pytest.raises(PolicyError, match=what):
        parse(text)


def test_min_of_built_in_python_is_bounded_too():
    p = parse("const(1)")
    for _ in range(MAX_POLICY_DEPTH - 1):
        p = min_of(p)
    with pytest.raises(PolicyError, match=f"at most {MAX_POLICY_DEPTH}"):
        min_of(p)


def backtest_cmd() -> list[str]:
    script = Path(sys.executable).with_name("backtest")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "backtest"]


def test_cli_deeply_nested_policy_exits_2_with_one_line(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        'title = "deep"\n[data]\nstart = "2022-01-01"\nend = "2022-02-01"\n'
        '[[perp]]\nname = "p"\npolicies = ["' + nested(5000) + '"]\n', encoding="utf-8")
    env = dict(os.environ, BACKTEST_DATA_DIR=str(tmp_path / "empty"))
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([*backtest_cmd(), "run", str(cfg), "-o", str(tmp_path / "r")], capture_output=True,
                          text=True, cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("error: ") and "perp[0].policies[0]" in lines[0]
    assert f"at most {MAX_POLICY_DEPTH}" in proc.stderr and "Traceback" not in proc.stderr
    assert "unexpected" not in proc.stderr and len(proc.stderr) < 2000
    assert not (tmp_path / "r").exists()
