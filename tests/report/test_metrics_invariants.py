"""Invariants of the metrics (scale, constant growth, shift in time), documentation coverage and
input validation."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backtest.metrics import METRIC_DOCS, MetricsInputError, compute_metrics, documented_metric_keys
from report_factories import H, from_equity, inverse_result, perp_result, put_result

DOCS = Path(__file__).resolve().parents[2] / "README.md"
TIME_KEYS = {"start_ms", "end_ms", "first_liquidation_ms"}


def _noise(n=500, seed=7, scale=0.01):
    return np.random.default_rng(seed).normal(0.0003, scale, n)


def _from_returns(r, **kw):
    return from_equity(100.0 * np.cumprod(1.0 + r), **kw)


@pytest.mark.parametrize("k", [0.5, 2.0, 3.0])
def test_scaling_returns_scales_volatility(k):
    r = _noise()
    base = compute_metrics(_from_returns(r))["columns"]["c0"]
    scaled = compute_metrics(_from_returns(k * r))["columns"]["c0"]
    assert math.isclose(scaled["volatility"], k * base["volatility"], rel_tol=1e-10)
    # mean and dispersion scale together: the ratios do not move
    assert math.isclose(scaled["sharpe"], base["sharpe"], rel_tol=1e-10)
    assert math.isclose(scaled["sortino"], base["sortino"], rel_tol=1e-10)
    assert math.isclose(scaled["worst_bar_return"], k * base["worst_bar_return"], rel_tol=1e-10)


def test_constant_positive_return_has_no_drawdown():
    c = compute_metrics(_from_returns(np.full(200, 0.001)))["columns"]["c0"]
    assert c["max_drawdown"] == 0.0 and c["ulcer_index"] == 0.0
    assert c["max_drawdown_duration_bars"] == 0 and c["longest_drawdown_bars"] == 0
    assert c["calmar"] is None  # undefined without a drawdown
    assert c["sharpe"] is None  # zero dispersion
    assert c["sortino"] is None  # no losing bar
    assert math.isclose(c["total_return"], 1.001 ** 200 - 1, rel_tol=1e-12)
    assert c["volatility"] < 1e-12


def _shifted(res, delta: pd.Timedelta):
    return dataclasses.replace(res, index=res.index + delta)


@pytest.mark.parametrize("delta, exclude", [
    (pd.Timedelta(days=7), set()),
    (pd.Timedelta(hours=5), {"worst_day_return"}),  # day boundaries move relative to the bars
])
@pytest.mark.parametrize("factory", [perp_result, put_result, inverse_result])
def test_shift_in_time_changes_nothing_but_times(factory, delta, exclude):
    res = factory()
    for basis in ("settle", "usd"):
        a = compute_metrics(res, currency=basis)
        b = compute_metrics(_shifted(res, delta), currency=basis)
        ms = int(delta / pd.Timedelta(milliseconds=1))
        for key in ("start_ms", "end_ms"):
            assert b[key] == a[key] + ms
        assert {k: v for k, v in a.items() if k not in TIME_KEYS | {"columns"}} == \
               {k: v for k, v in b.items() if k not in TIME_KEYS | {"columns"}}
        for label, ca in a["columns"].items():
            cb = b["columns"][label]
            if ca["first_liquidation_ms"] is not None:
                assert cb["first_liquidation_ms"] == ca["first_liquidation_ms"] + ms
            drop = TIME_KEYS | exclude
            assert {k: v for k, v in ca.items() if k not in drop} == \
                   {k: v for k, v in cb.items() if k not in drop}


def _spells_by_search(growth):
    """Drawdown durations by direct search (slow, obvious): for each point under water, its
    peak is the last earlier point at the running maximum, its end the first later point back
    at that level (or the last point)."""
    g = [1.0] + list(growth)
    n = len(g)
    lengths, recovered_at = {}, {}
    for t in range(n):
        top = max(g[: t + 1])
        if g[t] >= top:
            continue
        p = max(i for i in range(t + 1) if g[i] == top)
        q = next((i for i in range(t + 1, n) if g[i] >= top), None)
        lengths[t] = (q if q is not None else n - 1) - p
        recovered_at[t] = q is not None
    if not lengths:
        return 0, True, 0
    dd = [g[t] / max(g[: t + 1]) - 1 for t in range(n)]
    trough = dd.index(min(dd))
    return lengths[trough], recovered_at[trough], max(lengths.values())


@pytest.mark.parametrize("seed", range(6))
def test_drawdown_durations_match_a_direct_search(seed):
    rng = np.random.default_rng(seed)
    r = rng.normal(0.001, 0.02, 150)
    c = compute_metrics(_from_returns(r))["columns"]["c0"]
    g = np.cumprod(1.0 + r)
    bars, recovered, longest = _spells_by_search(g)
    assert (c["max_drawdown_duration_bars"], c["max_drawdown_recovered"], c["longest_drawdown_bars"]) == \
           (bars, recovered, longest)


def test_every_emitted_key_is_documented():
    documented = documented_metric_keys(DOCS)
    emitted: set[str] = set()
    for res in (perp_result(), put_result(), inverse_result()):
        for basis in ("settle", "usd"):
            m = compute_metrics(res, currency=basis)
            emitted |= set(m)
            for c in m["columns"].values():
                emitted |= set(c)
    assert emitted - documented == set()
    # the put and perp fixtures between them emit every key METRIC_DOCS defines
    assert emitted == set(METRIC_DOCS)
    assert documented == set(METRIC_DOCS)


def test_doc_parser_reports_a_missing_key(tmp_path):
    text = DOCS.read_text(encoding="utf-8").replace("| `sortino` |", "| sortino |")
    p = tmp_path / "metrics.md"
    p.write_text(text, encoding="utf-8")
    assert set(METRIC_DOCS) - documented_metric_keys(p) == {"sortino"}


def test_bad_inputs_raise_with_a_useful_message():
    res = from_equity([100.0, 101.0])
    with pytest.raises(MetricsInputError, match="'eur'"):
        compute_metrics(res, currency="eur")
    eq = np.array([100.0, np.nan, 101.0])
    with pytest.raises(MetricsInputError, match="bar 1"):
        compute_metrics(from_equity(eq))
    one = dataclasses.replace(from_equity([100.0]), meta={})
    with pytest.raises(MetricsInputError, match="bar_ms"):
        compute_metrics(one)
    assert compute_metrics(one, bar_ms=H)["columns"]["c0"]["sharpe"] is None
    dup = from_equity(np.ones((3, 2)) * 100, columns=[1, "1"])
    with pytest.raises(MetricsInputError, match="not unique"):
        compute_metrics(dup)


def test_metrics_are_strict_json():
    import json
    for res in (perp_result(), put_result(), inverse_result()):
        m = compute_metrics(res, currency="usd")
        assert json.loads(json.dumps(m, allow_nan=False)) == m
