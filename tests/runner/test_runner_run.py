"""execute(): run ids from config content and data, the output folder, data errors."""

from __future__ import annotations

import copy
import json

import pandas as pd
import pytest

from backtest.data import DataValidationError
from backtest.runner import execute, parse_config
from runner_kit import TINY, tree

FILES = {"config.json", "equity.parquet", "events.parquet", "metrics.json", "periods.parquet",
         "drawdowns.parquet", "trades.parquet", "report.html"}


def run(doc: dict, reports, log=lambda m: None):
    return execute(parse_config(doc), reports_dir=reports, log=log)


def test_output_folder_layout_and_config_json(tmp_path):
    out = run(TINY, tmp_path)
    assert out.out_dir == (tmp_path / out.run_id).resolve()
    assert tree(tmp_path) == {out.run_id} | {f"{out.run_id}/{f}" for f in FILES}
    cfg = json.loads((out.out_dir / "config.json").read_text())
    assert cfg["run_id"] == out.run_id
    assert cfg["config"]["data"]["start"] == "2022-01-01"
    assert cfg["data"]["bars"] == 354  # 59 days x 6 bars
    assert cfg["data"]["first_bar"].startswith("2022-01-01 00:00") and cfg["data"]["last_bar"].startswith(
        "2022-02-28 20:00")
    assert len(cfg["data"]["fingerprint"]) == 64 and len(cfg["market"]["fingerprint"]) == 64
    # the id is derived from exactly these inputs
    fp = f"data:{cfg['data']['fingerprint']}|market:{cfg['market']['fingerprint']}"
    assert parse_config(TINY).run_id(fp) == out.run_id


def test_same_config_and_data_same_id_and_folder(tmp_path):
    a = run(TINY, tmp_path)
    b = run(copy.deepcopy(TINY), tmp_path)
    assert a.run_id == b.run_id and a.out_dir == b.out_dir
    assert len([p for p in tmp_path.iterdir()]) == 1


def test_another_date_range_gives_another_id(tmp_path):
    doc = copy.deepcopy(TINY)
    doc["data"]["end"] = "2022-02-15"
    assert run(doc, tmp_path).run_id != run(TINY, tmp_path).run_id


def test_changed_data_gives_another_id(tmp_path, sample_copy):
    """Same config text, data store edited: one 4h close differs -> another id."""
    doc = copy.deepcopy(TINY)
    doc["data"]["root"] = str(sample_copy)
    first = run(doc, tmp_path / "r")
    path = sample_copy / "binanceusdm" / "BTC_USDT_USDT" / "ohlcv-1h.parquet"
    df = pd.read_parquet(path)
    # 2022-02-01 03:00, the last hour of the 4h bar 00:00-04:00: its close is that bar's close
    i = int((df["timestamp"] == 1643684400000).to_numpy().argmax())
    df.loc[i, "close"] = df.loc[i, "close"] * (1 + 1e-9)
    df.to_parquet(path, index=False)
    second = run(doc, tmp_path / "r")
    assert first.run_id != second.run_id
    assert first.run_id.split("-")[0] == second.run_id.split("-")[0] == "tiny"


def test_data_outside_the_range_does_not_change_the_id(tmp_path, sample_copy):
    doc = copy.deepcopy(TINY)
    doc["data"]["root"] = str(sample_copy)
    first = run(doc, tmp_path / "r")
    path = sample_copy / "binanceusdm" / "BTC_USDT_USDT" / "ohlcv-1h.parquet"
    df = pd.read_parquet(path)
    df.loc[df["timestamp"] >= 1672531200000, "close"] *= 1.01  # 2023 only: outside 2022-01..02
    df.to_parquet(path, index=False)
    assert run(doc, tmp_path / "r").run_id == first.run_id


@pytest.mark.parametrize("change, exc, text", [
    (lambda d: d["data"].update(symbol="XRP/USDT:USDT"), FileNotFoundError, "no binanceusdm XRP/USDT:USDT candles"),
    (lambda d: d["data"].update(start="2030-01-01", end="2030-02-01"), DataValidationError,
     "no bars in the requested window"),
    (lambda d: d["data"].update(timeframe="7m"), FileNotFoundError, "usable for timeframe 7m"),
])
def test_data_errors_name_the_problem_and_write_nothing(tmp_path, change, exc, text):
    doc = copy.deepcopy(TINY)
    change(doc)
    with pytest.raises(exc, match=text):
        run(doc, tmp_path / "reports")
    assert not (tmp_path / "reports").exists()


def test_progress_lines(tmp_path):
    lines: list[str] = []
    run(TINY, tmp_path, log=lines.append)
    assert lines[0] == "loading binanceusdm BTC/USDT:USDT 4h (2022-01-01 .. 2022-03-01)"
    assert "simulating trend" in lines and "  4 column(s)" in lines
    assert lines[-2].startswith("writing report ") and lines[-1].startswith("done in ")
