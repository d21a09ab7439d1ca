"""Compose a strategy and a grid of leverage policies into engine inputs."""

from __future__ import annotations

from dataclasses import fields as dataclass_fields
from typing import Any

import numpy as np
import pandas as pd

from backtest.engine.settings import Policy
from strategies.combine import signals
from strategies.frame import as_market
from strategies.policies.base import InLoop, Precomputed, expand

# Engine Policy fields of a column without an in-loop policy: the Policy defaults (kind 'none').
ENGINE_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclass_fields(Policy)}


def policy_multiplier(p: Any, market: Any, spec: Any = None) -> np.ndarray:
    """The multiplier (n_bars,) of one policy variant: a precomputed policy's leverage series, an
    in-loop policy's ``target_scale`` (the engine applies the rest)."""
    if isinstance(p, Precomputed):
        return p.compute(market, spec=spec)
    if isinstance(p, InLoop):
        return np.full(market.n, p.target_scale())
    raise TypeError(f"unsupported policy {p!r}")  # pragma: no cover - expand() only returns registered types


def scale_signal(signal: np.ndarray, mult: np.ndarray) -> np.ndarray:
    """Target exposure of a signal under a multiplier (broadcast): ``signal * mult``, 0 where the
    signal is 0 (whatever the multiplier, NaN included), NaN where the signal is NaN."""
    return np.where(signal == 0.0, 0.0, signal * mult)


def build_targets(data: Any, strategy_name: str, strategy_params: Any = None, policies: Any = None, *,
                  filter: str | None = None, filter_params: Any = None,
                  spec: Any = None) -> tuple[pd.DataFrame, Policy, pd.MultiIndex]:
    """Targets and engine policy settings for every (strategy parameters x policy variant) column.

    For a precomputed policy the target is ``signal * leverage_t``; for an in-loop policy it is
    ``signal * target_scale`` (drawdown: its ``leverage``; CPPI: 1) and the engine applies the
    equity-path factor and ``max_exposure``. A signal of 0 gives a target of 0 and a NaN signal
    gives NaN (keep the position), whatever the leverage.

    Parameters
    ----------
    data : market data (DataFrame, ``MarketData`` or ``MarketFrame``).
    strategy_name : registered strategy name (see :func:`strategies.names`).
    strategy_params : parameter set, dict grid or list for the strategy.
    policies : policy variants (see :func:`strategies.policies.expand`); None = ``[const(1)]``.
    filter, filter_params : optional filter strategy (see :func:`strategies.signals`).
    spec : :class:`backtest.market.MarketSpec`, needed by ``tiercap``.

    Returns
    -------
    target : DataFrame (n_bars, n_cols), signed exposure as a multiple of equity; index = bar
        open times; row t is meant to be filled at bar t+1's open.
    policy : :class:`backtest.engine.settings.Policy` with one value per column in every field.
    columns : MultiIndex of the strategy's parameter levels (and filter levels) plus a last
        ``policy`` level holding each variant's label; strategy columns outer, policies inner.
    """
    market = as_market(data)
    sig = signals(market, strategy_name, strategy_params, filter=filter, filter_params=filter_params)
    variants = expand(policies)
    s = sig.to_numpy(dtype=np.float64)
    n, ks = s.shape
    kp = len(variants)
    mult = np.empty((n, kp))
    fields: dict[str, list[Any]] = {k: [] for k in ENGINE_DEFAULTS}
    for j, p in enumerate(variants):
        mult[:, j] = policy_multiplier(p, market, spec)
        vals = ENGINE_DEFAULTS | p.engine_fields() if isinstance(p, InLoop) else dict(ENGINE_DEFAULTS)
        for k in fields:
            fields[k].append(vals[k])
    # Column c = i * kp + j: strategy column i, policy variant j. The rule broadcast over an
    # (n, ks, kp) view instead of repeated copies of the signals and multipliers (two more
    # arrays of the target's size: 0.2 s and 420 MB per 1,000 columns of 26,280 bars).
    target = scale_signal(s[:, :, None], mult[:, None, :]).reshape(n, ks * kp)
    tuples = [(t if isinstance(t, tuple) else (t,)) + (p.label(),) for t in sig.columns for p in variants]
    columns = pd.MultiIndex.from_tuples(tuples, names=list(sig.columns.names) + ["policy"])
    policy = Policy(
        kind=list(fields["kind"]) * ks,
        max_drawdown=np.tile(np.asarray(fields["max_drawdown"], dtype=np.float64), ks),
        floor=np.tile(np.asarray(fields["floor"], dtype=np.float64), ks),
        multiplier=np.tile(np.asarray(fields["multiplier"], dtype=np.float64), ks),
        ratchet=np.tile(np.asarray(fields["ratchet"], dtype=np.bool_), ks),
        max_exposure=np.tile(np.asarray(fields["max_exposure"], dtype=np.float64), ks),
    )
    # copy=False: the frame holds the array built here (pandas copies a 2-D array by default)
    return pd.DataFrame(target, index=market.index, columns=columns, copy=False), policy, columns
