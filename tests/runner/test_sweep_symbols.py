"""Symbols as a sweep grid axis (``[sweep.grid] symbol = [...]``): the grid run on each
symbol's data, symbol outer. Each symbol's columns equal a one-symbol sweep of that symbol (bit
for bit), labels and levels start with the symbol, the report keeps each symbol's best columns
as a result of their own (its own prices), a sweep stopped in the second symbol resumes with
the missing chunks only, the run id follows every symbol's data, bad input is refused by name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backtest.runner import ConfigError, parse_config
from backtest.runner.chunks import CHUNK_BYTES_PER_CELL
from backtest.runner.executors import InProcess
from backtest.runner.sweep import run_sweep, symbol_label
from runner_kit import SAMPLE, TINY_TOML

BARS = 354  # TINY's 4h bars of 2022-01-01 .. 2022-03-01 (both symbols)
SYMBOLS = ["BTC/USDT:USDT", "ETH/USDT:USDT"]
BASE = TINY_TOML.replace("slow_days = [10, 20]", "slow_days = [10, 20, 30]")  # 3 x 2 policies = 6 columns
MEMORY = BARS * CHUNK_BYTES_PER_CELL * 4  # chunks of 4 columns: 2 per symbol (4 + 2)
SWEEP = '\n[sweep]\nx = "slow_days"\ny = "symbol"\n'
AXIS = '\n[sweep.grid]\nsymbol = ["BTC/USDT:USDT", "ETH/USDT:USDT"]\n'


def cfg_of(text: str):
    import tomllib

    return parse_config(tomllib.loads(text))


def one_symbol(symbol: str) -> str:
    return BASE.replace('symbol = "BTC/USDT:USDT"', f'symbol = "{symbol}"') + '\n[sweep]\nx = "slow_days"\n'


def sweep(cfg, reports: Path, **kw):
    return run_sweep(cfg, reports_dir=reports, log=lambda _m: None, quiet=True, memory=MEMORY, html=False, **kw)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The two-symbol sweep and the two one-symbol sweeps, run once for the module."""
    tmp = tmp_path_factory.mktemp("symbols")
    both = sweep(cfg_of(BASE + SWEEP + AXIS), tmp / "both")
    single = {s: sweep(cfg_of(one_symbol(s)), tmp / s.split("/")[0]) for s in SYMBOLS}
    return both, single


def test_each_symbols_columns_equal_a_one_symbol_sweep_bit_for_bit(swept):
    both, single = swept
    table = pd.read_parquet(both.out_dir / "sweep_metrics.parquet")
    assert len(table) == 12 and table["col"].tolist() == list(range(12))
    assert both.chunks == 4  # 2 chunks of each symbol's 6 columns
    for i, sym in enumerate(SYMBOLS):
        one = pd.read_parquet(single[sym].out_dir / "sweep_metrics.parquet")
        mine = table[table["symbol"] == sym].reset_index(drop=True)
        # symbol outer: the symbol's columns are a block, in its one-symbol grid order
        assert mine["col"].tolist() == list(range(6 * i, 6 * i + 6))
        assert mine["column"].tolist() == [symbol_label(sym, c) for c in one["column"]]
        metrics = [c for c in one.columns if c not in ("col", "column")]
        pd.testing.assert_frame_equal(mine[metrics], one[metrics], check_exact=True)
    # the two symbols' data differ: their columns are not copies of one another
    assert not np.array_equal(table["final_equity"].to_numpy()[:6], table["final_equity"].to_numpy()[6:])


def test_labels_and_levels_start_with_the_symbol(swept):
    both, _ = swept
    ranked = pd.read_csv(both.out_dir / "sweep.csv")
    assert list(ranked.columns[:4]) == ["rank", "column", "col", "symbol"]
    first = ranked.sort_values("col").iloc[6]
    assert first["column"] == "symbol=ETH/USDT:USDT|slow_days=10|policy=const(1)"
    assert first["symbol"] == "ETH/USDT:USDT" and first["slow_days"] == 10 and first["policy"] == "const(1)"
    # one ranking over every symbol: the ranked metric is ordered across both (report rule, best first)
    assert sorted(ranked["symbol"].unique()) == SYMBOLS
    sharpe = ranked["sharpe"].to_numpy()
    assert np.all(np.diff(sharpe[~np.isnan(sharpe)]) <= 0)
    assert ranked["column"].str.startswith("symbol=").all() and ranked["column"].is_unique


def test_the_report_keeps_each_symbols_best_columns_with_its_own_prices(swept):
    from backtest.data import load_market_data

    both, _ = swept
    doc = json.loads((both.out_dir / "metrics.json").read_text())
    ranked = pd.read_csv(both.out_dir / "sweep.csv")
    assert doc["sweep"]["symbols"] == SYMBOLS and doc["sweep"]["columns"] == 12
    assert set(doc["results"]) == {"trend BTC/USDT:USDT", "trend ETH/USDT:USDT"}
    for sym in SYMBOLS:
        cols = doc["results"][f"trend {sym}"]["usd"]["columns"]
        assert cols and all(lab.startswith(f"symbol={sym}|") for lab in cols)
        for lab, m in cols.items():  # simulated again for the report: the sweep's numbers
            assert m["final_equity"] == ranked.loc[ranked["column"] == lab, "final_equity"].item()
    # each result's price line is its own symbol's mark close (independent load of the data)
    eq = pd.read_parquet(both.out_dir / "equity.parquet")
    for sym in SYMBOLS:
        md = load_market_data("binanceusdm", sym, "4h", start="2022-01-01", end="2022-03-01")
        part = eq[eq["result"] == f"trend {sym}"]
        one_col = part[part["column"] == part["column"].iloc[0]]
        np.testing.assert_array_equal(one_col["underlying_price"].to_numpy(), md.frame["mark_close"].to_numpy())
    cfg = json.loads((both.out_dir / "config.json").read_text())
    assert set(cfg["symbols"]) == set(SYMBOLS)


def test_a_one_symbol_list_has_a_symbol_level_and_the_plain_sweeps_numbers(tmp_path, swept):
    _, single = swept
    one = sweep(cfg_of(BASE + SWEEP.replace('"symbol"', '"policy"')
                       + '\n[sweep.grid]\nsymbol = ["ETH/USDT:USDT"]\n'), tmp_path)
    got = pd.read_parquet(one.out_dir / "sweep_metrics.parquet")
    want = pd.read_parquet(single["ETH/USDT:USDT"].out_dir / "sweep_metrics.parquet")
    assert got["column"].tolist() == [symbol_label("ETH/USDT:USDT", c) for c in want["column"]]
    metrics = [c for c in want.columns if c not in ("col", "column")]
    pd.testing.assert_frame_equal(got[metrics], want[metrics], check_exact=True)
    assert one.run_id != single["ETH/USDT:USDT"].run_id  # another config: another run


class Killed(Exception):
    """Stands for the process dying: raised by :class:`StopAfter` in place of a chunk."""


class StopAfter(InProcess):
    """In this process; dies (raises :class:`Killed`) once ``n`` chunks have been handed out."""

    def __init__(self, n: int) -> None:
        self.left = n
        self.ran: list = []

    def map(self, fn, shared, items):
        for i, item in enumerate(items):
            if self.left == 0:
                raise Killed
            self.left -= 1
            self.ran.append((shared.spec.symbol, item))
            yield i, fn(shared, item)


def test_a_sweep_stopped_in_the_second_symbol_resumes_with_the_missing_chunks_only(tmp_path, swept):
    both, _ = swept
    cfg = cfg_of(BASE + SWEEP + AXIS)
    with pytest.raises(Killed):  # both chunks of BTC and the first of ETH stored, then killed
        sweep(cfg, tmp_path, executor=StopAfter(3))
    (run_dir,) = tmp_path.iterdir()
    stored = sorted(p.relative_to(run_dir / "chunks").as_posix() for p in run_dir.glob("chunks/*/metrics-*.parquet"))
    assert stored == ["0-BTC_USDT_USDT/metrics-0-4.parquet", "0-BTC_USDT_USDT/metrics-4-6.parquet",
                      "1-ETH_USDT_USDT/metrics-0-4.parquet"]
    again_ex = StopAfter(100)
    again = sweep(cfg, tmp_path, executor=again_ex)
    assert again_ex.ran == [("ETH/USDT:USDT", (4, 6))]
    assert again.computed == 1 and again.reused == 3 and again.run_id == both.run_id
    pd.testing.assert_frame_equal(pd.read_parquet(again.out_dir / "sweep_metrics.parquet"),
                                  pd.read_parquet(both.out_dir / "sweep_metrics.parquet"), check_exact=True)
    pd.testing.assert_frame_equal(pd.read_csv(again.out_dir / "sweep.csv"), pd.read_csv(both.out_dir / "sweep.csv"),
                                  check_exact=True)


def _run_id_of(cfg, reports: Path) -> str:
    """The run id a sweep takes (its chunks' plan), stopped before any chunk runs."""
    with pytest.raises(Killed):
        sweep(cfg, reports, executor=StopAfter(0))
    ids = {json.loads(p.read_text())["run_id"] for p in reports.glob("*/chunks/*/plan.json")}
    (run_id,) = ids  # one plan per symbol, one run id
    return run_id


def test_the_run_id_covers_every_symbols_data(tmp_path):
    root = tmp_path / "store"
    for sym in ("BTC_USDT_USDT", "ETH_USDT_USDT"):
        shutil.copytree(SAMPLE / "binanceusdm" / sym, root / "binanceusdm" / sym)
    text = (BASE + SWEEP + AXIS).replace('end = "2022-03-01"', f'end = "2022-03-01"\nroot = "{root}"')
    before = _run_id_of(cfg_of(text), tmp_path / "a")
    # one ETH close of the window changed (the second symbol's data, not the [data] symbol's)
    path = root / "binanceusdm" / "ETH_USDT_USDT" / "ohlcv-1h.parquet"
    ohlcv = pd.read_parquet(path)
    at = int(np.searchsorted(ohlcv["timestamp"].to_numpy(), pd.Timestamp("2022-02-01", tz="UTC").value // 10**6))
    at += 3  # the last 1h candle of the 4h bar 2022-02-01 00:00: its close is the 4h close
    mid = (ohlcv.loc[at, "high"] + ohlcv.loc[at, "low"]) / 2  # inside the candle's range: still valid data
    assert mid != ohlcv.loc[at, "close"]
    ohlcv.loc[at, "close"] = mid
    ohlcv.to_parquet(path, index=False)
    after = _run_id_of(cfg_of(text), tmp_path / "b")
    assert before != after


def test_a_symbol_without_data_or_market_exits_2_naming_it(tmp_path):
    from typer.testing import CliRunner

    from backtest.cli import app

    cfg = tmp_path / "s.toml"
    cfg.write_text(BASE + SWEEP + AXIS.replace('"ETH/USDT:USDT"', '"XRP/USDT:USDT"'))
    res = CliRunner().invoke(app, ["sweep", str(cfg), "-o", str(tmp_path / "r"), "-q"])
    assert res.exit_code == 2
    assert "sweep.grid.symbol: 'XRP/USDT:USDT'" in res.stderr and "take it out of [sweep.grid] symbol" in res.stderr
    assert not list((tmp_path / "r").glob("*/chunks"))  # refused before any chunk

    # a symbol with a market spec but no data in the store given by [data] root
    root = tmp_path / "store"
    shutil.copytree(SAMPLE / "binanceusdm" / "BTC_USDT_USDT", root / "binanceusdm" / "BTC_USDT_USDT")
    text = (BASE + SWEEP + AXIS).replace('end = "2022-03-01"', f'end = "2022-03-01"\nroot = "{root}"')
    with pytest.raises(ConfigError, match=r"sweep.grid.symbol: 'ETH/USDT:USDT': no binanceusdm ETH/USDT:USDT "
                                          r"candles .* `backtest download -e binanceusdm -s ETH/USDT:USDT .*take it out"):
        sweep(cfg_of(text), tmp_path / "r2")


@pytest.mark.parametrize("axis, message", [
    ('symbol = "ETH/USDT:USDT"', r"grid.symbol='ETH/USDT:USDT': the symbol axis is a non-empty list"),
    ("symbol = []", r"the symbol axis is a non-empty list"),
    ('symbol = ["ETH/USDT:USDT", "ETH/USDT:USDT"]', "repeats a symbol; list each symbol once"),
    ("symbol = [1, 2]", r"the symbol axis is a non-empty list of symbols"),
    ("symbols = [\"ETH/USDT:USDT\"]", r"grid.symbols: not a grid axis; an axis is 'symbol' or account"),
])
def test_bad_symbol_axes_are_refused_by_name(axis, message):
    with pytest.raises(ConfigError, match=message):
        cfg_of(BASE + SWEEP + "\n[sweep.grid]\n" + axis + "\n")


def test_a_split_with_a_symbol_axis_is_refused_with_the_fix(tmp_path):
    cfg = cfg_of(BASE + SWEEP + 'split = "train_test"\nsplit_at = 0.7\n' + AXIS)
    with pytest.raises(ConfigError, match=r"sweep.split: 'train_test' with a \[sweep.grid\] symbol axis is not "
                                          r"supported; remove the split"):
        sweep(cfg, tmp_path)
    assert not tmp_path.exists() or not list(tmp_path.iterdir())


def test_symbol_is_a_heatmap_axis_and_unknown_levels_are_named(tmp_path):
    # x = "symbol" without a symbol axis: not a level (the [data] symbol is not swept)
    with pytest.raises(ConfigError, match=r"sweep.y: 'symbol' is not a column level"):
        sweep(cfg_of(BASE + SWEEP), tmp_path)


def test_the_heatmap_can_take_symbol_as_an_axis(swept):
    from backtest.runner.sweep import heatmap_grid

    both, _ = swept
    ranked = pd.read_csv(both.out_dir / "sweep.csv")
    grid = heatmap_grid(ranked, "slow_days", "symbol", "sharpe", "median")
    assert list(grid.index) == SYMBOLS and list(grid.columns) == [10, 20, 30]
    for sym in SYMBOLS:
        for days in (10, 20, 30):  # median over the 2 policies = their mean
            pair = ranked[(ranked["symbol"] == sym) & (ranked["slow_days"] == days)]["sharpe"].to_numpy()
            assert len(pair) == 2 and grid.loc[sym, days] == pytest.approx(pair.mean(), rel=1e-15)
