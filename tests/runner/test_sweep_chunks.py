"""`backtest sweep` in chunks: the same numbers in one chunk and in many, and the same as the
unchunked run (`execute`, the report's metrics of every column); the report keeps the best
columns; every column's equity when asked; chunk sizing; bad settings."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backtest.runner import ConfigError, parse_config
from backtest.runner.chunks import (CHUNK_BYTES_PER_CELL, CHUNK_SERIES, SweepTask, chunk_bounds, chunk_columns,
                                    simulate_columns, sweep_grid)
from backtest.runner.sweep import run_sweep
from runner_kit import TINY

BARS = 354  # TINY: 2022-01-01 .. 2022-03-01 in 4h bars


def config(slow=(5, 10, 20), policies=("const(1)", "const(2)", "voltarget(0.5)", "drawdown(0.3,floor=0.2,leverage=2)"),
           leverage=None, **sweep):
    doc = json.loads(json.dumps(TINY))
    doc["perp"][0]["strategy"]["params"]["slow_days"] = list(slow)
    doc["perp"][0]["policies"] = list(policies)
    # a margin-call response and a per-column leverage list, so settings are taken per chunk too
    n = len(slow) * len(policies)
    doc["perp"][0]["account"] = {"leverage": leverage or [5 + (c % 4) for c in range(n)], "margin_call_response": "top_up",
                                 "reserve": 2000.0}
    doc["sweep"] = {"x": "slow_days", "y": "policy", "metric": "sharpe", **sweep}
    return parse_config(doc)


def memory_for(columns: int) -> int:
    """The sweep memory that gives chunks of ``columns`` columns on TINY's bars."""
    return BARS * CHUNK_BYTES_PER_CELL * columns


@pytest.fixture(autouse=True)
def sample_data(monkeypatch, tmp_path):
    monkeypatch.setenv("BACKTEST_DATA_DIR", str(tmp_path / "empty"))  # the committed sample


def quiet(_msg: str) -> None:
    pass


def sweep(tmp_path: Path, cfg, sub: str, **kw):
    return run_sweep(cfg, reports_dir=tmp_path / sub, log=quiet, quiet=True, **kw)


def test_chunk_bounds_cover_every_column_once():
    assert chunk_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert chunk_bounds(3, 5) == [(0, 3)]
    with pytest.raises(ValueError, match="per_chunk=0"):
        chunk_bounds(3, 0)


def test_chunk_columns_follow_the_memory():
    assert chunk_columns(1000, 1000 * CHUNK_BYTES_PER_CELL * 7) == 7
    assert chunk_columns(1000, 1000 * CHUNK_BYTES_PER_CELL * 7, workers=2) == 3  # shared by the chunks in flight
    assert chunk_columns(1000, 10) == 1  # never 0


def test_one_chunk_and_many_give_the_same_metrics_bit_for_bit(tmp_path):
    cfg = config()
    one = sweep(tmp_path, cfg, "one", memory=memory_for(1000))
    many = sweep(tmp_path, cfg, "many", memory=memory_for(5))
    assert (one.chunks, many.chunks) == (1, 3)  # 12 columns, chunks of 5 cut through strategy sets
    a = pd.read_parquet(one.out_dir / "sweep_metrics.parquet")
    b = pd.read_parquet(many.out_dir / "sweep_metrics.parquet")
    assert len(a) == 12 and list(a["col"]) == list(range(12))
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert (one.out_dir / "sweep.csv").read_text() == (many.out_dir / "sweep.csv").read_text()
    assert one.run_id == many.run_id  # the memory is not part of what the sweep computes


def _plain(v):
    return None if v is pd.NA or (isinstance(v, float) and math.isnan(v)) else v


def test_chunked_metrics_are_those_of_the_unchunked_run(tmp_path):
    """Every metric of every column, both bases, equals the report `backtest run` writes
    (one engine run of the whole grid, metrics.json)."""
    from backtest.runner import execute

    cfg = config()
    whole = execute(cfg, reports_dir=tmp_path / "run", log=quiet, html=False)
    doc = whole.metrics["results"]["trend"]
    out = sweep(tmp_path, cfg, "sweep", memory=memory_for(5), html=False)
    table = pd.read_parquet(out.out_dir / "sweep_metrics.parquet")
    assert list(table["column"]) == doc["columns"]
    checked = 0
    for i, label in enumerate(doc["columns"]):
        for basis, prefix in (("usd", ""), ("settle", "settle.")):
            for key, want in doc[basis]["columns"][label].items():
                if key == "event_counts":
                    for kind, count in want.items():
                        assert table.at[i, f"events.{kind}"] == count
                    continue
                got = _plain(table.at[i, prefix + key])
                assert got == want or (got is not None and want is not None and float(got) == float(want)), \
                    (label, basis, key, got, want)
                checked += 1
    assert checked == 12 * 2 * 37  # 12 columns, 2 bases, 37 metrics (event_counts apart)


def test_the_report_keeps_the_best_columns_and_the_table_keeps_all(tmp_path):
    cfg = config(report_columns=3)
    out = sweep(tmp_path, cfg, "r", memory=memory_for(5))
    table = pd.read_csv(out.out_dir / "sweep.csv")
    assert len(table) == 12 and list(table["rank"]) == list(range(1, 13))
    metrics = json.loads((out.out_dir / "metrics.json").read_text())
    best = list(table["column"][:3])
    assert sorted(metrics["results"]["trend"]["columns"]) == sorted(best)
    assert metrics["sweep"]["columns"] == 12 and metrics["sweep"]["report_columns"] == 3
    # the report's numbers of a kept column are the table's
    for _, row in table.head(3).iterrows():
        assert metrics["results"]["trend"]["usd"]["columns"][row["column"]]["sharpe"] == row["sharpe"]
    equity = pd.read_parquet(out.out_dir / "equity.parquet", columns=["column"])
    assert set(equity["column"]) == set(best)
    sharpe = table["sharpe"].to_numpy()
    assert all(sharpe[i] >= sharpe[i + 1] for i in range(11))  # none ruined here: by Sharpe alone
    assert (out.out_dir / "heatmap.html").is_file() and not (out.out_dir / "chunks").exists()


def test_full_equity_holds_every_column_as_one_engine_run_gives_it(tmp_path, monkeypatch):
    from backtest.data import default_root
    from backtest.market import load_market
    from backtest.runner.run import load_data

    cfg = config()
    out = sweep(tmp_path, cfg, "f", memory=memory_for(5), full_equity=True)
    parts = sorted(out.out_dir.glob("equity-full-*.parquet"), key=lambda p: int(p.stem.split("-")[2]))
    assert [p.name for p in parts] == ["equity-full-0-5.parquet", "equity-full-5-10.parquet",
                                       "equity-full-10-12.parquet"]
    got = pd.concat([pd.read_parquet(p) for p in parts], axis=1)
    md = load_data(cfg)
    spec = load_market(cfg.data.exchange, cfg.data.symbol, data_dir=default_root())
    grid = sweep_grid(cfg.perp[0])
    whole = simulate_columns(SweepTask(cfg.perp[0], "perp[0]", md, spec, grid), np.arange(grid.n_cols))
    assert list(got.columns) == list(grid.labels)
    np.testing.assert_array_equal(got.to_numpy(), np.asarray(whole.series["equity"]))


def test_grid_labels_are_those_of_backtest_run(tmp_path):
    from backtest.runner import execute

    cfg = config(slow=(5, 10), policies=("const(1)", "voltarget(0.5)"))
    whole = execute(cfg, reports_dir=tmp_path / "run", log=quiet, html=False)
    assert list(sweep_grid(cfg.perp[0]).labels) == whole.metrics["results"]["trend"]["columns"]


@pytest.mark.parametrize("memory, message", [
    ("lots", "--memory='lots' is not a size"),
    ("off", "--memory='off': a sweep's chunks need a memory size"),
])
def test_bad_memory_is_refused_by_name(tmp_path, memory, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        sweep(tmp_path, config(), "bad", memory=memory)
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())


def test_sweep_memory_in_the_config_is_checked():
    with pytest.raises(ConfigError, match="sweep.memory"):
        config(memory="2 parsecs")


def test_a_per_column_list_of_the_wrong_length_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"perp\[0\]\.account\.leverage: 2 values for the sweep's 12 columns"):
        sweep(tmp_path, config(leverage=[5.0, 6.0]), "bad", memory=memory_for(5))


def _tiny_result(cfg):
    from backtest.data import default_root
    from backtest.market import load_market
    from backtest.runner.run import load_data

    md = load_data(cfg)
    spec = load_market(cfg.data.exchange, cfg.data.symbol, data_dir=default_root())
    grid = sweep_grid(cfg.perp[0])
    return simulate_columns(SweepTask(cfg.perp[0], "perp[0]", md, spec, grid), np.arange(grid.n_cols),
                            series=CHUNK_SERIES)


def test_settlement_metrics_are_computed_once_only_when_they_are_the_usd_ones():
    """A linear perp settled in USDT (worth 1 USD at every bar): both bases read the same
    numbers, so the table's settle.* columns are the USD ones and both equal compute_metrics. A
    settlement currency not worth 1 USD (here the same run with every USD amount doubled) has
    its own numbers, each equal to compute_metrics in its basis."""
    import dataclasses

    from backtest.metrics import compute_metrics
    from backtest.runner.chunks import metrics_frame, same_bases

    res = _tiny_result(config())
    assert same_bases(res)
    cols = np.arange(res.n_cols)
    usd_doubled = dataclasses.replace(
        res, series={**{k: res.series[k] for k in res.series}, "equity_usd": 2.0 * res.series["equity"]},
        price_usd=np.full(res.n_bars, 2.0))
    assert not same_bases(usd_doubled)
    for r in (res, usd_doubled):
        table = metrics_frame(r, cols)
        for basis, prefix in (("usd", ""), ("settle", "settle.")):
            doc = compute_metrics(r, currency=basis)["columns"]
            for i, label in enumerate(doc):
                for key in ("final_equity", "total_return", "sharpe", "max_drawdown", "funding_net", "fees",
                            "turnover", "ruined"):
                    want, got = doc[label][key], _plain(table.at[i, prefix + key])
                    assert got == want, (basis, label, key, got, want)
    doubled = metrics_frame(usd_doubled, cols)
    assert (doubled["final_equity"] == 2.0 * doubled["settle.final_equity"]).all()  # not a copy of settle
    assert (doubled["fees"] > 0).any() and (doubled["fees"] == 2.0 * doubled["settle.fees"]).all()


def test_chunk_runs_store_only_the_equity_and_give_the_series_of_a_full_run():
    """The chunks' engine runs keep the equity (the rest is derived on read): every series the
    metrics read equals that of a run storing every series, bit for bit."""
    cfg = config()
    lean = _tiny_result(cfg)
    assert "margin_ratio" not in lean.series.stored and "liq_price" not in lean.series.stored
    from backtest.data import default_root
    from backtest.market import load_market
    from backtest.runner.run import load_data

    md = load_data(cfg)
    spec = load_market(cfg.data.exchange, cfg.data.symbol, data_dir=default_root())
    grid = sweep_grid(cfg.perp[0])
    full = simulate_columns(SweepTask(cfg.perp[0], "perp[0]", md, spec, grid), np.arange(grid.n_cols))
    for k in ("equity", "equity_usd", "position", "leverage", "cum_funding", "cum_fees", "capital_added"):
        np.testing.assert_array_equal(lean.series[k], full.series[k], err_msg=k)
    # flows in the comparison (top-ups: tests/engine_kernel/test_kernel_layout.py, against the reference)
    assert np.asarray(full.series["cum_fees"])[-1].min() > 0 and np.abs(full.series["cum_funding"][-1]).min() > 0
