"""Stress on books: shocks and cascades on a book's symbols, the joint bootstrap, and ``[stress]``
running the ``[[book]]`` sections.

Independent checks: the gap factor on every later price of each symbol (to the last bit); the
joint bootstrap decoded from a hand book whose every bar's return names its history bar; the
cascade's betas from numpy's least squares on the log returns; a run's shocked book values
against the book engine called directly on data shocked symbol by symbol with the shock API."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from backtest.book import BookBars, simulate_book
from backtest.cli import app
from backtest.data import SAMPLE_ROOT, BookData, load_book_data
from backtest.market import load_market
from backtest.metrics import compute_metrics
from backtest.runner.book import book_settings, run_book
from backtest.runner.config import parse_config
from backtest.runner.labels import relabel
from backtest.runner.run import execute
from backtest.stress import Cascade, CascadeModel, Gap, ShockError
from backtest.stress.book import cascade_book, shock_book
from backtest.stress.pathruns import JointBootstrap, run_monte_carlo_book
from tests.stress.kit import hand_data, same_data

EX, BTC, ETH = "binanceusdm", "BTC/USDT:USDT", "ETH/USDT:USDT"
START, END = "2022-10-01", "2022-12-01"
BOOK = {"name": "bk", "symbols": [BTC, ETH], "strategy": {"name": "basket_short", "params": {"weighting": "equal"}},
        "policies": ["const(1)", "const(3)"], "rebalance_hours": 24,
        "account": {"initial_capital": 100000, "margin_mode": "cross", "leverage": 10}}
GAP = {"type": "gap", "at": "2022-10-20", "size": 0.1, "name": "gap"}
CASCADE = {"name": "casc", "at": "2022-11-09", "size": -0.08, "lookback_bars": 240}
DOC = {"title": "book stress", "data": {"exchange": EX, "symbol": BTC, "timeframe": "1h", "start": START, "end": END},
       "book": [BOOK],
       "stress": {"windows": [], "shock": [GAP, {"type": "funding_spike", "start": "2022-11-01", "days": 2,
                                                 "rate": -0.003, "symbols": [ETH], "name": "eth funding"}],
                  "cascade": [CASCADE],
                  "monte_carlo": {"paths": 4, "book_paths": 3, "block": 24, "horizon": 240, "seed": 2}}}


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("BACKTEST_DATA_DIR", str(tmp_path_factory.mktemp("empty-store")))


def _book() -> BookData:
    return load_book_data(EX, [BTC, ETH], "1h", START, END, root=SAMPLE_ROOT)


def _specs() -> list:
    return [load_market(EX, s) for s in (BTC, ETH)]


def _cfg():
    return parse_config(copy.deepcopy(DOC)).book[0]


# ---------------------------------------------------------------------------------------------
# the API

def test_a_zero_shock_or_cascade_gives_the_book_bit_for_bit():
    book, specs = _book(), _specs()
    same, specs_s = shock_book(Gap("2022-10-20", 0.0), book, specs)
    assert same is book and specs_s == specs
    bc = cascade_book(Cascade("2022-11-09", 0.0, CascadeModel(lookback_bars=240)), book)
    assert all(same_data(a, b) for a, b in zip(bc.book.data, book.data))
    base, _ = run_book(_cfg(), book, specs)
    again, _ = run_book(_cfg(), bc.book, specs)
    for s in ("equity", "position", "margin_ratio"):
        assert np.asarray(again.result.series[s]).tobytes() == np.asarray(base.result.series[s]).tobytes()


def test_a_gap_on_a_book_moves_each_symbol_s_later_prices_by_the_factor():
    book, specs = _book(), _specs()
    shocked, _ = shock_book(Gap("2022-10-20", 0.1), book, specs)
    at = pd.Timestamp("2022-10-20", tz="UTC")
    for a, b in zip(book.data, shocked.data):
        later = a.frame.index >= at
        assert later.any() and (~later).any()
        for c in ("open", "high", "low", "close", "mark_open", "mark_high", "mark_low", "mark_close"):
            x, y = a.frame[c].to_numpy(), b.frame[c].to_numpy()
            assert y[~later].tobytes() == x[~later].tobytes()
            assert y[later].tobytes() == (x[later] * 1.1).tobytes()
    # only ETH when named
    eth_only, _ = shock_book(Gap("2022-10-20", 0.1), book, specs, [ETH])
    assert eth_only.data[0] is book.data[0] and not same_data(eth_only.data[1], book.data[1])
    with pytest.raises(ShockError, match="symbol 'SOL/USDT:USDT' is not in the book"):
        shock_book(Gap("2022-10-20", 0.1), book, specs, ["SOL/USDT:USDT"])


def test_a_book_cascade_moves_the_others_by_their_beta_to_the_first_symbol():
    book = _book()
    bc = cascade_book(Cascade("2022-11-09", -0.08, CascadeModel(lookback_bars=240)), book)
    t = pd.Timestamp("2022-11-09", tz="UTC")
    r = [np.diff(np.log(md.frame["close"][md.frame.index < t].to_numpy()[-241:])) for md in book.data]
    beta = np.polyfit(r[0], r[1], 1)[0]
    assert bc.betas[ETH] == pytest.approx(beta, rel=1e-9) and bc.betas[BTC] == 1.0
    # BTC is Cascade.run's path; ETH's every later close is its own times 1 + beta (total move - 1)
    assert same_data(bc.book.data[0], bc.result.data)
    move = bc.result.data.frame["close"].to_numpy()[-1] / book.data[0].frame["close"].to_numpy()[-1] - 1.0
    eth = bc.book.data[1].frame["close"].to_numpy()[-1] / book.data[1].frame["close"].to_numpy()[-1] - 1.0
    assert eth == pytest.approx((1 + beta * -0.08) * (1 + beta * ((1 + move) / 0.92 - 1)) - 1, rel=1e-9)


def _coded(sign: float, n: int) -> list:
    """Closes whose return at bar i is 1 + sign * 1e-4 * i: the return names the bar."""
    c = [100.0]
    for i in range(1, n):
        c.append(c[-1] * (1.0 + sign * 1e-4 * i))
    return [(c[i - 1] if i else c[0], max(c[i - 1] if i else c[0], c[i]) * 1.001,
             min(c[i - 1] if i else c[0], c[i]) * 0.999, c[i]) for i in range(n)]


def test_the_joint_bootstrap_takes_every_symbol_s_bar_from_the_same_history_bar():
    n = 60
    a = hand_data(_coded(1.0, n)).replace(symbol="A/USDT:USDT")
    b = hand_data(_coded(-1.0, n)).replace(symbol="B/USDT:USDT")
    syms = ("A/USDT:USDT", "B/USDT:USDT")
    book = BookData(exchange="test", symbols=syms, data=(a, b),
                    bars=BookBars.from_legs(syms, [a.to_perp_bars(), b.to_perp_bars()]), notes=())
    boot = JointBootstrap(book, mean_block=3.0, seed=5)
    moved = 0
    for k in range(20):
        path = boot.path(k)
        src = []
        for md, sign in zip(path.data, (1.0, -1.0)):
            c = md.frame["close"].to_numpy()
            src.append(np.rint((c[1:] / c[:-1] - 1.0) / (sign * 1e-4)).astype(int))
        assert (src[0] == src[1]).all()  # each path bar: the same history bar for both symbols
        assert set(src[0]) <= set(range(1, n))
        moved += int((src[0] != np.arange(1, n)).any())
        assert path.bars.n == n
    assert moved == 20  # the paths are reshuffled, not the history


# ---------------------------------------------------------------------------------------------
# in a run

@pytest.fixture(scope="module")
def done(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("BACKTEST_DATA_DIR", str(tmp_path_factory.mktemp("empty")))
    out = execute(parse_config(copy.deepcopy(DOC)), reports_dir=tmp_path_factory.mktemp("reports"), log=lambda m: None)
    mp.undo()
    return out


def _direct(book: BookData, specs: list) -> dict:
    """The book engine called directly: the strategy's targets and simulate_book, USD metrics."""
    import strategies

    cfg = _cfg()
    target, policy, columns = strategies.build_book_targets(
        book, "basket_short", {"weighting": "equal"}, list(cfg.policies), specs=specs, rebalance_hours=24,
        lag=int(cfg.account.lag))
    res = simulate_book(book.bars, target, specs, book_settings(cfg, book.symbols, policy), columns=columns)
    out, _ = relabel(res.to_sim_result(), columns)
    return compute_metrics(out, currency="usd")["columns"]


def test_a_book_s_shocked_values_are_simulate_book_on_the_shocked_data(done):
    st = done.metrics["stress"]["results"]["bk"]
    book, specs = _book(), _specs()
    # the gap on both symbols, shocked symbol by symbol with the shock API
    g = Gap("2022-10-20", 0.1)
    data = [g.apply(md) for md in book.data]
    shocked = BookData(exchange=EX, symbols=book.symbols, data=tuple(data),
                       bars=BookBars.from_legs(book.symbols, [md.to_perp_bars() for md in data]), notes=())
    want = _direct(shocked, specs)
    plain = _direct(book, specs)
    assert set(st) == set(want) and len(want) == 2
    for lab, m in want.items():
        got = st[lab]["shocks"]["gap"]
        for k in ("total_return", "max_drawdown", "funding_net", "liquidations"):
            assert got[k] == m[k]
        assert st[lab]["history"]["total_return"] == plain[lab]["total_return"]
        assert got["total_return"] != plain[lab]["total_return"]
    # the cascade: cascade_book's data through the engine
    bc = cascade_book(Cascade("2022-11-09", -0.08, CascadeModel(lookback_bars=240)), book)
    for lab, m in _direct(bc.book, specs).items():
        assert st[lab]["shocks"]["casc"]["total_return"] == m["total_return"]
    betas = {s["name"]: s["books"] for s in done.metrics["stress"]["shocks"]}
    assert betas["casc"]["bk"]["betas"] == pytest.approx(bc.betas, rel=1e-15)
    # the ETH-only funding spike: the [data] symbol is BTC, so only the book runs under it
    assert {s["name"]: s["data"] for s in done.metrics["stress"]["shocks"]}["eth funding"] is False


def test_a_book_s_monte_carlo_is_run_monte_carlo_book_s(done):
    st = done.metrics["stress"]
    mc = run_monte_carlo_book(_cfg(), _book(), _specs(), n_paths=3, mean_block=24, horizon=240, seed=2)
    liq = mc.liquidation()
    assert st["monte_carlo"]["paths_by_result"] == {"bk": 3}
    for lab, row in liq.iterrows():
        got = st["results"]["bk"][lab]["monte_carlo"]
        p = row["liquidated"] / 3
        assert got["paths"] == 3 and got["liquidation_probability"] == p
        assert got["std_error"] == pytest.approx(np.sqrt(p * (1 - p) / 3), rel=1e-12)
    t = pd.read_parquet(done.out_dir / "stress.parquet")
    assert set(t[(t["kind"] == "monte_carlo")]["result"]) == {"bk"}
    assert set(t[(t["kind"] == "shock") & (t["result"] == "bk")]["scenario"]) == {"gap", "eth funding", "casc"}
    html = (done.out_dir / "report.html").read_text()
    assert "eth funding" in html


def test_an_unknown_symbol_on_a_shock_exits_2_naming_it(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(f'[data]\nstart = "{START}"\nend = "{END}"\n'
                   f'[[book]]\nname = "bk"\nsymbols = ["{BTC}", "{ETH}"]\n'
                   '[book.strategy]\nname = "basket_short"\n'
                   '[[stress.shock]]\ntype = "gap"\nat = 2022-10-20\nsize = 0.1\nsymbols = ["SOL/USDT:USDT"]\n')
    res = CliRunner().invoke(app, ["run", str(cfg), "-o", str(tmp_path / "r")])
    assert res.exit_code == 2, res.output
    assert "symbol 'SOL/USDT:USDT' is neither the [data] symbol nor a symbol of a [[book]]" in res.output
    assert not (tmp_path / "r").exists()


def test_a_bad_symbols_key_is_refused():
    doc = copy.deepcopy(DOC)
    doc["stress"]["cascade"][0]["symbols"] = "ETH/USDT:USDT"
    with pytest.raises(Exception, match="symbols='ETH/USDT:USDT' must be a list of distinct symbols"):
        parse_config(doc)
