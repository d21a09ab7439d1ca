"""Auto-deleveraging (ADL) after a liquidation cascade: who pays when the insurance fund cannot.

Exchange rules restated here (the ranking; the liquidation and bankruptcy prices come from
:mod:`backtest.mechanics` through the crowd, :class:`~backtest.stress.cascade.Crowd`):

* [BN-ADL] Binance, "What Is Auto-Deleveraging (ADL) and How Does It Work",
  https://www.binance.com/en/support/faq/360033525471 : ADL is "the final step taken only when
  the Insurance Fund cannot accept the bankrupt client's positions"; traders are ranked by
  "LeveragePnL", "unrealized PnL/collateral multiplied by the margin ratio"::

      Pnl Percent          = max(0, Unrealized Profit) / max(1, Wallet Balance)
      Margin Ratio         = Maintenance Margin / (Wallet Balance + Unrealized Profit)   (0 if that sum <= 0)
      Leverage Pnl         = Pnl Percent x Margin Ratio
      Leverage Pnl Quantile = rank(user.Leverage Pnl) / Total User Count

  and the deleveraged "positions will be closed out at the bankruptcy price of the initial
  liquidated order, no trading fee will be charged". (The formula as quoted on Binance's
  developer forum, dev.binance.vision t/17801, with a worked case: uPnL 40.2, wallet 4.27,
  margin ratio 13.42 % give 1.26.)
* [BITMEX-ADL] BitMEX, "What is Auto-Deleveraging",
  https://support.bitmex.com/hc/en-gb/articles/18589621443357 : ranking ``PnL% x Effective
  Leverage`` for a profit (``PnL% / Effective Leverage`` for a loss), ``Effective Leverage =
  abs(Mark Value) / (Mark Value - Bankrupt Value)``, ``PnL% = (Mark Value - Avg Entry Value) /
  abs(Avg Entry Value)``. Binance's ranking is the same idea in other units: its Pnl Percent is
  the profit per collateral (for an isolated position, PnL% times the initial leverage) and, with
  one maintenance rate ``m``, its margin ratio ``m x notional / equity`` is ``m`` times the
  effective leverage (equity = notional distance to the bankruptcy price).

The model (:func:`adl_from_cascade`): the cascade's closed buckets are filled at their round's
price (:class:`~backtest.stress.cascade.CascadeSolution`); a bucket filled beyond its bankruptcy
price is a loss to the insurance fund, one filled before it a gain (the rest of its margin goes
to the fund, [BN-LIQ]); round by round the fund takes the round's net result; what it cannot
cover is the shortfall, and the losing buckets' quantity in the same proportion goes to ADL,
closed at their bankruptcy prices against the most highly ranked profitable positions of the
other side. An account's position (:class:`AccountPosition`) is ranked among the crowd's
positions on its side by [BN-ADL] (by quantity: every bucket stands for traders of equal size);
the ADL quantity is taken from the top of the ranking down, so the account is cut when the
quantity ranked above it is smaller than the ADL quantity: :func:`adl_risk` returns that as a
probability (traders tied with the account share the cut equally).

Left out: the exchange's own liquidity provider and its counterparty-liquidation step, insurance
funds shared across symbols, ADL of part of a position, and ADL after the cascade's bar.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import pandas as pd

from backtest.data.marketdata import MarketData
from backtest.data.timeutil import iso
from backtest.mechanics import margin_ratio, unrealized_pnl
from backtest.stress.cascade import (
    Cascade, CascadeError, CascadeModel, CascadeResult, CascadeSolution, Crowd, check_value,
)


def binance_leverage_pnl(upnl: float, wallet: float, maintenance: float) -> float:
    """Binance's ADL ranking ``Leverage Pnl = Pnl Percent x Margin Ratio``. [BN-ADL]

    Parameters
    ----------
    upnl : unrealised PnL (USDT).
    wallet : wallet balance (USDT): the isolated margin of an isolated position.
    maintenance : maintenance margin (USDT).

    Returns
    -------
    ``max(0, upnl) / max(1, wallet) * MM / (wallet + upnl)``, 0 when ``wallet + upnl <= 0``
    (dimensionless; larger = deleveraged first).
    """
    pnl_percent = max(0.0, upnl) / max(1.0, wallet)
    balance = wallet + upnl
    if balance <= 0.0:
        return 0.0  # [BN-ADL]: "If (Wallet Balance + Unrealized Profit) <= 0, then Margin Ratio = 0"
    return pnl_percent * margin_ratio(maintenance, balance)


def effective_leverage_ranking(side: int, entry: float, mark: float, bankruptcy: float) -> float:
    """The ``PnL% x Effective Leverage`` ranking of [BITMEX-ADL] for a linear position.

    ``PnL% = side * (mark - entry) / entry``; ``Effective Leverage = mark / (side * (mark -
    bankruptcy))``; the ranking is ``PnL% * EL`` when ``PnL% > 0``, ``PnL% / EL`` otherwise.
    """
    pnl = side * (mark - entry) / entry
    eff = abs(mark) / (side * (mark - bankruptcy))
    return pnl * eff if pnl > 0 else pnl / eff


def crowd_leverage_pnl(crowd: Crowd, price: float) -> np.ndarray:
    """[BN-ADL] ranking of every bucket at ``price``: isolated margin ``qty*entry/leverage`` as the
    wallet, maintenance ``qty*price*mmr`` (one tier without amount), float64 (n_buckets,)."""
    out = np.empty(crowd.n)
    for i in range(crowd.n):
        q, e = float(crowd.qty[i]), float(crowd.entry[i])
        upnl = unrealized_pnl(int(crowd.side[i]) * q, e, price)
        out[i] = binance_leverage_pnl(upnl, q * e / float(crowd.leverage[i]), q * price * crowd.mmr)
    return out


@dataclass(frozen=True)
class AdlOutcome:
    """What the cascade cost the insurance fund, and what went to ADL.

    Attributes
    ----------
    insurance_fund : the fund before the cascade (USD); ``fund_after`` after it (>= 0).
    shortfall : losses beyond the bankruptcy prices the fund could not cover (USD, >= 0).
    adl_qty : quantity (base units) closed by ADL against the other side.
    adl_price : quantity-weighted bankruptcy price of that quantity (NaN when none).
    winners : side whose profitable positions are deleveraged (+1 long, -1 short; 0: no cascade).
    """

    insurance_fund: float
    fund_after: float
    shortfall: float
    adl_qty: float
    adl_price: float
    winners: int


def adl_from_cascade(crowd: Crowd, solution: CascadeSolution, insurance_fund: float) -> AdlOutcome:
    """The insurance fund through the cascade's rounds, and the quantity it passes to ADL.

    Each closed bucket's result for the fund is ``side * qty * (exec - bankruptcy)`` (negative:
    filled beyond its bankruptcy price). Round by round the fund takes the round's sum; a round
    that would take it below zero leaves it at zero, the uncovered loss is the round's shortfall,
    and that share of the round's losing quantity goes to ADL at its bankruptcy prices.

    Parameters
    ----------
    crowd, solution : from :func:`~backtest.stress.cascade.solve_cascade` (or a
        :class:`~backtest.stress.cascade.CascadeResult`'s fields).
    insurance_fund : USD available to the symbol at the cascade (>= 0).
    """
    fund = check_value(insurance_fund, "insurance_fund", lo=0.0,
                        fix="give the insurance fund's balance in USD, >= 0 (Binance publishes it per symbol)")
    start = fund
    shortfall = adl_qty = adl_value = 0.0
    rounds = solution.closed_round
    for r in range(1, solution.iterations + 1):
        m = rounds == r
        q, side = crowd.qty[m], crowd.side[m].astype(np.float64)
        result = side * q * (solution.exec_price[m] - crowd.bankrupt[m])
        fund += float(result.sum())
        if fund >= 0.0:
            continue
        losing = result < 0.0
        loss = float(-result[losing].sum())
        uncovered = -fund
        share = uncovered / loss  # the round's losses are what took the fund below zero: 0 < share <= 1
        shortfall += uncovered
        adl_qty += float(q[losing].sum()) * share
        adl_value += float((q[losing] * crowd.bankrupt[m][losing]).sum()) * share
        fund = 0.0
    price = adl_value / adl_qty if adl_qty > 0 else float("nan")
    # a drop (direction -1) liquidates longs and deleverages shorts (-1): the winners move with the price
    return AdlOutcome(start, fund, shortfall, adl_qty, price, solution.direction)


@dataclass(frozen=True)
class AccountPosition:
    """The account's isolated linear position facing the cascade.

    Attributes
    ----------
    side : +1 long, -1 short; ``entry`` its entry price; ``qty`` base units (> 0).
    leverage : initial leverage; the isolated margin (Binance's wallet balance for the ranking)
        is ``qty * entry / leverage``.
    mmr : its maintenance rate (the tier of its notional).
    """

    side: int
    entry: float
    qty: float
    leverage: float
    mmr: float = 0.004

    def __post_init__(self) -> None:
        if self.side not in (-1, 1):
            raise CascadeError(f"AccountPosition.side={self.side!r}; give +1 (long) or -1 (short)")
        for name, lo in (("entry", 0.0), ("qty", 0.0)):
            check_value(getattr(self, name), f"AccountPosition.{name}", lo=lo, lo_open=True, fix="give a value > 0")
        check_value(self.leverage, "AccountPosition.leverage", lo=1.0, fix="give a leverage >= 1")
        check_value(self.mmr, "AccountPosition.mmr", lo=0.0, hi=0.5, fix="give a fraction in [0, 0.5]")

    def leverage_pnl(self, price: float) -> float:
        """[BN-ADL] ranking at ``price``."""
        upnl = unrealized_pnl(self.side * self.qty, self.entry, price)
        return binance_leverage_pnl(upnl, self.qty * self.entry / self.leverage, self.qty * price * self.mmr)


@dataclass(frozen=True)
class AdlRisk:
    """The account's place in the ADL queue after a cascade.

    Attributes
    ----------
    score : its [BN-ADL] Leverage Pnl at the cascade's final price.
    quantile : its Leverage Pnl Quantile among its side's positions, by quantity (mid-rank of
        its ties; 1 = top of the queue); NaN when it is not on the deleveraged side.
    probability : share of its position closed by ADL, read as the probability of being cut
        (0 when the fund covers everything or its side is not deleveraged).
    close_price : the price it is closed at: the bankruptcy price of the liquidated orders.
    outcome : the fund's :class:`AdlOutcome`.
    """

    score: float
    quantile: float
    probability: float
    close_price: float
    outcome: AdlOutcome


def adl_risk(crowd: Crowd, solution: CascadeSolution, position: AccountPosition, insurance_fund: float) -> AdlRisk:
    """Whether the cascade's ADL reaches the account's position.

    The queue is the crowd's buckets on the winning side plus the account, ranked by
    :func:`binance_leverage_pnl` at the final price, each counted by its quantity. With ``A`` the
    quantity ranked strictly above the account and ``T`` the quantity tied with it (its own
    included), the probability is ``clip((adl_qty - A) / T, 0, 1)``.
    """
    out = adl_from_cascade(crowd, solution, insurance_fund)
    price = solution.final
    score = position.leverage_pnl(price)
    if out.winners == 0 or position.side != out.winners:
        return AdlRisk(score, float("nan"), 0.0, out.adl_price, out)
    mine = crowd.side == out.winners
    scores = crowd_leverage_pnl(crowd, price)[mine]
    qty = crowd.qty[mine]
    above = float(qty[scores > score].sum())
    tied = float(qty[scores == score].sum()) + position.qty
    below = float(qty[scores < score].sum())
    total = above + tied + below
    quantile = (below + tied / 2.0) / total
    p = min(1.0, max(0.0, (out.adl_qty - above) / tied))
    return AdlRisk(score, quantile, p, out.adl_price, out)


def short_cut_frequency(md: MarketData, times: Iterable[Any], size: float, *, insurance_fund: float,
                        leverage: float, entry_bars_before: int = 24, model: CascadeModel | None = None) -> pd.DataFrame:
    """How often a short would have been cut by ADL: a cascade of initial ``size`` at each time.

    At each time ``t`` the account holds a short of one unit opened ``entry_bars_before`` bars
    before ``t`` at that bar's close, isolated at ``leverage``; the cascade (``Cascade(t, size,
    model)``) runs and :func:`adl_risk` ranks the short.

    Returns
    -------
    DataFrame indexed by the times (ISO) with ``total_drop``, ``forced_notional``, ``shortfall``,
    ``adl_qty``, ``winning`` (the short is in profit at the final price), ``quantile`` and
    ``probability``; ``probability.mean()`` over the winning rows is how often a winning short
    would have been cut.
    """
    model = model or CascadeModel()
    if isinstance(entry_bars_before, bool) or not isinstance(entry_bars_before, int) or entry_bars_before < 1:
        raise CascadeError(f"entry_bars_before={entry_bars_before!r}; give a whole number of bars >= 1")
    rows = []
    close = md.frame["close"].to_numpy(dtype=np.float64)
    for t in times:
        res: CascadeResult = Cascade(t, size, model).run(md)
        j = res.bar - entry_bars_before
        if j < 0:
            raise CascadeError(f"the short's entry {entry_bars_before} bars before {iso(int(md.timestamps[res.bar]))} "
                               "is before the data; load earlier data or give fewer bars")
        pos = AccountPosition(-1, float(close[j]), 1.0, leverage)
        risk = adl_risk(res.crowd, res.solution, pos, insurance_fund)
        rows.append({"time": iso(int(md.timestamps[res.bar])), "total_drop": res.solution.total_move,
                     "forced_notional": res.solution.forced_notional, "shortfall": risk.outcome.shortfall,
                     "adl_qty": risk.outcome.adl_qty, "winning": res.solution.final < pos.entry,
                     "quantile": risk.quantile, "probability": risk.probability})
    return pd.DataFrame(rows).set_index("time")


__all__ = [
    "AccountPosition", "AdlOutcome", "AdlRisk", "adl_from_cascade", "adl_risk", "binance_leverage_pnl",
    "crowd_leverage_pnl", "effective_leverage_ranking", "short_cut_frequency",
]
