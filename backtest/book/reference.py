"""Slow, obvious reference simulator of a book: several perpetuals in one margin account.

Plain Python loops, one column (one account) at a time, its own event loop and state, built
from the readable formulas of :mod:`backtest.mechanics`. It implements the rules of
docs/mechanics.md ("Books") literally, in the stated order of events within a bar, and exists so
that the future numba book kernel can be compared against an independent implementation. With
one instrument it gives the numbers of the single-instrument engine (tested against both
:func:`backtest.engine.reference.simulate_reference` and the kernel).

Where it solves for a point on the intrabar path it bisects to machine precision instead of
using a closed form: the account's ``MB - MM`` is monotone along the path (each position's
``uPnL_i - MM_i`` falls as its mark moves adversely, the maintenance slope ``mmr < 1``), so the
first point where the ratio reaches a threshold is well defined.

Option legs (docs/mechanics.md, "Options in a book") are rows ``K + j`` of the position
series: their contract path is an input (:func:`backtest.book.options.option_paths`); each
column chooses only how many contracts it holds, and the reference applies the spec's events
(settlement, roll, sales and purchases, collateral, the liquidation's sale) in its own loop.

Do not use it for real runs: it is orders of magnitude slower than a kernel.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np

from backtest import mechanics as mk
from backtest.book.bars import BookBars
from backtest.book.core import benchmark_index, check_book_inputs
from backtest.book.exposure import beta_exposure, book_betas
from backtest.book.options import ROLL_EARLY, ROLL_SETTLE, OptionPaths, option_outputs
from backtest.book.settings import BOOK_RECORD_DTYPES, BOOK_SERIES, POSITION_SERIES, BookSettings, Intrabar
from backtest.engine.enums import FillReason, FillStatus
from backtest.engine.nb import policy_target_nb
from backtest.engine.reference import CHECK_RTOL, DUST_RTOL, Contract, _sign, within_call_target
from backtest.engine.settings import AfterLiquidation, CallResponse, Excess, MarginMode
from backtest.market import MarketSpec

CROSS = -1          # the margin group of every cross position (isolated groups are numbered k)
BISECT_STEPS = 200  # enough for a float in [0, 1] to reach machine precision


# --------------------------------------------------------------------------------------------
# The instruments and the settings of one column
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Instrument(Contract):
    """One perpetual of the book: the single-instrument reference's contract (value, uPnL, lots)
    with its symbol."""

    symbol: str = ""


@dataclass(frozen=True)
class _LegCfg:
    isolated: bool
    leverage: float
    fee_rate: float


@dataclass(frozen=True)
class _Cfg:
    """One column's settings."""

    initial_capital: float
    call_threshold: float
    call_response: int
    call_target: float
    reserve: float
    stop_after_liquidation: bool
    reject_excess: bool
    slippage: float
    policy: tuple  # (kind, max_drawdown, floor, multiplier, ratchet, max_exposure)
    alone: bool
    legs: tuple[_LegCfg, ...]
    collateral: bool = False   # the option legs' value counts in the cross account's MB


# --------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------

@dataclass
class _Pos:
    contracts: float = 0.0
    entry: float = 0.0
    margin: float = 0.0         # M: isolated margin (0 for a cross position)
    realised: float = 0.0       # price PnL realised by fills
    funding: float = 0.0
    fees: float = 0.0           # trading fees
    liquidation: float = 0.0    # PnL realised by liquidations - clearance fees + deficit share
    stopped: bool = False


@dataclass
class _OptPos:
    """One option leg of the account: long puts, a fractional contract count."""

    contracts: float = 0.0      # q: contracts held
    kept: float = 0.0           # the count a NaN target re-buys on this bar's roll (settled or sold)
    realised: float = 0.0       # sales and settlements at their prices - purchases at theirs
    fees: float = 0.0           # trading fees + delivery fees
    stopped: bool = False


@dataclass
class _Account:
    wallet: float                    # W: the cross wallet, all cash not held as isolated margin
    pos: list[_Pos]
    capital_added: float
    reserve_left: float
    peak: float
    prev_equity: float
    cum_funding: float = 0.0
    cum_fees: float = 0.0
    in_call: dict[int, bool] = field(default_factory=dict)
    opt: list[_OptPos] = field(default_factory=list)


@dataclass
class _BarView:
    """What the column sees of bar t: per instrument its leg bar (or None before listing),
    prices and tier table in force."""

    t: int
    leg_bar: list[int | None]
    open: list[float]
    mark_open: list[float]
    mark_high: list[float]
    mark_low: list[float]
    mark_close: list[float]
    prev_mark_close: list[float]
    tiers: list[np.ndarray | None]


class _Records:
    def __init__(self) -> None:
        self.fills: list[tuple] = []
        self.funding: list[tuple] = []
        self.margin_calls: list[tuple] = []
        self.liquidations: list[tuple] = []


class _Column:
    """One account simulated over the book's bars."""

    def __init__(self, j: int, ins: list[_Instrument], cfg: _Cfg, rec: _Records, paths: OptionPaths) -> None:
        self.j, self.ins, self.cfg, self.rec, self.opaths = j, ins, cfg, rec, paths
        self.k = len(ins)
        self.jj = int(paths.k.shape[0])
        self.acc = _Account(wallet=cfg.initial_capital, pos=[_Pos() for _ in ins], capital_added=0.0,
                            reserve_left=cfg.reserve, peak=cfg.initial_capital,
                            prev_equity=cfg.initial_capital, opt=[_OptPos() for _ in range(self.jj)])
        # per-contract values at which the options count as collateral in the current step
        # (step 2: old[p]; step 5: adv[t]; step 6: old[t]); None = not counted
        self.cvals: np.ndarray | None = None

    # ---- option legs ------------------------------------------------------------------------

    def opt_value(self, vals: np.ndarray | None, acc: _Account | None = None) -> float:
        """``sum_j q_j * vals[j]`` over the legs holding contracts (settlement currency)."""
        acc = acc or self.acc
        if vals is None:
            return 0.0
        # a plain sum in leg order (the kernel's options_value_nb)
        return sum(o.contracts * float(vals[j]) for j, o in enumerate(acc.opt) if o.contracts != 0.0)

    def coll(self, g: int, acc: _Account | None = None) -> float:
        """The options' value in group g's margin balance: the cross account's, with
        ``options_collateral``, at the current step's values; 0 otherwise."""
        if g != CROSS or not self.cfg.collateral or not self.jj:
            return 0.0
        return self.opt_value(self.cvals, acc)

    def opt_fee(self, j: int, p: int, price: float) -> float:
        """Trading fee per contract: ``min(fee_rate * unit, fee_cap * price)`` (the put simulator's
        Deribit rule)."""
        P = self.opaths
        return min(float(P.fee_rate[j]) * float(P.unit[p, j]), float(P.fee_cap[j]) * price)

    def opt_record(self, t: int, j: int, price: float, size: float, fee: float, status: int, reason: int) -> None:
        self.rec.fills.append((t, self.j, self.k + j, price, size, abs(size) * price, fee, status, reason))

    def opt_trade(self, t: int, j: int, size: float, price: float, fee_per: float, reason: int,
                  status: int = FillStatus.FILLED) -> None:
        """Buy (size > 0) or sell (size < 0) contracts of leg j at ``price`` (fee per contract
        ``fee_per``): the cash into/out of W, the price PnL and fees into the leg."""
        acc, o = self.acc, self.acc.opt[j]
        fee = abs(size) * fee_per
        acc.wallet += -size * price - fee
        o.realised += -size * price
        o.fees += fee
        acc.cum_fees += fee
        o.contracts += size
        self.opt_record(t, j, price, size, fee, status, reason)

    def settle_options(self, bv: _BarView) -> None:
        """Step 1 (after the open-instant funding): each leg whose contract expired at close
        ``p = t - 1`` receives ``q * (old[p] - dfee[p])``; its count is kept for the roll."""
        p = bv.t - 1
        if p < 0:
            return
        P, acc = self.opaths, self.acc
        for j, o in enumerate(acc.opt):
            if int(P.roll[p, j]) != ROLL_SETTLE:
                continue
            q = o.contracts
            o.kept = q
            if q == 0.0:
                continue
            price, dfee = float(P.old[p, j]), float(P.dfee[p, j])
            fee = q * dfee
            acc.wallet += q * (price - dfee)
            o.realised += q * price
            o.fees += fee
            acc.cum_fees += fee
            o.contracts = 0.0
            self.opt_record(bv.t, j, price, -q, fee, FillStatus.FILLED, FillReason.SETTLEMENT)

    def sell_options_into_liquidation(self, vals: np.ndarray, t: int) -> None:
        """A cross liquidation with the options as collateral first sells every option at
        ``vals`` (adv[t]; on a gap old[p]) into W, no fee; nothing is left to re-buy on a roll."""
        for j, o in enumerate(self.acc.opt):
            o.kept = 0.0
            if o.contracts != 0.0:
                self.opt_trade(t, j, -o.contracts, float(vals[j]), 0.0, FillReason.LIQUIDATION)

    def option_orders(self, targets: list[float], e_open: float, bv: _BarView) -> tuple[list, list]:
        """Step 3 for the option legs: ``(sales, purchases)``, each ``(j, size, price, fee per
        contract, reason)`` (size > 0), read from the path at ``p = t - 1``."""
        acc, cfg, P = self.acc, self.cfg, self.opaths
        p = bv.t - 1
        sales: list[tuple] = []
        buys: list[tuple] = []
        if p < 0:
            return sales, buys
        kind, mdd, floor, mult, ratchet, max_exp = cfg.policy
        for j, o in enumerate(acc.opt):
            val = float(P.val[p, j])
            if o.stopped or not math.isfinite(val):
                continue
            raw = targets[self.k + j]
            r = int(P.roll[p, j])
            rolling = r == ROLL_SETTLE or r == ROLL_EARLY
            if math.isnan(raw) and not rolling:
                continue
            if r == ROLL_EARLY:
                o.kept = o.contracts
            if math.isnan(raw):
                want = o.kept
            elif e_open <= DUST_RTOL * cfg.initial_capital:
                want = 0.0
            else:
                target = float(policy_target_nb(raw, kind, mdd, floor, mult, ratchet, max_exp,
                                                acc.prev_equity, acc.peak, cfg.initial_capital))
                want = target * e_open / float(P.unit[p, j])
            slip = float(P.slip[j])
            base = o.contracts
            if r == ROLL_EARLY and base != 0.0:
                price = float(P.old[p, j]) * (1.0 - slip)
                sales.append((j, base, price, self.opt_fee(j, p, price), FillReason.ROLL))
                base = 0.0
            if abs(want - base) <= DUST_RTOL * max(want, base):
                continue  # no change, or rounding dust (as a perpetual without lots)
            if want < base:
                price = val * (1.0 - slip)
                sales.append((j, base - want, price, self.opt_fee(j, p, price), FillReason.TARGET))
            else:
                price = val * (1.0 + slip)
                reason = FillReason.ROLL if (rolling and math.isnan(raw)) else FillReason.TARGET
                buys.append((j, want - base, price, self.opt_fee(j, p, price), reason))
        return sales, buys

    def option_free_margin(self, bv: _BarView) -> tuple[float, float]:
        """``(sum_cross N_i/L_i, W + sum_cross uPnL_i)`` at the trade opens: an option purchase
        must fit ``im + d * (price + fee) <= available`` (options never count here)."""
        acc = self.acc
        cross = self.members(CROSS)
        upnl = math.fsum(self.ins[i].upnl(acc.pos[i].contracts, acc.pos[i].entry, bv.open[i]) for i in cross)
        im = math.fsum(self.ins[i].notional(acc.pos[i].contracts, bv.open[i]) / self.cfg.legs[i].leverage
                       for i in cross)
        return im, acc.wallet + upnl

    def buy_option(self, j: int, d: float, price: float, fee_per: float, reason: int, bv: _BarView) -> None:
        """A purchase of d contracts, checked against the cross account's free margin; excess:
        clip (the largest d that fits, closed form) or reject."""
        im, available = self.option_free_margin(bv)
        per = price + fee_per
        if _fits(im + d * per, available):
            self.opt_trade(bv.t, j, d, price, fee_per, reason)
            return
        if self.cfg.reject_excess:
            self.opt_record(bv.t, j, price, d, 0.0, FillStatus.REJECTED, reason)
            return
        fit = max(0.0, (available - im) / per) if per > 0.0 else d
        self.opt_trade(bv.t, j, min(d, fit), price, fee_per, reason, status=FillStatus.CLIPPED)

    # ---- account quantities -----------------------------------------------------------------

    def members(self, g: int, acc: _Account | None = None) -> list[int]:
        """Open positions of margin group ``g`` (CROSS, or the isolated position g)."""
        acc = acc or self.acc
        if g == CROSS:
            return [k for k in range(self.k) if not self.cfg.legs[k].isolated and acc.pos[k].contracts != 0.0]
        return [g] if acc.pos[g].contracts != 0.0 else []

    def groups(self) -> list[int]:
        """The cross account first, then every isolated position in the book's order."""
        return [CROSS] + [k for k in range(self.k) if self.cfg.legs[k].isolated]

    def balance(self, g: int, acc: _Account) -> float:
        return acc.wallet if g == CROSS else acc.pos[g].margin

    def mb_mm(self, g: int, marks: dict[int, float], bv: _BarView, acc: _Account | None = None) -> tuple[float, float]:
        acc = acc or self.acc
        ks = self.members(g, acc)
        upnls = [self.ins[k].upnl(acc.pos[k].contracts, acc.pos[k].entry, marks[k]) for k in ks]
        mms = [mk.maintenance_margin(self.ins[k].notional(acc.pos[k].contracts, marks[k]), bv.tiers[k]) for k in ks]
        if g == CROSS:
            return mk.cross_account_margin(acc.wallet + self.coll(g, acc), upnls, mms)
        return self.balance(g, acc) + upnls[0], mms[0]

    def ratio(self, g: int, marks: dict[int, float], bv: _BarView, acc: _Account | None = None) -> float:
        if not self.members(g, acc):
            return 0.0
        mb, mm = self.mb_mm(g, marks, bv, acc)
        return mk.margin_ratio(mm, mb)

    def liquidatable(self, g: int, marks: dict[int, float], bv: _BarView) -> bool:
        if not self.members(g):
            return False
        mb, mm = self.mb_mm(g, marks, bv)
        return mb <= mm

    def equity(self, marks: list[float], opt_vals: np.ndarray | None = None) -> float:
        """``W + sum_k (M_k + uPnL_k) + sum_j q_j * opt_vals[j]`` with each open position at
        ``marks[k]`` and each held option at ``opt_vals[j]`` per contract."""
        acc = self.acc
        if self.k == 1:
            # the single-instrument engine's sum, term for term (a book of one gives its numbers)
            p = acc.pos[0]
            e = acc.wallet + p.margin + (self.ins[0].upnl(p.contracts, p.entry, marks[0]) if p.contracts != 0.0 else 0.0)
            return e + self.opt_value(opt_vals) if self.jj else e
        parts = [acc.wallet]
        for k, p in enumerate(acc.pos):
            parts.append(p.margin)
            if p.contracts != 0.0:
                parts.append(self.ins[k].upnl(p.contracts, p.entry, marks[k]))
        if self.jj:
            parts.append(self.opt_value(opt_vals))
        return math.fsum(parts)

    # ---- the intrabar path ------------------------------------------------------------------

    def adverse(self, k: int, bv: _BarView) -> float:
        return bv.mark_high[k] if self.acc.pos[k].contracts < 0.0 else bv.mark_low[k]

    def paths(self, g: int) -> list[int]:
        """Together: one path (-1) on which every mark moves; alone: one path per position."""
        ks = self.members(g)
        return list(ks) if (g == CROSS and self.cfg.alone and len(ks) > 1) else [-1]

    def marks_at(self, g: int, path: int, s: float, bv: _BarView) -> dict[int, float]:
        out = {}
        for k in self.members(g):
            moves = path == -1 or path == k
            out[k] = mk.path_price(bv.mark_open[k], self.adverse(k, bv), s if moves else 0.0)
        return out

    def solve_path(self, g: int, path: int, threshold: float, bv: _BarView) -> tuple[float, dict[int, float]]:
        """First point of the path where group g's ratio reaches ``threshold`` (it does at the
        path's end): ``(s, marks)``. s = 0 when it already does at the opens (a gap). When one
        mark moves (one position, or a path that moves one instrument alone) the point is
        Binance's price formula with the others' ``TMM1``/``UPNL1`` fixed at their opens
        (re-tiered, :func:`backtest.mechanics.liquidation_price`; for a threshold r the others'
        maintenance enters as ``TMM1/r``); when several move together, the ratio along the path
        is bisected to machine precision (it is monotone: see the module docstring)."""
        if threshold >= 1.0:
            def pred(x: float) -> bool:
                return self.liquidatable(g, self.marks_at(g, path, x, bv), bv)
        else:
            def pred(x: float) -> bool:
                return self.ratio(g, self.marks_at(g, path, x, bv), bv) >= threshold
        if pred(0.0):
            return 0.0, self.marks_at(g, path, 0.0, bv)
        ks = self.members(g)
        movers = ks if path == -1 else [path]
        if len(movers) == 1:
            acc, (k,) = self.acc, movers
            others = [i for i in ks if i != k]
            p = acc.pos[k]
            tmm = math.fsum(mk.maintenance_margin(self.ins[i].notional(acc.pos[i].contracts, bv.mark_open[i]),
                                                  bv.tiers[i]) for i in others)
            upnl1 = math.fsum(self.ins[i].upnl(acc.pos[i].contracts, acc.pos[i].entry, bv.mark_open[i]) for i in others)
            lp = mk.liquidation_price(p.contracts, p.entry, self.balance(g, acc) + self.coll(g, acc), bv.tiers[k],
                                      self.ins[k].size, self.ins[k].inverse, other_mm=tmm / threshold,
                                      other_upnl=upnl1, threshold=threshold)
            if lp is not None and math.isfinite(lp) and lp > 0.0:
                o, a = bv.mark_open[k], self.adverse(k, bv)
                marks = self.marks_at(g, path, 0.0, bv)
                marks[k] = lp
                return min(1.0, max(0.0, (lp - o) / (a - o))) if a != o else 1.0, marks
        lo, hi = 0.0, 1.0
        for _ in range(BISECT_STEPS):
            mid = 0.5 * (lo + hi)
            if mid <= lo or mid >= hi:
                break
            if pred(mid):
                hi = mid
            else:
                lo = mid
        return hi, self.marks_at(g, path, hi, bv)

    def liq_distance(self, closes: list[float], bv: _BarView) -> float:
        """The account's distance to liquidation at the closes (docs/mechanics.md, "Books",
        step 6): per margin group, the smallest common adverse move x at which ``MB <= MM``
        with each member's mark at a short's ``close (1 + x)``, a long's ``close (1 - x)``; the
        smallest over the groups. x is bisected on ``[0, x_hi]``: ``x_hi = 1`` for a group
        holding a long (an inverse long to ``1 - 2**-20``, its coin loss being unbounded at
        price 0), doubled up to ten times for shorts only; a group no such move liquidates is
        at inf. NaN when flat. The options' collateral, when counted, stays at its close value."""
        groups = [g for g in self.groups() if self.members(g)]
        if not groups:
            return math.nan
        best = math.inf
        for g in groups:
            ks = self.members(g)

            def past(x: float, g: int = g, ks: list[int] = ks) -> bool:
                marks = {k: closes[k] * (1.0 + x) if self.acc.pos[k].contracts < 0.0 else closes[k] * (1.0 - x)
                         for k in ks}
                mb, mm = self.mb_mm(g, marks, bv)
                return mb <= mm

            longs = any(self.acc.pos[k].contracts > 0.0 for k in ks)
            hi = (1.0 - 2.0 ** -20 if self.ins[0].inverse else 1.0) if longs else 1.0
            doublings = 0
            while not past(hi) and not longs and doublings < 10:
                hi *= 2.0
                doublings += 1
            if not past(hi):
                continue
            lo = 0.0
            if past(lo):
                hi = 0.0
            for _ in range(BISECT_STEPS):
                mid = 0.5 * (lo + hi)
                if mid <= lo or mid >= hi:
                    break
                if past(mid):
                    hi = mid
                else:
                    lo = mid
            best = min(best, hi)
        return best

    # ---- events -----------------------------------------------------------------------------

    def pay_funding(self, k: int, e: int, bars: BookBars, bv: _BarView) -> None:
        p = self.acc.pos[k]
        if p.contracts == 0.0:
            return
        leg = bars.legs[k]
        mark, rate = float(leg.fe_mark[e]), float(leg.fe_rate[e])
        amount = mk.funding_cash_flow(p.contracts, mark, rate, self.ins[k].size, self.ins[k].inverse)
        if self.cfg.legs[k].isolated:
            p.margin += amount
        else:
            self.acc.wallet += amount
        p.funding += amount
        self.acc.cum_funding += amount
        self.rec.funding.append((bv.t, self.j, k, int(leg.fe_time[e]), rate, mark, p.contracts, amount))

    def execute(self, acc: _Account, k: int, new_c: float, price: float, keep_isolated_margin: bool = False) -> float:
        """Trade instrument k to ``new_c`` at ``price`` in account ``acc``; returns the fee.

        Realised PnL and the fee go to W; isolated margin: an increase moves ``dN/L`` from W to
        M_k, a reduction releases the closed fraction of M_k, a flip releases all of it then
        allocates ``N(C*)/L``. ``keep_isolated_margin`` (a margin-call cut): M_k and the cut's
        realised PnL stay with the smaller position (all of it returns to W on a full close)."""
        p, ct, leg = acc.pos[k], self.ins[k], self.cfg.legs[k]
        c = p.contracts
        d = new_c - c
        if d == 0.0:
            return 0.0
        v = ct.value(price)
        fee = leg.fee_rate * abs(d) * v
        if c != 0.0 and _sign(d) != _sign(c):
            closed = min(abs(d), abs(c))
            realised = ct.upnl(_sign(c) * closed, p.entry, price)
            p.realised += realised
            if leg.isolated and keep_isolated_margin:
                p.margin += realised
            else:
                acc.wallet += realised
            if leg.isolated and (not keep_isolated_margin or new_c == 0.0):
                release = p.margin if closed >= abs(c) else p.margin * closed / abs(c)
                p.margin -= release
                acc.wallet += release
            if new_c != 0.0 and _sign(new_c) != _sign(c):
                p.entry = price
                if leg.isolated:
                    alloc = abs(new_c) * v / leg.leverage
                    acc.wallet -= alloc
                    p.margin += alloc
            elif new_c == 0.0:
                p.entry = 0.0
        else:
            if c == 0.0:
                p.entry = price
            elif ct.inverse:
                p.entry = (abs(c) + abs(d)) / (abs(c) / p.entry + abs(d) / price)
            else:
                p.entry = (abs(c) * p.entry + abs(d) * price) / (abs(c) + abs(d))
            if leg.isolated:
                alloc = abs(d) * v / leg.leverage
                acc.wallet -= alloc
                p.margin += alloc
        acc.wallet -= fee
        p.fees += fee
        acc.cum_fees += fee
        p.contracts = new_c
        return fee

    def liquidate(self, g: int, marks: dict[int, float], s: float, gap: bool, at_open: bool,
                  bv: _BarView) -> None:
        """Close every position of group g at its mark in ``marks`` (Binance: the account is
        liquidated as a whole; the clearance fee on each position)."""
        acc, cfg = self.acc, self.cfg
        ks = self.members(g)
        ins = self.ins
        upnls = [ins[k].upnl(acc.pos[k].contracts, acc.pos[k].entry, marks[k]) for k in ks]
        mms = [mk.maintenance_margin(ins[k].notional(acc.pos[k].contracts, marks[k]), bv.tiers[k]) for k in ks]
        clear = [ins[k].liq_fee_rate * ins[k].notional(acc.pos[k].contracts, marks[k]) for k in ks]
        # the other positions of the account at their mark opens (the state the path starts from)
        base = list(bv.mark_open)
        start = list(bv.prev_mark_close if at_open else bv.mark_open)
        at_marks = [marks.get(k, base[k]) for k in range(self.k)]
        # options: at the open, the contracts held then (step 2: old[p]; step 5, after the
        # bar's rolls: val[p]); at the execution point, adv[t] (a gap: old[p])
        P, p = self.opaths, bv.t - 1
        ov_start = None if p < 0 else (P.old[p] if at_open else P.val[p])
        ov_exec = None if p < 0 else (P.old[p] if at_open else P.adv[bv.t])
        equity_start = self.equity([start[k] if bv.leg_bar[k] is not None else 0.0 for k in range(self.k)], ov_start)
        equity_before = self.equity(at_marks, ov_exec)
        if g == CROSS and cfg.collateral and ov_exec is not None:
            self.sell_options_into_liquidation(ov_exec, bv.t)
        triggers = []
        for i, k in enumerate(ks):
            p = acc.pos[k]
            if g == CROSS:
                other_mm, other_upnl = mk.cross_others(upnls, mms, i)
            else:
                other_mm, other_upnl = 0.0, 0.0
            lp = mk.liquidation_price(p.contracts, p.entry, self.balance(g, acc), bv.tiers[k], ins[k].size,
                                      ins[k].inverse, other_mm=other_mm, other_upnl=other_upnl)
            triggers.append(lp if (lp is not None and math.isfinite(lp) and lp > 0.0) else marks[k])
        if g == CROSS:
            keep, _, charged, shares = mk.cross_liquidation_outcome(acc.wallet, upnls, clear)
            acc.wallet = keep
        else:
            keep, deficit, fee = mk.liquidation_outcome(acc.pos[g].margin, upnls[0],
                                                        ins[g].notional(acc.pos[g].contracts, marks[g]),
                                                        ins[g].liq_fee_rate)
            charged, shares = [fee], [deficit]
            acc.wallet += keep
            acc.pos[g].margin = 0.0
        sizes = []
        for i, k in enumerate(ks):
            p = acc.pos[k]
            sizes.append(p.contracts)
            p.liquidation += upnls[i] - charged[i] + shares[i]
            acc.cum_fees += charged[i]
            p.contracts, p.entry = 0.0, 0.0
        acc.in_call[g] = False
        equity_after = self.equity(at_marks, ov_exec)
        for i, k in enumerate(ks):
            self.rec.liquidations.append((bv.t, self.j, k, s, triggers[i], marks[k], sizes[i], charged[i],
                                          shares[i], int(gap), equity_start, equity_before, equity_after))
        if cfg.stop_after_liquidation:
            stop = [k for k in range(self.k) if not cfg.legs[k].isolated] if g == CROSS else [g]
            for k in stop:
                acc.pos[k].stopped = True
            if g == CROSS and cfg.collateral:
                for o in acc.opt:   # the options were part of the liquidated account
                    o.stopped = True

    # ---- step 3: orders at the open -----------------------------------------------------------

    def order_allowed(self, k: int, new_c: float, price: float, bv: _BarView) -> bool:
        """Exchange checks of an order that adds exposure on instrument k, on the account as it
        is now (after the bar's earlier fills): (a) tier cap ``N_k(C*) <= Ncap_k``; (b) available
        margin: cross, ``sum_{other cross} N_j/L_j + N_k(C*)/L_k + fee <= W + sum_cross uPnL``;
        isolated, the single-instrument rule against ``W + sum_cross (uPnL_j - N_j/L_j)``.
        Other positions are valued at their trade opens."""
        acc, ct, leg = self.acc, self.ins[k], self.cfg.legs[k]
        p = acc.pos[k]
        c = p.contracts
        v = ct.value(price)
        n_new = abs(new_c) * v
        ncap = mk.max_notional_at_leverage(bv.tiers[k], leg.leverage)
        if not _fits(n_new, ncap):
            return False
        fee = leg.fee_rate * abs(new_c - c) * v
        others = [i for i in self.members(CROSS) if i != k]
        upnl = math.fsum(self.ins[i].upnl(acc.pos[i].contracts, acc.pos[i].entry, bv.open[i]) for i in others)
        im = math.fsum(self.ins[i].notional(acc.pos[i].contracts, bv.open[i]) / self.cfg.legs[i].leverage
                       for i in others)
        if not leg.isolated:
            return _fits(im + n_new / leg.leverage + fee, acc.wallet + upnl + ct.upnl(c, p.entry, bv.open[k]))
        free = acc.wallet + (upnl - im)
        if c == 0.0 or _sign(new_c) == _sign(c):
            return _fits((abs(new_c) - abs(c)) * v / leg.leverage + fee, free)
        w_after_close = acc.wallet + p.margin + ct.upnl(c, p.entry, price) - leg.fee_rate * abs(c) * v + (upnl - im)
        return _fits(n_new / leg.leverage + leg.fee_rate * abs(new_c) * v, w_after_close)

    def largest_allowed(self, k: int, desired: float, price: float, bv: _BarView) -> float:
        """Largest lot-rounded size toward ``desired`` that passes the checks (bisection: the
        checks' need grows with the size); never below the current position on the same side."""
        ct = self.ins[k]
        c = self.acc.pos[k].contracts
        side = _sign(desired)
        lower = abs(c) if (c != 0.0 and _sign(c) == side) else 0.0

        def ok(size: float) -> bool:
            return self.order_allowed(k, side * size, price, bv)

        if ct.lot > 0.0:
            lo, hi = ct.lots(lower), ct.lots(desired)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if ok(mid * ct.lot):
                    lo = mid
                else:
                    hi = mid
            return side * (lo * ct.lot) if lo > 0 else 0.0
        lo_q, hi_q = lower, abs(desired)
        for _ in range(BISECT_STEPS):
            mid = 0.5 * (lo_q + hi_q)
            if mid <= lo_q or mid >= hi_q:
                break
            if ok(mid):
                lo_q = mid
            else:
                hi_q = mid
        return side * lo_q

    def orders(self, targets: list[float], bv: _BarView) -> None:
        """Size every instrument's order from the account's equity at the trade opens, then
        execute the reductions (in the book's order), then the increases, opens and flips, each
        checked against the account as the earlier fills left it."""
        acc, cfg = self.acc, self.cfg
        p = bv.t - 1
        e_open = self.equity([bv.open[k] if bv.leg_bar[k] is not None else 0.0 for k in range(self.k)],
                             self.opaths.old[p] if p >= 0 else None)
        opt_sales, opt_buys = self.option_orders(targets, e_open, bv)
        pending = []
        for k in range(self.k):
            raw = targets[k]
            if math.isnan(raw) or bv.leg_bar[k] is None or acc.pos[k].stopped:
                continue
            kind, mdd, floor, mult, ratchet, max_exp = cfg.policy
            target = float(policy_target_nb(raw, kind, mdd, floor, mult, ratchet, max_exp,
                                            acc.prev_equity, acc.peak, cfg.initial_capital))
            ct = self.ins[k]
            desired = 0.0 if e_open <= DUST_RTOL * cfg.initial_capital else \
                ct.round_lots(target * e_open / ct.value(bv.open[k]))
            c = acc.pos[k].contracts
            if ct.same_size(desired, c):
                continue
            d = desired - c
            price = bv.open[k] * (1.0 + cfg.slippage * _sign(d))
            if desired != 0.0 and not _fits(ct.min_notional, ct.order_usd(d, price)):
                continue
            pending.append((k, desired, price))
        reductions = [o for o in pending if not _adds_exposure(acc.pos[o[0]].contracts, o[1])]
        increases = [o for o in pending if _adds_exposure(acc.pos[o[0]].contracts, o[1])]
        for k, desired, price in reductions:
            d = desired - acc.pos[k].contracts
            fee = self.execute(acc, k, desired, price)
            self.rec.fills.append((bv.t, self.j, k, price, d, self.ins[k].notional(d, price), fee,
                                   FillStatus.FILLED, FillReason.TARGET))
        for j, size, price, fee_per, reason in opt_sales:   # option sales: reductions, after the perps'
            self.opt_trade(bv.t, j, -size, price, fee_per, reason)
        for k, desired, price in increases:
            ct = self.ins[k]
            c = acc.pos[k].contracts
            d = desired - c
            status = FillStatus.FILLED
            if not self.order_allowed(k, desired, price, bv):
                if cfg.reject_excess:
                    self.rec.fills.append((bv.t, self.j, k, price, d, ct.notional(d, price), 0.0,
                                           FillStatus.REJECTED, FillReason.TARGET))
                    continue
                desired = self.largest_allowed(k, desired, price, bv)
                if ct.same_size(desired, c):
                    desired = c
                if desired != 0.0 and not _fits(ct.min_notional, ct.order_usd(desired - c, price)):
                    desired = c
                d = desired - c
                status = FillStatus.CLIPPED
            fee = self.execute(acc, k, desired, price)
            self.rec.fills.append((bv.t, self.j, k, price, d, ct.notional(d, price), fee, status, FillReason.TARGET))
        for j, size, price, fee_per, reason in opt_buys:    # option purchases: increases, after the perps'
            self.buy_option(j, size, price, fee_per, reason, bv)

    # ---- step 5: margin call and liquidation on the intrabar path -------------------------------

    def reduce_for_call(self, g: int, marks: dict[int, float], bv: _BarView) -> None:
        """Cut every position of group g by one common fraction (each lot-rounded) to the
        largest size whose ratio at the call marks, after the fills (slippage, fees; isolated:
        margin and the cut's PnL kept with the position), is at most the call target."""
        acc, cfg = self.acc, self.cfg
        ks = self.members(g)
        mb, _ = self.mb_mm(g, marks, bv)
        if mb <= 0.0:
            return  # nothing left to protect; the liquidation check decides

        def sizes(q: float) -> dict[int, float]:
            out = {}
            for k in ks:
                c = acc.pos[k].contracts
                out[k] = self.ins[k].round_lots(c * q) if q < 1.0 else c
            return out

        def price_of(k: int, new_c: float) -> float:
            return marks[k] * (1.0 + cfg.slippage * _sign(new_c - acc.pos[k].contracts))

        def ratio_after(q: float) -> float:
            trial = copy.deepcopy(acc)
            for k, new_c in sizes(q).items():
                self.execute(trial, k, new_c, price_of(k, new_c), keep_isolated_margin=True)
            return self.ratio(g, marks, bv, trial)

        lo, hi = 0.0, 1.0
        for _ in range(BISECT_STEPS):
            mid = 0.5 * (lo + hi)
            if mid <= lo or mid >= hi:
                break
            if within_call_target(ratio_after(mid), cfg.call_target):
                lo = mid
            else:
                hi = mid
        for k, new_c in sizes(lo).items():
            price = price_of(k, new_c)
            d = new_c - acc.pos[k].contracts
            fee = self.execute(acc, k, new_c, price, keep_isolated_margin=True)
            self.rec.fills.append((bv.t, self.j, k, price, d, self.ins[k].notional(d, price), fee,
                                   FillStatus.FILLED, FillReason.MARGIN_CALL))

    def top_up_for_call(self, g: int, marks: dict[int, float], bv: _BarView) -> float:
        acc = self.acc
        mb, mm = self.mb_mm(g, marks, bv)
        x = max(0.0, min(mm / self.cfg.call_target - mb, acc.reserve_left))
        if g == CROSS:
            acc.wallet += x
        else:
            acc.pos[g].margin += x
        acc.capital_added += x
        acc.reserve_left -= x
        return x

    def margin_check(self, g: int, bv: _BarView) -> float:
        """Step 5 for group g; returns its ratio at the end of the adverse path afterwards."""
        acc, cfg = self.acc, self.cfg
        theta = cfg.call_threshold
        if not self.members(g):
            return 0.0
        if not acc.in_call.get(g, False):
            for path in self.paths(g):
                if self.ratio(g, self.marks_at(g, path, 1.0, bv), bv) >= theta:
                    acc.in_call[g] = True
                    s, marks = self.solve_path(g, path, theta, bv)
                    ratio_at_call = self.ratio(g, marks, bv)
                    amount = 0.0
                    if cfg.call_response == CallResponse.REDUCE:
                        self.reduce_for_call(g, marks, bv)
                    elif cfg.call_response == CallResponse.TOP_UP:
                        amount = self.top_up_for_call(g, marks, bv)
                    self.rec.margin_calls.append((bv.t, self.j, g, path, s, ratio_at_call, cfg.call_response, amount))
                    break
        if self.members(g):
            for path in self.paths(g):
                if self.liquidatable(g, self.marks_at(g, path, 1.0, bv), bv):
                    s, marks = self.solve_path(g, path, 1.0, bv)
                    self.liquidate(g, marks, s, gap=s == 0.0 and self.liquidatable(g, marks, bv), at_open=False, bv=bv)
                    break
        if not self.members(g):
            return 0.0
        return max(self.ratio(g, self.marks_at(g, path, 1.0, bv), bv) for path in self.paths(g))

    # ---- the bar ------------------------------------------------------------------------------

    def bar(self, bars: BookBars, targets: list[float], bv: _BarView, events: list[list[tuple[int, int]]],
            out: dict[str, np.ndarray], pos_out: dict[str, np.ndarray]) -> None:
        acc = self.acc
        t = bv.t
        live = [bv.leg_bar[k] is not None and not acc.pos[k].stopped for k in range(self.k)]
        P = self.opaths
        # 1. funding at the open instant, paid by the positions held going into the open; then
        #    the option legs' settlements
        for k, e in events[t]:
            if live[k] and bars.legs[k].fe_at_open[e]:
                self.pay_funding(k, e, bars, bv)
        self.settle_options(bv)
        # 2. gap check at the mark opens: each margin group past liquidation there (options as
        #    collateral: the contracts held into the open at old[p])
        self.cvals = P.old[t - 1] if t >= 1 else None
        opens = {k: bv.mark_open[k] for k in range(self.k)}
        for g in self.groups():
            if self.liquidatable(g, opens, bv):
                self.liquidate(g, {k: opens[k] for k in self.members(g)}, 0.0, gap=True, at_open=True, bv=bv)
        # 3. orders at the open: reductions first, then increases
        self.orders(targets, bv)
        # 4. funding strictly inside the bar, paid by the positions after the fills
        for k, e in events[t]:
            if bv.leg_bar[k] is not None and not acc.pos[k].stopped and not bars.legs[k].fe_at_open[e]:
                self.pay_funding(k, e, bars, bv)
        # 5. margin call / liquidation on the intrabar path: the cross account, then each isolated
        #    position (options as collateral: the contracts held during bar t at adv[t], a constant)
        self.cvals = P.adv[t]
        adverse_ratio = max([self.margin_check(g, bv) for g in self.groups()])
        # 6. valuation at the mark closes (options at old[t])
        self.cvals = P.old[t]
        self.close(bv, adverse_ratio, out, pos_out)

    def close(self, bv: _BarView, adverse_ratio: float, out: dict[str, np.ndarray],
              pos_out: dict[str, np.ndarray]) -> None:
        acc, ins, t, j = self.acc, self.ins, bv.t, self.j
        closes = [bv.mark_close[k] if bv.leg_bar[k] is not None else 0.0 for k in range(self.k)]
        equity = self.equity(closes, self.opaths.old[t])
        coll = self.coll(CROSS)
        marks = {k: closes[k] for k in range(self.k)}
        ratios = {g: self.ratio(g, marks, bv) for g in self.groups()}
        cross = self.members(CROSS)
        upnls = [ins[k].upnl(acc.pos[k].contracts, acc.pos[k].entry, closes[k]) for k in cross]
        mms = [mk.maintenance_margin(ins[k].notional(acc.pos[k].contracts, closes[k]), bv.tiers[k]) for k in cross]
        gross = []
        for k in range(self.k):
            p = acc.pos[k]
            notional = p.contracts * ins[k].value(closes[k]) if p.contracts != 0.0 else 0.0
            gross.append(abs(notional))
            liq = 0.0
            upnl = 0.0
            if p.contracts != 0.0:
                upnl = ins[k].upnl(p.contracts, p.entry, closes[k])
                if self.cfg.legs[k].isolated:
                    lp = mk.liquidation_price(p.contracts, p.entry, p.margin, bv.tiers[k], ins[k].size, ins[k].inverse)
                else:
                    other_mm, other_upnl = mk.cross_others(upnls, mms, cross.index(k))
                    lp = mk.liquidation_price(p.contracts, p.entry, acc.wallet + coll, bv.tiers[k], ins[k].size,
                                              ins[k].inverse, other_mm=other_mm, other_upnl=other_upnl)
                if lp is not None and math.isfinite(lp) and lp > 0.0:
                    liq = lp
            pos_out["position"][t, k, j] = p.contracts
            pos_out["notional"][t, k, j] = notional
            pos_out["liq_price"][t, k, j] = liq
            pos_out["pnl_price"][t, k, j] = p.realised + upnl
            pos_out["pnl_funding"][t, k, j] = p.funding
            pos_out["pnl_fees"][t, k, j] = p.fees
            pos_out["pnl_liquidation"][t, k, j] = p.liquidation
        for jo, o in enumerate(acc.opt):
            # option rows K + j: contracts and the PnL split; their notional is filled after the
            # loop by option_outputs (delta-equivalent), liq_price/funding/liquidation stay 0
            row = self.k + jo
            value = o.contracts * float(self.opaths.old[t, jo]) if o.contracts != 0.0 else 0.0
            pos_out["position"][t, row, j] = o.contracts
            pos_out["pnl_price"][t, row, j] = o.realised + value
            pos_out["pnl_fees"][t, row, j] = o.fees
        usd = 1.0
        if ins[0].inverse:
            listed = [k for k in range(self.k) if bv.leg_bar[k] is not None]
            usd = closes[listed[0]] if listed else math.nan
        out["equity"][t, j] = equity
        out["equity_usd"][t, j] = equity * usd if ins[0].inverse else equity
        out["margin_ratio"][t, j] = max(ratios.values())
        out["margin_ratio_adverse"][t, j] = adverse_ratio
        out["gross_leverage"][t, j] = math.fsum(gross) / equity if equity > 0.0 else 0.0
        out["cum_funding"][t, j] = acc.cum_funding
        out["cum_fees"][t, j] = acc.cum_fees
        out["capital_added"][t, j] = acc.capital_added
        out["liq_distance"][t, j] = self.liq_distance(closes, bv)
        for g, r in ratios.items():
            if acc.in_call.get(g, False) and r < self.cfg.call_threshold:
                acc.in_call[g] = False
        acc.prev_equity = equity
        acc.peak = max(acc.peak, equity)


def _adds_exposure(c: float, new_c: float) -> bool:
    if new_c == 0.0:
        return False
    return c == 0.0 or _sign(new_c) != _sign(c) or abs(new_c) > abs(c)


def _fits(need: float, available: float) -> bool:
    return need <= available + CHECK_RTOL * (abs(need) + abs(available))


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------

def simulate_book_reference(bars: BookBars, target, specs: list[MarketSpec], settings: BookSettings | None = None,
                            betas=None, benchmark: str | None = None
                            ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Simulate every column of a book with plain Python loops (reference for a book kernel).

    Parameters
    ----------
    bars : K instruments on one bar index (later listings start at their first bar).
    target : float64 (n_bars, K + J, n_cols) or (n_bars, K + J): signed target exposure of each
        perpetual, then of each of the J option legs (``settings.options``; long only, >= 0), as
        a multiple of the account's equity (negative = short); NaN keeps the position. Row ``t``
        is traded at bar ``t + lag``; a row that would reach an instrument before its first bar,
        or an option leg before its first contract, must be NaN.
    specs : one MarketSpec per instrument, in the book's order: all linear in one settlement
        currency, or all inverse in one coin.
    settings : account, policy, per-instrument legs, the intrabar convention, the option legs
        and ``options_collateral``.
    betas, benchmark : as :func:`backtest.book.simulate_book`: given, the series gain
        ``beta_exposure`` and ``beta_exposure_coin`` (:func:`backtest.book.exposure.beta_exposure`).

    Returns
    -------
    series : name -> float64 (n_bars, n_cols) for every name in ``BOOK_SERIES`` (and, when the
        book has option legs, ``OPTION_SERIES``: ``option_value``, ``delta_btc``, ``vega``) and
        (n_bars, K + J, n_cols) for every name in ``POSITION_SERIES`` (option rows: contracts,
        delta-equivalent notional, price PnL and fees; money in the settlement currency).
    records : name -> structured array with ``BOOK_RECORD_DTYPES`` (``fills``, ``funding``,
        ``margin_calls``, ``liquidations``, each with its instrument), sorted by column, bar,
        then event order.
    """
    inp = check_book_inputs(bars, target, specs, settings)
    specs, tgt, legs, pol, intrabar, lag = inp.specs, inp.target, inp.legs, inp.policy, inp.intrabar, inp.lag
    n, kk, m = bars.n, bars.k, inp.n_cols

    ins = [_Instrument(symbol=bars.symbols[k], size=s.contract_size, inverse=s.inverse, lot=s.lot_size,
                       min_notional=s.min_notional, liq_fee_rate=s.liquidation_fee_rate) for k, s in enumerate(specs)]
    tables = []
    for k, s in enumerate(specs):
        stacked, n_tiers, version = s.tier_arrays(bars.legs[k].timestamp)
        tables.append([stacked[version[i], : n_tiers[version[i]]] for i in range(bars.legs[k].n)])
    events: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    for k, leg in enumerate(bars.legs):
        for e in range(leg.fe_bar.shape[0]):
            events[int(bars.first_bar[k]) + int(leg.fe_bar[e])].append((k, e))
    for ev in events:
        ev.sort(key=lambda ke: (ke[0], ke[1]))
    views = []
    for t in range(n):
        lb = [t - int(bars.first_bar[k]) if t >= bars.first_bar[k] else None for k in range(kk)]

        def price(name: str, k: int, i: int | None) -> float:
            return float(getattr(bars.legs[k], name)[i]) if i is not None else math.nan

        views.append(_BarView(
            t=t, leg_bar=lb,
            open=[price("open", k, lb[k]) for k in range(kk)],
            mark_open=[price("mark_open", k, lb[k]) for k in range(kk)],
            mark_high=[price("mark_high", k, lb[k]) for k in range(kk)],
            mark_low=[price("mark_low", k, lb[k]) for k in range(kk)],
            mark_close=[price("mark_close", k, lb[k]) for k in range(kk)],
            prev_mark_close=[price("mark_close", k, lb[k] - 1) if lb[k] else price("mark_open", k, lb[k])
                             for k in range(kk)],
            tiers=[tables[k][lb[k]] if lb[k] is not None else None for k in range(kk)],
        ))

    jj = len(inp.options)
    out = {name: np.zeros((n, m)) for name in BOOK_SERIES}
    pos_out = {name: np.zeros((n, kk + jj, m)) for name in POSITION_SERIES}
    rec = _Records()
    a0 = legs[0]
    for j in range(m):
        cfg = _Cfg(
            initial_capital=float(a0["initial_capital"][j]),
            call_threshold=float(a0["call_threshold"][j]),
            call_response=int(a0["call_response"][j]),
            call_target=float(a0["call_target"][j]),
            reserve=float(a0["reserve"][j]),
            stop_after_liquidation=int(a0["after_liq"][j]) == AfterLiquidation.STOP,
            reject_excess=int(a0["excess"][j]) == Excess.REJECT,
            slippage=float(a0["slippage"][j]),
            policy=(int(pol["policy_kind"][j]), float(pol["max_drawdown"][j]), float(pol["floor"][j]),
                    float(pol["multiplier"][j]), bool(pol["ratchet"][j]), float(pol["max_exposure"][j])),
            alone=int(intrabar[j]) == Intrabar.ALONE,
            legs=tuple(_LegCfg(isolated=int(a["margin_mode"][j]) == MarginMode.ISOLATED,
                               leverage=float(a["leverage"][j]), fee_rate=float(a["fee_rate"][j])) for a in legs),
            collateral=bool(inp.collateral[j]),
        )
        col = _Column(j, ins, cfg, rec, inp.paths)
        for t in range(n):
            row = [float(tgt[t - lag, k, j]) if t >= lag else math.nan for k in range(kk + jj)]
            col.bar(bars, row, views[t], events, out, pos_out)

    records = {name: np.array(getattr(rec, name), dtype=dt) if getattr(rec, name) else np.empty(0, dtype=dt)
               for name, dt in BOOK_RECORD_DTYPES.items()}
    mark_close = bars.prices("mark_close")
    price_usd = np.ones(n)
    if specs[0].inverse:
        listed = bars.listed
        first = np.argmax(listed, axis=1)
        price_usd = np.where(listed.any(axis=1), mark_close[np.arange(n), first], np.nan)
    extra: dict[str, np.ndarray] = {}
    if jj:
        # the option rows' delta-equivalent notional and the account's option series (one definition)
        extra = option_outputs(pos_out["position"], pos_out["notional"], inp.paths, mark_close, price_usd,
                               bool(specs[0].inverse))
    if betas is not None:
        bench = benchmark_index(benchmark, bars.symbols)
        extra.update(beta_exposure(pos_out["notional"], out["equity"], book_betas(betas, n, bars.symbols),
                                   inp.paths.k, mark_close[:, bench], price_usd))
    return {**out, **pos_out, **extra}, records
