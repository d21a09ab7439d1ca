"""Example configs stay valid; the explained main job is the main job; every key is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from backtest.runner import check_settings, load_config, main_job
from runner_kit import ROOT

EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))


def test_the_examples_exist():
    assert {p.name for p in EXAMPLES} >= {"main_job_explained.toml", "sweep_trend.toml", "coin_margined.toml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_valid_without_data(path):
    assert check_settings(load_config(path)) == []


def test_explained_main_job_is_the_main_job():
    explained = load_config(ROOT / "examples" / "main_job_explained.toml")
    assert explained == main_job()
    assert explained.run_id("fp") == main_job().run_id("fp")


def test_explained_main_job_comments_every_key():
    lines = (ROOT / "examples" / "main_job_explained.toml").read_text().splitlines()
    for line in lines:
        if re.match(r"^\s*[a-z_]+\s*=", line) and not line.strip().startswith("#"):
            key = line.split("=")[0].strip()
            # a comment on the line, or on the indented lines of the list it opens
            assert "#" in line or line.rstrip().endswith("["), f"key {key!r} has no comment: {line!r}"


COIN_DIR = ROOT / "backtest" / "data" / "sample" / "binancecoinm" / "BTC_USD_BTC"


def test_coin_margined_example_runs_on_the_sample_and_says_so():
    text = (ROOT / "examples" / "coin_margined.toml").read_text()
    head = text[: text.index("title")]
    assert "Runs offline from a fresh clone" in head
    assert "backtest download -e binancecoinm -s BTC/USD:BTC" in head  # how to get mark candles
    cfg = load_config(ROOT / "examples" / "coin_margined.toml")
    assert (cfg.data.exchange, cfg.data.symbol) == ("binancecoinm", "BTC/USD:BTC")
    # the sample has no mark candles and ten missing hours: both allowed, in the config, visibly
    assert cfg.data.allow_mark_fallback and cfg.data.allow_gaps
    assert (COIN_DIR / "ohlcv-1h.parquet").is_file() and (COIN_DIR / "funding.parquet").is_file()
    assert not list(COIN_DIR.glob("mark-*.parquet"))


@pytest.mark.slow  # about 80 s with a cold numba cache (a fresh clone), 7 s warm
def test_coin_margined_example_runs_offline_through_the_cli(tmp_path):
    """The console script in a subprocess, an empty default store (so the committed sample is
    read), no network: the notes say what was allowed, and the inverse result is in BTC.

    Independent checks: the bars and funding prints are counted from the sample's Parquet files;
    each bar's equity change without a fill or a payment is the inverse PnL
    ``Q * 100 * (1 / close_prev - 1 / close)`` BTC (Q contracts of 100 USD); each funding payment
    is ``-Q * 100 / mark * rate`` BTC.
    """
    import json
    import os
    import subprocess
    import sys

    import numpy as np
    import pandas as pd

    script = Path(sys.executable).with_name("backtest")
    cmd = [str(script)] if script.is_file() else [sys.executable, "-m", "backtest"]
    env = dict(os.environ, BACKTEST_DATA_DIR=str(tmp_path / "empty"))
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([*cmd, "run", str(ROOT / "examples" / "coin_margined.toml"), "-o", str(tmp_path / "r")],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (tmp_path / "r").iterdir()
    for said in (proc.stderr, "\n".join(json.loads((run_dir / "config.json").read_text())["data"]["notes"])):
        assert "loaded the committed sample" in said
        assert re.search(r"ohlcv-1h\.parquet: 10 missing bar\(s\) in 10 gap\(s\): 2021-08-01T00:00, "
                         r"2021-09-01T00:00", said)
        assert "mark missing 2021-07-02T00:00..2022-05-31T23:00: used trade prices (allow_mark_fallback=True)" in said
        assert "10 funding print(s) fall in missing bars and are not in the frame" in said

    lo, hi = (pd.Timestamp(t, tz="UTC").value // 1_000_000 for t in ("2021-07-02", "2022-06-01"))
    kl = pd.read_parquet(COIN_DIR / "ohlcv-1h.parquet")
    kl = kl[(kl["timestamp"] >= lo) & (kl["timestamp"] < hi)].reset_index(drop=True)
    prints = pd.read_parquet(COIN_DIR / "funding.parquet")["timestamp"]
    prints = prints[prints.isin(kl["timestamp"])]  # those in a missing bar are not paid
    meta = json.loads((run_dir / "config.json").read_text())
    assert meta["data"]["bars"] == len(kl) == 8006
    market = meta["market"]
    assert (market["inverse"], market["settle"], market["contract_size"]) == (True, "BTC", 100.0)

    eq = pd.read_parquet(run_dir / "equity.parquet")
    ev = pd.read_parquet(run_dir / "events.parquet")
    short = eq[eq["result"] == "inverse-short"]
    assert sorted(short["column"].unique()) == ["policy=const(1)", "policy=const(2)", "policy=const(3)"]
    for col, g in short.groupby("column"):
        g = g.sort_values("bar")
        np.testing.assert_array_equal(g["timestamp"].to_numpy(), kl["timestamp"].to_numpy())  # gaps kept
        np.testing.assert_array_equal(g["price_usd"].to_numpy(), kl["close"].to_numpy())
        q, e, p = g["position"].to_numpy(), g["equity"].to_numpy(), kl["close"].to_numpy()
        quiet = ((q[1:] == q[:-1]) & (q[1:] != 0) & (np.diff(g["cum_fees"].to_numpy()) == 0)
                 & (np.diff(g["cum_funding"].to_numpy()) == 0))
        assert quiet.sum() > 500, col
        np.testing.assert_allclose(np.diff(e)[quiet], (q[1:] * 100 * (1 / p[:-1] - 1 / p[1:]))[quiet],
                                   rtol=0, atol=1e-12)
        np.testing.assert_allclose(g["equity_usd"].to_numpy(), e * p, rtol=1e-12)
        fund = ev[(ev["result"] == "inverse-short") & (ev["kind"] == "funding") & (ev["column"] == col)]
        # every print of the bars is paid, but the first one (00:00 of the first bar, still flat)
        assert fund["timestamp"].tolist() == prints.tolist()[1:]
        np.testing.assert_allclose(fund["amount"], -fund["position"] * 100 / fund["mark"] * fund["rate"],
                                   rtol=1e-12, atol=0)
    # const(1) in a BTC account is USD-neutral: its USD value moves a few percent while BTC
    # ranged over a factor of 2.6 (33,757 .. 69,186 .. 25,175)
    one = short[short["column"] == "policy=const(1)"]["equity_usd"]
    assert kl["close"].max() / kl["close"].min() > 2.5 and one.max() / one.min() < 1.1
    puts = eq[eq["result"] == "coin-puts-10otm"]
    assert len(puts) == len(kl) and np.isfinite(puts["equity"]).all()


def runner_doc() -> str:
    """docs/runner.md, or the README once it has been merged there."""
    path = ROOT / "docs" / "runner.md"
    return (path if path.is_file() else ROOT / "README.md").read_text()


SECTIONS = {
    "### Top level": "RunConfig", "### `[data]`": "DataConfig", "### `[[perp]]`": "PerpConfig",
    "### `[perp.strategy]`": "StrategyConfig", "### `[perp.account]`": "AccountConfig",
    "### `[[puts]]`": "PutsConfig", "### `[[products]]`": "ProductConfig", "### `[sweep]`": "SweepConfig",
}


def documented_keys(doc: str, heading: str) -> set[str]:
    """Keys in the first cell of the table rows of one section of docs/runner.md."""
    start = doc.index(heading)
    end = doc.find("\n#", start + len(heading))
    section = doc[start:end if end >= 0 else None]
    keys = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            keys |= set(re.findall(r"`([a-z_]+)`", line.split("|")[1]))
    return keys


@pytest.mark.parametrize("heading", list(SECTIONS))
def test_every_config_key_is_documented_in_its_table(heading):
    import backtest.runner.config as config

    model = getattr(config, SECTIONS[heading])
    doc = runner_doc()
    assert documented_keys(doc, heading) == set(model.model_fields)
