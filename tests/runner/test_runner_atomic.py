"""Nothing half-written: a failing run leaves no new (or temporary) folder and keeps an earlier
report of the same run id as it was."""

from __future__ import annotations

import copy
import hashlib

import pytest

import backtest.report.store as store
import backtest.runner.sweep as sweep_mod
from backtest.runner import execute, parse_config
from backtest.runner.sweep import sweep_files
from runner_kit import TINY, tree


class Injected(RuntimeError):
    pass


def boom(*a, **k):
    raise Injected("injected failure")


def digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def run(doc, reports, **kw):
    return execute(parse_config(doc), reports_dir=reports, log=lambda m: None, **kw)


@pytest.mark.parametrize("where", ["_write_html", "_write_events", "_fsync_tree", "_swap_into_place"])
def test_failure_while_writing_leaves_nothing(tmp_path, monkeypatch, where):
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "other-run").mkdir()
    before = tree(reports)
    monkeypatch.setattr(store, where, boom)
    with pytest.raises(Injected):
        run(TINY, reports)
    assert tree(reports) == before


def test_failure_keeps_the_earlier_report_of_the_same_id(tmp_path, monkeypatch):
    reports = tmp_path / "reports"
    first = run(TINY, reports)
    before_tree, before = tree(reports), digests(first.out_dir)
    monkeypatch.setattr(store, "_write_html", boom)
    with pytest.raises(Injected):
        run(copy.deepcopy(TINY), reports)
    assert tree(reports) == before_tree
    assert digests(first.out_dir) == before


def test_failure_in_the_sweep_files_leaves_nothing(tmp_path, monkeypatch):
    doc = dict(copy.deepcopy(TINY), sweep={"x": "slow_days"})
    cfg = parse_config(doc)
    reports = tmp_path / "reports"
    first = execute(cfg, reports_dir=reports, log=lambda m: None, extras=sweep_files(cfg))
    before_tree, before = tree(reports), digests(first.out_dir)
    assert {"sweep.csv", "heatmap.html"} <= set(before)
    monkeypatch.setattr(sweep_mod, "heatmap_html", boom)  # fails after the simulation, before writing
    with pytest.raises(Injected):
        execute(cfg, reports_dir=reports, log=lambda m: None, extras=sweep_files(cfg))
    monkeypatch.undo()
    monkeypatch.setattr(store, "_swap_into_place", boom)  # fails with the staged folder complete
    with pytest.raises(Injected):
        execute(cfg, reports_dir=reports, log=lambda m: None, extras=sweep_files(cfg))
    assert tree(reports) == before_tree
    assert digests(first.out_dir) == before


def test_a_successful_rerun_replaces_the_folder_completely(tmp_path):
    reports = tmp_path / "reports"
    first = run(TINY, reports)
    (first.out_dir / "stale.txt").write_text("from an older version")
    second = run(TINY, reports)
    assert second.out_dir == first.out_dir
    assert tree(reports) == {first.run_id} | {f"{first.run_id}/{f}" for f in
                                              ("config.json", "equity.parquet", "events.parquet",
                                               "metrics.json", "periods.parquet", "drawdowns.parquet",
                                               "trades.parquet", "report.html")}
