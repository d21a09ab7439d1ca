"""Account settings and in-loop leverage policies for the perpetual engine.

Every field is a scalar (same for all columns) or a sequence with one value per column; the
wrapper broadcasts them to per-column arrays for the kernel. Enums are ints numba can read.
"""

from __future__ import annotations

import textwrap
from dataclasses import Field, dataclass, field, fields
from typing import Any, Sequence

import numpy as np


class MarginMode:
    ISOLATED = 0
    CROSS = 1
    names = {"cross": 1, "isolated": 0}  # the default first: the order the config messages list


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
class Setting:
    """How a setting is declared, once: the config model (``backtest.runner.config``), the
    engine's per-column arrays (:func:`account_arrays`), the class docstring and the key table
    of ``docs/runner.md`` are all built from it.

    Attributes
    ----------
    doc : what the setting means, with its unit (numpy-docstring text; ````x```` is code).
    kind : the value's type: ``'number'``, ``'choice'`` (one of ``choices``' names), ``'bool'``
        or ``'int'``.
    choices : a choice's names and their ints (an enum's ``names``, the default first).
    kernel : the key of its per-column array for the kernel (the setting takes one value or one
        per column); None: one value for all columns.
    minimum : the smallest value of an ``'int'`` setting.
    doc_default : how the docs show the default, when not the value itself (e.g. a None).
    """

    doc: str
    kind: str = "number"
    choices: dict[str, int] | None = None
    kernel: str | None = None
    minimum: int | None = None
    doc_default: str | None = None


def setting(default: Any, doc: str, **how: Any) -> Any:
    """A dataclass field with its :class:`Setting` (``how``: the other attributes)."""
    return field(default=default, metadata={"setting": Setting(doc, **how)})


def setting_of(f: Field) -> Setting:
    """The :class:`Setting` of a dataclass field declared with :func:`setting`."""
    return f.metadata["setting"]


def _document(cls: type) -> type:
    """Append a numpy-style Parameters section built from the fields' settings to the docstring."""
    lines = ["", "    Parameters", "    ----------"]
    for f in fields(cls):
        lines.append(f"    {f.name}")
        lines += textwrap.wrap(setting_of(f).doc, 96, initial_indent=" " * 8, subsequent_indent=" " * 8)
    cls.__doc__ = (cls.__doc__ or "").rstrip() + "\n" + "\n".join(lines) + "\n"
    return cls


@_document
@dataclass(frozen=True)
class Account:
    """Account and execution settings (scalars or one value per column)."""

    initial_capital: Num = setting(
        10_000.0, "starting wallet balance in the settlement currency (USDT, or the coin for inverse perps)",
        kernel="initial_capital")
    margin_mode: Choice = setting(
        "cross", "what backs the position: ``'cross'``, the whole wallet, or ``'isolated'``, only the "
        "position's own margin (all it can lose)", kind="choice", choices=MarginMode.names, kernel="margin_mode")
    leverage: Num = setting(
        20.0, "the exchange leverage setting: initial (and isolated) margin = notional / leverage "
        "(<= the tier maximum); independent of the target exposure, which is a multiple of equity",
        kernel="leverage")
    margin_call_threshold: Num = setting(
        0.8, "margin ratio (maintenance margin / margin balance) at which a margin call fires; "
        "liquidation is at 1", kernel="call_threshold")
    margin_call_response: Choice = setting(
        "none", "what a margin call does: ``'none'``, ``'reduce'`` (cut the position back to "
        "``margin_call_target``) or ``'top_up'`` (add capital from ``reserve`` to reach it)",
        kind="choice", choices=CallResponse.names, kernel="call_response")
    margin_call_target: Num = setting(0.5, "margin ratio restored by the response", kernel="call_target")
    reserve: Num = setting(
        0.0, "capital available for top-ups (settlement currency); counted as added capital", kernel="reserve")
    after_liquidation: Choice = setting(
        "stop", "whether a liquidated column trades again: ``'stop'`` (it stops trading) or ``'continue'``",
        kind="choice", choices=AfterLiquidation.names, kernel="after_liq")
    excess: Choice = setting(
        "clip", "what happens to an order the exchange would refuse (beyond the tier's maximum leverage "
        "or the available margin): ``'clip'`` it to the largest allowed size, or ``'reject'`` it",
        kind="choice", choices=Excess.names, kernel="excess")
    fee_rate: Num | None = setting(
        None, "trading fee as a fraction of traded notional (None, the default: the market's taker fee)",
        kernel="fee_rate", doc_default="market taker fee")
    slippage: Num = setting(0.0, "adverse fill-price offset as a fraction of price", kernel="slippage")
    # before ``lag``: the config checks the lag with it
    allow_lookahead: bool = setting(
        False, "states that the target is known before each bar opens (e.g. it was computed from the "
        "previous bar), so ``lag = 0`` is not look-ahead and may run. The result says so "
        "(``meta['allow_lookahead']`` and a note in ``meta['notes']``, kept in a report's "
        "``metrics.json``; ``config.json`` records it)", kind="bool")
    lag: int = setting(
        1, "bars between a target's row and its fill (1: a target computed at bar t's close fills at "
        "bar t+1's open); shorter than the data. ``lag = 0`` fills row t at bar t's own open, a price "
        "known before the close that computed a close-based target: look-ahead, refused unless "
        "``allow_lookahead = True``", kind="int", minimum=0)


@_document
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

    kind: Choice = setting("none", "``'none'``, ``'drawdown'`` or ``'cppi'``", kind="choice", choices=PolicyKind.names,
                           kernel="policy_kind")
    max_drawdown: Num = setting(0.5, "drawdown: the drawdown (fraction of the peak) at which the factor reaches "
                                "``floor``, in (0, 1]", kernel="max_drawdown")
    floor: Num = setting(0.0, "drawdown: the smallest factor; cppi: the protected fraction of the initial "
                         "capital (or of the peak when ratcheting); in [0, 1)", kernel="floor")
    multiplier: Num = setting(1.0, "cppi: the cushion multiplier, > 0", kernel="multiplier")
    ratchet: bool | Sequence[bool] | np.ndarray = setting(
        False, "cppi: the floor follows the equity peak (``True``) or the initial capital (``False``)",
        kind="bool", kernel="ratchet")
    max_exposure: Num = setting(np.inf, "cap on ``|target|`` after the factor, > 0 (inf: none)",
                                kernel="max_exposure")


def per_column_fields(cls: type) -> list[str]:
    """Names of the settings of ``cls`` that take one value per column (those with a kernel array)."""
    return [f.name for f in fields(cls) if setting_of(f).kernel is not None]


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
    out = {}
    for f in fields(Account):
        how = setting_of(f)
        if how.kernel is None:  # one value for all columns (lag, allow_lookahead): checked below
            continue
        value = getattr(acc, f.name)
        if value is None:  # fee_rate: the market's
            value = default_fee
        if how.choices is not None:
            out[how.kernel] = _per_column(f.name, value, m, int, how.choices)
        else:
            out[how.kernel] = _per_column(f.name, value, m, float, None)
    checks = [
        ("initial_capital", lambda a: np.isfinite(a) & (a > 0), "a finite number > 0"),
        ("leverage", lambda a: np.isfinite(a) & (a >= 1), "a finite number >= 1"),
        ("call_threshold", lambda a: (a > 0) & (a <= 1), "in (0, 1]"),
        ("call_target", lambda a: (a > 0) & (a < 1), "in (0, 1)"),
        ("reserve", lambda a: (a >= 0) & ~np.isnan(a), ">= 0"),
        ("fee_rate", lambda a: np.isfinite(a) & (a >= 0) & (a < 0.1), "in [0, 0.1)"),
        ("slippage", lambda a: np.isfinite(a) & (a >= 0) & (a < 0.5), "in [0, 0.5)"),
    ]
    public = {setting_of(f).kernel: f.name for f in fields(Account)}
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
