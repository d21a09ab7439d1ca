"""Readable column labels, one rule for the command line and the Python API.

A simulation's columns are labelled by tuples of grid values (strategy parameters, filter
parameters, policy), which print as ``(True, 'const(1)')``. Reports keep only the levels that
vary across the simulation's columns (and always ``policy``), plus the per-column account
settings that vary (``account.leverage``), and write them as ``key=value|key=value``, e.g.
``slow_days=20|policy=const(2)`` or ``policy=const(2)|account.leverage=5``.

:func:`make_labels` is that rule. ``backtest run``/``sweep`` call it through :func:`relabel` and
:func:`backtest.runner.chunks.sweep_grid`; a result simulated from Python
(``simulate_perp(..., columns=build_targets(...)[2])``) gets the same labels in its metrics,
reports and events through :func:`result_labels` (:func:`backtest.metrics.column_labels`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np
import pandas as pd

from backtest.result import SimResult

ALWAYS_KEPT = ("policy",)
SINGLE = "single"  # label of the only column of a simulation whose columns carry no varying level
ACCOUNT = "account."  # prefix of the account-setting levels: ``account.leverage`` (a strategy may
# have a parameter ``leverage`` of its own, and a policy a ``leverage=`` field)


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

    # each shown level's values read once (a frame lookup per cell took 2.4 s at 10,000 columns)
    values = {c: levels[c].tolist() for c in shown}

    def build(precise: bool) -> list[str]:
        return ["|".join(f"{c}={format_value(values[c][i], precise)}" for c in shown) or SINGLE for i in range(n)]

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


def account_levels(account: Mapping[str, Any] | None, n: int) -> dict[str, list[Any]]:
    """The per-column account settings that vary across ``n`` columns, as levels.

    Parameters
    ----------
    account : Account field name -> a value for every column or a sequence of one value per
        column (``AccountConfig.model_dump()``, ``dataclasses.asdict(Account(...))``, or
        :func:`account_settings` of a result); None: no account levels.
    n : the number of columns.

    Returns
    -------
    ``{"account.<field>": [value per column]}`` for the sequences of length ``n`` whose values
    differ (as their labels print in full), in the Account's field order.
    """
    out: dict[str, list[Any]] = {}
    for name, value in (account or {}).items():
        if value is None or isinstance(value, (str, bytes, bool, int, float)) or np.ndim(value) != 1:
            continue
        values = [v.item() if isinstance(v, np.generic) else v for v in value]
        if len(values) == n and len({format_value(v, precise=True) for v in values}) > 1:
            out[ACCOUNT + name] = values
    return out


def account_settings(result: SimResult) -> dict[str, list[Any]]:
    """The Account settings of a perpetual result, per column, under the Account's field names
    (choices by name: ``margin_mode`` ``["cross", "isolated"]``), read from the engine's
    ``meta["settings"]``; empty for other kinds of result (their settings are their levels)."""
    from dataclasses import fields

    from backtest.engine.settings import Account, setting_of

    stored = result.meta.get("settings") if result.kind == "perp" else None
    if not isinstance(stored, Mapping):
        return {}
    out: dict[str, list[Any]] = {}
    for f in fields(Account):
        how = setting_of(f)
        if how.kernel is None or how.kernel not in stored:
            continue
        values = list(np.atleast_1d(stored[how.kernel]))
        if how.choices is not None:
            names = {code: name for name, code in how.choices.items()}
            values = [names.get(int(v), v) for v in values]
        out[f.name] = values
    return out


def make_labels(columns: pd.Index, account: Mapping[str, Any] | None = None) -> tuple[list[str], pd.DataFrame]:
    """Readable labels of a simulation's columns, and their level frame: the one rule.

    Parameters
    ----------
    columns : the grid labels, length n: the MultiIndex of :func:`strategies.build_targets`, a
        named Index (``leverage`` of an inverse product), tuples that lost their level names, or
        a RangeIndex (no grid: positions only, never shown as a level).
    account : per-column account settings (:func:`account_levels`); those that vary become
        levels ``account.<field>`` after the grid's levels.

    Returns
    -------
    labels : ``key=value|...`` of the varying levels (:func:`readable_labels`), unique.
    levels : one row per column (index = the labels, named ``column``), one column per level
        (the grid's, constant ones too, then the varying account settings).
    """
    n = len(columns)
    extra = account_levels(account, n)
    if isinstance(columns, pd.RangeIndex) and extra:
        levels = pd.DataFrame(index=range(n))  # positions say nothing the settings do not
    else:
        levels = level_frame(columns)
    for name, values in extra.items():
        levels[name] = pd.Series(values, dtype=object)
    labels = readable_labels(levels)
    levels.index = pd.Index(labels, name="column")
    return labels, levels


def result_labels(result: SimResult) -> list[str]:
    """The labels a result's columns are reported under (metrics, reports, events).

    Columns that are already labels are kept as text: a flat unnamed Index (a user's own
    labels, the baselines'; ``str`` of each) and strings named ``column`` (the runner's readable
    labels). The engine's unnamed default numbering (a RangeIndex) stays ``0, 1, ...`` unless
    account settings vary per column. Anything else (a grid MultiIndex, a named Index, tuples)
    goes through :func:`make_labels` with the result's per-column account settings, as
    ``backtest run`` labels them.
    """
    cols = result.columns
    tuples = len(cols) > 0 and all(isinstance(c, tuple) for c in cols)
    if not isinstance(cols, pd.MultiIndex) and not tuples:
        if isinstance(cols, pd.RangeIndex) and cols.name is None:
            if not account_levels(account_settings(result), len(cols)):
                return [str(c) for c in cols]
        elif cols.name is None or (cols.name == "column" and all(isinstance(c, str) for c in cols)):
            return [str(c) for c in cols]
    return make_labels(cols, account_settings(result))[0]


def relabel(result: SimResult, columns: pd.Index | None = None) -> tuple[SimResult, pd.DataFrame]:
    """``result`` with readable string column labels, and its level frame (index = the new labels).

    Parameters
    ----------
    result : a simulation result.
    columns : the grid labels to read the levels from (default ``result.columns``); pass the
        MultiIndex from :func:`strategies.build_targets` when the result's own labels lost
        their level names.

    The labels are :func:`make_labels` of ``columns`` and the result's per-column account
    settings (:func:`account_settings`).
    """
    src = result.columns if columns is None else columns
    if len(src) != result.n_cols:
        raise ValueError(f"{len(src)} column labels for a result of {result.n_cols} columns")
    labels, levels = make_labels(src, account_settings(result))
    return dataclasses.replace(result, columns=pd.Index(labels, dtype=object, name="column")), levels
