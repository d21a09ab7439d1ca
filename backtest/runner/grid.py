"""Grids users can write: ranges and log-spaced ranges in a config, expanded to lists.

A strategy parameter, a filter parameter or a field of a policy table may be written as a
range string instead of a list; the config expands it when it is read, so the resolved config
(and the run id) is the one with the list written out:

* ``"start:stop:step"``: ``start, start + step, ...`` up to and **including** ``stop`` when it
  falls on the grid (within a millionth of a step), e.g. ``"10:50:10"`` -> ``[10, 20, 30, 40, 50]``
  and ``"0.2:0.5:0.1"`` -> ``[0.2, 0.3, 0.4, 0.5]``. Integers stay integers when all three are.
* ``"log:start:stop:n"``: ``n`` values spaced evenly in the logarithm from ``start`` to ``stop``,
  both included: ``"log:1:100:5"`` -> ``[1, 3.16227766017, 10, 31.6227766017, 100]``.
* ``"intlog:start:stop:n"``: the same rounded to integers, repeated values dropped (for a
  parameter that takes whole numbers: a window of bars).

Values are rounded to 12 significant digits, so ``0.1`` steps give ``0.3``, not
``0.30000000000000004``. A string that is not of these forms is left alone (a strategy's
``rule = "price_ma"``); a string of these forms that is wrong (a step of 0, a stop before the
start, more than :data:`MAX_VALUES` values) is an error naming the key and the fix.

Products: every grid axis (each listed or ranged parameter, each policy table's list) multiplies
the columns, as lists already do (docs/runner.md, "Grids"); :func:`plan_line` states the column
count and the estimated memory and time before a sweep starts.
"""

from __future__ import annotations

import math
import re
from typing import Any

# an axis longer than this is almost surely a typo ("1:100000:1"); a real grid that large is
# written as several sweeps or with a larger step
MAX_VALUES = 100_000
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_LINEAR = re.compile(rf"^\s*({_NUM})\s*:\s*({_NUM})\s*:\s*({_NUM})\s*$")
_LOG = re.compile(rf"^\s*(log|intlog)\s*:\s*({_NUM})\s*:\s*({_NUM})\s*:\s*({_NUM})\s*$")


class GridError(ValueError):
    """A range string that cannot be expanded; the message names the key, the value and the fix."""


def _round(x: float) -> float:
    """``x`` to 12 significant digits (0.1 + 0.2 -> 0.3)."""
    if x == 0 or not math.isfinite(x):
        return x
    return round(x, 11 - int(math.floor(math.log10(abs(x)))))


def _is_int(text: str) -> bool:
    return re.fullmatch(r"\s*[-+]?\d+\s*", text) is not None


def is_range(value: Any) -> bool:
    """True when ``value`` is a range string (:func:`expand_range` would expand it)."""
    return isinstance(value, str) and bool(_LINEAR.match(value) or _LOG.match(value))


def expand_range(value: str, where: str = "value") -> list[int | float]:
    """The list of values a range string stands for (module docstring).

    Parameters
    ----------
    value : ``"start:stop:step"``, ``"log:start:stop:n"`` or ``"intlog:start:stop:n"``.
    where : the key path named in errors (``perp[0].strategy.params.slow_days``).

    Returns
    -------
    list of int (linear ranges of integers, ``intlog``) or float, in increasing order.

    Raises
    ------
    GridError
        Not a range; a step <= 0; a stop before the start; a log range with a bound <= 0 or
        fewer than 2 values; more than :data:`MAX_VALUES` values.
    """
    m = _LINEAR.match(value) if isinstance(value, str) else None
    if m:
        a, b, s = (float(g) for g in m.groups())
        if not s > 0:
            raise GridError(f"{where}={value!r}: the step {m[3]} must be > 0; write 'start:stop:step', e.g. '10:50:10'")
        if b < a:
            raise GridError(f"{where}={value!r}: the stop {m[2]} is before the start {m[1]}; write 'start:stop:step' "
                            "with start <= stop")
        n = int(math.floor((b - a) / s + 1e-6)) + 1
        if n > MAX_VALUES:
            raise GridError(f"{where}={value!r} has {n} values, more than {MAX_VALUES}; use a larger step")
        if all(_is_int(g) for g in m.groups()):
            return [int(m[1]) + i * int(m[3]) for i in range(n)]
        return [_round(a + i * s) for i in range(n)]
    m = _LOG.match(value) if isinstance(value, str) else None
    if m:
        kind, a, b = m[1], float(m[2]), float(m[3])
        if not _is_int(m[4]) or int(m[4]) < 2:
            raise GridError(f"{where}={value!r}: the count {m[4]} must be a whole number >= 2; write "
                            f"'{kind}:start:stop:n', e.g. 'log:1:100:5'")
        n = int(m[4])
        if not (a > 0 and b > 0):
            raise GridError(f"{where}={value!r}: a log range needs start and stop > 0")
        if b <= a:
            raise GridError(f"{where}={value!r}: the stop {m[3]} must be after the start {m[2]}")
        if n > MAX_VALUES:
            raise GridError(f"{where}={value!r} has {n} values, more than {MAX_VALUES}; use fewer")
        vals = [_round(math.exp(math.log(a) + (math.log(b) - math.log(a)) * i / (n - 1))) for i in range(n)]
        vals[0], vals[-1] = _round(a), _round(b)  # the bounds exactly as written
        if kind == "intlog":
            return list(dict.fromkeys(int(round(v)) for v in vals))
        return vals
    raise GridError(f"{where}={value!r} is not a range; write 'start:stop:step', 'log:start:stop:n' or "
                    "'intlog:start:stop:n'")


def expand_params(params: dict[str, Any], where: str) -> dict[str, Any]:
    """``params`` with every range string value replaced by its list (other values unchanged)."""
    return {k: expand_range(v, f"{where}.{k}" if where else k) if is_range(v) else v for k, v in params.items()}


def expand_policies(policies: list[Any], where: str) -> list[Any]:
    """A policy list with the range strings inside its tables expanded
    (``{ name = "voltarget", target_vol = "0.2:0.6:0.1" }``); strings (``"const(2)"``) unchanged."""
    return [expand_params(p, f"{where}[{i}]") if isinstance(p, dict) else p for i, p in enumerate(policies)]


# ---------------------------------------------------------------------------------------------
# the plan printed before a sweep starts

# The time model of a sweep, from the plan line to the report written (the interpreter's imports,
# about 1.5 s, are done by then). Measured on this shared 2-core machine (load average 4 to 5,
# other sweeps running) with the stage split of run_sweep's own log lines (the time between its
# messages), `trend_short` x 4 policies on the embedded BTC data: 1h bars of 2022 (8,760 bars) at
# 20, 100 and 400 columns with and without a walk-forward of 9 folds, and the two examples
# sweep_trend.toml / sweep_walk_forward.toml (4h, 5,664 bars, 20 and 30 columns, 8 folds),
# each run twice in one process (the first pays the kernels' loading), by a throwaway script
# timing run_sweep's log lines (not kept: the numbers are the ones written below).
#
# The engine's and the metrics' compiled kernels are loaded from numba's cache by the first call
# of a process: 2.1 s (the first chunk of a fresh process took 2.19 s for 20 x 8,760 cells, the
# same chunk 0.1 s once loaded).
WARMUP_S = 2.1
# Loading the data, checks, the run id: 0.05 to 0.1 s for a year of 1h bars.
LOAD_S = 0.1
# Per bar and column of the chunks (targets, the engine, both bases' metrics, the store): 400
# columns x 8,760 bars in 1.78 s = 5.1e-7 s (100 columns: 5.9e-7 with the per-chunk overhead);
# benchmarks/README.md "Sweeps": 10,000 columns x 26,280 bars in 89.6 s = 3.4e-7 end to end.
SECONDS_PER_CELL = 5e-7
# Each out-of-sample fold measures two spans of every column again (USD only): a fixed 0.025 s
# per fold and chunk (span slicing, two metric calls: 8 folds of the 30-column example cost
# 0.2 s) plus 1.5e-8 s per bar and column (9 folds at 400 x 8,760: 0.54 s over the plain sweep).
FOLD_CHUNK_S = 0.025
FOLD_CELL_S = 1.5e-8
# The report: its columns (the best `report_columns` and the other simulations) simulated again
# and their metrics (collect: 0.2 s for 20 x 8,760: 1.1e-6 s per bar and column, the simulation
# 3e-7), the fold winners once more (0.1 to 0.15 s with a split), and the files with the page
# (0.5 to 0.75 s for 20 columns; a little less without HTML, not modelled apart).
REPORT_S = 0.6
REPORT_CELL_S = 1.5e-6
OOS_WINNERS_S = 0.15


def kernels_loaded() -> bool:
    """Whether this process has the engine's kernel already (no :data:`WARMUP_S` to pay)."""
    from backtest.engine import nb

    return bool(nb.simulate_dense_nb.signatures or nb.simulate_sparse_nb.signatures)


def estimate_seconds(bars: int, columns: int, workers: int = 1, folds: int = 0, *, chunks: int = 1,
                     report_columns: int = 20, warm: bool = False) -> dict[str, float]:
    """Wall time of a sweep from its plan line to its report, by stage (the constants above).

    Parameters
    ----------
    bars, columns : the grid's bars and columns; workers : processes sharing the chunks;
    folds : out-of-sample folds (0: no split); chunks : chunks of the grid (each fold costs a
    fixed part per chunk); report_columns : columns the report simulates again (the best of the
    grid plus the other simulations); warm : the kernels are loaded in this process already.

    Returns
    -------
    dict of seconds: ``start`` (kernels loaded, data), ``chunks``, ``folds``, ``report``, ``total``.
    """
    w = max(1, workers)
    cells = float(bars) * float(columns)
    out = {"start": (0.0 if warm else WARMUP_S) + LOAD_S,
           "chunks": cells * SECONDS_PER_CELL / w,
           "folds": folds * (chunks * FOLD_CHUNK_S + cells * FOLD_CELL_S) / w,
           "report": REPORT_S + float(bars) * report_columns * REPORT_CELL_S + (OOS_WINNERS_S if folds else 0.0)}
    out["total"] = sum(out.values())
    return out


def _secs(s: float) -> str:
    return f"{s:.1f} s" if s < 10 else f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min"


def plan_line(name: str, columns: int, bars: int, chunks: int, per_chunk: int, chunk_memory: int,
              report_memory: int, workers: int, folds: int = 0, report_columns: int = 20,
              warm: bool = False) -> str:
    """The line printed before a sweep runs: columns, bars, chunks, estimated memory and time.

    ``chunk_memory`` is the memory of the chunks in flight (the sweep's budget), ``report_memory``
    the estimate of :func:`backtest.runner.budget.estimate` for the report of the best columns;
    the time is :func:`estimate_seconds` with its stages.
    """
    from backtest.runner.budget import fmt_bytes

    t = estimate_seconds(bars, columns, workers, folds, chunks=chunks, report_columns=report_columns, warm=warm)
    parts = [f"start {_secs(t['start'])}", f"chunks {_secs(t['chunks'])}"]
    if folds:
        parts.append(f"{folds} out-of-sample folds {_secs(t['folds'])}")
    parts.append(f"report {_secs(t['report'])}")
    return (f"plan of {name}: {columns} columns x {bars} bars = {columns * bars:,} bar-columns in {chunks} chunk(s) of up to "
            f"{per_chunk}; estimated peak memory {fmt_bytes(chunk_memory + report_memory)} (chunks "
            f"{fmt_bytes(chunk_memory)} + report {fmt_bytes(report_memory)}), time about {_secs(t['total'])} "
            f"({', '.join(parts)})")
