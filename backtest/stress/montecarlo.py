"""Monte Carlo runs: a config's perpetual strategy x policies on every bootstrap path, reduced to
the distribution of each metric and the probability of liquidation within the horizon."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from backtest.data.marketdata import MarketData
from backtest.market import MarketSpec
from backtest.stress.bootstrap import StationaryBootstrap
from backtest.stress.common import ShockError

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def _perp_config(perp: Any) -> Any:
    from backtest.runner.config import PerpConfig

    if isinstance(perp, PerpConfig):
        return perp
    if isinstance(perp, dict):
        return PerpConfig.model_validate(perp)
    raise ShockError(f"perp is a {type(perp).__name__}; give a [[perp]] table as a dict or a "
                     "backtest.runner.config.PerpConfig")


def _numbers(metrics: dict) -> dict[str, float]:
    """The numeric metrics of one column (bools as 0/1, null as NaN; mappings left out)."""
    out = {}
    for key, v in metrics.items():
        if isinstance(v, (bool, np.bool_)):
            out[key] = float(v)
        elif v is None:
            out[key] = np.nan
        elif isinstance(v, (int, float, np.integer, np.floating)):
            out[key] = float(v)
    return out


def _run(cfg: Any, md: MarketData, spec: MarketSpec) -> dict[str, dict[str, float]]:
    """Metrics of every column of ``cfg`` on ``md``: the run's own perp simulation
    (:func:`backtest.runner.run.simulate_perp_config`: strategy targets x policies, account, ``simulate_perp``)."""
    from backtest.metrics import compute_metrics
    from backtest.runner.labels import relabel
    from backtest.runner.run import simulate_perp_config

    res, columns = simulate_perp_config(cfg, md, spec)
    res, _ = relabel(res, columns)
    return {str(label): _numbers(m) for label, m in compute_metrics(res)["columns"].items()}


@dataclass(frozen=True)
class MonteCarloResult:
    """Metrics of a perp config on bootstrap paths.

    Attributes
    ----------
    samples : DataFrame, index (``path``, ``column``), one float column per numeric metric of
        :data:`backtest.metrics.METRIC_DOCS` (bools as 0/1, null as NaN).
    history : DataFrame, index ``column``: the same metrics on the history itself.
    n_paths, mean_block, horizon_bars, bar_ms, seed : how the paths were drawn.
    quantile_levels : the levels of :meth:`quantiles`.
    """

    samples: pd.DataFrame
    history: pd.DataFrame
    n_paths: int
    mean_block: float
    horizon_bars: int
    bar_ms: int
    seed: int
    quantile_levels: tuple[float, ...] = QUANTILES

    @property
    def horizon_days(self) -> float:
        """The paths' span after the first bar, in days."""
        return self.horizon_bars * self.bar_ms / 86_400_000

    def quantiles(self) -> pd.DataFrame:
        """Per column and metric: the quantiles over paths (``q05`` ... ``q95``, linear
        interpolation, NaN values left out) and ``n``, the paths with a value."""
        g = self.samples.groupby(level="column", sort=False)
        parts = {f"q{round(q * 100):02d}": g.quantile(q).stack(future_stack=True) for q in self.quantile_levels}
        parts["n"] = g.count().stack(future_stack=True).astype(np.float64)
        out = pd.DataFrame(parts)
        out.index = out.index.set_names(["column", "metric"])
        return out

    def liquidation(self) -> pd.DataFrame:
        """Per column: ``paths``, ``liquidated`` (paths with at least one liquidation within the
        horizon), ``probability`` = liquidated / paths and its binomial standard error
        ``std_error = sqrt(p (1 - p) / paths)`` (0 when p is 0 or 1: then at most about
        ``3 / paths`` is excluded at 95 %, the rule of three)."""
        liq = self.samples["liquidations"]
        if liq.isna().any():
            raise ShockError("a path's result has no liquidation count; the Monte Carlo run needs perp results")
        hit = (liq > 0).groupby(level="column", sort=False)
        paths = hit.size().astype(np.int64)
        k = hit.sum().astype(np.int64)
        p = k / paths
        return pd.DataFrame({"paths": paths, "liquidated": k, "probability": p,
                             "std_error": np.sqrt(p * (1.0 - p) / paths)})


def run_monte_carlo(perp: Any, md: MarketData, spec: MarketSpec, *, n_paths: int, mean_block: float,
                    horizon: int | None = None, seed: int = 0, quantiles: Sequence[float] = QUANTILES,
                    log: Callable[[str], None] | None = None, history: bool = True) -> MonteCarloResult:
    """Run a perp config's strategy x policies on ``n_paths`` stationary-bootstrap paths of ``md``.

    Parameters
    ----------
    perp : a ``[[perp]]`` table (dict) or :class:`backtest.runner.config.PerpConfig`.
    md, spec : the history and its market spec.
    n_paths : number of paths (> 0); the liquidation probability's standard error falls as
        ``1/sqrt(n_paths)``.
    mean_block, horizon, seed : see :class:`~backtest.stress.bootstrap.StationaryBootstrap`.
    quantiles : levels in [0, 1] reported by :meth:`MonteCarloResult.quantiles`.
    log : called with a progress line every 10 % of the paths.
    history : also run the config on ``md`` itself (:attr:`MonteCarloResult.history`); False
        leaves ``history`` empty (a caller that has the historical result already: ``backtest run``).

    Returns
    -------
    MonteCarloResult
    """
    if isinstance(n_paths, bool) or not isinstance(n_paths, (int, np.integer)) or n_paths < 1:
        raise ShockError(f"n_paths={n_paths!r} must be a whole number >= 1")
    qs = tuple(float(q) for q in quantiles)
    if not qs or not all(0.0 <= q <= 1.0 for q in qs):
        raise ShockError(f"quantiles={quantiles!r} must be levels in [0, 1]")
    cfg = _perp_config(perp)
    boot = StationaryBootstrap(md, mean_block, horizon=horizon, seed=seed)
    hist = pd.DataFrame.from_dict(_run(cfg, md, spec), orient="index") if history else pd.DataFrame()
    hist.index.name = "column"
    rows: list[dict[str, float]] = []
    keys: list[tuple[int, str]] = []
    step = max(1, n_paths // 10)
    for path in boot.paths(int(n_paths)):
        for label, m in _run(cfg, path.data, spec).items():
            rows.append(m)
            keys.append((path.index, label))
        if log is not None and ((path.index + 1) % step == 0 or path.index + 1 == n_paths):
            log(f"monte carlo: {path.index + 1}/{n_paths} paths")
    samples = pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(keys, names=["path", "column"]))
    return MonteCarloResult(samples=samples, history=hist, n_paths=int(n_paths), mean_block=boot.mean_block,
                            horizon_bars=boot.horizon, bar_ms=md.bar_ms, seed=boot.seed, quantile_levels=qs)
