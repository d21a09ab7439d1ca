"""The report's sweep section (step 2 of a report, for the ``sweep`` block of ``metrics.json``
written by :func:`backtest.runner.sweep.run_sweep`):

* **in sample vs out of sample** (a sweep with a split): per fold, the columns chosen on the
  in-sample span with their ranking metric, total return and max drawdown on both spans side by
  side; the stitched out-of-sample growth of each fold's in-sample winner against the best column
  of the whole data on the same bars (chosen with every bar known: the flattering number);
* **robustness**: the columns tried, the ranking metric over the best column's parameter
  neighbours (median, quartiles, per axis) and the deflated Sharpe ratio with its inputs.

Numbers stay raw here; the template (``sweep.html.j2``) formats them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from backtest.metrics import METRIC_UNITS

# the cells of a chosen column, IS and OOS side by side: (key in sweep.oos.folds[].chosen, label)
FOLD_CELLS = (("total_return", "Return"), ("max_drawdown", "Max DD"))


def _fold_rows(oos: dict, metric: str) -> list[dict]:
    rows = []
    for f in oos["folds"]:
        for c in f["chosen"]:
            rows.append({"fold": f["fold"], "is_start": f["is_start"], "is_end": f["is_end"],
                         "oos_start": f["oos_start"], "oos_end": f["oos_end"], "is_rank": c["is_rank"],
                         "column": c["column"],
                         "cells": [c.get(f"is_{metric}"), c.get(f"oos_{metric}")]
                         + [c.get(f"{span}_{k}") for k, _ in FOLD_CELLS for span in ("is", "oos")]})
    return rows


def _stitched_figure(frame: pd.DataFrame, hindsight: dict | None, max_points: int) -> dict:
    """Two lines over the stitched OOS bars: the folds' IS winners chained, and the whole data's
    best column (decimated for display like every other line of the page)."""
    from backtest.report.decimate import decimate, grid_positions
    from backtest.report.figures import _figure, _layout, color, display_values, scatter

    p = _figure()
    x = (frame["timestamp"].astype("int64") // 1_000_000).to_numpy(dtype=np.int64)
    pos = grid_positions(len(x), max_points)
    g = p.grid(x[pos].astype(np.float64))
    lines = [("growth", "stitched OOS: each fold's in-sample winner")]
    if hindsight is not None and frame["hindsight_growth"].notna().any():
        lines.append(("hindsight_growth", f"best of the whole data (hindsight): {hindsight['column']}"))
    for j, (key, name) in enumerate(lines):
        y = decimate(frame[key].to_numpy(dtype=np.float64), max_points)
        p.add(scatter(y=display_values(y), name=name, mode="lines", line={"color": color(j)}), g)
    _layout(p, "Out of sample: stitched growth of the in-sample winners vs the best column in hindsight",
            "growth (1 = before the first OOS bar)")
    return p.spec()


def sweep_section(doc: dict, stitched: pd.DataFrame | None, max_points: int) -> tuple[dict | None, list[dict]]:
    """The sweep section of a report, and its figures (``{"id", "spec"}``).

    Parameters
    ----------
    doc : the ``metrics.json`` document; its ``sweep`` block (None: not a sweep, no section).
    stitched : ``oos_equity.parquet`` (:func:`backtest.runner.oos.stitched_frame`), or None.
    max_points : most points per plotted line.
    """
    sw = doc.get("sweep")
    if not sw:
        return None, []
    metric = sw["metric"]
    out: dict[str, Any] = {"result": sw["result"], "metric": metric, "metric_unit": METRIC_UNITS.get(metric, "ratio"),
                           "columns": sw["columns"], "report_columns": sw["report_columns"], "note": sw.get("note"),
                           "oos": None, "robustness": sw.get("robustness"), "figure": None}
    figures: list[dict] = []
    oos = sw.get("oos")
    if oos:
        heads = [{"label": f"IS {metric}", "unit": out["metric_unit"]}, {"label": f"OOS {metric}", "unit": out["metric_unit"]}]
        heads += [{"label": f"{span} {label}", "unit": "fraction"} for k, label in FOLD_CELLS for span in ("IS", "OOS")]
        out["oos"] = {"split": oos["split"], "train": oos.get("train"), "test": oos.get("test"), "step": oos.get("step"),
                      "anchored": oos.get("anchored"), "split_at": oos.get("split_at"),
                      "oos_columns": oos["oos_columns"], "headers": heads, "rows": _fold_rows(oos, metric),
                      "best_is_median": oos.get("best_is_median"), "best_oos_median": oos.get("best_oos_median"),
                      "stitched_oos_return": oos.get("stitched_oos_return"),
                      "stitched_oos_bars": oos.get("stitched_oos_bars"), "hindsight": oos.get("hindsight"),
                      "inherits": oos.get("inherits")}
        if stitched is not None and len(stitched):
            figures.append({"id": "fig-sweep-oos", "spec": _stitched_figure(stitched, oos.get("hindsight"), max_points)})
            out["figure"] = "fig-sweep-oos"
    return out, figures
