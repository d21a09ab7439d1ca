"""Slow, obvious reference simulator of the perpetual engine.

Plain Python loops, one column at a time, built from the readable formulas of
:mod:`backtest.mechanics`. It implements the rules of the README ("Engine semantics")
literally, in the stated order of events within a bar, and exists so that the fast numba kernel
can be compared against an independent implementation (property tests on random inputs). Where
the written rules leave a numeric detail open, the choice made here is listed in
``docs/mechanics.md`` ("Reference simulator: readings of the spec").

Do not use it for real runs: it is orders of magnitude slower than the kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from backtest import mechanics as mk
from backtest.engine.bars import EngineInputError, PerpBars
from backtest.engine.enums import RECORD_DTYPES, SERIES, FillReason, FillStatus
from backtest.engine.nb import policy_target_nb
from backtest.engine.settings import (
    Account, AfterLiquidation, CallResponse, Excess, MarginMode, Policy,
    account_arrays, policy_arrays,
)
from backtest.market import MarketSpec

# A size within this many lots of a lot boundary counts as on it (target * equity / value is
# rarely exact in binary floating point, e.g. 0.5 BTC / 0.001 = 499.99999999999994).
LOT_EPS = 1e-9
# Relative tolerance of the exchange checks (tier cap, available margin).
CHECK_RTOL = 1e-12
# Without a lot size, a trade smaller than this fraction of the position is rounding dust.
DUST_RTOL = 1e-9


def _sign(x: float) -> int:
    return int(x > 0) - int(x < 0)


@dataclass(frozen=True)
class Contract:
    """The contract being traded (from the MarketSpec)."""

    size: float
    inverse: bool
    lot: float
    min_notional: float
    liq_fee_rate: float

    def value(self, price: float) -> float:
        return mk.contract_value(price, self.size, self.inverse)

    def notional(self, contracts: float, price: float) -> float:
        return mk.position_notional(contracts, price, self.size, self.inverse)

    def upnl(self, contracts: float, entry: float, price: float) -> float:
        return mk.unrealized_pnl(contracts, entry, price, self.size, self.inverse)

    def order_usd(self, contracts: float, price: float) -> float:
        """Order notional in USD/USDT (the unit of the minimum-notional rule)."""
        return abs(contracts) * self.size * (1.0 if self.inverse else price)

    def round_lots(self, contracts: float) -> float:
        """Round toward zero to the lot size (lot 0 = no rounding)."""
        if self.lot <= 0.0:
            return contracts
        n = math.floor(abs(contracts) / self.lot + LOT_EPS)
        return _sign(contracts) * (n * self.lot) if n > 0 else 0.0

    def lots(self, contracts: float) -> int:
        return int(round(abs(contracts) / self.lot))

    def same_size(self, a: float, b: float) -> bool:
        """Equal positions: exactly on a lot grid, up to rounding dust without one."""
        if self.lot > 0.0:
            return a == b
        return abs(a - b) <= DUST_RTOL * max(abs(a), abs(b))


@dataclass(frozen=True)
class _Settings:
    """One column's account and policy settings."""

    initial_capital: float
    isolated: bool
    leverage: float
    call_threshold: float
    call_response: int
    call_target: float
    reserve: float
    stop_after_liquidation: bool
    reject_excess: bool
    fee_rate: float
    slippage: float
    policy_kind: int
    max_drawdown: float
    floor: float
    multiplier: float
    ratchet: bool
    max_exposure: float


@dataclass
class _State:
    """One column's account as the bars go by."""

    contracts: float
    entry: float
    wallet: float          # W: cross, all realised cash; isolated, the free balance
    margin: float          # M: isolated margin of the position (0 in cross mode)
    cum_funding: float
    cum_fees: float
    capital_added: float
    reserve_left: float
    in_call: bool          # inside a margin-call episode
    stopped: bool          # frozen after a liquidation with after_liquidation='stop'
    peak: float            # running max of close equity (starts at the initial capital)
    prev_equity: float     # equity at the previous close (initial capital before bar 0)


class _Records:
    def __init__(self) -> None:
        self.fills: list[tuple] = []
        self.funding: list[tuple] = []
        self.margin_calls: list[tuple] = []
        self.liquidations: list[tuple] = []


# --------------------------------------------------------------------------------------------
# Account quantities
# --------------------------------------------------------------------------------------------

def _balance(st: _State, cfg: _Settings) -> float:
    """B: the balance backing the position (cross: wallet, isolated: isolated margin)."""
    return st.margin if cfg.isolated else st.wallet


def _margin_balance(st: _State, price: float, ct: Contract, cfg: _Settings) -> float:
    return _balance(st, cfg) + ct.upnl(st.contracts, st.entry, price)


def _maintenance(st: _State, price: float, ct: Contract, tiers: np.ndarray) -> float:
    return mk.maintenance_margin(ct.notional(st.contracts, price), tiers)


def _ratio(st: _State, price: float, ct: Contract, cfg: _Settings, tiers: np.ndarray) -> float:
    if st.contracts == 0.0:
        return 0.0
    return mk.margin_ratio(_maintenance(st, price, ct, tiers), _margin_balance(st, price, ct, cfg))


def _liquidatable(st: _State, price: float, ct: Contract, cfg: _Settings, tiers: np.ndarray) -> bool:
    return st.contracts != 0.0 and _margin_balance(st, price, ct, cfg) <= _maintenance(st, price, ct, tiers)


def _equity(st: _State, price: float, ct: Contract) -> float:
    return st.wallet + st.margin + ct.upnl(st.contracts, st.entry, price)


# --------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------

def _pay_funding(st: _State, t: int, j: int, k: int, bars: PerpBars, ct: Contract,
                 cfg: _Settings, rec: _Records) -> None:
    """Funding print k, paid by the position held now: ``-C * v(mark) * rate``."""
    if st.contracts == 0.0:
        return
    mark, rate = float(bars.fe_mark[k]), float(bars.fe_rate[k])
    amount = mk.funding_cash_flow(st.contracts, mark, rate, ct.size, ct.inverse)
    if cfg.isolated:
        st.margin += amount
    else:
        st.wallet += amount
    st.cum_funding += amount
    rec.funding.append((t, j, int(bars.fe_time[k]), rate, mark, st.contracts, amount))


def _execute(st: _State, new_contracts: float, price: float, ct: Contract, cfg: _Settings,
             keep_isolated_margin: bool = False) -> float:
    """Trade from ``st.contracts`` to ``new_contracts`` at ``price``; returns the fee.

    Realised PnL of the closed part and the fee go to W. Isolated margin: an increase moves
    ``dN/L`` from W to M; a reduction releases ``M * closed/abs(C)``; a flip releases all of M,
    then allocates ``N(C*)/L``. ``keep_isolated_margin`` (the margin-call reduce): isolated
    margin stays with the smaller position and the realised PnL of the cut stays in it (all of
    it returns to W if the cut closes the position)."""
    c = st.contracts
    d = new_contracts - c
    if d == 0.0:
        return 0.0
    v = ct.value(price)
    fee = cfg.fee_rate * abs(d) * v
    if c != 0.0 and _sign(d) != _sign(c):
        closed = min(abs(d), abs(c))
        realised = ct.upnl(_sign(c) * closed, st.entry, price)
        if cfg.isolated and keep_isolated_margin:
            st.margin += realised
        else:
            st.wallet += realised
        if cfg.isolated and (not keep_isolated_margin or new_contracts == 0.0):
            release = st.margin if closed >= abs(c) else st.margin * closed / abs(c)
            st.margin -= release
            st.wallet += release
        if new_contracts != 0.0 and _sign(new_contracts) != _sign(c):
            st.entry = price
            if cfg.isolated:
                alloc = abs(new_contracts) * v / cfg.leverage
                st.wallet -= alloc
                st.margin += alloc
        elif new_contracts == 0.0:
            st.entry = 0.0
    else:
        if c == 0.0:
            st.entry = price
        elif ct.inverse:
            # harmonic mean: sum(contracts) / sum(contracts / price)
            st.entry = (abs(c) + abs(d)) / (abs(c) / st.entry + abs(d) / price)
        else:
            st.entry = (abs(c) * st.entry + abs(d) * price) / (abs(c) + abs(d))
        if cfg.isolated:
            alloc = abs(d) * v / cfg.leverage
            st.wallet -= alloc
            st.margin += alloc
    st.wallet -= fee
    st.cum_fees += fee
    st.contracts = new_contracts
    return fee


def _liquidate(st: _State, t: int, j: int, bars: PerpBars, ct: Contract, cfg: _Settings,
               tiers: np.ndarray, rec: _Records, at_open: bool) -> None:
    """Close the position at ``P_L`` (LP, or the mark open on a gap); the account keeps
    ``max(0, B + uPnL(P_L) - clearance fee)``; see :func:`backtest.mechanics.liquidation_outcome`
    for the fee charged and the deficit."""
    c = st.contracts
    side = _sign(c)
    mark_open = float(bars.mark_open[t])
    extreme = float(bars.mark_high[t] if c < 0 else bars.mark_low[t])
    b = _balance(st, cfg)
    lp = mk.liquidation_price(c, st.entry, b, tiers, ct.size, ct.inverse)
    if lp is None or not math.isfinite(lp) or lp <= 0.0:
        # no finite positive root although MB <= MM was observed: the balance is exhausted at
        # every price (or a rounding tie); execute at the mark open (step 2) or the extreme
        trigger = mark_open if at_open else extreme
        gap = at_open
    else:
        trigger = lp
        gap = at_open or (mark_open >= lp if side < 0 else mark_open <= lp)
    price = mark_open if gap else trigger
    upnl = ct.upnl(c, st.entry, price)
    equity_before = st.wallet + st.margin + upnl
    # before the adverse move: at the mark open, or (a gap at the open) at the previous close
    start_mark = float(bars.mark_close[t - 1]) if at_open and t > 0 else mark_open
    equity_start = st.wallet + st.margin + ct.upnl(c, st.entry, start_mark)
    keep, deficit, fee = mk.liquidation_outcome(b, upnl, ct.notional(c, price), ct.liq_fee_rate)
    if cfg.isolated:
        st.wallet += keep
        st.margin = 0.0
    else:
        st.wallet = keep
    st.contracts = 0.0
    st.entry = 0.0
    st.cum_fees += fee
    st.in_call = False  # the position the call was about is gone
    rec.liquidations.append((t, j, trigger, price, c, fee, equity_start, equity_before, st.wallet, deficit, int(gap)))
    if cfg.stop_after_liquidation:
        st.stopped = True


# --------------------------------------------------------------------------------------------
# Step 3: the fill at the open
# --------------------------------------------------------------------------------------------

def _adds_exposure(c: float, new_c: float) -> bool:
    """Open, increase on the same side, or flip (the orders the exchange checks)."""
    if new_c == 0.0:
        return False
    return c == 0.0 or _sign(new_c) != _sign(c) or abs(new_c) > abs(c)


def _fits(need: float, available: float) -> bool:
    """``need <= available`` up to rounding (an order sized exactly at the limit, e.g. 1x the
    equity at leverage 1, passes whatever the last bit of the arithmetic)."""
    return need <= available + CHECK_RTOL * (abs(need) + abs(available))


def within_call_target(ratio: float, target: float) -> bool:
    """A margin-call cut's ratio is at most the call target up to the checks' tolerance
    (:func:`_fits`): a size whose ratio is the target in exact arithmetic passes whatever the
    last bit (as the kernel's closed form keeps it)."""
    return ratio != math.inf and _fits(ratio, target)


def _order_allowed(st: _State, new_c: float, price: float, e_open: float, ncap: float,
                   ct: Contract, cfg: _Settings) -> bool:
    """Exchange checks: (a) tier cap ``N(C*) <= Ncap``; (b) available margin."""
    c = st.contracts
    v = ct.value(price)
    n_new = abs(new_c) * v
    if not _fits(n_new, ncap):
        return False
    fee = cfg.fee_rate * abs(new_c - c) * v
    if not cfg.isolated:
        return _fits(n_new / cfg.leverage + fee, e_open)
    if c == 0.0 or _sign(new_c) == _sign(c):
        return _fits((abs(new_c) - abs(c)) * v / cfg.leverage + fee, st.wallet)
    w_after_close = st.wallet + st.margin + ct.upnl(c, st.entry, price) - cfg.fee_rate * abs(c) * v
    return _fits(n_new / cfg.leverage + cfg.fee_rate * abs(new_c) * v, w_after_close)


def _largest_allowed(st: _State, desired: float, price: float, e_open: float, ncap: float,
                     ct: Contract, cfg: _Settings) -> float:
    """Largest lot-rounded size toward ``desired`` that passes the exchange checks; never below
    the current position on the same side (for a flip, down to 0 = just close)."""
    c = st.contracts
    side = _sign(desired)
    same_side = c != 0.0 and _sign(c) == side
    lower = abs(c) if same_side else 0.0
    upper = abs(desired)
    v = ct.value(price)
    per_contract = v * (1.0 / cfg.leverage + cfg.fee_rate)
    # closed-form first guess from the checks, then stepped lot by lot to absorb rounding
    if not cfg.isolated:
        room = e_open + cfg.fee_rate * abs(c) * v if (same_side or c == 0.0) else e_open - cfg.fee_rate * abs(c) * v
        guess = room / per_contract
    elif same_side or c == 0.0:
        guess = abs(c) + st.wallet / per_contract
    else:
        w_after_close = st.wallet + st.margin + ct.upnl(c, st.entry, price) - cfg.fee_rate * abs(c) * v
        guess = w_after_close / per_contract
    guess = min(guess, ncap / v, upper)

    def ok(size: float) -> bool:
        return _order_allowed(st, side * size, price, e_open, ncap, ct, cfg)

    if ct.lot <= 0.0:
        return side * max(guess, lower)
    n_lower, n_upper = ct.lots(lower), ct.lots(upper)
    n = math.floor(max(guess, 0.0) / ct.lot + LOT_EPS)
    n = min(max(n, n_lower), n_upper)
    while n > n_lower and not ok(n * ct.lot):
        n -= 1
    while n < n_upper and ok((n + 1) * ct.lot):
        n += 1
    return side * (n * ct.lot) if n > 0 else 0.0


def _fill_target(st: _State, raw_target: float, t: int, j: int, bars: PerpBars, ct: Contract,
                 cfg: _Settings, tiers: np.ndarray, rec: _Records) -> None:
    if math.isnan(raw_target):
        return
    # the policy formula is written once (the kernel calls it too); the state it reads is ours
    target = float(policy_target_nb(raw_target, cfg.policy_kind, cfg.max_drawdown, cfg.floor, cfg.multiplier,
                                    cfg.ratchet, cfg.max_exposure, st.prev_equity, st.peak, cfg.initial_capital))
    open_ = float(bars.open[t])
    e_open = _equity(st, open_, ct)
    # equity below 1e-9 of the initial capital is float dust left by a liquidation: close only
    desired = 0.0 if e_open <= DUST_RTOL * cfg.initial_capital else ct.round_lots(target * e_open / ct.value(open_))
    c = st.contracts
    if ct.same_size(desired, c):
        return
    d = desired - c
    price = open_ * (1.0 + cfg.slippage * _sign(d))
    if desired != 0.0 and not _fits(ct.min_notional, ct.order_usd(d, price)):  # the checks' tolerance
        return
    status = FillStatus.FILLED
    if _adds_exposure(c, desired):
        ncap = mk.max_notional_at_leverage(tiers, cfg.leverage)
        if not _order_allowed(st, desired, price, e_open, ncap, ct, cfg):
            if cfg.reject_excess:
                rec.fills.append((t, j, price, d, ct.notional(d, price), 0.0,
                                  FillStatus.REJECTED, FillReason.TARGET))
                return
            desired = _largest_allowed(st, desired, price, e_open, ncap, ct, cfg)
            if ct.same_size(desired, c):
                desired = c
            if desired != 0.0 and not _fits(ct.min_notional, ct.order_usd(desired - c, price)):
                desired = c  # what is left of the order is below the minimum: nothing is traded
            d = desired - c
            status = FillStatus.CLIPPED
    fee = _execute(st, desired, price, ct, cfg)
    rec.fills.append((t, j, price, d, ct.notional(d, price), fee, status, FillReason.TARGET))


# --------------------------------------------------------------------------------------------
# Step 5: margin call and liquidation at the adverse mark extreme
# --------------------------------------------------------------------------------------------

def _reduce_for_call(st: _State, call_price: float, t: int, j: int, ct: Contract,
                     cfg: _Settings, tiers: np.ndarray, rec: _Records) -> float:
    """Cut the position to the largest lot-rounded size whose ratio at the call price, after
    the fill (its slippage and fee; isolated: margin and the cut's realised PnL kept with the
    position), is at most the call target. Returns the number of contracts cut."""
    c = st.contracts
    side = _sign(c)
    if _margin_balance(st, call_price, ct, cfg) <= 0.0:
        # nothing is left to protect at the call price: no cut; the liquidation check follows
        # (a liquidation's shortfall is covered by the insurance fund, a cut's would not be)
        return 0.0

    def fill_price(new_c: float) -> float:
        return call_price * (1.0 + cfg.slippage * _sign(new_c - c))

    def ratio_after(new_c: float) -> float:
        trial = replace(st)
        _execute(trial, new_c, fill_price(new_c), ct, cfg, keep_isolated_margin=True)
        return _ratio(trial, call_price, ct, cfg, tiers)

    # bisection between "flat" (ratio 0) and "no cut" (ratio >= threshold > target)
    if ct.lot > 0.0:
        lo, hi = 0, ct.lots(c)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if within_call_target(ratio_after(side * (mid * ct.lot)), cfg.call_target):
                lo = mid
            else:
                hi = mid
        new_c = side * (lo * ct.lot) if lo > 0 else 0.0
    else:
        lo_q, hi_q = 0.0, abs(c)
        for _ in range(200):
            mid_q = 0.5 * (lo_q + hi_q)
            if within_call_target(ratio_after(side * mid_q), cfg.call_target):
                lo_q = mid_q
            else:
                hi_q = mid_q
        new_c = side * lo_q
    price = fill_price(new_c)
    d = new_c - c
    fee = _execute(st, new_c, price, ct, cfg, keep_isolated_margin=True)
    rec.fills.append((t, j, price, d, ct.notional(d, price), fee, FillStatus.FILLED, FillReason.MARGIN_CALL))
    return abs(d)


def _top_up_for_call(st: _State, call_price: float, ct: Contract, cfg: _Settings,
                     tiers: np.ndarray) -> float:
    """Add ``X = MM/target - MB`` at the call price (at most the reserve left)."""
    need = (_maintenance(st, call_price, ct, tiers) / cfg.call_target
            - _margin_balance(st, call_price, ct, cfg))
    x = max(0.0, min(need, st.reserve_left))
    if cfg.isolated:
        st.margin += x
    else:
        st.wallet += x
    st.capital_added += x
    st.reserve_left -= x
    return x


def _margin_check(st: _State, t: int, j: int, bars: PerpBars, ct: Contract, cfg: _Settings,
                  tiers: np.ndarray, rec: _Records) -> None:
    c = st.contracts
    extreme = float(bars.mark_high[t] if c < 0 else bars.mark_low[t])
    mark_open = float(bars.mark_open[t])
    theta = cfg.call_threshold
    if not st.in_call and _ratio(st, extreme, ct, cfg, tiers) >= theta:
        st.in_call = True
        if _ratio(st, mark_open, ct, cfg, tiers) >= theta:
            call_price = mark_open
        else:
            p = mk.margin_call_price(c, st.entry, _balance(st, cfg), tiers, theta, ct.size, ct.inverse)
            call_price = p if (p is not None and math.isfinite(p) and p > 0.0) else extreme
        ratio_at_call = _ratio(st, call_price, ct, cfg, tiers)
        amount = 0.0
        if cfg.call_response == CallResponse.REDUCE:
            amount = _reduce_for_call(st, call_price, t, j, ct, cfg, tiers, rec)
        elif cfg.call_response == CallResponse.TOP_UP:
            amount = _top_up_for_call(st, call_price, ct, cfg, tiers)
        rec.margin_calls.append((t, j, call_price, ratio_at_call, cfg.call_response, amount))
    if _liquidatable(st, extreme, ct, cfg, tiers):
        _liquidate(st, t, j, bars, ct, cfg, tiers, rec, at_open=False)


# --------------------------------------------------------------------------------------------
# The column loop
# --------------------------------------------------------------------------------------------

def _simulate_column(j: int, bars: PerpBars, target: np.ndarray, lag: int, ct: Contract,
                     cfg: _Settings, tables: list[np.ndarray], events: list[list[int]],
                     out: dict[str, np.ndarray], rec: _Records) -> None:
    st = _State(contracts=0.0, entry=0.0, wallet=cfg.initial_capital, margin=0.0,
                cum_funding=0.0, cum_fees=0.0, capital_added=0.0, reserve_left=cfg.reserve,
                in_call=False, stopped=False, peak=cfg.initial_capital,
                prev_equity=cfg.initial_capital)
    for t in range(bars.n):
        mark_close = float(bars.mark_close[t])
        if st.stopped:
            _write(out, t, j, equity=st.prev_equity, mark_close=mark_close, ct=ct, st=st,
                   notional=0.0, ratio=0.0, liq=0.0)
            continue
        tiers = tables[t]
        # 1. funding at the open instant, paid by the position going into the open
        for k in events[t]:
            if bars.fe_at_open[k]:
                _pay_funding(st, t, j, k, bars, ct, cfg, rec)
        # 2. gap check at the mark open
        if _liquidatable(st, float(bars.mark_open[t]), ct, cfg, tiers):
            _liquidate(st, t, j, bars, ct, cfg, tiers, rec, at_open=True)
        if not st.stopped:
            # 3. fill at the open
            raw = float(target[t - lag]) if t >= lag else math.nan
            _fill_target(st, raw, t, j, bars, ct, cfg, tiers, rec)
            # 4. funding strictly inside the bar, paid by the position after the fill
            for k in events[t]:
                if not bars.fe_at_open[k]:
                    _pay_funding(st, t, j, k, bars, ct, cfg, rec)
            # 5. margin call / liquidation at the adverse mark extreme
            if st.contracts != 0.0:
                _margin_check(st, t, j, bars, ct, cfg, tiers, rec)
        # 6. valuation at the mark close
        equity = _equity(st, mark_close, ct)
        ratio = _ratio(st, mark_close, ct, cfg, tiers)
        liq = 0.0
        if st.contracts != 0.0:
            lp = mk.liquidation_price(st.contracts, st.entry, _balance(st, cfg), tiers, ct.size, ct.inverse)
            if lp is not None and math.isfinite(lp) and lp > 0.0:
                liq = lp
        _write(out, t, j, equity=equity, mark_close=mark_close, ct=ct, st=st,
               notional=st.contracts * ct.value(mark_close), ratio=ratio, liq=liq)
        if st.in_call and ratio < cfg.call_threshold:
            st.in_call = False
        st.prev_equity = equity
        st.peak = max(st.peak, equity)


def _write(out: dict[str, np.ndarray], t: int, j: int, *, equity: float, mark_close: float,
           ct: Contract, st: _State, notional: float, ratio: float, liq: float) -> None:
    out["equity"][t, j] = equity
    out["equity_usd"][t, j] = equity * mark_close if ct.inverse else equity
    out["position"][t, j] = st.contracts
    out["notional"][t, j] = notional
    out["leverage"][t, j] = abs(notional) / equity if equity > 0.0 else 0.0
    out["margin_ratio"][t, j] = ratio
    out["liq_price"][t, j] = liq
    out["cum_funding"][t, j] = st.cum_funding
    out["cum_fees"][t, j] = st.cum_fees
    out["capital_added"][t, j] = st.capital_added


def simulate_reference(bars: PerpBars, target: np.ndarray, spec: MarketSpec, account: Account,
                       policy: Policy) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Simulate every column with plain Python loops (reference for the numba kernel).

    Parameters
    ----------
    bars : aligned trade/mark OHLC and funding events (n_bars bars).
    target : float64 (n_bars, n_cols), signed target exposure as a multiple of equity
        (negative = short); NaN keeps the position. Row ``t`` is traded at bar ``t + lag``.
    spec : the contract (linear/inverse, contract size, lot, minimum notional, fees, clearance
        fee, tier tables and their history).
    account, policy : settings, scalar or one value per column.

    Returns
    -------
    series : name -> float64 (n_bars, n_cols) for every name in ``enums.SERIES``, valued at
        the bar's mark close (money in the settlement currency; ``equity_usd`` in USD).
    records : name -> structured array with ``enums.RECORD_DTYPES`` (``fills``, ``funding``,
        ``margin_calls``, ``liquidations``), sorted by column, bar, then event order.
    """
    tgt = np.asarray(target, dtype=np.float64)
    if tgt.ndim == 1:
        tgt = tgt[:, None]
    if tgt.ndim != 2 or tgt.shape[0] != bars.n:
        raise EngineInputError(
            f"target has shape {np.shape(target)} but the bars have {bars.n} rows; "
            "give a (n_bars, n_cols) array aligned to the bars")
    n, m = tgt.shape
    acc = account_arrays(account, m, default_fee=spec.taker_fee, n_bars=n)
    pol = policy_arrays(policy, m)
    lag = int(account.lag)

    ct = Contract(size=spec.contract_size, inverse=spec.inverse, lot=spec.lot_size,
                   min_notional=spec.min_notional, liq_fee_rate=spec.liquidation_fee_rate)
    stacked, n_tiers, version = spec.tier_arrays(bars.timestamp)
    tables = [stacked[version[t], : n_tiers[version[t]]] for t in range(n)]
    events: list[list[int]] = [[] for _ in range(n)]
    for k in range(bars.fe_bar.shape[0]):
        events[int(bars.fe_bar[k])].append(k)

    out = {name: np.zeros((n, m), dtype=np.float64) for name in SERIES}
    rec = _Records()
    for j in range(m):
        cfg = _Settings(
            initial_capital=float(acc["initial_capital"][j]),
            isolated=int(acc["margin_mode"][j]) == MarginMode.ISOLATED,
            leverage=float(acc["leverage"][j]),
            call_threshold=float(acc["call_threshold"][j]),
            call_response=int(acc["call_response"][j]),
            call_target=float(acc["call_target"][j]),
            reserve=float(acc["reserve"][j]),
            stop_after_liquidation=int(acc["after_liq"][j]) == AfterLiquidation.STOP,
            reject_excess=int(acc["excess"][j]) == Excess.REJECT,
            fee_rate=float(acc["fee_rate"][j]),
            slippage=float(acc["slippage"][j]),
            policy_kind=int(pol["policy_kind"][j]),
            max_drawdown=float(pol["max_drawdown"][j]),
            floor=float(pol["floor"][j]),
            multiplier=float(pol["multiplier"][j]),
            ratchet=bool(pol["ratchet"][j]),
            max_exposure=float(pol["max_exposure"][j]),
        )
        _simulate_column(j, bars, tgt[:, j], lag, ct, cfg, tables, events, out, rec)

    records = {name: np.array(getattr(rec, name), dtype=dt) if getattr(rec, name)
               else np.empty(0, dtype=dt) for name, dt in RECORD_DTYPES.items()}
    return out, records
