"""periods.parquet and drawdowns.parquet next to the other machine outputs, and html=False."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import backtest.report.store as store
from backtest.report import load_stored, rerender, write_report
from report_factories import from_equity, perp_result, put_result

H = 3_600_000


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    # 'two months' crosses March -> April 2022: hourly bars from 2022-03-31 20:00
    eq = np.array([100.0, 110.0, 99.0, 120.0, 90.0, 135.0])
    results = {"perp": perp_result(), "put": put_result(),
               "two months": from_equity(eq, start="2022-03-31 21:00", columns=["a"])}
    out = write_report(results, tmp_path_factory.mktemp("periods") / "run", title="periods")
    return out, results


def test_period_files_are_written_and_read_back(stored):
    out, _ = stored
    assert {"periods.parquet", "drawdowns.parquet"} <= {p.name for p in out.iterdir()}
    run = load_stored(out)
    pd.testing.assert_frame_equal(run.periods, pd.read_parquet(out / "periods.parquet"))
    pd.testing.assert_frame_equal(run.drawdowns, pd.read_parquet(out / "drawdowns.parquet"))


def test_stored_periods_of_a_hand_path(stored):
    out, _ = stored
    p = pd.read_parquet(out / "periods.parquet")
    two = p[(p["result"] == "two months") & (p["basis"] == "settle")]
    months = two[two["freq"] == "month"]
    # bars open 21:00, 22:00, 23:00 on March 31st (equity 100, 110, 99), then April 1st (120, 90, 135)
    assert months["period"].tolist() == ["2022-03", "2022-04"]
    np.testing.assert_allclose(months["return"], [99 / 100 - 1, 135 / 99 - 1], rtol=1e-12)
    assert months["partial"].tolist() == [True, True] and months["bars"].tolist() == [3, 3]
    years = two[two["freq"] == "year"]
    np.testing.assert_allclose(years["return"], [135 / 100 - 1], rtol=1e-12)
    d = pd.read_parquet(out / "drawdowns.parquet")
    dd = d[(d["result"] == "two months") & (d["basis"] == "settle")]
    # spells: 110 -> 99 (10 %) recovered at 120; 120 -> 90 (25 %) recovered at 135
    np.testing.assert_allclose(dd["depth"], [0.25, 0.1], rtol=1e-12)
    t0 = int(pd.Timestamp("2022-03-31 21:00", tz="UTC").value // 10**6)
    assert dd["peak_ms"].tolist() == [t0 + 4 * H, t0 + 2 * H]
    assert dd["trough_ms"].tolist() == [t0 + 5 * H, t0 + 3 * H]
    assert dd["recovery_ms"].tolist() == [t0 + 6 * H, t0 + 4 * H]


def test_usd_basis_periods_of_a_coin_settled_result(stored):
    """The put settles in BTC and BTC falls: its USD return is equity_usd's, not the BTC equity's."""
    out, results = stored
    put = results["put"]
    p = pd.read_parquet(out / "periods.parquet")
    rows = p[(p["result"] == "put") & (p["freq"] == "year")].set_index("basis")["return"]
    eq_usd = put.series["equity"][:, 0] * put.price_usd
    assert rows["usd"] == pytest.approx(eq_usd[-1] / (put.initial_capital[0] * put.price_usd[0]) - 1, rel=1e-12)
    assert rows["settle"] == pytest.approx(put.series["equity"][-1, 0] / put.initial_capital[0] - 1, rel=1e-12)


def test_a_folder_without_period_files_recomputes_them(stored, tmp_path):
    out, _ = stored
    old = tmp_path / "old"
    old.mkdir()
    for f in store.REQUIRED:
        (old / f).write_bytes((out / f).read_bytes())
    run = load_stored(old)
    pd.testing.assert_frame_equal(run.periods, pd.read_parquet(out / "periods.parquet"))
    pd.testing.assert_frame_equal(run.drawdowns, pd.read_parquet(out / "drawdowns.parquet"))


def test_html_false_writes_the_machine_outputs_only(tmp_path):
    out = write_report({"perp": perp_result()}, tmp_path / "batch", title="batch", html=False)
    assert sorted(p.name for p in out.iterdir()) == sorted(f for f in store.FILES if f != "report.html")
    page = rerender(out)  # the page can be made later from the stored files
    assert page.name == "report.html" and page.is_file()
