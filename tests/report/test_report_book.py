"""A book in a report: the per-instrument attribution on a hand-made 4-bar book (numbers worked
out by hand below), its table on the page, kept by a re-render from the stored files; results
that are not books are unchanged."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from backtest.report import collect, load_stored, rerender, write_report  # noqa: E402
from backtest.report.attribution import attribution  # noqa: E402
from backtest.report.collect import ReportError  # noqa: E402
from backtest.result import SimResult  # noqa: E402
from report_factories import from_equity, perp_result  # noqa: E402

SYMBOLS = ("BTC/USDT:USDT", "ETH/USDT:USDT")


def hand_book() -> dict[str, np.ndarray]:
    """Two instruments, one column, four bars (cumulative PnL series, settlement currency).

    BTC: short 1 BTC at 100 (fee 0.05), price 100 -> 98 -> 97 -> 99: price PnL 0, 2, 3, 1;
         funding +0.01 at bar 2.
    ETH: listed from bar 1; short 10 ETH at 10 (fee 0.05), price 10 -> 11 -> 12: price PnL 0, -10, -20;
         liquidated at bar 3 at 12 with a clearance fee 0.6: its price PnL stays -20 (realised),
         pnl_liquidation -0.6, notional 0 after.
    """
    notional = np.array([[[-100.0], [0.0]], [[-98.0], [-100.0]], [[-97.0], [-110.0]], [[-99.0], [0.0]]])
    pnl_price = np.array([[[0.0], [0.0]], [[2.0], [0.0]], [[3.0], [-10.0]], [[1.0], [-20.0]]])
    pnl_funding = np.array([[[0.0], [0.0]], [[0.0], [0.0]], [[0.01], [0.0]], [[0.01], [0.0]]])
    pnl_fees = np.array([[[0.05], [0.0]], [[0.05], [0.05]], [[0.05], [0.05]], [[0.05], [0.05]]])
    pnl_liq = np.array([[[0.0], [0.0]], [[0.0], [0.0]], [[0.0], [0.0]], [[0.0], [-0.6]]])
    return {"notional": notional, "pnl_price": pnl_price, "pnl_funding": pnl_funding, "pnl_fees": pnl_fees,
            "pnl_liquidation": pnl_liq}


def test_attribution_of_a_hand_made_book():
    block = attribution(hand_book(), SYMBOLS, ["c0"], "USDT")
    assert block["currency"] == "USDT" and block["instruments"] == list(SYMBOLS)
    btc, eth, tot = (block["columns"]["c0"][k] for k in (*SYMBOLS, "total"))
    # BTC: 1 + 0.01 - 0.05 + 0 = 0.96; notional mean (-100 - 98 - 97 - 99) / 4 = -98.5
    assert btc == pytest.approx({"pnl_price": 1.0, "pnl_funding": 0.01, "pnl_fees": 0.05, "pnl_liquidation": 0.0,
                                 "pnl_total": 0.96, "avg_notional": -98.5, "avg_abs_notional": 98.5,
                                 "final_notional": -99.0}, abs=1e-12)
    # ETH: -20 + 0 - 0.05 - 0.6 = -20.65; notional mean (0 - 100 - 110 + 0) / 4 = -52.5 (unlisted and
    # liquidated bars count as 0)
    assert eth == pytest.approx({"pnl_price": -20.0, "pnl_funding": 0.0, "pnl_fees": 0.05, "pnl_liquidation": -0.6,
                                 "pnl_total": -20.65, "avg_notional": -52.5, "avg_abs_notional": 52.5,
                                 "final_notional": 0.0}, abs=1e-12)
    assert tot["pnl_total"] == pytest.approx(0.96 - 20.65, abs=1e-12)
    assert tot["avg_abs_notional"] == pytest.approx(98.5 + 52.5, abs=1e-12)
    assert list(btc) == list(block["fields"])  # every field documented, in the table's order


def test_attribution_refuses_a_missing_series_or_a_wrong_shape():
    pos = hand_book()
    del pos["pnl_fees"]
    with pytest.raises(ReportError, match=r"needs the position series \['pnl_fees'\]"):
        attribution(pos, SYMBOLS, ["c0"], "USDT")
    with pytest.raises(ReportError, match=r"shape \(4, 2, 1\); expected \(n_bars, 2 instruments, 2 columns\)"):
        attribution(hand_book(), SYMBOLS, ["c0", "c1"], "USDT")


@dataclass(frozen=True)
class FakeBook:
    """What a report takes as a book: ``to_sim_result()``, ``positions``, ``symbols``."""

    result: SimResult
    positions: dict
    symbols: tuple

    def to_sim_result(self) -> SimResult:
        return self.result


def book_result() -> FakeBook:
    pos = hand_book()
    total = (pos["pnl_price"] + pos["pnl_funding"] - pos["pnl_fees"] + pos["pnl_liquidation"]).sum(axis=1)
    res = from_equity(1000.0 + total[:, 0], kind="book", columns=["c0"], initial=[1000.0])
    return FakeBook(res, pos, SYMBOLS)


def test_write_report_shows_the_attribution_and_rerender_keeps_it(tmp_path):
    path = write_report({"book": book_result(), "perp": perp_result()}, tmp_path / "r", title="t")
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics["results"]["book"]["kind"] == "book"
    att = metrics["results"]["book"]["attribution"]
    assert att["columns"]["c0"]["ETH/USDT:USDT"]["pnl_total"] == pytest.approx(-20.65, abs=1e-12)
    # the account's equity change is the sum of the instruments' PnL (the book was built so)
    assert metrics["results"]["book"]["settle"]["columns"]["c0"]["final_equity"] == pytest.approx(
        1000.0 + att["columns"]["c0"]["total"]["pnl_total"], abs=1e-9)
    assert "attribution" not in metrics["results"]["perp"]  # a result that is not a book is unchanged
    html = (path / "report.html").read_text()
    assert html.count("Attribution by instrument [USDT]") == 1
    assert 'data-col="c0" data-instrument="ETH/USDT:USDT"\n            data-key="pnl_liquidation"' in html
    assert ">-0.600000<" in html  # ETH's liquidation PnL, formatted as money
    (path / "report.html").unlink()
    rerender(path)
    again = (path / "report.html").read_text()
    assert again.count("Attribution by instrument [USDT]") == 1 and ">-0.600000<" in again
    assert load_stored(path).metrics["results"]["book"]["attribution"] == att


def test_collect_without_books_has_no_attribution():
    run = collect({"perp": perp_result()}, title="t")
    assert "attribution" not in run.metrics["results"]["perp"]
