"""``[[book.option]]`` runs: examples/book_options.toml through the console script (the option
legs in the report's attribution, checked against the records and the account's equity; the
option series stored), the config's option tables passed to the engine, and bad option tables
(exit 2, the key path named, before any data is loaded)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import test_runner_examples as examples_test
from runner_kit import ROOT
from test_runner_book import BOOK_TOML, run_cli
from test_runner_cli import invoke

EXAMPLE = ROOT / "examples" / "book_options.toml"
BTC, ETH = "BTC/USDT:USDT", "ETH/USDT:USDT"
HEDGED = "short-book-hedged"
DH = "btc-delta-hedged-put"


@pytest.fixture(scope="module")
def example_run(tmp_path_factory):
    """The example run once through the console script, in a fresh working directory."""
    tmp = tmp_path_factory.mktemp("book-options")
    proc = run_cli(EXAMPLE, tmp)
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (tmp / "reports").iterdir()
    assert proc.stdout == f"{run_dir / 'report.html'}\n"
    return proc, run_dir


def test_example_runs_and_the_report_has_the_option_legs(example_run):
    proc, run_dir = example_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    book = metrics["results"][HEDGED]
    legs = [f"{ETH} call(1.10)", f"{BTC} put(0.90)"]
    assert book["attribution"]["instruments"] == [BTC, ETH] + legs
    assert book["columns"] == [f"hedge={h}|policy=voltarget(0.5)" for h in (
        "none", "BTC:put(0.90)@0.5", "ETH:call(1.10)x1", "ETH:call(1.10)x1+BTC:put(0.90)@0.5")]
    assert book["meta"]["option_legs"] == legs and book["meta"]["options_collateral"] == [False] * 4
    for s in ("option_value", "delta_btc", "vega"):
        assert s in book["series"]
    html = (run_dir / "report.html").read_text()
    assert f'{ETH} call(1.10)' in html and "Attribution by instrument [USDT]" in html
    dh = metrics["results"][DH]
    assert dh["attribution"]["instruments"] == [BTC, f"{BTC} put(0.95)"]


def test_option_rows_add_up_and_match_the_records(example_run):
    """Per column: the instruments' PnL, option legs included, sums to the account's equity
    change; each leg's fees are its fill records' (instrument K + j); a leg left out of a column
    ('none') never trades; a call hedge column holds calls exactly while ETH is short; the
    stored option value is 0 without legs and positive with them."""
    _, run_dir = example_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    eq = pd.read_parquet(run_dir / "equity.parquet")
    ev = pd.read_parquet(run_dir / "events.parquet")
    for name in (HEDGED, DH):
        book = metrics["results"][name]
        att = book["attribution"]
        names = att["instruments"]
        k = len(book["meta"]["symbols"])
        for label in book["columns"]:
            col = att["columns"][label]
            g = eq[(eq["result"] == name) & (eq["column"] == label)].sort_values("bar")
            change = g["equity"].iloc[-1] - book["initial_capital"][label] - g["capital_added"].iloc[-1]
            assert sum(col[s]["pnl_total"] for s in names) == pytest.approx(change, rel=1e-9, abs=1e-6)
            mine = ev[(ev["result"] == name) & (ev["column"] == label) & (ev["kind"] == "fills")]
            for j, s in enumerate(names[k:]):
                fills = mine[mine["instrument"] == k + j]
                assert col[s]["pnl_fees"] == pytest.approx(fills["fee"].sum(), rel=1e-9, abs=1e-9)
                assert col[s]["pnl_funding"] == 0.0 and col[s]["pnl_liquidation"] == 0.0
                leg_in = ("call" in s and "call" in label) or ("put(0.90)" in s and "put" in label) or name == DH
                if leg_in:
                    assert len(fills) > 5 and col[s]["pnl_fees"] > 0 and col[s]["pnl_price"] != 0.0
                else:
                    assert len(fills) == 0 and col[s]["pnl_total"] == 0.0
            has_legs = "none" not in label
            assert (g["option_value"].max() > 0) == has_legs
            assert (g["vega"] >= 0).all()


def test_the_call_hedge_follows_the_eth_short(tmp_path, quiet):
    """From Python: in the call-hedge column the number of calls held after each fill equals the
    ETH short's coins (ratio 1) at the rebalances, up to the perp's lot rounding and the price
    difference between the signal close and the fill open."""
    from backtest.runner import execute, load_config

    cfg = load_config(EXAMPLE)
    cfg = cfg.model_copy(update={"book": [cfg.book[0]]})
    out = execute(cfg, reports_dir=tmp_path, log=quiet)
    run = out.books[HEDGED]
    pos = run.positions["position"]
    c = list(run.result.columns).index("hedge=ETH:call(1.10)x1|policy=voltarget(0.5)")
    eth, calls = pos[:, 1, c], pos[:, 2, c]
    fills = run.result.records["fills"]
    fills = fills[(fills["col"] == c) & (fills["instrument"] == 2)]
    bars = np.unique(fills["bar"])
    assert len(bars) > 50
    short = -eth[bars]
    assert (short > 0).all()
    np.testing.assert_allclose(calls[bars], short, rtol=0.02)
    assert run.result.series["option_value"].shape == pos[:, 0, :].shape


OPT = BOOK_TOML + """[[book.option]]
underlying = "ETH"
type = "call"
rule = "hedge"
ratio = 1.0
"""


@pytest.mark.parametrize("case, old, new, key, detail", [
    ("unknown key", 'ratio = 1.0\n', 'ratio = 1.0\nmoneyness_ = 1.1\n', "book[0].option[0].moneyness_",
     "unknown key (did you mean 'moneyness'?)"),
    ("bad type", 'type = "call"', 'type = "cal"', "book[0].option[0].type", "'cal' is not one of ['put', 'call']"),
    ("rule typo", 'rule = "hedge"', 'rule = "hedged"', "book[0].option[0].rule", "did you mean 'hedge'?"),
    ("missing ratio", 'ratio = 1.0\n', '', "book[0].option[0].ratio", "missing: rule 'hedge' needs ratio"),
    ("band on a hedge", 'ratio = 1.0\n', 'ratio = 1.0\nband = 0.1\n', "book[0].option[0].band",
     "0.1 is not used by rule 'hedge'"),
    ("negative exposure", 'rule = "hedge"\nratio = 1.0\n', 'rule = "overlay"\nexposure = -0.5\n',
     "book[0].option[0].exposure", "-0.5 must be a finite number >= 0"),
    ("delta hedge without band", 'rule = "hedge"\nratio = 1.0\n', 'rule = "delta_hedged"\nexposure = 1.0\n',
     "book[0].option[0].band", "missing: rule 'delta_hedged' needs band"),
    ("unknown underlying", 'underlying = "ETH"', 'underlying = "SOL"', "book[0].option[0].underlying",
     "'SOL' is not a symbol of the book"),
    ("bad moneyness", 'ratio = 1.0\n', 'ratio = 1.0\nmoneyness = 0\n', "book[0].option[0].moneyness",
     "PutSettings.moneyness=0.0 (column 0) must be a finite number > 0"),
    ("list of moneyness", 'ratio = 1.0\n', 'ratio = 1.0\nmoneyness = [1.1, 1.2]\n', "book[0].option[0].moneyness",
     "expected one number"),
    ("bad vol source", 'ratio = 1.0\n', 'ratio = 1.0\nvol_source = "implied"\n', "book[0].option[0].vol_source",
     "vol_source='implied' is not one of"),
    ("iv source without an index", 'ratio = 1.0\n', 'ratio = 1.0\nvol_source = "iv"\n',
     "book[0].option[0].vol_source", "'iv' prices the leg off an implied-volatility index"),
    ("bad expiry", 'ratio = 1.0\n', 'ratio = 1.0\nexpiry = "yearly"\n', "book[0].option[0].expiry",
     "expiry='yearly' is not one of"),
    ("zip of unequal grids", 'ratio = 1.0\n', 'ratio = [0.0, 1.0]\n[[book.option]]\nunderlying = "BTC"\n'
     'rule = "overlay"\nexposure = [0.0, 0.5, 1.0]\n', "book[0].options_grid",
     "grid='zip' needs every leg's list of one length"),
    ("hedge of a delta-hedged perp", 'ratio = 1.0\n', 'ratio = 1.0\n[[book.option]]\nunderlying = "ETH/USDT:USDT"\n'
     'rule = "delta_hedged"\nexposure = 1.0\nband = 0.05\n', "book[0].option[0].rule",
     "hedges ETH/USDT:USDT, whose perp is the delta hedge"),
    ("two legs of one name", 'ratio = 1.0\n', 'ratio = 1.0\n[[book.option]]\nunderlying = "ETH"\ntype = "call"\n'
     'rule = "overlay"\nexposure = 0.1\n', "book[0].option[1].name", "is already option[0]'s"),
    ("collateral without legs", '[[book.option]]\nunderlying = "ETH"\ntype = "call"\nrule = "hedge"\nratio = 1.0\n',
     'options_collateral = true\n', "book[0].options_collateral", "no [[book.option]] leg"),
])
def test_bad_option_tables_exit_2_naming_the_key(tmp_path, case, old, new, key, detail):
    text = OPT.replace(old, new, 1)
    assert text != OPT, case
    if case == "zip of unequal grids":
        text = text.replace('symbols = ["BTC/USDT:USDT", "ETH/USDT:USDT"]\n',
                            'symbols = ["BTC/USDT:USDT", "ETH/USDT:USDT"]\noptions_grid = "zip"\n')
    cfg = tmp_path / "run.toml"
    cfg.write_text(text)
    # the console script in a subprocess for the first case, in-process for the others (faster)
    if case == "unknown key":
        proc = run_cli(cfg, tmp_path)
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    else:
        r = invoke("run", cfg, "-o", tmp_path / "reports")
        code, out, err = r.exit_code, r.stdout, r.stderr
    assert code == 2, (case, err)
    assert out == ""
    lines = err.splitlines()
    assert lines[0].startswith("error: ") and key in lines[0], (case, err)  # before any data is loaded
    assert any(line.startswith(f"  {key}: ") and detail in line for line in lines[1:]), (case, err)
    assert not (tmp_path / "reports").exists() or not any((tmp_path / "reports").iterdir())


def test_every_book_option_key_is_documented():
    import backtest.runner.config as config

    doc = examples_test.runner_doc()
    assert examples_test.documented_keys(doc, "### `[[book.option]]`") == set(config.BookOptionConfig.model_fields)
    assert {"option", "options_collateral", "options_grid"} <= examples_test.documented_keys(doc, "### `[[book]]`")


def test_a_book_without_options_keeps_its_run_id_and_the_settings_reach_the_engine():
    """The option keys are left out of the hashed content when at their defaults; with legs,
    BookSettings gets the legs and options_collateral."""
    from backtest.runner import parse_config
    from backtest.runner.book import book_settings, option_rules

    plain = {"name": "b", "symbols": [BTC, ETH]}
    cfg = parse_config({"book": [plain]})
    assert set(cfg.content()["book"][0]) == {"name", "symbols", "legs", "strategy", "policies", "rebalance_hours",
                                             "intrabar", "account"}
    opt = {**plain, "options_collateral": True, "option": [{"underlying": "ETH", "type": "call", "rule": "hedge",
                                                           "ratio": 1.0, "moneyness": 1.2, "slippage": 0.01}]}
    cfg2 = parse_config({"book": [opt]})
    assert cfg2.run_id("fp") != cfg.run_id("fp")
    (rule,) = option_rules(cfg2.book[0])
    assert rule.leg.underlying == ETH and rule.leg.name == f"{ETH} call(1.20)"
    assert (rule.leg.put.option_type, rule.leg.put.moneyness, rule.leg.put.slippage) == ("call", 1.2, 0.01)
    assert rule.leg.put.expiry == "monthly"  # a key left out takes PutSettings' default
    s = book_settings(cfg2.book[0], [BTC, ETH], None, [rule.leg])
    assert s.options == [rule.leg] and s.options_collateral is True
