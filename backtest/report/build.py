"""Step 2 of a report: a JSON-able report object (tables and figure specs) from :class:`RunData`.

Numbers stay raw here; the template formats them (``backtest.report.render``).
"""

from __future__ import annotations

from typing import Any

import json

import numpy as np
import pandas as pd

from backtest.metrics import COLUMN_KEYS, LOWER_IS_BETTER, METRIC_DOCS, METRIC_UNITS
from backtest.report.collect import RunData, baseline_columns, rank
from backtest.report.decimate import MIN_POINTS
from backtest.report.figures import MAX_POINTS, ResultFrames, comparison_figures, result_figures
from backtest.report.named_periods import METRICS as NAMED_METRICS
from backtest.report.stress_section import stress_block, stress_summary
from backtest.report.sweep_section import sweep_section

# USD columns of the ranked comparison table (the rank key is shown first).
COMPARISON_KEYS = ("total_return", "cagr", "volatility", "sharpe", "max_drawdown", "calmar",
                   "excess_return", "beta", "correlation",
                   "final_equity", "funding_net", "fees", "liquidations", "ruined")

# The headline table of each result (one row per column, USD basis), decisive columns first.
# The relative metrics (excess return, beta, correlation) are in the comparison table, which
# scrolls, not here: the headline must fit a 1,440 px screen and was not measured with them.
# metric key -> readable header. Every key is also in the full metrics tables.
HEADLINE = (("total_return", "Total return"), ("cagr", "CAGR"), ("max_drawdown", "Max drawdown"),
            ("sharpe", "Sharpe"), ("sortino", "Sortino"), ("calmar", "Calmar"),
            ("liquidations", "Liquidations"), ("funding_net", "Funding net"), ("fees", "Fees"),
            ("exposure_time", "Time in market"))
# the unit shown under a header, by metric unit (money: the table's currency)
HEADER_UNITS = {"fraction": "%", "ratio": "annualised", "count": "count", "leverage": "x equity",
                "days": "days", "bars": "bars"}
HEADER_UNIT_OF = {"cagr": "% / year", "calmar": "CAGR / max DD"}

TOP_COLUMNS = 5      # best-ranked columns plotted, with a monthly heatmap and a drawdown table
DRAWDOWNS_SHOWN = 5  # deepest drawdowns shown per column (drawdowns.parquet keeps more)
PERIOD_BASIS = "usd"  # the page's period tables: the basis of the comparison
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _header_unit(key: str, currency: str) -> str:
    unit = METRIC_UNITS[key]
    return currency if unit == "money" else HEADER_UNIT_OF.get(key, HEADER_UNITS.get(unit, unit))


def headline(name: str, res: dict, rank_by: str) -> dict:
    """The headline table of one result: one row per column in the ranking's order (``rank``
    among the result's columns), the :data:`HEADLINE` metrics of the USD basis."""
    cols = res["usd"]["columns"]
    keys = [k for k, _ in HEADLINE]
    rows = [{"rank": r["rank"], "column": r["column"], "ruined": bool(cols[r["column"]].get("ruined")),
             "baseline": r["baseline"], "cells": [cols[r["column"]].get(k) for k in keys]}
            for r in rank({name: res}, rank_by)]
    return {
        "basis": "usd", "currency": "USD", "rank_by": rank_by,
        "headers": [{"key": k, "label": label, "unit": _header_unit(k, "USD"), "metric_unit": METRIC_UNITS[k],
                     "doc": METRIC_DOCS[k], "order": "asc" if k in LOWER_IS_BETTER else "desc"}
                    for k, label in HEADLINE],
        "rows": rows,
    }


def same_in_usd(res: dict) -> bool:
    """Whether a result's settlement-currency metrics are the USD metrics, number for number
    (a USDT-settled result valued at 1 USD per USDT): then one table shows both."""
    return res["currency"] == "USD" or res["settle"]["columns"] == res["usd"]["columns"]


def _usd_note(name: str, res: dict, series: pd.DataFrame) -> str | None:
    """The assumption that makes one table of a non-USD result's two, stated on the page."""
    cur = res["currency"]
    if cur == "USD" or not same_in_usd(res):
        return None
    pu = series.loc[series["result"] == name, "price_usd"].to_numpy(dtype=np.float64)
    if len(pu) and np.all(pu == 1.0):
        return (f"1 {cur} is valued at 1 USD at every bar (the result's USD price of {cur}), so its {cur} and "
                "USD numbers are the same: one table shows both.")
    return f"The {cur} and USD numbers of this result are identical: one table shows both."


def _heat_scale(values: list) -> float:
    """The largest |value| of a heatmap (its colours are centred on 0 and scaled by this)."""
    finite = [abs(v) for v in values if v is not None and np.isfinite(v)]
    return max(finite, default=0.0)


def _clean(v: float | None) -> float | None:
    return float(v) if v is not None and np.isfinite(v) else None


def periods_block(name: str, run: RunData, order: list[str], top: int) -> dict:
    """Returns by year (every column, in ranking order), monthly heatmaps and worst drawdowns
    (the ``top`` best-ranked columns) of one result, in the basis :data:`PERIOD_BASIS`."""
    p, d = run.period_tables()
    p = p[(p["result"] == name) & (p["basis"] == PERIOD_BASIS)]
    years = p[p["freq"] == "year"]
    year_labels = list(dict.fromkeys(years["period"].tolist()))
    partial = dict(zip(years["period"], years["partial"]))
    spans = {r.period: [int(r.start_ms), int(r.end_ms)] for r in years[years["col"] == 0].itertuples()}
    by_col = {c: dict(zip(g["period"], g["return"])) for c, g in years.groupby("column", sort=False)}
    year_rows = [{"column": c, "cells": [_clean(by_col[c].get(y)) for y in year_labels]} for c in order]
    months = p[p["freq"] == "month"]
    top_cols = order[:top]
    heatmaps = []
    for c in top_cols:
        m = months[months["column"] == c]
        got = {str(per): (_clean(r), bool(part)) for per, r, part in zip(m["period"], m["return"], m["partial"])}
        grid = []
        for y in year_labels:
            cells = [got.get(f"{y}-{i:02d}") for i in range(1, 13)]
            grid.append({"year": y, "months": [None if x is None else {"value": x[0], "partial": x[1],
                                                                      "period": f"{y}-{i + 1:02d}"}
                                               for i, x in enumerate(cells)],
                         "total": _clean(by_col[c].get(y)), "partial": bool(partial.get(y))})
        vals = [x["value"] for row in grid for x in row["months"] if x is not None]
        heatmaps.append({"column": c, "rows": grid, "scale": _heat_scale(vals),
                         "year_scale": _heat_scale([row["total"] for row in grid])})
    d = d[(d["result"] == name) & (d["basis"] == PERIOD_BASIS) & (d["rank"] <= DRAWDOWNS_SHOWN)]
    drawdowns = []
    for c in top_cols:
        rows = d[d["column"] == c].sort_values("rank")
        drawdowns.append({"column": c, "rows": [
            {"rank": int(r.rank), "peak_ms": int(r.peak_ms), "trough_ms": int(r.trough_ms),
             "recovery_ms": None if pd.isna(r.recovery_ms) else int(r.recovery_ms), "depth": float(r.depth),
             "peak_to_trough_days": float(r.peak_to_trough_days), "duration_days": float(r.duration_days)}
            for r in rows.itertuples()]})
    return {
        "basis": PERIOD_BASIS, "currency": "USD", "years": year_labels,
        "year_partial": [bool(partial[y]) for y in year_labels],
        "year_spans": [spans.get(y) for y in year_labels],
        "year_rows": year_rows,
        "year_scale": _heat_scale([v for row in year_rows for v in row["cells"]]),
        "months": list(MONTHS), "top": len(top_cols), "heatmaps": heatmaps, "drawdowns": drawdowns,
        "drawdowns_shown": DRAWDOWNS_SHOWN,
    }


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


def baselines(res: dict) -> list[str]:
    """The baseline columns of a result, always plotted whatever their rank and never ranked
    best (:func:`backtest.report.collect.baseline_columns`)."""
    return baseline_columns(res)


TRADES_SHOWN = 10  # round trips listed per best-ranked column (the largest by |PnL|)


def trades_block(name: str, res: dict, run: RunData, order: list[str], top: int) -> dict | None:
    """The round trips of a perpetual result: the statistics of every column (ranking order)
    and, for its ``top`` best-ranked columns, the :data:`TRADES_SHOWN` trips of largest |PnL|
    (``trades.parquet`` holds every trip of every column); None for other kinds."""
    stats = res.get("trades")
    if not stats:
        return None
    t = run.trades
    listed = []
    if t is not None and len(t):
        t = t[t["result"] == name]
        for label in order[:top]:
            mine = t[t["column"] == label]
            big = mine.reindex(mine["pnl"].abs().sort_values(ascending=False).index)[:TRADES_SHOWN]
            listed.append({"column": label, "rows": [
                {"entry": int(r.entry_time.value // 1_000_000), "exit": int(r.exit_time.value // 1_000_000),
                 "side": "long" if r.direction > 0 else "short", "size": float(r.size),
                 "entry_price": _clean(float(r.entry_price)), "exit_price": _clean(float(r.exit_price)),
                 "pnl_price": float(r.pnl_price), "pnl_funding": float(r.pnl_funding), "pnl_fees": float(r.pnl_fees),
                 "pnl": float(r.pnl), "hours": float(r.holding_hours), "mae": float(r.mae), "mfe": float(r.mfe),
                 "liquidated": bool(r.liquidated), "open": bool(r.open)}
                for r in big.sort_values("entry_bar").itertuples()]})
    return {"currency": res["currency"], "stats": [{"column": c, **stats[c]} for c in order if c in stats],
            "listed": listed, "stored": t is not None}


def named_block(name: str, run: RunData, order: list[str]) -> dict | None:
    """The named periods of one result in the basis :data:`PERIOD_BASIS`: per period its span
    (requested, and the bars measured), per column (in ranking ``order``) the
    :data:`backtest.report.named_periods.METRICS` of each period; None without named periods."""
    defs = run.metrics.get("named_periods") or []
    if not defs:
        return None
    t = run.named_table()
    t = t[(t["result"] == name) & (t["basis"] == PERIOD_BASIS)]
    keys = [k for k, _ in NAMED_METRICS]
    periods: list[Any] = []
    cells: dict[str, list[Any]] = {c: [] for c in order}
    for d in defs:
        part = t[t["period"] == d["name"]]
        first = part.iloc[0]
        periods.append({"name": d["name"], "start_ms": int(d["start_ms"]), "end_ms": int(d["end_ms"]),
                        "first_ms": int(first["first_ms"]), "last_ms": int(first["last_ms"]),
                        "bars": int(first["bars"]), "partial": bool(first["partial"])})
        by_col = {c: row for c, row in zip(part["column"], part[keys].itertuples(index=False))}
        for c in order:
            row = by_col[c]
            cells[c] += [_clean(v) if k != "liquidations" else int(v) for k, v in zip(keys, row)]
    units = {"return": "fraction", "max_drawdown": "fraction", "sharpe": "ratio", "liquidations": "count",
             "funding_net": "money"}
    headers = [{"period": p["name"], "key": k, "label": label, "metric_unit": units[k],
                "unit": _header_unit(k if k != "return" else "total_return", "USD"),
                "order": "asc" if k in LOWER_IS_BETTER else "desc"}
               for p in periods for k, label in NAMED_METRICS]
    return {"basis": PERIOD_BASIS, "currency": "USD", "periods": periods, "headers": headers,
            "rows": [{"column": c, "cells": cells[c]} for c in order]}


def plotted_columns(doc: dict, top: int) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """Which columns the figures draw: (per result, comparison), each result name -> column
    positions in ranking order.

    A result's own figures draw its ``top`` best-ranked columns (ranked among its columns) and
    its baselines (:func:`baselines`); the comparison draws the ``top`` best-ranked columns of
    the whole run and every baseline. The tables and the Parquet outputs hold every column.
    """
    rank_by = doc["comparison"]["rank_by"]
    per: dict[str, list[int]] = {}
    for name, res in doc["results"].items():
        pos = {c: j for j, c in enumerate(res["columns"])}
        order = [r["column"] for r in rank({name: res}, rank_by)]
        base = set(baselines(res))
        others = [c for c in order if c not in base]
        per[name] = [pos[c] for c in order if c in base or c in others[:top]]
    cmp: dict[str, list[int]] = {name: [] for name in doc["results"]}
    best = 0  # the top columns are counted among the columns that are not baselines
    for r in doc["comparison"]["rows"]:
        res = doc["results"][r["result"]]
        is_base = r["column"] in set(baselines(res))
        if is_base or best < top:
            cmp[r["result"]].append(res["columns"].index(r["column"]))
        best += not is_base
    return per, cmp


def _shown(res: dict, cols: list[int], top: int) -> dict:
    base = set(baselines(res))
    labels = [res["columns"][j] for j in cols]
    return {"columns": labels, "baselines": [c for c in labels if c in base], "top": top,
            "n_columns": len(res["columns"]), "all": len(labels) == len(res["columns"])}


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


def build_report(run: RunData, *, max_points: int = MAX_POINTS, top: int = TOP_COLUMNS) -> dict:
    """Build the report object the template renders (step 2 of 4).

    Parameters
    ----------
    run : raw numbers (fresh from :func:`~backtest.report.collect.collect` or loaded with
        :func:`~backtest.report.store.load_stored`).
    max_points : most points per plotted line (longer series are reduced for display only, with
        min/max per bucket: :mod:`backtest.report.decimate`; >= 4).
    top : the best-ranked columns of each result that are plotted (with the result's baselines,
        :func:`baselines`) and get a monthly heatmap and a table of their worst drawdowns; the
        comparison plots the ``top`` best of the run and every baseline. The summary, the yearly
        returns, the metric tables and the Parquet files hold every column. 0: no plotted columns
        but the baselines.

    Returns
    -------
    dict, JSON-able: ``title``, ``notes``, ``created_ms``, ``config_json``, ``units``, ``docs``,
    ``comparison`` (ranked rows), ``results`` (per result: ``headline`` table, ``periods``,
    header numbers, metric tables, figure ids) and ``figures`` (id -> plotly spec).
    """
    if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < MIN_POINTS:
        raise ValueError(f"max_points={max_points!r} is too small to draw a line; use an integer >= {MIN_POINTS}")
    if isinstance(top, bool) or not isinstance(top, int) or top < 0:
        raise ValueError(f"top={top!r}: give the number of best-ranked columns to plot, with monthly heatmaps "
                         "(an integer >= 0)")
    doc = run.metrics
    per_cols, cmp_cols = plotted_columns(doc, top)
    results_out, figures = [], []
    n_max = 0
    for i, (name, res) in enumerate(doc["results"].items()):
        rf = ResultFrames(name, res, run.series, run.events, per_cols[name], max_points)
        n_max = max(n_max, rf.n_bars)
        same = same_in_usd(res)
        fig_ids = []
        for slug, spec in result_figures(rf, same_usd=same):
            fid = f"fig-{i}-{slug}"
            figures.append({"id": fid, "spec": spec})
            fig_ids.append(fid)
        settle = res["settle"]
        tables = [_table(settle, res["columns"])]
        if not same:
            tables.append(_table(res["usd"], res["columns"]))
        elif res["currency"] != "USD":
            tables[0]["currency"] = f"{res['currency']} = USD"
        head = headline(name, res, doc["comparison"]["rank_by"])
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
            "headline": head, "usd_note": _usd_note(name, res, run.series),
            "periods": periods_block(name, run, [r["column"] for r in head["rows"]], top),
            "named": named_block(name, run, [r["column"] for r in head["rows"]]),
            "trades": trades_block(name, res, run, [r["column"] for r in head["rows"]], top),
            "stress": stress_block(doc, name, [r["column"] for r in head["rows"]]),
            "baselines": baselines(res),
            "plotted": _shown(res, per_cols[name], top),
        })

    cmp = doc["comparison"]
    rank_by = cmp["rank_by"]
    keys = [rank_by] + [k for k in COMPARISON_KEYS if k != rank_by]
    rows = []
    for r in cmp["rows"]:
        res = doc["results"][r["result"]]
        m = res["usd"]["columns"][r["column"]]
        rows.append({"rank": r["rank"], "result": r["result"], "column": r["column"],
                     "baseline": r["column"] in set(baselines(res)),
                     "kind": res["kind"], "currency": res["currency"],
                     "cells": [m.get(k) for k in keys]})
    cmp_fig_ids = []
    n_cols_total = sum(len(res["columns"]) for res in doc["results"].values())
    n_cmp = sum(len(c) for c in cmp_cols.values())
    if n_cols_total > 1 and n_cmp:
        frames = [ResultFrames(name, res, run.series, run.events, cmp_cols[name], max_points)
                  for name, res in doc["results"].items()]
        for slug, spec in comparison_figures(frames):
            fid = f"fig-{slug}"
            figures.append({"id": fid, "spec": spec})
            cmp_fig_ids.append(fid)
    sweep, sweep_figures = sweep_section(doc, run.sweep_oos, max_points)
    figures += sweep_figures
    return {
        "title": doc["title"],
        "notes": doc["notes"],
        "created_ms": doc["created_ms"],
        "config_json": json.dumps(run.config, indent=2, sort_keys=True),
        "units": METRIC_UNITS,
        "docs": METRIC_DOCS,
        "comparison": {"rank_by": rank_by, "order": cmp["order"], "rank_doc": METRIC_DOCS[rank_by],
                       "metric_keys": keys, "units": [METRIC_UNITS[k] for k in keys], "rows": rows,
                       "figures": cmp_fig_ids, "plotted": n_cmp, "n_columns": n_cols_total,
                       "baselines": sum(len(baselines(res)) for res in doc["results"].values())},
        "results": results_out,
        "named_periods": bool(doc.get("named_periods")),
        "stress": stress_summary(doc),
        "sweep": sweep,
        "figures": figures,
        "max_points": max_points,
        "top": top,
        "downsampled": n_max > max_points,
    }
