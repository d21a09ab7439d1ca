"""Readable column labels for reports.

A simulation's columns are labelled by tuples of grid values (strategy parameters, filter
parameters, policy), which print as ``(True, 'const(1)')``. For reports the runner keeps only
the levels that vary across the simulation's columns (and always ``policy``) and writes them as
``key=value|key=value``, e.g. ``slow_days=20|policy=const(2)``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pandas as pd

from backtest.result import SimResult

ALWAYS_KEPT = ("policy",)
SINGLE = "single"  # label of the only column of a simulation whose columns carry no varying level


def level_frame(columns: pd.Index) -> pd.DataFrame:
    """One row per column, one column per level (named; unnamed levels become ``level_<k>``).

    Accepts a MultiIndex, a flat Index, or a flat Index of tuples (a MultiIndex that lost its
    names on the way)."""
    if isinstance(columns, pd.MultiIndex):
        names = list(columns.names)
        rows = list(columns)
    elif len(columns) and all(isinstance(c, tuple) for c in columns) and len({len(c) for c in columns}) == 1:
        rows = list(columns)
        names = [None] * len(rows[0])
    else:
        names = [columns.name]
        rows = [(c,) for c in columns]
    names = [str(n) if n is not None else f"level_{k}" for k, n in enumerate(names)]
    if len(set(names)) != len(names):
        names = [f"{n}_{k}" if names.count(n) > 1 else n for k, n in enumerate(names)]
    return pd.DataFrame(rows, columns=names, dtype=object).reset_index(drop=True)


def format_value(v: Any, precise: bool = False) -> str:
    """A level value as label text: floats to 12 significant digits (all digits when
    ``precise``), booleans as in TOML (``true``), None as ``none``."""
    if isinstance(v, np.generic):
        v = v.item()
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"  # as written in TOML
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return repr(v) if precise else format(v, ".12g")
    return str(v)


def readable_labels(levels: pd.DataFrame, keep: tuple[str, ...] = ALWAYS_KEPT) -> list[str]:
    """Labels ``key=value|...`` of the levels that vary (plus ``keep`` levels), unique.

    Floats print with 12 significant digits (``20.0`` -> ``20``); if that makes two labels equal
    they print in full. Labels still equal (a repeated grid point) get ``#2``, ``#3``, ... in
    column order. A single column with no level left is labelled ``single``."""
    n = len(levels)
    shown = [c for c in levels.columns
             if c in keep or levels[c].map(lambda v: format_value(v, precise=True)).nunique(dropna=False) > 1]

    def build(precise: bool) -> list[str]:
        return ["|".join(f"{c}={format_value(levels.at[i, c], precise)}" for c in shown) or SINGLE for i in range(n)]

    labels = build(False)
    precise = build(True)
    if len(set(labels)) < len(set(precise)):  # rounding merged distinct values
        labels = precise
    seen: dict[str, int] = {}
    out = []
    for lab in labels:
        seen[lab] = seen.get(lab, 0) + 1
        out.append(lab if seen[lab] == 1 else f"{lab}#{seen[lab]}")
    return out


def relabel(result: SimResult, columns: pd.Index | None = None) -> tuple[SimResult, pd.DataFrame]:
    """``result`` with readable string column labels, and its level frame (index = the new labels).

    Parameters
    ----------
    result : a simulation result.
    columns : the grid labels to read the levels from (default ``result.columns``); pass the
        MultiIndex from :func:`strategies.build_targets` when the result's own labels lost
        their level names.
    """
    src = result.columns if columns is None else columns
    if len(src) != result.n_cols:
        raise ValueError(f"{len(src)} column labels for a result of {result.n_cols} columns")
    levels = level_frame(src)
    labels = readable_labels(levels)
    levels.index = pd.Index(labels, name="column")
    return dataclasses.replace(result, columns=pd.Index(labels, dtype=object, name="column")), levels
