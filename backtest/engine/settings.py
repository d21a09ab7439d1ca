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
    allow_lookahead : ``True`` states that the target is known before each bar opens (e.g. it
        was computed from the previous bar), so ``lag = 0`` is not look-ahead. The result says
        so (``meta['allow_lookahead']`` and a note in ``meta['notes']``, kept in a report's metrics.json).
    lag : bars between the target's row and the fill (1 = a target computed at bar t's close
        fills at bar t+1's open); an integer shorter than the data. ``lag = 0`` fills
        row t at bar t's own open, a price known before the close that computed a close-based
        target: look-ahead. It is refused unless ``allow_lookahead=True``.
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
    allow_lookahead: bool = False
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
    After the factor, ``|target| <= max_exposure``. The formula is
    :func:`backtest.engine.nb.policy_target_nb`, the one both the kernel and the reference call.

    Numbers are numbers (a bool is refused), ``ratchet`` is a bool (``True``/``False``, or one
    per column; a number is refused: it once meant "on" when > 0.5 in the kernel and when != 0
    in the reference).
    """

    kind: Choice = "none"
    max_drawdown: Num = 0.5
    floor: Num = 0.0
    multiplier: Num = 1.0
    ratchet: bool | Sequence[bool] | np.ndarray = False
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


def _bool_per_column(name: str, value: Any, m: int) -> np.ndarray:
    """A bool setting (scalar or one per column) as a bool array (m,); anything but
    ``True``/``False`` (numpy bools included) is refused."""
    vals = [value] if np.ndim(value) == 0 else list(np.asarray(value, dtype=object).ravel())
    for j, v in enumerate(vals):
        if not isinstance(v, (bool, np.bool_)):
            where = "" if np.ndim(value) == 0 else f" (column {j})"
            raise SettingsError(f"{name}={v!r}{where} must be True or False")
    if len(vals) not in (1, m):
        raise SettingsError(f"{name} has {len(vals)} values for {m} columns; give 1 or {m}")
    return np.ascontiguousarray(np.broadcast_to(np.asarray(vals, dtype=np.bool_), (m,)).copy())


def _number_per_column(name: str, value: Any, m: int) -> np.ndarray:
    """A numeric setting as float64 (m,); a bool (``floor=True``) is a typo, not 1.0."""
    vals = [value] if np.ndim(value) == 0 else list(np.asarray(value, dtype=object).ravel())
    for v in vals:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise SettingsError(f"{name}={v!r} must be a number")
    return _per_column(name, value, m, float, None)


def check_lag(acc: Account, n_bars: int | None = None) -> int:
    """The validated ``Account.lag``: an integer >= 0; 0 only with ``allow_lookahead=True``; and,
    given the number of bars, shorter than the data (else no target row would ever be filled)."""
    if not isinstance(acc.allow_lookahead, (bool, np.bool_)):
        raise SettingsError(f"Account.allow_lookahead={acc.allow_lookahead!r} must be True or False")
    lag = acc.lag
    if isinstance(lag, (bool, np.bool_)) or not isinstance(lag, (int, np.integer)) or lag < 0:
        raise SettingsError(f"Account.lag={lag!r} must be an integer >= 0 (1 = fill at the next open)")
    if lag == 0 and not acc.allow_lookahead:
        raise SettingsError(
            "Account.lag=0 fills each target row at the open of its own bar, before the close that a "
            "close-based target is computed from (look-ahead); use lag=1 (the next open), or set "
            "allow_lookahead=True if the target is known before each bar opens")
    if n_bars is not None and lag >= n_bars:
        raise SettingsError(
            f"Account.lag={lag} is not shorter than the data ({n_bars} bars): no target row would reach "
            f"a bar; use a lag below {n_bars} or load more bars")
    return int(lag)


def lookahead_notes(acc: Account) -> list[str]:
    """Notes a result carries about its lag: one when ``allow_lookahead`` let ``lag = 0`` run."""
    if int(acc.lag) == 0 and acc.allow_lookahead:
        return ["lag = 0 with allow_lookahead = true: each target row is filled at the open of its own bar "
                "(look-ahead if the target uses that bar's prices; stated by the user as known before the open)"]
    return []


def account_arrays(acc: Account, m: int, default_fee: float, n_bars: int | None = None) -> dict[str, np.ndarray]:
    """Validate and broadcast an :class:`Account` to per-column arrays; with ``n_bars``, the
    lag is also checked against the data (:func:`check_lag`)."""
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
    check_lag(acc, n_bars)
    return out


def policy_arrays(pol: Policy, m: int) -> dict[str, np.ndarray]:
    """Validate and broadcast a :class:`Policy` to per-column arrays."""
    out = {
        "policy_kind": _per_column("Policy.kind", pol.kind, m, int, PolicyKind.names),
        "max_drawdown": _number_per_column("Policy.max_drawdown", pol.max_drawdown, m),
        "floor": _number_per_column("Policy.floor", pol.floor, m),
        "multiplier": _number_per_column("Policy.multiplier", pol.multiplier, m),
        "ratchet": _bool_per_column("Policy.ratchet", pol.ratchet, m),
        "max_exposure": _number_per_column("Policy.max_exposure", pol.max_exposure, m),
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
