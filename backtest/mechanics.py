"""Exchange mechanics of perpetual futures, written once, readably (plain Python floats).

Every function cites the exchange document it restates. The numba kernel
(:mod:`backtest.engine.nb`) implements the same rules for speed; the reference simulator
(:mod:`backtest.engine.reference`) is built from these functions, and the tests check both
against the exchanges' published worked examples (``tests/engine/test_mechanics.py``).

Notation (as in the README ("Engine semantics"))
-----------------------------------
``C`` signed contracts (negative = short); ``cs`` contract size (base units per contract for a
linear contract, USD per contract for an inverse one); ``Q = abs(C) * cs``; ``s = sign(C)``;
``EP`` entry price; ``B`` the balance backing the position (cross: wallet, isolated: isolated
margin); notional ``N(P)`` is ``Q*P`` (linear, quote currency) or ``Q/P`` (inverse, coin), the unit
of the tier table. A tier table is an array of shape ``(n_tiers, 5)`` with the columns of
:mod:`backtest.market`: min notional, max notional, maintenance margin rate, maintenance amount
(``cum``), max leverage (a :class:`backtest.market.TierTable` is accepted too).

Sources
-------
* [BN-LIN] Binance, "How to Calculate Liquidation Price of USDⓈ-M Futures Contracts",
  https://www.binance.com/en/support/faq/b3c689c1f50a44cabb3a84e663b81d93
* [BN-INV] Binance, "How to Calculate Liquidation Price of COIN-M Futures Contracts",
  https://www.binance.com/en/support/faq/ceccfcfb4e3a45e3b48b0b1bb1a8ae46
* [BN-LIQ] Binance, "Binance Futures Liquidation Protocols",
  https://www.binance.com/en/support/faq/360033525271
* [BN-FUND] Binance, "Introduction to Binance Futures Funding Rates",
  https://www.binance.com/en/support/faq/360033525031
* [BN-LEV] Binance, "Leverage and Margin of USDⓈ-M Futures" (brackets: notional floor/cap, max
  leverage per bracket), https://www.binance.com/en/support/faq/360033162192
* [BITMEX] BitMEX, inverse futures and perpetual guides (PnL of inverse contracts),
  https://www.bitmex.com/app/inverseFuturesGuide
* [FT] freqtrade ``freqtrade/exchange/binance.py::dry_run_liquidation_price`` and
  ``exchange.py::calculate_funding_fees`` @ c9ae5e1 (restatements with tests).
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np

# Columns of a tier table (same layout as backtest.market).
TIER_MIN, TIER_MAX, TIER_MMR, TIER_CUM, TIER_MAXLEV = range(5)


def _rows(tiers) -> np.ndarray:
    rows = getattr(tiers, "rows", tiers)
    return np.asarray(rows, dtype=np.float64)


def _sign(x: float) -> int:
    return int(x > 0) - int(x < 0)


# --------------------------------------------------------------------------------------------
# Tiers and maintenance margin
# --------------------------------------------------------------------------------------------

def tier_index(tiers, notional: float) -> int:
    """Index of the tier whose ``[minNotional, maxNotional)`` contains ``notional``.

    A notional beyond the last tier's cap uses the last tier. [BN-LIN]: "Maintenance Margin =
    Position Notional x Maintenance Margin Rate on the level of position notional - Maintenance
    Amount on the level of position notional".

    Parameters
    ----------
    tiers : (n_tiers, 5) array or TierTable.
    notional : absolute position notional in the tier table's unit (USDT linear, coin inverse).
    """
    rows = _rows(tiers)
    for k in range(rows.shape[0]):
        if rows[k, TIER_MIN] <= notional < rows[k, TIER_MAX]:
            return k
    if notional < rows[0, TIER_MIN]:
        return 0
    return rows.shape[0] - 1


def maintenance_margin(notional: float, tiers) -> float:
    """Maintenance margin ``MM = N * mmr - cum`` of the tier containing ``N``. [BN-LIN], [BN-INV].

    Units: those of the tier table (USDT for linear, coin for inverse contracts).
    """
    rows = _rows(tiers)
    k = tier_index(rows, notional)
    return notional * rows[k, TIER_MMR] - rows[k, TIER_CUM]


def maintenance_amounts(min_notional: Iterable[float], mmr: Iterable[float]) -> np.ndarray:
    """Maintenance amounts ``cum`` of a tier table from its floors and rates.

    Binance's recursion ``cum_1 = 0``, ``cum_n = cum_{n-1} + minNotional_n * (mmr_n - mmr_{n-1})``
    makes the maintenance margin continuous at every tier boundary. [BN-LIN] worked example
    (2020 table): level 3 amount = 250,000 x (1% - 0.5%) + 50 = 1,300 USDT.

    Returns
    -------
    float64 array (n_tiers,).
    """
    lo = [float(x) for x in min_notional]
    rate = [float(x) for x in mmr]
    if len(lo) != len(rate):
        raise ValueError(f"maintenance_amounts: {len(lo)} floors but {len(rate)} rates; give one rate per tier")
    out = [0.0]
    for n in range(1, len(lo)):
        out.append(out[-1] + lo[n] * (rate[n] - rate[n - 1]))
    return np.array(out[: len(lo)], dtype=np.float64)


def max_notional_at_leverage(tiers, leverage: float) -> float:
    """Largest position notional the exchange allows at a leverage setting (tier cap).

    [BN-LEV]: each bracket has a notional cap and a maximum leverage; a leverage setting ``L`` is
    allowed up to the cap of the last bracket whose max leverage is at least ``L``. Returns the
    largest ``maxNotional`` among the tiers with ``maxLeverage >= leverage``, 0.0 when no tier
    allows that leverage (the setting is above the first tier's maximum).
    """
    rows = _rows(tiers)
    cap = 0.0
    for k in range(rows.shape[0]):
        if rows[k, TIER_MAXLEV] >= leverage:
            cap = max(cap, rows[k, TIER_MAX])
    return cap


# --------------------------------------------------------------------------------------------
# Contract value, notional, PnL
# --------------------------------------------------------------------------------------------

def contract_value(price: float, contract_size: float = 1.0, inverse: bool = False) -> float:
    """Value of one contract in the settlement currency: ``cs*P`` (linear) or ``cs/P`` (inverse).

    [BN-INV]: COIN-M notional (coin) = contracts x contract size (USD) / mark price; [BN-LIN]:
    USDⓈ-M notional = quantity x mark price.
    """
    return contract_size / price if inverse else contract_size * price


def position_notional(contracts: float, price: float, contract_size: float = 1.0,
                      inverse: bool = False) -> float:
    """Absolute notional ``N(P) = abs(C) * v(P)`` in the settlement currency (tier-table unit)."""
    return abs(contracts) * contract_value(price, contract_size, inverse)


def unrealized_pnl(contracts: float, entry: float, price: float, contract_size: float = 1.0,
                   inverse: bool = False) -> float:
    """Unrealised PnL at ``price`` in the settlement currency.

    Linear: ``C * cs * (P - EP)`` [BN-LIN]. Inverse: ``C * cs * (1/EP - 1/P)`` (coin) [BITMEX]:
    "# Contracts x Multiplier x (1/Entry - 1/Exit)"; Binance COIN-M uses the same rule.
    """
    if contracts == 0.0:
        return 0.0
    if inverse:
        return contracts * contract_size * (1.0 / entry - 1.0 / price)
    return contracts * contract_size * (price - entry)


def margin_ratio(maintenance: float, margin_balance: float) -> float:
    """Binance margin ratio ``MM / MB`` [BN-LIQ]; liquidation at 100 %. ``inf`` when MB <= 0
    (a non-positive balance is past any threshold)."""
    if margin_balance <= 0.0:
        return math.inf
    return maintenance / margin_balance


# --------------------------------------------------------------------------------------------
# Liquidation price
# --------------------------------------------------------------------------------------------

def cross_other_positions(others: Iterable[tuple[float, float, float, float, float]]) -> tuple[float, float]:
    """``(TMM1, UPNL1)`` of the *other* cross positions for Binance's cross liquidation price.

    [BN-LIN] variable list: TMM1 = maintenance margin of all other contracts (excluding the
    contract of interest), UPNL1 = their unrealised PnL.

    Parameters
    ----------
    others : iterable of ``(signed_qty, entry, mark, mmr, cum)`` of linear positions (base units).
    """
    tmm, upnl = 0.0, 0.0
    for qty, entry, mark, mmr, cum in others:
        tmm += abs(qty) * mark * mmr - cum
        upnl += qty * (mark - entry)
    return tmm, upnl


def binance_liquidation_price_linear(side: int, qty: float, entry: float, wallet: float,
                                     mmr: float, cum: float, other_mm: float = 0.0,
                                     other_upnl: float = 0.0) -> float:
    """Binance USDⓈ-M liquidation price, one-way mode, one tier ``(mmr, cum)``. [BN-LIN], [FT]

    ``LP = (WB - TMM1 + UPNL1 + cum - s*Q*EP) / (Q*mmr - s*Q)``

    Parameters
    ----------
    side : +1 long, -1 short.
    qty : position size in base units (``Q``, > 0).
    entry : entry price (quote per base).
    wallet : ``WB``: cross wallet balance, or the isolated margin (USDT).
    mmr, cum : maintenance margin rate and amount of the tier assumed at the liquidation price.
    other_mm, other_upnl : ``TMM1``, ``UPNL1`` of the other cross positions (0 in isolated mode).

    Returns
    -------
    The price (may be <= 0 when no positive price liquidates); no re-tiering here, see
    :func:`liquidation_price`.
    """
    b = wallet - other_mm + other_upnl
    return (b + cum - side * qty * entry) / (qty * mmr - side * qty)


def binance_liquidation_price_inverse(side: int, qty_usd: float, entry: float, wallet: float,
                                      mmr: float, cum: float, other_mm: float = 0.0,
                                      other_upnl: float = 0.0) -> float:
    """Binance COIN-M liquidation price, one-way mode, one tier ``(mmr, cum)``. [BN-INV]

    ``LP = Q*(mmr + s) / (WB - TMM1 + UPNL1 + cum + s*Q/EP)`` with ``Q = contracts x contract
    size`` in USD; ``WB``, ``cum``, ``TMM1``, ``UPNL1`` in coin. (Binance writes the numerator as
    ``Size*MMR + Side*Size`` times the contract multiplier.)

    Returns
    -------
    The price; ``inf``/negative when the denominator is <= 0 (no price, or every price,
    liquidates); no re-tiering here, see :func:`liquidation_price`.
    """
    b = wallet - other_mm + other_upnl
    den = b + cum + side * qty_usd / entry
    # a 1x short (B = Q/EP) makes the denominator vanish; rounding noise must not turn "no
    # liquidation price" into a price of 1e20
    if abs(den) <= 1e-12 * (abs(b) + abs(cum) + qty_usd / entry):
        return math.inf
    return qty_usd * (mmr + side) / den


def _line_root(side: int, qty: float, entry: float, balance: float, mmr: float, cum: float,
               inverse: bool, threshold: float) -> float:
    """Price solving ``threshold * (B + uPnL(P)) = N(P)*mmr - cum`` for one tier's line.

    With ``threshold = 1`` this is Binance's formula; a threshold ``r`` is the same formula with
    ``mmr/r`` and ``cum/r`` (divide both sides by ``r``)."""
    m, c = mmr / threshold, cum / threshold
    if inverse:
        return binance_liquidation_price_inverse(side, qty, entry, balance, m, c)
    den = qty * m - side * qty
    if den == 0.0:
        return math.inf
    num = balance + c - side * qty * entry
    # a 1x long (B = Q*EP) makes the numerator vanish: rounding noise must not turn "no
    # liquidation price" into a price of 1e-12
    if abs(num) <= 1e-12 * (abs(balance) + abs(c) + qty * entry):
        return 0.0
    return num / den


def liquidation_price(contracts: float, entry: float, balance: float, tiers,
                      contract_size: float = 1.0, inverse: bool = False, *,
                      other_mm: float = 0.0, other_upnl: float = 0.0,
                      threshold: float = 1.0) -> float | None:
    """Liquidation price with the tier re-chosen at the liquidation price. [BN-LIN], [BN-INV]

    Solves ``MB(P) = MM(P)`` where ``MB(P) = B - TMM1 + UPNL1 + uPnL(P)`` and ``MM(P)`` uses the
    tier containing ``N(P)``: Binance's closed form is evaluated with a tier, and when the
    notional at the resulting price lies in another tier the formula is re-evaluated with that
    tier ("assumed margin level", [BN-LIN]), until the tier at the price is the tier used.

    Why the iteration ends: with Binance's maintenance amounts ``MM(N) = max_k(N*mmr_k - cum_k)``
    (each tier's line lies below the piecewise function), so every tier's root is on the safe
    side of the true root and moving to the tier at the current root moves monotonically toward
    it; a tier is never revisited except at a boundary, where both lines give the same price.

    With ``threshold = r < 1`` the same solves ``MM(P)/MB(P) = r``: the margin-call price.

    Parameters
    ----------
    contracts : signed position ``C`` (contracts, negative = short), nonzero.
    entry : entry price.
    balance : ``B``: cross wallet, or the isolated margin (settlement currency).
    tiers : (n_tiers, 5) tier table in force (notional in the settlement currency).
    contract_size, inverse : contract specification.
    other_mm, other_upnl : ``TMM1``/``UPNL1`` of other cross positions (settlement currency).
    threshold : margin ratio to solve for (1 = liquidation).

    Returns
    -------
    The price ``P*``: a short is liquidatable at prices ``>= P*``, a long at prices ``<= P*``.
    ``None`` when no positive price liquidates (e.g. an inverse 1x short, a linear 1x long).
    ``0.0`` (short) or ``inf`` (long) when every positive price does (balance already exhausted).
    """
    if contracts == 0.0:
        raise ValueError("liquidation_price: the position is flat (contracts=0); there is nothing to liquidate")
    rows = _rows(tiers)
    side = _sign(contracts)
    qty = abs(contracts) * contract_size
    b = balance - other_mm + other_upnl

    def notional_at(p: float) -> float:
        return qty / p if inverse else qty * p

    def line_gap(k: int, p: float) -> float:
        # threshold*MB - MM on tier k's line; <= 0 means liquidatable on that line
        upnl = unrealized_pnl(contracts, entry, p, contract_size, inverse)
        return threshold * (b + upnl) - (notional_at(p) * rows[k, TIER_MMR] - rows[k, TIER_CUM])

    k = tier_index(rows, notional_at(entry))
    seen = []
    while True:
        seen.append(k)
        p = _line_root(side, qty, entry, b, rows[k, TIER_MMR], rows[k, TIER_CUM], inverse, threshold)
        if math.isfinite(p) and p > 0.0:
            j = tier_index(rows, notional_at(p))
        elif line_gap(k, entry) <= 0.0:
            # this line is below zero at every price, and MM is at least the line: every price liquidates
            return 0.0 if side < 0 else math.inf
        elif k == 0 or 0 in seen:
            return None
        else:
            # this line never reaches zero; the price end where a root can lie is where the
            # notional goes to 0, i.e. the first tier
            k = 0
            continue
        if j == k:
            return p
        if j in seen:
            # a boundary between two tiers: both lines meet there (continuous MM)
            return p
        k = j


def margin_call_price(contracts: float, entry: float, balance: float, tiers, threshold: float,
                      contract_size: float = 1.0, inverse: bool = False) -> float | None:
    """Mark price at which the margin ratio ``MM/MB`` reaches ``threshold`` (re-tiered).

    The engine's generalisation of [BN-LIN]/[BN-INV]: ``threshold*MB(P) = MM(P)``, i.e. Binance's
    formula with ``mmr/threshold`` and ``cum/threshold``. See :func:`liquidation_price`.
    """
    return liquidation_price(contracts, entry, balance, tiers, contract_size, inverse, threshold=threshold)


def isolated_liquidation_price(side: int, entry: float, leverage: float, mmr: float,
                               cum: float = 0.0, qty: float = 1.0, inverse: bool = False) -> float | None:
    """Closed-form isolated liquidation price when the isolated margin is the initial margin
    ``WB = N(EP)/L`` (no fees, one tier). Derived from [BN-LIN]/[BN-INV] by substituting ``WB``.

    Linear (``qty`` in base units):
      long  ``EP*(1 - 1/L)/(1 - mmr) - cum/(Q*(1 - mmr))``;
      short ``EP*(1 + 1/L)/(1 + mmr) + cum/(Q*(1 + mmr))``.
    Inverse (``qty`` in USD): ``EP*(mmr + s) / (1/L + s + cum*EP/Q)``; with ``cum = 0``:
      long ``EP*(1 + mmr)/(1 + 1/L)``, short ``EP*(1 - mmr)/(1 - 1/L)``.

    Returns
    -------
    The price, or ``None`` when no positive price liquidates (linear 1x long, inverse 1x short).
    """
    if inverse:
        den = 1.0 / leverage + side + cum * entry / qty
        p = entry * (mmr + side) / den if den != 0.0 else math.inf
    elif side > 0:
        p = entry * (1.0 - 1.0 / leverage) / (1.0 - mmr) - cum / (qty * (1.0 - mmr))
    else:
        p = entry * (1.0 + 1.0 / leverage) / (1.0 + mmr) + cum / (qty * (1.0 + mmr))
    return p if (math.isfinite(p) and p > 0.0) else None


def bankruptcy_price(side: int, entry: float, balance: float, qty: float,
                     inverse: bool = False) -> float | None:
    """Price at which the backing balance is exactly used up, ``B + uPnL(P) = 0`` (no fees).

    Linear: ``EP - s*B/Q`` (with ``B = Q*EP/L``: long ``EP*(1 - 1/L)``, short ``EP*(1 + 1/L)``).
    Inverse (``qty`` in USD): ``1 / (1/EP + s*B/Q)``. [BN-LIQ]: positions the insurance fund
    takes over are closed at the bankruptcy price. ``None`` when no positive price exists.
    """
    if inverse:
        den = 1.0 / entry + side * balance / qty
        p = 1.0 / den if den > 0.0 else math.inf
    else:
        p = entry - side * balance / qty
    return p if (math.isfinite(p) and p > 0.0) else None


# --------------------------------------------------------------------------------------------
# Funding and liquidation outcome
# --------------------------------------------------------------------------------------------

def funding_cash_flow(contracts: float, mark: float, rate: float, contract_size: float = 1.0,
                      inverse: bool = False) -> float:
    """Funding received (+) or paid (-) by the position at one funding instant.

    ``-C * v(mark) * rate``: linear ``-C*cs*mark*rate`` (quote), inverse ``-C*cs/mark*rate``
    (coin). [BN-FUND]: "Funding Amount = Nominal Value of Positions x Funding Rate"; positive
    rates: longs pay shorts. COIN-M nominal value = contract multiplier x contracts / mark price.
    """
    return -contracts * contract_value(mark, contract_size, inverse) * rate


def liquidation_outcome(balance: float, upnl: float, notional: float,
                        fee_rate: float) -> tuple[float, float, float]:
    """What the account keeps after a liquidation at price ``P_L``.

    [BN-LIQ]: the position is closed, the clearance (liquidation) fee on the liquidated
    notional goes to the insurance fund, and a bankrupt position's shortfall is taken over by
    the insurance fund.

    Parameters
    ----------
    balance : ``B`` backing the position (cross wallet or isolated margin).
    upnl : ``uPnL(P_L)``.
    notional : ``N(P_L)``.
    fee_rate : clearance-fee rate.

    Returns
    -------
    ``(keep, deficit, fee_charged)``: ``keep = max(0, B + uPnL - fee_rate*N)``; the fee is
    charged from what is left, ``min(fee_rate*N, max(0, B + uPnL))`` (an unpaid part of the fee
    costs nobody anything); ``deficit = max(0, -(B + uPnL))`` is the loss beyond the backing
    balance, absorbed by the insurance fund. ``keep = B + uPnL - fee_charged + deficit``.
    """
    left = balance + upnl
    fee = min(fee_rate * notional, max(0.0, left))
    return max(0.0, left - fee_rate * notional), max(0.0, -left), fee


# --------------------------------------------------------------------------------------------
# Books: several positions in one account (cross margin across symbols)
# --------------------------------------------------------------------------------------------

def cross_account_margin(wallet: float, upnls: Iterable[float], maintenances: Iterable[float]) -> tuple[float, float]:
    """Margin balance and maintenance margin of a cross account holding several positions.

    [BN-LIQ], [BN-LIN]: in cross mode the maintenance margin and the unrealised PnL are summed
    over every cross position sharing the margin asset: ``MB = WB + sum_i uPnL_i`` and
    ``MM = sum_i (N_i*mmr_i - cum_i)``, each tier chosen by that position's own notional (the
    ``maintenances`` given, from :func:`maintenance_margin`). The account is liquidated when its
    margin ratio ``MM/MB`` (:func:`margin_ratio`) reaches 1. Isolated positions are not part of
    it (their margin is moved out of the wallet).

    Parameters
    ----------
    wallet : ``WB``, the cross wallet balance (settlement currency).
    upnls, maintenances : per cross position ``uPnL_i(P_i)`` and ``MM_i(P_i)`` at each
        position's own mark (settlement currency).

    Returns
    -------
    ``(MB, MM)`` in the settlement currency.
    """
    return wallet + math.fsum(upnls), math.fsum(maintenances)


def cross_others(upnls: Iterable[float], maintenances: Iterable[float], k: int) -> tuple[float, float]:
    """``(TMM1, UPNL1)`` of the positions other than ``k`` of a cross account, for any contract
    type ([BN-LIN] variable list, [BN-INV] the same in coin): the maintenance margin and the
    unrealised PnL summed over every cross position except position ``k``. The linear-only
    :func:`cross_other_positions` restates it from raw positions; this sums given values."""
    upnl = [u for i, u in enumerate(upnls) if i != k]
    mm = [x for i, x in enumerate(maintenances) if i != k]
    return math.fsum(mm), math.fsum(upnl)


def path_price(open_: float, adverse: float, s: float) -> float:
    """Mark on the book's intrabar path at fraction ``s`` in [0, 1] (an engine convention, not an
    exchange rule; docs/mechanics.md, "Books"): ``p(s) = open + s*(adverse - open)``, moving from
    the bar's mark open toward the position's adverse mark extreme (a short's high, a long's
    low). Every position of a cross account moves together on its own path; ``s = 1`` returns
    the extreme itself (no rounding)."""
    if s >= 1.0:
        return adverse
    if s <= 0.0:
        return open_
    return open_ + s * (adverse - open_)


def cross_liquidation_outcome(wallet: float, upnls: Iterable[float],
                              clearance_fees: Iterable[float]) -> tuple[float, float, list[float], list[float]]:
    """What a cross account keeps when all its positions are liquidated together.

    [BN-LIQ] applied to a cross account (the wallet backs every cross position): each position
    is closed at its mark, the clearance fee on each one's liquidated notional goes to the
    insurance fund, paid from what is left of the account, and the account's shortfall is taken
    over by the insurance fund. With one position this is :func:`liquidation_outcome`.

    Parameters
    ----------
    wallet : ``WB`` before the closes (settlement currency).
    upnls : ``uPnL_i(P_i)`` of each cross position at its execution mark.
    clearance_fees : ``liquidation_fee_rate_i * N_i(P_i)`` of each position.

    Returns
    -------
    ``(keep, deficit, fees_charged, deficit_shares)``: ``left = WB + sum uPnL_i``;
    ``keep = max(0, left - sum fees)``; the fees are charged in proportion to what is left,
    ``fee_i * min(1, max(0, left)/sum fees)``; ``deficit = max(0, -left)``, shared among the
    losing positions in proportion to their loss (equally when none lost: the wallet itself was
    negative). ``keep = left - sum(fees_charged) + deficit``.
    """
    up = [float(u) for u in upnls]
    fees = [float(f) for f in clearance_fees]
    left = wallet + math.fsum(up)
    total = math.fsum(fees)
    scale = 1.0 if total <= 0.0 else min(1.0, max(0.0, left) / total)
    charged = [f * scale for f in fees]
    deficit = max(0.0, -left)
    losses = [max(0.0, -u) for u in up]
    lost = math.fsum(losses)
    shares = ([deficit * x / lost for x in losses] if lost > 0.0
              else [deficit / len(up) for _ in up] if up else [])
    return max(0.0, left - total), deficit, charged, shares
