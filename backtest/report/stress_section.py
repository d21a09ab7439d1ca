"""The report's stress section (step 2 of a report, for the ``stress`` block of ``metrics.json``
written by :mod:`backtest.stress.report`): per result, three tables with one row per column in the
ranking's order, each next to the historical result:

* **crisis windows**: per window the return, max drawdown, liquidations, margin calls, funding net
  and worst bar of the window's bars (USD);
* **shocks**: the history and each shock: total return, max drawdown, liquidations, margin calls,
  funding net (USD);
* **Monte Carlo**: the liquidation probability within the horizon and its standard error, and
  quantiles of the total return and max drawdown over the paths (settlement currency).

Numbers stay raw here; the template formats them.
"""

from __future__ import annotations

from typing import Any

from backtest.metrics import LOWER_IS_BETTER, METRIC_UNITS

# window values: key -> (label, unit); the keys of backtest.stress.windows.WINDOW_METRICS
WINDOW_CELLS = (("return", "Return", "fraction"), ("max_drawdown", "Max DD", "fraction"),
                ("liquidations", "Liq.", "count"), ("margin_calls", "Calls", "count"),
                ("funding_net", "Funding", "money"), ("worst_bar_return", "Worst bar", "fraction"))
SCENARIO_CELLS = (("total_return", "Return"), ("max_drawdown", "Max DD"), ("liquidations", "Liq."),
                  ("margin_calls", "Calls"), ("funding_net", "Funding"))
MC_QUANTILES = (("total_return", ("q05", "q50", "q95")), ("max_drawdown", ("q50", "q95")))


def _order(key: str) -> str:
    return "asc" if key in LOWER_IS_BETTER or key == "max_drawdown" else "desc"


def _windows_table(block: dict, cols: dict, order: list[str]) -> dict | None:
    wins = block["windows"]
    if not wins:
        return None
    headers = [{"group": w["name"], "key": k, "label": label, "metric_unit": unit, "order": _order(k)}
               for w in wins for k, label, unit in WINDOW_CELLS]
    rows = []
    for c in order:
        got = cols[c]["windows"]
        cells: list[Any] = []
        for w in wins:
            v = got.get(w["name"])
            cells += [None if v is None else v.get(k) for k, _, _ in WINDOW_CELLS]
        rows.append({"column": c, "cells": cells})
    return {"groups": [{"name": w["name"], "span": len(WINDOW_CELLS), "title": f"{w['description']} (source: {w['source']})",
                        "start_ms": w["start_ms"], "end_ms": w["end_ms"]} for w in wins],
            "headers": headers, "rows": rows}


def _shocks_table(block: dict, cols: dict, order: list[str]) -> dict | None:
    shocks = block["shocks"]
    if not shocks:
        return None
    groups = [{"name": "history", "span": len(SCENARIO_CELLS), "title": "the run itself"}]
    groups += [{"name": s["name"], "span": len(SCENARIO_CELLS), "title": s["shock"]} for s in shocks]
    headers = [{"group": g["name"], "key": k, "label": label, "metric_unit": METRIC_UNITS[k], "order": _order(k)}
               for g in groups for k, label in SCENARIO_CELLS]
    rows = []
    for c in order:
        cells = [cols[c]["history"].get(k) for k, _ in SCENARIO_CELLS]
        for s in shocks:
            v = cols[c]["shocks"].get(s["name"])
            cells += [None if v is None else v.get(k) for k, _ in SCENARIO_CELLS]
        rows.append({"column": c, "cells": cells})
    if all(cols[c]["shocks"] == {} for c in order):
        return None  # a result that is not shocked (a book, the baselines)
    return {"groups": groups, "headers": headers, "rows": rows}


def _mc_table(block: dict, cols: dict, order: list[str]) -> dict | None:
    mc = block.get("monte_carlo")
    if not mc or all(cols[c]["monte_carlo"] is None for c in order):
        return None
    headers = [{"key": "liquidation_probability", "label": "P(liquidation)", "metric_unit": "fraction", "order": "asc"},
               {"key": "std_error", "label": "Std. error", "metric_unit": "fraction", "order": "asc"},
               {"key": "liquidated", "label": "Paths liquidated", "metric_unit": "count", "order": "asc"}]
    headers += [{"key": f"{m}_{q}", "label": f"{'Return' if m == 'total_return' else 'Max DD'} {q}",
                 "metric_unit": "fraction", "order": _order(m)} for m, qs in MC_QUANTILES for q in qs]
    rows = []
    for c in order:
        v = cols[c]["monte_carlo"]
        if v is None:
            rows.append({"column": c, "cells": [None] * len(headers)})
            continue
        cells = [v["liquidation_probability"], v["std_error"], v["liquidated"]]
        cells += [v["quantiles"][m][q] for m, qs in MC_QUANTILES for q in qs]
        rows.append({"column": c, "cells": cells})
    hist = [{"column": c, "total_return": cols[c]["history"].get("total_return"),
             "liquidations": cols[c]["history"].get("liquidations")} for c in order]
    return {"headers": headers, "rows": rows, "history": hist}


def stress_block(metrics: dict, name: str, order: list[str]) -> dict | None:
    """The stress tables of result ``name`` (columns in ranking ``order``), None when the run
    has no stress block."""
    block = metrics.get("stress")
    if not block or name not in block["results"]:
        return None
    cols = block["results"][name]
    return {"windows": _windows_table(block, cols, order), "shocks": _shocks_table(block, cols, order),
            "monte_carlo": _mc_table(block, cols, order)}


def stress_summary(metrics: dict) -> dict | None:
    """What the run's stress section measured (windows, skipped windows with the reason, shocks,
    the Monte Carlo settings), None without a stress block."""
    block = metrics.get("stress")
    if not block:
        return None
    return {"windows": block["windows"], "skipped": block["skipped_windows"], "shocks": block["shocks"],
            "monte_carlo": block.get("monte_carlo")}
