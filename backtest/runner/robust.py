"""Robustness next to a sweep's ranking: how many columns were tried, how the best column's
parameter neighbours fare, and the deflated Sharpe ratio of the best column.

The deflated Sharpe ratio (DSR) of Bailey and Lopez de Prado, "The Deflated Sharpe Ratio:
Correcting for Selection Bias, Backtest Overfitting and Non-Normality", Journal of Portfolio
Management 40 (5), 2014, pp. 94-107 (SSRN 2460551), eq. (2) and the expected maximum before it:

* expected maximum Sharpe ratio of ``N`` independent trials of true Sharpe 0 whose estimated
  Sharpe ratios have variance ``V``::

      SR0 = sqrt(V) * ((1 - g) * Z^-1(1 - 1/N) + g * Z^-1(1 - 1/(N e)))

  with ``g`` the Euler-Mascheroni constant and ``Z^-1`` the standard normal quantile;
* the probability that the best column's true Sharpe ratio exceeds ``SR0``, given its estimate
  ``SR`` over ``T`` returns of skewness ``g3`` and kurtosis ``g4`` (3 for a normal)::

      DSR = Z((SR - SR0) * sqrt(T - 1) / sqrt(1 - g3 * SR + (g4 - 1) / 4 * SR**2))

Every Sharpe ratio here is per bar (not annualised): the sweep's annualised ``sharpe`` divided
by ``sqrt(bars_per_year)``. These formulas live here (not in ``backtest/mechanics.py``, which
holds exchange mechanics): they are statistics of a sweep, written once.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

EULER_GAMMA = 0.5772156649015329
_Z = NormalDist()


def expected_max_sharpe(n_trials: int, variance: float) -> float:
    """``SR0``: the expected maximum of ``n_trials`` estimated Sharpe ratios of variance
    ``variance`` when every true Sharpe ratio is 0 (module docstring). 0 for a single trial
    (nothing was selected)."""
    if n_trials < 1 or not variance >= 0:
        raise ValueError(f"n_trials={n_trials!r} must be >= 1 and variance={variance!r} >= 0")
    if n_trials == 1:
        return 0.0
    z1 = _Z.inv_cdf(1.0 - 1.0 / n_trials)
    z2 = _Z.inv_cdf(1.0 - 1.0 / (n_trials * math.e))
    return math.sqrt(variance) * ((1.0 - EULER_GAMMA) * z1 + EULER_GAMMA * z2)


def deflated_sharpe(sr: float, sr0: float, n_obs: int, skew: float, kurtosis: float) -> float:
    """``DSR``: probability that the true per-bar Sharpe ratio exceeds ``sr0`` given the estimate
    ``sr`` from ``n_obs`` returns of skewness ``skew`` and (non-excess) ``kurtosis``; NaN when the
    variance term is not positive (a Sharpe ratio so large the expansion breaks down)."""
    if n_obs < 2:
        raise ValueError(f"n_obs={n_obs!r}: the deflated Sharpe ratio needs at least 2 returns")
    den = 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr * sr
    if not den > 0:
        return float("nan")
    return _Z.cdf((sr - sr0) * math.sqrt(n_obs - 1) / math.sqrt(den))


def moments(returns: np.ndarray) -> tuple[float, float, float]:
    """(per-bar Sharpe ``mean / std(ddof=1)``, skewness ``m3 / m2**1.5``, kurtosis ``m4 / m2**2``)
    of one column's bar returns (population central moments for skewness and kurtosis, as the
    paper's ``g3``, ``g4``)."""
    r = np.asarray(returns, dtype=np.float64)
    d = r - r.mean()
    m2 = float(np.mean(d * d))
    if len(r) < 2 or m2 == 0.0:
        return float("nan"), float("nan"), float("nan")
    return (float(r.mean() / r.std(ddof=1)), float(np.mean(d ** 3) / m2 ** 1.5), float(np.mean(d ** 4) / m2 ** 2))


def _numeric(values: pd.Series) -> bool:
    return all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in values)


def neighbours(levels: pd.DataFrame, col: int) -> dict[str, list[int]]:
    """The parameter neighbours of column ``col`` on each grid axis.

    Parameters
    ----------
    levels : one row per column (grid order), one column per level (as ``Grid.levels()``).
    col : the column's position.

    Returns
    -------
    axis -> positions of the columns equal to ``col`` on every other axis and, on this axis, at
    the adjacent level: the next lower and higher value for a numeric axis; every other value
    for an axis without an order (policies, filter names, string parameters). Axes with one
    level are left out.
    """
    out: dict[str, list[int]] = {}
    row = levels.iloc[col]
    for axis in levels.columns:
        values = list(dict.fromkeys(levels[axis].tolist()))
        if len(values) < 2:
            continue
        others = [a for a in levels.columns if a != axis]
        same = np.ones(len(levels), dtype=bool)
        for a in others:
            same &= (levels[a] == row[a]).to_numpy()
        if _numeric(pd.Series(values)):
            order = sorted(values)
            i = order.index(row[axis])
            wanted = [order[j] for j in (i - 1, i + 1) if 0 <= j < len(order)]
        else:
            wanted = [v for v in values if v != row[axis]]
        hit = same & levels[axis].isin(wanted).to_numpy()
        out[axis] = np.flatnonzero(hit).tolist()
    return out


def _stats(values: np.ndarray) -> dict[str, Any]:
    v = values[np.isfinite(values)]
    if not len(v):
        return {"count": 0, "median": None, "q25": None, "q75": None, "min": None, "max": None}
    q25, med, q75 = np.percentile(v, [25, 50, 75])
    return {"count": int(len(v)), "median": float(med), "q25": float(q25), "q75": float(q75),
            "min": float(v.min()), "max": float(v.max())}


def robustness(table: pd.DataFrame, levels: pd.DataFrame, metric: str, best_col: int,
               best_returns: np.ndarray | None, bars_per_year: float) -> dict[str, Any]:
    """The robustness block of a sweep (``metrics.json`` ``sweep.robustness``).

    Parameters
    ----------
    table : every column's metrics, one row per column with ``col`` (grid position), ``metric``
        and ``sharpe`` (annualised, USD); any order.
    levels : the grid's levels (grid order).
    metric : the ranking metric.
    best_col : grid position of the best-ranked column.
    best_returns : float64 (n_bars,), the best column's USD bar returns (for its Sharpe ratio,
        skewness and kurtosis); None: no deflated Sharpe ratio.
    bars_per_year : annualisation factor of ``sharpe``.

    Returns
    -------
    dict: ``columns_tried``; ``best`` (label, col, metric value); ``neighbours`` (the ranking
    metric over every neighbour, and per axis: count, median, quartiles, min, max); ``deflated_sharpe``
    (the trials' per-bar Sharpe variance and count, SR0, the best column's per-bar Sharpe,
    skewness, kurtosis, bars, and the DSR).
    """
    by_col = table.set_index("col").sort_index()
    value = pd.to_numeric(by_col[metric], errors="coerce").astype(float).to_numpy()
    near = neighbours(levels, best_col)
    every = sorted({c for cs in near.values() for c in cs})
    out: dict[str, Any] = {
        "columns_tried": int(len(by_col)),
        "best": {"column": str(by_col["column"].iloc[best_col]), "col": int(best_col),
                 metric: None if not np.isfinite(value[best_col]) else float(value[best_col])},
        "neighbours": {"metric": metric, "all": {**_stats(value[every]), "cols": every},
                       "axes": {a: {**_stats(value[cs]), "cols": cs} for a, cs in near.items()}},
    }
    sharpe = pd.to_numeric(by_col["sharpe"], errors="coerce").astype(float).to_numpy() / math.sqrt(bars_per_year)
    finite = sharpe[np.isfinite(sharpe)]
    dsr: dict[str, Any] = {"trials": int(len(by_col)), "trials_with_sharpe": int(len(finite))}
    if best_returns is not None and len(finite) >= 2:
        var = float(np.var(finite, ddof=1))
        sr0 = expected_max_sharpe(int(len(by_col)), var)
        sr, skew, kurt = moments(best_returns)
        dsr.update({"sharpe_variance": var, "expected_max_sharpe": sr0, "sharpe": sr, "skewness": skew,
                    "kurtosis": kurt, "bars": int(len(best_returns)),
                    "dsr": deflated_sharpe(sr, sr0, len(best_returns), skew, kurt) if np.isfinite(sr) else None})
        dsr = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in dsr.items()}
    else:
        dsr["dsr"] = None
        dsr["note"] = "needs the Sharpe ratio of at least 2 columns and the best column's returns"
    out["deflated_sharpe"] = dsr
    return out
