"""Settings, outputs and record layouts of a book (several instruments in one account).

The account-level settings are the single-instrument engine's :class:`~backtest.engine.settings.Account`
and :class:`~backtest.engine.settings.Policy`, imported, not copied: initial capital, lag and its
look-ahead rule, margin-call threshold/response/target and reserve, after-liquidation, excess
(clip/reject), fee rate (None = each instrument's taker fee), slippage. What is per instrument is a
:class:`Leg`: its margin mode (cross or isolated; both may coexist in one account, per symbol, as
on Binance) and its leverage setting; a field left at None takes the account's value. Every
field is a scalar or one value per column, as in the single-instrument engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from backtest.engine.bars import EngineInputError
from backtest.engine.settings import (
    Account, Choice, Num, Policy, SettingsError, _bool_per_column, _per_column, account_arrays, policy_arrays,
)
from backtest.market import MarketSpec


class Intrabar:
    """How the margin check walks the bar's marks (docs/mechanics.md, "Books").

    ``together`` (default, conservative): every position's mark moves at once from its open
    toward its own adverse extreme, ``p_i(s) = open_i + s*(adverse_i - open_i)``, s in [0, 1].
    ``alone``: each instrument's adverse extreme is checked with the other marks at their opens
    (instruments in the book's order; the first path that reaches the threshold decides).
    """

    TOGETHER = 0
    ALONE = 1
    names = {"together": 0, "alone": 1}


@dataclass(frozen=True)
class Leg:
    """Per-instrument settings of a book (scalars or one value per column).

    Parameters
    ----------
    margin_mode : ``'cross'`` (the position shares the account's wallet) or ``'isolated'`` (it
        carries its own margin); None = ``Account.margin_mode``.
    leverage : the exchange leverage setting of this symbol (initial margin = notional /
        leverage, and the tier cap); None = ``Account.leverage``.
    """

    margin_mode: Choice | None = None
    leverage: Num | None = None


@dataclass(frozen=True)
class BookSettings:
    """Settings of a book simulation.

    Parameters
    ----------
    account : account-level settings (the single-instrument :class:`Account`; its
        ``margin_mode`` and ``leverage`` are the default of every :class:`Leg`).
    policy : in-loop leverage policy (drawdown control, CPPI) computed from the account's equity
        at the previous close; its factor scales every instrument's target.
    legs : one :class:`Leg` for every instrument, or one Leg for all.
    intrabar : ``'together'`` or ``'alone'`` (:class:`Intrabar`), scalar or per column.
    options : the option legs (:class:`backtest.book.options.OptionLeg`), after the perpetuals on
        the target's instrument axis (docs/mechanics.md, "Options in a book").
    options_collateral : scalar or per column; the long options' value counts in the cross
        account's margin balance (margin checks and liquidation; never the initial margin of
        new orders). Default False.
    """

    account: Account = field(default_factory=Account)
    policy: Policy = field(default_factory=Policy)
    legs: Leg | Sequence[Leg] = field(default_factory=Leg)
    intrabar: Choice = "together"
    options: Sequence = ()
    options_collateral: bool | Sequence[bool] = False


def check_settlement(specs: Sequence[MarketSpec]) -> tuple[bool, str]:
    """One account settles in one currency: every instrument linear with the same settlement
    currency (USDT), or every instrument inverse in the same coin. Returns ``(inverse, settle)``;
    a mix is refused naming each symbol's kind and currency."""
    kinds = {(bool(s.inverse), str(s.settle)) for s in specs}
    if len(kinds) != 1:
        each = ", ".join(f"{s.symbol}: {'inverse' if s.inverse else 'linear'} in {s.settle}" for s in specs)
        raise SettingsError(
            f"a book is one account in one settlement currency, but its instruments are {each}; "
            "put linear (USDT) and inverse (coin) instruments, or different coins, in separate books")
    (kind,) = kinds
    return kind


def leg_arrays(settings: BookSettings, specs: Sequence[MarketSpec], m: int,
               n_bars: int) -> list[dict[str, np.ndarray]]:
    """Per instrument, the account's settings with that leg's margin mode and leverage,
    validated and broadcast to ``m`` columns (:func:`account_arrays`; the fee rate defaults to
    that instrument's taker fee)."""
    legs = settings.legs
    if isinstance(legs, Leg):
        legs = [legs] * len(specs)
    legs = list(legs)
    if len(legs) != len(specs):
        raise SettingsError(f"BookSettings.legs has {len(legs)} entries for {len(specs)} instruments; "
                            "give one Leg per instrument, or one Leg for all")
    out = []
    acc = settings.account
    for k, (leg, spec) in enumerate(zip(legs, specs)):
        if not isinstance(leg, Leg):
            raise SettingsError(f"BookSettings.legs[{k}] is a {type(leg).__name__}; give a Leg")
        a = replace(acc,
                    margin_mode=acc.margin_mode if leg.margin_mode is None else leg.margin_mode,
                    leverage=acc.leverage if leg.leverage is None else leg.leverage)
        try:
            out.append(account_arrays(a, m, default_fee=spec.taker_fee, n_bars=n_bars))
        except SettingsError as e:
            raise SettingsError(f"instrument {k} ({spec.symbol}): {e}") from None
    return out


def book_arrays(settings: BookSettings, specs: Sequence[MarketSpec], m: int, n_bars: int):
    """Validate every setting for ``m`` columns: ``(legs, policy, intrabar, collateral)`` with
    ``legs`` from :func:`leg_arrays`, ``policy`` from :func:`policy_arrays`, ``intrabar`` int64
    (m,) and ``collateral`` bool (m,) (``options_collateral``)."""
    if not isinstance(settings, BookSettings):
        raise SettingsError(f"settings is a {type(settings).__name__}; give a BookSettings")
    check_settlement(specs)
    legs = leg_arrays(settings, specs, m, n_bars)
    pol = policy_arrays(settings.policy, m)
    intrabar = _per_column("BookSettings.intrabar", settings.intrabar, m, int, Intrabar.names)
    collateral = _bool_per_column("BookSettings.options_collateral", settings.options_collateral, m)
    return legs, pol, intrabar, collateral


def book_target(target, n: int, k: int) -> np.ndarray:
    """The target as float64 (n, K, m): a (n, K) array is one column."""
    tgt = np.asarray(target, dtype=np.float64)
    if tgt.ndim == 2:
        tgt = tgt[:, :, None]
    if tgt.ndim != 3 or tgt.shape[0] != n or tgt.shape[1] != k:
        raise EngineInputError(
            f"target has shape {np.shape(target)} but the book has {n} bars and {k} instruments; give a "
            f"(n_bars, n_instruments, n_cols) or (n_bars, n_instruments) array aligned to the book's bars")
    return tgt


# --------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------

# Account series, float64 (n_bars, n_cols), valued at the bar's mark closes.
BOOK_SERIES = (
    "equity",                # W + sum_k (M_k + uPnL_k(mark close)), settlement currency
    "equity_usd",            # equity in USD (inverse: times the settle coin's mark close)
    "margin_ratio",          # at the close: the highest MM/MB among the margin groups (the cross
                             # account, each isolated position); 0 when flat
    "margin_ratio_adverse",  # the same at the adverse end of the bar's intrabar path (after
                             # step 5): together, s = 1; alone, the highest over the paths
    "gross_leverage",        # sum_k |N_k(mark close)| / equity (0 when equity <= 0)
    "cum_funding", "cum_fees", "capital_added",   # cum_fees: trading + clearance fees
    "liq_distance",          # the account's distance to liquidation at the close: the smallest
                             # common adverse move x (fraction; a short's mark to P (1 + x), a
                             # long's to P (1 - x), all at once) at which a margin group reaches
                             # ratio 1 (backtest.book.nb.liq_distance_nb); NaN when flat, inf
                             # when no move liquidates (docs/mechanics.md, "Books", step 6)
)

# Per-position series, float64 (n_bars, n_instruments, n_cols).
POSITION_SERIES = (
    "position",         # signed contracts at the close
    "notional",         # signed C * v(mark close), settlement currency
    "liq_price",        # Binance cross formula (TMM1, UPNL1 of the other cross positions at
                        # their closes; isolated: the position alone); 0.0 = none
    "pnl_price",        # cumulative realised price PnL of fills + uPnL at the close
    "pnl_funding",      # cumulative funding received (+) / paid (-)
    "pnl_fees",         # cumulative trading fees paid (>= 0)
    "pnl_liquidation",  # cumulative: PnL realised by liquidation closes - clearance fees charged
                        # + share of the insurance fund's deficit
)
# Equity identity (tested per bar): equity = initial capital + capital_added
#   + sum_k (pnl_price + pnl_funding - pnl_fees + pnl_liquidation).

book_fill_dt = np.dtype([
    ("bar", np.int64), ("col", np.int64), ("instrument", np.int64),
    ("price", np.float64), ("size", np.float64), ("notional", np.float64), ("fee", np.float64),
    ("status", np.int64),   # engine.enums.FillStatus
    ("reason", np.int64),   # engine.enums.FillReason
], align=True)

book_funding_dt = np.dtype([
    ("bar", np.int64), ("col", np.int64), ("instrument", np.int64),
    ("time", np.int64), ("rate", np.float64), ("mark", np.float64),
    ("position", np.float64), ("amount", np.float64),
], align=True)

book_margin_call_dt = np.dtype([
    ("bar", np.int64), ("col", np.int64),
    ("instrument", np.int64),      # -1: the cross account; k: isolated position k
    ("path", np.int64),            # -1: all marks together; k: instrument k's extreme alone
    ("s", np.float64),             # path fraction at which the ratio reached the threshold
    ("margin_ratio", np.float64),  # the group's ratio there, before the response
    ("response", np.int64),        # engine.settings.CallResponse
    ("amount", np.float64),        # capital added (top_up); 0 otherwise (a reduce's cuts are
                                   # fills with reason margin_call)
], align=True)

book_liquidation_dt = np.dtype([
    ("bar", np.int64), ("col", np.int64), ("instrument", np.int64),
    ("s", np.float64),               # path fraction of the liquidation (0 on a gap)
    ("trigger_price", np.float64),   # the position's liquidation price with the others at
                                     # their execution marks (Binance cross formula, re-tiered)
    ("price", np.float64),           # execution mark of this position
    ("size", np.float64),            # signed contracts closed
    ("clearance_fee", np.float64),   # charged on this position
    ("deficit", np.float64),         # this position's share of the insurance fund's cover
    ("gap", np.int64),               # 1: the account was past liquidation at the mark opens
    ("equity_start", np.float64),    # account equity before the adverse move (mark opens; on a
                                     # step-2 gap, the previous closes)
    ("equity_before", np.float64),   # account equity at the execution marks
    ("equity_after", np.float64),    # account equity after the liquidation (same marks)
], align=True)

BOOK_RECORD_DTYPES = {
    "fills": book_fill_dt,
    "funding": book_funding_dt,
    "margin_calls": book_margin_call_dt,
    "liquidations": book_liquidation_dt,
}
