"""The stress results of a run (``[stress]``): per result and column, the historical result next to
each crisis window, each shock and the Monte Carlo distribution, as the ``stress`` block of
``metrics.json`` and the long table ``stress.parquet``.

What runs under what:

* **windows**: every result (perps, puts, products, books, baselines), measured on the run's
  stored series (:func:`backtest.stress.windows.window_frame`), USD basis in ``metrics.json``,
  both bases in ``stress.parquet``;
* **shocks**: each ``[[stress.shock]]`` on its own, applied to the run's data, market spec and
  each ``[[perp]]``'s account, and every ``[[perp]]`` simulated again on it (targets recomputed
  from the shocked prices); ``[[puts]]`` and ``[[products]]`` too for the shocks that change
  data (a tier change or a slippage shock leaves them as they were: not run). Books and the
  baselines are not shocked (a book's data is several instruments: no shock API for it yet);
* **Monte Carlo**: every ``[[perp]]`` on the same stationary-bootstrap paths of the run's data
  (:func:`backtest.stress.montecarlo.run_monte_carlo`), metrics in the settlement currency.

The steps: :func:`prepare` checks the windows against the data's span and applies the shocks
before anything is simulated (a bad shock fails in the first seconds); :func:`run_stress`
simulates and measures, after the run's own results are collected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

import numpy as np
import pandas as pd

from backtest.data.marketdata import MarketData
from backtest.stress.common import ShockError
from backtest.stress.config import SHOCK_TYPES, StressConfig
from backtest.stress.montecarlo import run_monte_carlo
from backtest.stress.shocks import Shock
from backtest.stress.windows import WINDOW_METRICS, CrisisWindow, select_windows, window_frame

Log = Callable[[str], None]

# metrics of the history and of each shock, per column (USD basis), in the tables' order
SCENARIO_METRICS = ("total_return", "max_drawdown", "liquidations", "margin_calls", "funding_net",
                    "worst_bar_return")
# metrics whose Monte Carlo quantiles are reported
MC_METRICS = ("total_return", "max_drawdown", "worst_bar_return")
STRESS_COLUMNS = ("result", "column", "kind", "scenario", "basis", "metric", "value")


@dataclass
class StressPlan:
    """What a run's ``[stress]`` will measure, checked against the data before simulating.

    Attributes
    ----------
    windows : the windows the data covers (measured).
    skipped : the library windows it does not cover, ``{"name", "start_ms", "end_ms", "reason"}``.
    shocks : ``(name, type, shock, shocked data, shocked spec)`` per ``[[stress.shock]]``.
    config : the ``[stress]`` table.
    """

    windows: list[CrisisWindow]
    skipped: list[dict]
    shocks: list[tuple[str, str, Shock, Any, Any]] = field(default_factory=list)
    config: StressConfig | None = None


def _changes_data(shock: Shock) -> bool:
    """Whether the shock changes market data (else only the spec or the account)."""
    return type(shock).apply is not Shock.apply


def prepare(st: StressConfig, md: MarketData | None, spec: Any, span: tuple[int, int]) -> StressPlan:
    """Check the ``[stress]`` table against the data: split the windows into covered and skipped,
    apply every shock to the data and the spec.

    Parameters
    ----------
    st : the ``[stress]`` table.
    md, spec : the run's ``[data]`` market data and spec (None for a run of books only: then no shock).
    span : ``(first bar open, last bar close)`` of the run's data, int ms UTC.

    Raises
    ------
    ShockError
        A window asked for by name or given as ``[[stress.window]]`` that the data does not cover
        whole (both spans named; a library window of ``windows = "default"`` is skipped instead),
        or a shock the data cannot take (outside the data, invalid shocked data: the shock's own error).
    """
    windows, default = st.windows_list()
    covered, skipped = select_windows(windows, *span)
    user = {w.name for w in st.window}
    for s in skipped:
        if not default or s["name"] in user:
            raise ShockError(f"crisis window {s['name']!r}: {s['reason']}; choose a window inside the data, or load "
                             "data covering it ([data] start/end)")
    shocks = []
    for (name, shock), entry in zip(st.shocks(), st.shock):
        if md is None:
            raise ShockError("[[stress.shock]] needs the [data] market (a [[perp]], [[puts]] or [[products]])")
        try:
            md_s, spec_s = shock.apply(md), shock.apply_spec(spec)
        except ShockError as exc:
            raise ShockError(f"[[stress.shock]] {name!r}: {exc}") from None
        shocks.append((name, entry["type"], shock, md_s, spec_s))
    return StressPlan(windows=covered, skipped=skipped, shocks=shocks, config=st)


def _pick(metrics: dict, keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: metrics.get(k) for k in keys}


def _shocked_results(cfg: Any, plan_shock: tuple, log: Log) -> dict[str, dict[str, dict]]:
    """USD metrics per result and column of every [[perp]] (and [[puts]]/[[products]] for a data
    shock) under one shock."""
    from backtest.metrics import compute_metrics
    from backtest.runner.labels import relabel
    from backtest.runner.run import _products, _puts, perp_account, simulate_perp_config

    name, _, shock, md_s, spec_s = plan_shock
    jobs: list[tuple[str, Callable[[], tuple[Any, pd.Index]]]] = []
    for p in cfg.perp:
        account = shock.apply_account(perp_account(p))
        jobs.append((p.name, partial(simulate_perp_config, p, md_s, spec_s, account)))
    if _changes_data(shock):
        for k, q in enumerate(cfg.puts):
            jobs.append((q.name, partial(_puts, q, f"puts[{k}]", md_s, spec_s)))
        for k, r in enumerate(cfg.products):
            jobs.append((r.name, partial(_products, r, f"products[{k}]", md_s, spec_s)))
    out = {}
    for res_name, job in jobs:
        log(f"stress: {res_name} under {name}")
        res, grid = job()
        res, _ = relabel(res, grid)
        out[res_name] = {str(lab): _pick(m, SCENARIO_METRICS)
                         for lab, m in compute_metrics(res, currency="usd")["columns"].items()}
    return out


def run_stress(plan: StressPlan, cfg: Any, md: MarketData | None, spec: Any, run: Any,
               log: Log = lambda _m: None) -> tuple[dict, pd.DataFrame]:
    """Simulate and measure a run's ``[stress]`` (after its results are collected).

    Parameters
    ----------
    plan : from :func:`prepare`.
    cfg : the run's :class:`~backtest.runner.config.RunConfig`.
    md, spec : the run's ``[data]`` market data and spec.
    run : the run's :class:`~backtest.report.collect.RunData` (its ``metrics``, ``series`` and ``events``).
    log : progress lines.

    Returns
    -------
    (block, table): the ``stress`` block of ``metrics.json`` (JSON-able; ``results`` ->
    result -> column -> ``history``/``windows``/``shocks``/``monte_carlo``) and the long table
    of ``stress.parquet`` (columns :data:`STRESS_COLUMNS`, one value per row).
    """
    st = plan.config
    if st is None:
        raise ShockError("run_stress needs the plan made by prepare() (it holds the [stress] table)")
    doc = run.metrics
    rows: list[tuple] = []
    per: dict[str, dict[str, dict]] = {}
    for res_name, res in doc["results"].items():
        per[res_name] = {}
        for lab in res["columns"]:
            hist = _pick(res["usd"]["columns"][lab], SCENARIO_METRICS)
            per[res_name][lab] = {"history": hist, "windows": {}, "shocks": {}, "monte_carlo": None}
            rows += [(res_name, lab, "history", "history", "usd", k, v) for k, v in hist.items()]

    # windows: sliced from the stored series and events
    wf = window_frame(doc, run.series, run.events, plan.windows)
    keys = [k for k, _ in WINDOW_METRICS] + ["worst_bar_ms"]
    for r in wf.to_dict("records"):  # (itertuples renames the column 'return', a keyword)
        values = {k: r[k] for k in keys}
        if r["basis"] == "usd":
            per[r["result"]][r["column"]]["windows"][r["window"]] = {
                k: (int(v) if k in ("liquidations", "margin_calls", "worst_bar_ms") else float(v))
                for k, v in values.items()}
        rows += [(r["result"], r["column"], "window", r["window"], r["basis"], k, v) for k, v in values.items()]

    # shocks: the simulations again on each shocked dataset
    for sh in plan.shocks:
        for res_name, cols in _shocked_results(cfg, sh, log).items():
            for lab, m in cols.items():
                per[res_name][lab]["shocks"][sh[0]] = m
                rows += [(res_name, lab, "shock", sh[0], "usd", k, v) for k, v in m.items()]

    # Monte Carlo: every [[perp]] on the same bootstrap paths
    mc_doc = None
    mcc = st.monte_carlo
    if mcc is not None and md is not None:
        for p in cfg.perp:
            log(f"stress: monte carlo, {p.name} on {mcc.paths} paths")
            mc = run_monte_carlo(p, md, spec, n_paths=mcc.paths, mean_block=mcc.block, horizon=mcc.horizon,
                                 seed=mcc.seed, history=False)
            liq = mc.liquidation()
            q = mc.quantiles()
            for lab in liq.index:
                row = liq.loc[lab]
                quant = {m: {c: float(q.loc[(lab, m), c]) for c in q.columns if c != "n"} for m in MC_METRICS}
                per[p.name][lab]["monte_carlo"] = {
                    "paths": int(row["paths"]), "liquidated": int(row["liquidated"]),
                    "liquidation_probability": float(row["probability"]), "std_error": float(row["std_error"]),
                    "quantiles": quant}
                sc = f"{mcc.paths} paths"
                rows += [(p.name, lab, "monte_carlo", sc, "settle", k, float(row[c])) for k, c in
                         (("paths", "paths"), ("liquidated", "liquidated"),
                          ("liquidation_probability", "probability"), ("std_error", "std_error"))]
                rows += [(p.name, lab, "monte_carlo", sc, "settle", f"{m}_{c}", v)
                         for m, qs in quant.items() for c, v in qs.items()]
            mc_doc = {"paths": mc.n_paths, "block": mc.mean_block, "horizon_bars": mc.horizon_bars,
                      "horizon_days": mc.horizon_days, "seed": mc.seed,
                      "quantiles": [f"q{round(x * 100):02d}" for x in mc.quantile_levels],
                      "metrics": list(MC_METRICS), "basis": "settle"}

    block = {
        "windows": [w.as_dict() for w in plan.windows],
        "skipped_windows": plan.skipped,
        "shocks": [{"name": name, "type": kind, "shock": repr(shock), "changes_data": _changes_data(shock)}
                   for name, kind, shock, _, _ in plan.shocks],
        "shocked_kinds": ["perp", "put", "inverse_product"],
        "monte_carlo": mc_doc,
        "metrics": list(SCENARIO_METRICS),
        "window_metrics": [k for k, _ in WINDOW_METRICS],
        "results": per,
    }
    table = pd.DataFrame(rows, columns=list(STRESS_COLUMNS))
    for c in ("result", "column", "kind", "scenario", "basis", "metric"):
        table[c] = table[c].astype("string")
    table["value"] = pd.to_numeric(table["value"].map(lambda v: np.nan if v is None else float(v)),
                                   errors="raise").astype(np.float64)
    return block, table


__all__ = ["MC_METRICS", "SCENARIO_METRICS", "SHOCK_TYPES", "STRESS_COLUMNS", "StressPlan", "prepare", "run_stress"]
