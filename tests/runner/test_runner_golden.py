"""Golden test: the main job (``backtest run`` with no config) on the committed sample.

Every number of its ``metrics.json`` (every metric of every column, both bases, the ranking)
is pinned in ``golden/main_job_metrics.json`` and compared with rtol 1e-9; null, strings and
booleans must match exactly. This is a regression pin: a change here means the simulated
numbers changed. If the change is intended, regenerate the file and review its diff:

    BACKTEST_UPDATE_GOLDEN=1 .venv/bin/pytest tests/runner/test_runner_golden.py

Not pinned: ``created_ms`` (the clock), ``notes`` (they hold local paths) and each result's
``meta`` (the settings echo, not a result).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from backtest.runner import execute, main_job

GOLDEN = Path(__file__).resolve().parent / "golden" / "main_job_metrics.json"
UPDATE = os.environ.get("BACKTEST_UPDATE_GOLDEN") == "1"
RTOL = 1e-9


def pinned(metrics: dict) -> dict:
    out = {k: v for k, v in metrics.items() if k not in ("created_ms", "notes")}
    out["results"] = {name: {k: v for k, v in r.items() if k != "meta"} for name, r in metrics["results"].items()}
    return out


def where(path: tuple) -> str:
    """``results/<result>/<basis>/columns/<column>/<metric>`` in words."""
    if len(path) >= 6 and path[0] == "results" and path[3] == "columns":
        return f"metric {path[5]!r} of column {path[4]!r} of result {path[1]!r} ({path[2]} basis)"
    return "/".join(map(str, path))


def differences(want, got, path=()) -> list[str]:
    if isinstance(want, dict) and isinstance(got, dict):
        out = []
        for k in want.keys() - got.keys():
            out.append(f"{where(path + (k,))}: missing now (was {want[k]!r})")
        for k in got.keys() - want.keys():
            out.append(f"{where(path + (k,))}: new (= {got[k]!r}); regenerate the golden file if intended")
        for k in want.keys() & got.keys():
            out += differences(want[k], got[k], path + (k,))
        return out
    if isinstance(want, list) and isinstance(got, list):
        if len(want) != len(got):
            return [f"{where(path)}: {len(want)} items before, {len(got)} now"]
        return [d for i, (a, b) in enumerate(zip(want, got)) for d in differences(a, b, path + (i,))]
    numeric = (int, float)
    if (isinstance(want, numeric) and isinstance(got, numeric) and not isinstance(want, bool)
            and not isinstance(got, bool)):
        if math.isclose(want, got, rel_tol=RTOL, abs_tol=0.0):
            return []
        return [f"{where(path)}: {want!r} -> {got!r} (relative change {abs(got - want) / max(abs(want), 1e-300):.3g})"]
    if type(want) is not type(got) or want != got:
        return [f"{where(path)}: {want!r} -> {got!r}"]
    return []


def test_differences_reports_metric_and_column():
    """The comparison itself: it must flag a change just above rtol and name where it is."""
    base = {"results": {"r": {"usd": {"columns": {"c": {"sharpe": 1.0, "liquidations": None, "ruined": False}}}}}}
    same = json.loads(json.dumps(base))
    same["results"]["r"]["usd"]["columns"]["c"]["sharpe"] = 1.0 + 0.5e-9
    assert differences(base, same) == []
    moved = json.loads(json.dumps(base))
    moved["results"]["r"]["usd"]["columns"]["c"]["sharpe"] = 1.0 + 2e-9
    (msg,) = differences(base, moved)
    assert msg.startswith("metric 'sharpe' of column 'c' of result 'r' (usd basis): 1.0 -> 1.000000002")
    null = json.loads(json.dumps(base))
    null["results"]["r"]["usd"]["columns"]["c"]["liquidations"] = 0
    assert differences(base, null) == ["metric 'liquidations' of column 'c' of result 'r' (usd basis): None -> 0"]
    flag = json.loads(json.dumps(base))
    flag["results"]["r"]["usd"]["columns"]["c"]["ruined"] = 0  # equal as numbers, not as JSON
    assert len(differences(base, flag)) == 1


@pytest.mark.slow
def test_main_job_metrics_match_the_golden_file(tmp_path):
    out = execute(main_job(), reports_dir=tmp_path, log=lambda m: None)
    got = pinned(json.loads((out.out_dir / "metrics.json").read_text()))
    if UPDATE:
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        pytest.skip(f"rewrote {GOLDEN}; review its diff")
    assert GOLDEN.is_file(), f"{GOLDEN} is missing; create it with BACKTEST_UPDATE_GOLDEN=1"
    want = json.loads(GOLDEN.read_text())
    diffs = differences(want, got)
    assert not diffs, (f"{len(diffs)} pinned value(s) of the main job changed (first 25):\n  "
                       + "\n  ".join(sorted(diffs)[:25])
                       + "\nIf intended: BACKTEST_UPDATE_GOLDEN=1 .venv/bin/pytest tests/runner/test_runner_golden.py")
    # the pin covers every metric of every column of every result, on both bases
    n = sum(len(m) for r in want["results"].values() for b in ("settle", "usd") for m in r[b]["columns"].values())
    assert n > 300
