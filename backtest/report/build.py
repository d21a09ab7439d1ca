"""Step 2 of a report: a JSON-able report object (tables and figure specs) from :class:`RunData`.

Numbers stay raw here; the template formats them (``backtest.report.render``).
"""

from __future__ import annotations

import json

from backtest.metrics import COLUMN_KEYS, METRIC_DOCS, METRIC_UNITS
from backtest.report.collect import RunData
from backtest.report.figures import MAX_POINTS, ResultFrames, comparison_figures, result_figures

# USD columns of the ranked comparison table (the rank key is shown first).
COMPARISON_KEYS = ("total_return", "cagr", "volatility", "sharpe", "max_drawdown", "calmar",
                   "final_equity", "funding_net", "fees", "liquidations", "ruined")


def _table(block: dict, labels: list[str]) -> dict:
    """Rows = metric keys present in any column (mappings excluded), columns = column labels."""
    cols = block["columns"]
    keys = [k for k in COLUMN_KEYS if METRIC_UNITS[k] != "mapping" and any(k in cols[c] for c in labels)]
    return {
        "basis": block["basis"],
        "currency": block["currency"],
        "labels": labels,
        "rows": [{"key": k, "unit": METRIC_UNITS[k], "doc": METRIC_DOCS[k],
                  "cells": [cols[c].get(k) for c in labels]} for k in keys],
    }


def _attribution_table(block: dict | None) -> dict | None:
    """The per-instrument attribution of a book as table rows: one row per (column, instrument)
    and a ``total`` row per column; cells in the order of ``block['fields']``."""
    if not block:
        return None
    fields = list(block["fields"])
    rows = []
    for label, col in block["columns"].items():
        for inst in list(block["instruments"]) + ["total"]:
            rows.append({"column": label, "instrument": inst, "total": inst == "total",
                         "cells": [col[inst].get(f) for f in fields]})
    return {"currency": block["currency"], "fields": fields, "docs": [block["fields"][f] for f in fields],
            "rows": rows}


def build_report(run: RunData, *, max_points: int = MAX_POINTS) -> dict:
    """Build the report object the template renders (step 2 of 4).

    Parameters
    ----------
    run : raw numbers (fresh from :func:`~backtest.report.collect.collect` or loaded with
        :func:`~backtest.report.store.load_stored`).
    max_points : most points per plotted line (longer series are reduced for plotting only).

    Returns
    -------
    dict, JSON-able: ``title``, ``notes``, ``created_ms``, ``config_json``, ``units``, ``docs``,
    ``comparison`` (ranked rows), ``results`` (per result: header numbers, metric tables,
    figure ids) and ``figures`` (id -> plotly spec).
    """
    if max_points < 4:
        raise ValueError(f"max_points={max_points} is too small to draw a line; use at least 4")
    doc = run.metrics
    results_out, figures = [], []
    frames = []
    for i, (name, res) in enumerate(doc["results"].items()):
        rf = ResultFrames(name, res, run.series, run.events)
        frames.append(rf)
        fig_ids = []
        for slug, spec in result_figures(rf, max_points):
            fid = f"fig-{i}-{slug}"
            figures.append({"id": fid, "spec": spec})
            fig_ids.append(fid)
        settle = res["settle"]
        tables = [_table(settle, res["columns"])]
        if res["currency"] != "USD":
            tables.append(_table(res["usd"], res["columns"]))
        counts: dict[str, int] = {}
        for c in settle["columns"].values():
            for k, v in c.get("event_counts", {}).items():
                counts[k] = counts.get(k, 0) + v
        results_out.append({
            "name": name, "anchor": f"result-{i}", "kind": res["kind"], "currency": res["currency"],
            "columns": res["columns"], "n_bars": settle["n_bars"], "bar_ms": settle["bar_ms"],
            "bars_per_year": settle["bars_per_year"], "start_ms": settle["start_ms"],
            "end_ms": settle["end_ms"], "tables": tables, "event_counts": counts,
            "figures": fig_ids, "series": res["series"],
            "margin_call_threshold": res.get("margin_call_threshold"),
            "attribution": _attribution_table(res.get("attribution")),
        })

    cmp = doc["comparison"]
    rank_by = cmp["rank_by"]
    keys = [rank_by] + [k for k in COMPARISON_KEYS if k != rank_by]
    rows = []
    for r in cmp["rows"]:
        res = doc["results"][r["result"]]
        m = res["usd"]["columns"][r["column"]]
        rows.append({"rank": r["rank"], "result": r["result"], "column": r["column"],
                     "kind": res["kind"], "currency": res["currency"],
                     "cells": [m.get(k) for k in keys]})
    cmp_fig_ids = []
    n_cols_total = sum(len(res["columns"]) for res in doc["results"].values())
    if n_cols_total > 1:
        for slug, spec in comparison_figures(frames, max_points):
            fid = f"fig-{slug}"
            figures.append({"id": fid, "spec": spec})
            cmp_fig_ids.append(fid)
    n_max = max((rf.x.shape[0] for rf in frames), default=0)
    return {
        "title": doc["title"],
        "notes": doc["notes"],
        "created_ms": doc["created_ms"],
        "config_json": json.dumps(run.config, indent=2, sort_keys=True),
        "units": METRIC_UNITS,
        "docs": METRIC_DOCS,
        "comparison": {"rank_by": rank_by, "order": cmp["order"], "rank_doc": METRIC_DOCS[rank_by],
                       "metric_keys": keys, "units": [METRIC_UNITS[k] for k in keys], "rows": rows,
                       "figures": cmp_fig_ids},
        "results": results_out,
        "figures": figures,
        "max_points": max_points,
        "downsampled": n_max > max_points,
    }
