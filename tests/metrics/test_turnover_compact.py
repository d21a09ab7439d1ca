"""Turnover, rejected orders and executed fills of a perp result are read from the kernel's
compact fills, without building the fill records (a sweep chunk's million records): the same
numbers bit for bit as the records give, the records left unbuilt, and the reference
simulator's fills (its own loop) giving the same turnover (issue 17, sweep speed)."""

from __future__ import annotations

import numpy as np
import pytest

from backtest.engine import simulate_perp
from backtest.engine.enums import FillStatus
from backtest.engine.reference import simulate_reference
from backtest.metrics import compute_metrics
from backtest.metrics import nb as mnb
from tests.engine.scenario_kit import random_case

SEEDS = range(12)


def _records_path(res, to_basis: np.ndarray):
    """The per-column (executed, rejected, turnover) from the built fill records, through the
    records' kernel (``fills_by_column_nb``): the path the metrics took before."""
    f = res.records["fills"]
    return mnb.fills_by_column_nb(f["col"].astype(np.int64), f["bar"].astype(np.int64), f["notional"].astype(float),
                                  f["status"].astype(np.int64), f["size"].astype(float), FillStatus.REJECTED,
                                  to_basis, res.n_cols)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("currency", ["settle", "usd"])
def test_compact_fills_give_the_records_numbers_bit_for_bit_and_build_no_records(seed, currency):
    bars, tgt, spec, account, policy = random_case(seed, n_bars=60, n_cols=6)
    res = simulate_perp(bars, tgt, spec, account, policy)
    doc = compute_metrics(res, currency=currency)
    assert "fills" in res.records.derived()  # the metrics did not build the fill records
    to_basis = np.ones(res.n_bars) if currency == "settle" else np.asarray(res.price_usd, dtype=np.float64)
    executed, rejected, turnover = _records_path(res, to_basis)
    rows = list(doc["columns"].values())
    assert len(res.records["fills"]) > 0 and executed.sum() > 0
    # exact equality: the same products summed in the same order
    assert [r["turnover"] for r in rows] == turnover.tolist()
    assert [r["rejected_orders"] for r in rows] == rejected.tolist()
    assert [r["event_counts"]["fills"] for r in rows] == executed.tolist()


@pytest.mark.parametrize("seed", SEEDS)
def test_turnover_is_the_reference_simulators_executed_notional(seed):
    bars, tgt, spec, account, policy = random_case(seed, n_bars=60, n_cols=6)
    res = simulate_perp(bars, tgt, spec, account, policy)
    _, ref = simulate_reference(bars, tgt, spec, account, policy)
    f = ref["fills"]
    done = (f["status"] != FillStatus.REJECTED) & (f["size"] != 0)
    want = np.bincount(f["col"][done], weights=np.abs(f["notional"][done]), minlength=res.n_cols)
    n_rej = np.bincount(f["col"][f["status"] == FillStatus.REJECTED], minlength=res.n_cols)
    rows = list(compute_metrics(res, currency="settle")["columns"].values())
    np.testing.assert_allclose([r["turnover"] for r in rows], want, rtol=1e-12, atol=0)
    assert [r["rejected_orders"] for r in rows] == n_rej.tolist()
    assert [r["event_counts"]["fills"] for r in rows] == np.bincount(f["col"][done], minlength=res.n_cols).tolist()


def test_a_plain_dict_of_records_still_gives_turnover_from_its_records():
    # a result whose records are a plain dict (built by hand, or unpickled) has no compact form
    bars, tgt, spec, account, policy = random_case(3, n_bars=40, n_cols=3)
    res = simulate_perp(bars, tgt, spec, account, policy)
    want = [r["turnover"] for r in compute_metrics(res)["columns"].values()]
    import dataclasses

    plain = dataclasses.replace(res, records={k: res.records[k] for k in res.records})
    assert [r["turnover"] for r in compute_metrics(plain)["columns"].values()] == want
