"""Account settings and in-loop leverage policies for the perpetual engine.

Every field is a scalar (same for all columns) or a sequence with one value per column; the
wrapper broadcasts them to per-column arrays for the kernel. Enums are ints numba can read.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Sequence

import numpy as np


class MarginMode:
    ISOLATED = 0
    CROSS = 1
    names = {"isolated": 0, "cross": 1}


class CallResponse:
    NONE = 0
    REDUCE = 1
    TOP_UP = 2
    names = {"none": 0, "reduce": 1, "top_up": 2}


class AfterLiquidation:
    STOP = 0
    CONTINUE = 1
    names = {"stop": 0, "continue": 1}


class Excess:
    CLIP = 0
    REJECT = 1
    names = {"clip": 0, "reject": 1}


class PolicyKind:
    NONE = 0
    DRAWDOWN = 1
    CPPI = 2
    names = {"none": 0, "drawdown": 1, "cppi": 2}


class SettingsError(ValueError):
    """An account or policy setting is invalid; the message names the field and the fix."""


Num = float | int | Sequence[float] | np.ndarray
Choice = str | Sequence[str]


@dataclass(frozen=True)
class Account:
    """Account and execution settings (scalars or one value per column).

    Parameters
    ----------
    initial_capital : starting wallet balance in the settlement currency (USDT or coin).
    margin_mode : ``'cross'`` (the whole wallet backs the position) or ``'isolated'``
        (only the position's isolated margin can be lost).
    leverage : the exchange leverage setting; initial (and isolated) margin = notional / leverage.
        Independent of the target exposure, which is a multiple of equity.
    margin_call_threshold : margin ratio (maintenance margin / margin balance) at which a
        margin-call event fires; liquidation is at 1.
    margin_call_response : ``'none'``, ``'reduce'`` (cut the position back to
        ``margin_call_target``) or ``'top_up'`` (add capital from ``reserve`` to reach it).
    margin_call_target : margin ratio restored by the response.
    reserve : capital available for top-ups (settlement currency); counted as added capital.
    after_liquidation : ``'stop'`` (the column stops trading) or ``'continue'``.
    excess : what happens to an order the exchange would refuse (tier max leverage or available
        margin): ``'clip'`` it to the largest allowed size, or ``'reject'`` it.
    fee_rate : trading fee as a fraction of traded notional; None = the market's taker fee.
    slippage : adverse fill-price offset as a fraction of price.
    lag : bars between the target's row and the fill (1 = a target computed at bar t's close
        fills at bar t+1's open). 0 is allowed only when the target is known before the open.
    """

    initial_capital: Num = 10_000.0
    margin_mode: Choice = "cross"
    leverage: Num = 20.0
    margin_call_threshold: Num = 0.8
    margin_call_response: Choice = "none"
    margin_call_target: Num = 0.5
    reserve: Num = 0.0
    after_liquidation: Choice = "stop"
    excess: Choice = "clip"
    fee_rate: Num | None = None
    slippage: Num = 0.0
    lag: int = 1


@dataclass(frozen=True)
class Policy:
    """An in-loop leverage policy: scales the target by a factor computed from the column's own
    equity path at the previous close (so it cannot be precomputed from prices).

    ``kind='none'``: factor 1.
    ``kind='drawdown'``: ``dd = 1 - E / peak(E)``; factor = ``clip(1 - dd / max_drawdown, floor, 1)``.
    ``kind='cppi'``: ``F = floor * (peak(E) if ratchet else initial_capital)``;
        factor = ``multiplier * max(E - F, 0) / E`` (the target gives the direction and scale,
        normally +-1).
    After the factor, ``|target| <= max_exposure``.
    """

    kind: Choice = "none"
    max_drawdown: Num = 0.5
    floor: Num = 0.0
    multiplier: Num = 1.0
    ratchet: Num = 0.0
    max_exposure: Num = np.inf


def _per_column(name: str, value: Any, m: int, dtype: type, choices: dict[str, int] | None) -> np.ndarray:
    if choices is not None:
        vals = [value] if isinstance(value, str) else list(value)
        out = []
        for v in vals:
            if v not in choices:
                raise SettingsError(f"{name}={v!r} is not one of {sorted(choices)}")
            out.append(choices[v])
        arr = np.asarray(out, dtype=np.int64)
    else:
        arr = np.atleast_1d(np.asarray(value, dtype=dtype))
    if arr.ndim != 1 or arr.shape[0] not in (1, m):
        raise SettingsError(f"{name} has {arr.shape[0]} values for {m} columns; give 1 or {m}")
    return np.ascontiguousarray(np.broadcast_to(arr, (m,)).copy())


def account_arrays(acc: Account, m: int, default_fee: float) -> dict[str, np.ndarray]:
    """Validate and broadcast an :class:`Account` to per-column arrays."""
    out = {
        "initial_capital": _per_column("initial_capital", acc.initial_capital, m, float, None),
        "margin_mode": _per_column("margin_mode", acc.margin_mode, m, int, MarginMode.names),
        "leverage": _per_column("leverage", acc.leverage, m, float, None),
        "call_threshold": _per_column("margin_call_threshold", acc.margin_call_threshold, m, float, None),
        "call_response": _per_column("margin_call_response", acc.margin_call_response, m, int, CallResponse.names),
        "call_target": _per_column("margin_call_target", acc.margin_call_target, m, float, None),
        "reserve": _per_column("reserve", acc.reserve, m, float, None),
        "after_liq": _per_column("after_liquidation", acc.after_liquidation, m, int, AfterLiquidation.names),
        "excess": _per_column("excess", acc.excess, m, int, Excess.names),
        "fee_rate": _per_column("fee_rate", default_fee if acc.fee_rate is None else acc.fee_rate, m, float, None),
        "slippage": _per_column("slippage", acc.slippage, m, float, None),
    }
    checks = [
        ("initial_capital", lambda a: np.isfinite(a) & (a > 0), "a finite number > 0"),
        ("leverage", lambda a: np.isfinite(a) & (a >= 1), "a finite number >= 1"),
        ("call_threshold", lambda a: (a > 0) & (a <= 1), "in (0, 1]"),
        ("call_target", lambda a: (a > 0) & (a < 1), "in (0, 1)"),
        ("reserve", lambda a: (a >= 0) & ~np.isnan(a), ">= 0"),
        ("fee_rate", lambda a: np.isfinite(a) & (a >= 0) & (a < 0.1), "in [0, 0.1)"),
        ("slippage", lambda a: np.isfinite(a) & (a >= 0) & (a < 0.5), "in [0, 0.5)"),
    ]
    public = {"call_threshold": "margin_call_threshold", "call_target": "margin_call_target"}
    for key, ok, what in checks:
        bad = ~ok(out[key])
        if bad.any():
            j = int(np.argmax(bad))
            raise SettingsError(f"Account.{public.get(key, key)}={float(out[key][j])!r} (column {j}) must be {what}")
    bad = (out["call_response"] != CallResponse.NONE) & (out["call_target"] >= out["call_threshold"])
    if bad.any():
        j = int(np.argmax(bad))
        raise SettingsError(
            f"Account.margin_call_target={out['call_target'][j]} (column {j}) must be below "
            f"margin_call_threshold={out['call_threshold'][j]} for a margin-call response")
    if not isinstance(acc.lag, (int, np.integer)) or acc.lag < 0:
        raise SettingsError(f"Account.lag={acc.lag!r} must be an integer >= 0 (1 = fill at the next open)")
    return out


def policy_arrays(pol: Policy, m: int) -> dict[str, np.ndarray]:
    """Validate and broadcast a :class:`Policy` to per-column arrays."""
    out = {
        "policy_kind": _per_column("Policy.kind", pol.kind, m, int, PolicyKind.names),
        "max_drawdown": _per_column("Policy.max_drawdown", pol.max_drawdown, m, float, None),
        "floor": _per_column("Policy.floor", pol.floor, m, float, None),
        "multiplier": _per_column("Policy.multiplier", pol.multiplier, m, float, None),
        "ratchet": _per_column("Policy.ratchet", pol.ratchet, m, float, None),
        "max_exposure": _per_column("Policy.max_exposure", pol.max_exposure, m, float, None),
    }
    k = out["policy_kind"]
    checks = [
        ("max_drawdown", (k == PolicyKind.DRAWDOWN) & ~((out["max_drawdown"] > 0) & (out["max_drawdown"] <= 1)), "in (0, 1]"),
        ("floor", ~((out["floor"] >= 0) & (out["floor"] < 1)), "in [0, 1) (a fraction)"),
        ("multiplier", (k == PolicyKind.CPPI) & ~(np.isfinite(out["multiplier"]) & (out["multiplier"] > 0)), "a finite number > 0"),
        ("max_exposure", ~(out["max_exposure"] > 0), "> 0"),
    ]
    for key, bad, what in checks:
        if bad.any():
            j = int(np.argmax(bad))
            raise SettingsError(f"Policy.{key}={float(out[key][j])!r} (column {j}) must be {what}")
    return out


def field_names(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]
