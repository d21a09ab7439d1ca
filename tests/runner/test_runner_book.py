"""``[[book]]`` runs: the example from the CLI, the attribution checked against the records and
the account's equity, a coin-margined book, config errors (exit 2, one line, the key path)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import test_runner_examples as examples_test
from runner_kit import ROOT
from test_runner_cli import backtest_cmd, invoke, subprocess_env

EXAMPLE = ROOT / "examples" / "book_btc_eth.toml"
SYMBOLS = ["BTC/USDT:USDT", "ETH/USDT:USDT"]


def run_cli(config: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*backtest_cmd(), "run", str(config), "-o", str(tmp_path / "reports")],
                          capture_output=True, text=True, cwd=tmp_path, env=subprocess_env(tmp_path / "empty"),
                          timeout=300)


@pytest.fixture(scope="module")
def example_run(tmp_path_factory):
    """The example run once through the console script, in a fresh working directory."""
    tmp = tmp_path_factory.mktemp("book-example")
    proc = run_cli(EXAMPLE, tmp)
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (tmp / "reports").iterdir()
    assert proc.stdout == f"{run_dir / 'report.html'}\n"
    return proc, run_dir


def test_example_runs_offline_and_the_report_has_the_book(example_run):
    proc, run_dir = example_run
    lines = proc.stderr.splitlines()
    # a book-only run loads the book's symbols, not [data].symbol
    assert lines[0] == ("loading book btc-eth-short: binanceusdm BTC/USDT:USDT, ETH/USDT:USDT 1h "
                        "(2022-03-01 .. 2022-07-01)")
    assert "simulating btc-eth-short" in lines and "  6 column(s)" in lines
    metrics = json.loads((run_dir / "metrics.json").read_text())
    book = metrics["results"]["btc-eth-short"]
    assert book["kind"] == "book" and book["currency"] == "USDT"
    assert book["meta"]["symbols"] == SYMBOLS
    # 2 weightings x 3 policies, strategy outer, policy inner
    assert book["columns"] == [f"weighting={w}|policy={p}" for w in ("beta", "equal") for p in (
        "voltarget(0.5)", "min(voltarget(0.8),grosscap(2),liqcap(4,equity=100000))", "drawdown(0.2,leverage=2)")]
    assert {r["result"] for r in metrics["comparison"]["rows"]} == {"btc-eth-short"}
    assert len(metrics["comparison"]["rows"]) == 6
    # the loader's notes (sample used) are in the report, prefixed with the book's name
    assert "btc-eth-short: BTC/USDT:USDT: binanceusdm BTC/USDT:USDT is not in the default store" in metrics["notes"]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["data"] is None and config["market"] is None
    prov = config["books"]["btc-eth-short"]
    assert list(prov["symbols"]) == SYMBOLS and prov["bars"] == 2928
    assert prov["first_bar"].startswith("2022-03-01 00:00") and prov["last_bar"].startswith("2022-06-30 23:00")
    html = (run_dir / "report.html").read_text()
    assert "Attribution by instrument [USDT]" in html
    assert html.count('data-instrument="total"') == 6 * 8  # one total row per column, 8 fields


def test_attribution_adds_up_to_the_account_and_matches_the_records(example_run):
    """Per column: the instruments' PnL sums to the account's equity change (equity identity,
    from equity.parquet); each instrument's fees and funding equal the sums of its fill and
    funding records (events.parquet); the notional averages and finals equal the account's
    gross and net notional series."""
    _, run_dir = example_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    book = metrics["results"]["btc-eth-short"]
    att = book["attribution"]
    assert att["currency"] == "USDT" and att["instruments"] == SYMBOLS
    eq = pd.read_parquet(run_dir / "equity.parquet")
    ev = pd.read_parquet(run_dir / "events.parquet")
    eq, ev = eq[eq["result"] == "btc-eth-short"], ev[ev["result"] == "btc-eth-short"]
    for label in book["columns"]:
        col = att["columns"][label]
        g = eq[eq["column"] == label].sort_values("bar")
        assert len(g) == 2928
        # equity identity: final equity = initial capital + capital added + sum of the instruments' PnL
        change = g["equity"].iloc[-1] - book["initial_capital"][label] - g["capital_added"].iloc[-1]
        parts = sum(col[s]["pnl_total"] for s in SYMBOLS)
        assert parts == pytest.approx(change, rel=1e-9, abs=1e-6)
        assert col["total"]["pnl_total"] == pytest.approx(change, rel=1e-9, abs=1e-6)
        assert abs(change) > 1000  # a four-month leveraged book moved: the identity is not 0 == 0
        for s in SYMBOLS:
            v = col[s]
            assert v["pnl_total"] == pytest.approx(
                v["pnl_price"] + v["pnl_funding"] - v["pnl_fees"] + v["pnl_liquidation"], rel=1e-12)
        for k, s in enumerate(SYMBOLS):
            mine = ev[(ev["column"] == label) & (ev["instrument"] == k)]
            fees = mine[mine["kind"] == "fills"]["fee"].sum()
            funding = mine[mine["kind"] == "funding"]["amount"].sum()
            assert fees > 0 and col[s]["pnl_fees"] == pytest.approx(fees, rel=1e-9)
            assert funding != 0 and col[s]["pnl_funding"] == pytest.approx(funding, rel=1e-9)
            assert col[s]["pnl_liquidation"] == 0.0  # no liquidation in this run (checked below)
            assert col[s]["final_notional"] < 0 and col[s]["avg_notional"] < 0  # both legs short
        assert book["settle"]["columns"][label]["liquidations"] == 0
        # the account's cumulative fees and funding are the instruments' sums
        assert g["cum_fees"].iloc[-1] == pytest.approx(sum(col[s]["pnl_fees"] for s in SYMBOLS), rel=1e-9)
        assert g["cum_funding"].iloc[-1] == pytest.approx(sum(col[s]["pnl_funding"] for s in SYMBOLS), rel=1e-9)
        # notional: sum of |avg| = mean gross notional, sum of finals = net notional at the last close
        assert col["total"]["avg_abs_notional"] == pytest.approx(g["gross_notional"].mean(), rel=1e-9)
        assert col["total"]["final_notional"] == pytest.approx(g["notional"].iloc[-1], rel=1e-9)


def test_equity_parquet_has_gross_leverage_and_adverse_margin_ratio(example_run):
    """``leverage`` of a book is the gross leverage sum |N_k| / equity; ``margin_ratio_adverse``
    is stored next to the close's ``margin_ratio``."""
    _, run_dir = example_run
    eq = pd.read_parquet(run_dir / "equity.parquet")
    g = eq[eq["result"] == "btc-eth-short"]
    np.testing.assert_allclose(g["leverage"], g["gross_notional"] / g["equity"], rtol=1e-12)
    for name in ("margin_ratio", "margin_ratio_adverse"):
        assert np.isfinite(g[name]).all() and (g[name] >= 0).all() and (g[name] < 1).all()
    held = g["gross_notional"] > 0
    assert held.mean() > 0.75  # flat only while the 30-day estimates warm up
    assert (g.loc[held, "margin_ratio_adverse"] > 0).all()
    # a separate series, not a copy of the close's: it differs wherever prices moved in the bar
    assert (g.loc[held, "margin_ratio_adverse"] != g.loc[held, "margin_ratio"]).mean() > 0.9
    # the drawdown policy levers up to 2x gross: leverage reaches it, the vol targets stay below
    lev = g.groupby("column")["leverage"].max()
    assert lev["weighting=beta|policy=drawdown(0.2,leverage=2)"] > 1.9


COIN = """\
title = "coin book"
[data]
exchange = "binancecoinm"
timeframe = "1h"
start = "2022-01-01"
end = "2022-03-01"
allow_mark_fallback = true
allow_gaps = true
[[book]]
name = "coin-book"
symbols = ["BTC/USD:BTC"]
strategy = { name = "basket_short", params = { weighting = "equal", warmup_days = 5 } }
policies = ["const(1)", "const(2)"]
rebalance_hours = 24
account = { initial_capital = 1, leverage = 10 }
"""


def test_coin_margined_book_runs_with_its_notes(tmp_path):
    """An inverse book settles in BTC; the sample's missing mark and gap are noted, not hidden."""
    cfg = tmp_path / "coin.toml"
    cfg.write_text(COIN)
    proc = run_cli(cfg, tmp_path)
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (tmp_path / "reports").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    book = metrics["results"]["coin-book"]
    assert book["kind"] == "book" and book["currency"] == "BTC"
    assert "coin-book: BTC/USD:BTC: mark missing" in metrics["notes"]
    assert "1 missing bar(s) in 1 gap(s): 2022-02-01T00:00" in metrics["notes"]
    eq = pd.read_parquet(run_dir / "equity.parquet")
    g = eq[eq["column"] == "policy=const(1)"].sort_values("bar")
    # USD per BTC is the instrument's mark close (trade close here: mark fallback)
    assert (g["price_usd"] > 30_000).all() and (g["price_usd"] < 50_000).all()
    np.testing.assert_allclose(g["equity_usd"], g["equity"] * g["price_usd"], rtol=1e-12)
    att = book["attribution"]["columns"]["policy=const(1)"]
    change = g["equity"].iloc[-1] - 1.0 - g["capital_added"].iloc[-1]
    assert att["BTC/USD:BTC"]["pnl_total"] == pytest.approx(change, rel=1e-9, abs=1e-12)


BOOK_TOML = """\
title = "bad book"
[data]
start = "2022-03-01"
end = "2022-04-01"
[[book]]
name = "b"
symbols = ["BTC/USDT:USDT", "ETH/USDT:USDT"]
"""


@pytest.mark.parametrize("case, extra, head, detail", [
    ("unknown leg key", '[book.legs."ETH/USDT:USDT"]\nmargin_mod = "isolated"\n',
     'book[0].legs."ETH/USDT:USDT".margin_mod',
     '  book[0].legs."ETH/USDT:USDT".margin_mod: unknown key (did you mean \'margin_mode\'?)'),
    ("bad margin mode", '[book.legs."ETH/USDT:USDT"]\nmargin_mode = "isolate"\n',
     'book[0].legs."ETH/USDT:USDT".margin_mode', "  book[0].legs.\"ETH/USDT:USDT\".margin_mode: 'isolate' is not one "
     "of ['cross', 'isolated'] (did you mean 'isolated'?)"),
    ("bad intrabar", 'intrabar = "apart"\n', "book[0].intrabar", "  book[0].intrabar: 'apart' is not one of"),
    ("account typo", "[book.account]\nleverag = 3\n", "book[0].account.leverag",
     "  book[0].account.leverag: unknown key (did you mean 'leverage'?)"),
    ("leg of another symbol", '[book.legs."SOL/USDT:USDT"]\nleverage = 3\n',
     "1 problem(s) in the run's settings: book[0].legs.\"SOL/USDT:USDT\"",
     '  book[0].legs."SOL/USDT:USDT": not a symbol of the book'),
    ("unknown book strategy", 'strategy = { name = "basket_shrt" }\n',
     "1 problem(s) in the run's settings: book[0].strategy.name", "  book[0].strategy.name: "),
    ("bad strategy param", 'strategy = { name = "basket_short", params = { weighting = "beta2" } }\n',
     "1 problem(s) in the run's settings: book[0].strategy.params", "  book[0].strategy.params: "),
    ("bad book policy", 'policies = ["voltarget(0.5)", "volatarget(0.5)"]\n',
     "1 problem(s) in the run's settings: book[0].policies[1]", "  book[0].policies[1]: "),
    ("gate params without a gate", 'strategy = { name = "basket_short", gate_params = { slow_days = 20 } }\n',
     "1 problem(s) in the run's settings: book[0].strategy", "  book[0].strategy: gate_params/gate_symbol given"),
    ("symbol twice", 'symbols = ["BTC/USDT:USDT", "BTC/USDT:USDT"]\n',
     "1 problem(s) in the run's settings: book[0].symbols", "  book[0].symbols: symbols ['BTC/USDT:USDT'] appear "
     "more than once"),
    ("name used twice", '[[perp]]\nname = "b"\n', "1 problem(s) in the run's settings: book[0].name",
     "  book[0].name: 'b' is already used by perp[0]; give every simulation a distinct name"),
])
def test_book_config_errors_exit_2_with_one_line_and_the_key_path(tmp_path, case, extra, head, detail):
    text = BOOK_TOML + extra
    if extra.startswith(("symbols", "strategy", "policies", "intrabar")):  # replace, not add, a book key
        key = extra.split(" =")[0]
        text = "\n".join(line for line in BOOK_TOML.splitlines() if not line.startswith(key + " ")) + "\n" + extra
    cfg = tmp_path / "run.toml"
    cfg.write_text(text)
    # the console script in a subprocess for the first case, in-process for the others (faster)
    proc = run_cli(cfg, tmp_path) if case == "unknown leg key" else None
    code, out, err = ((proc.returncode, proc.stdout, proc.stderr) if proc is not None else
                      (lambda r: (r.exit_code, r.stdout, r.stderr))(invoke("run", cfg, "-o", tmp_path / "reports")))
    assert code == 2, (case, err)
    assert out == ""
    lines = err.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and head in errors[0], (case, err)
    assert lines[0] == errors[0]  # checked before any data is loaded
    after = lines[1:]
    assert all(line.startswith("  ") for line in after), err
    if detail is not None:
        assert any(line.startswith(detail) for line in after), err
    assert not (tmp_path / "reports").exists() or not any((tmp_path / "reports").iterdir())


BOOK_SECTIONS = {"### `[[book]]`": "BookConfig", "### `[book.strategy]`": "BookStrategyConfig",
                 '### `[book.legs."<symbol>"]`': "LegConfig"}


@pytest.mark.parametrize("heading", list(BOOK_SECTIONS))
def test_every_book_key_is_documented(heading):
    import backtest.runner.config as config

    model = getattr(config, BOOK_SECTIONS[heading])
    assert examples_test.documented_keys(examples_test.runner_doc(), heading) == set(model.model_fields)


def test_top_level_doc_lists_book():
    assert "book" in examples_test.documented_keys(examples_test.runner_doc(), "### Top level")


def test_run_ids_without_books_are_unchanged():
    """``book`` is left out of the hashed content when empty: older run ids stay valid."""
    from backtest.runner import parse_config
    from runner_kit import TINY

    cfg = parse_config(TINY)
    assert "book" not in cfg.content()
    with_book = parse_config({**TINY, "book": [{"name": "b", "symbols": SYMBOLS}]})
    assert with_book.content()["book"][0]["symbols"] == SYMBOLS
    assert with_book.run_id("fp") != cfg.run_id("fp")


def test_python_api_returns_the_book(tmp_path, quiet):
    """execute() from Python: the outcome holds the book's SimResult and its per-position series."""
    from backtest.runner import execute, load_config

    cfg = load_config(EXAMPLE)
    cfg = cfg.model_copy(update={"book": [cfg.book[0].model_copy(update={"policies": ["const(1)"]})]})
    out = execute(cfg, reports_dir=tmp_path, log=quiet)
    run = out.books["btc-eth-short"]
    assert out.results["btc-eth-short"] is run.result and run.symbols == tuple(SYMBOLS)
    assert list(run.result.columns) == ["weighting=beta|policy=const(1)", "weighting=equal|policy=const(1)"]
    assert run.positions["notional"].shape == (2928, 2, 2)
    # the net notional series is the sum of the positions' notionals
    np.testing.assert_allclose(run.result.series["notional"], run.positions["notional"].sum(axis=1), rtol=1e-12)
