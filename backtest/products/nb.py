"""Numba kernel of the leveraged (inverse) product simulator, vectorized over columns.

Per product unit the product holds cash ``c`` (USD) and a perp position ``q`` (coins), so its
NAV at price P is ``c + q P`` and its effective leverage ``L' = q P / NAV``. A rebalance at P
sets ``q = L NAV / P``. A "gross" twin rebalanced at the same instants without fees, funding
and trading costs measures the pure volatility decay.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from backtest.products import enums as E

DAY_MS = 86_400_000
N_SERIES = len(E.SERIES)
_DAILY, _TRIGGER, _TERMINATED = E.RebalanceReason.DAILY, E.RebalanceReason.TRIGGER, E.RebalanceReason.TERMINATED
_RESET_BAR = E.Reset.BAR
(_EQUITY, _EQUITY_USD, _POSITION, _NOTIONAL, _LEVERAGE, _CUM_FUNDING, _CUM_FEES, _NAV, _NAV_GROSS,
 _IDEAL, _EFF_LEV, _PERP_POS, _LOG_DECAY, _LOG_DECAY_EST, _CUM_MGMT, _CUM_COSTS) = (
    E.EQUITY, E.EQUITY_USD, E.POSITION, E.NOTIONAL, E.LEVERAGE, E.CUM_FUNDING, E.CUM_FEES, E.NAV,
    E.NAV_GROSS, E.IDEAL_NAV, E.EFF_LEVERAGE, E.PERP_POSITION, E.LOG_DECAY, E.LOG_DECAY_EST,
    E.CUM_MGMT, E.CUM_COSTS)
_MAX_TRIGGERS_PER_BAR = 10_000


@njit(cache=True)
def trigger_price_nb(c, q, lam):
    """Price at which ``q P / (c + q P) = lam`` (the effective leverage reaches ``lam``);
    NaN when no positive price does."""
    den = q * (1.0 - lam)
    if den == 0.0:
        return np.nan
    p = lam * c / den
    return p if p > 0.0 else np.nan


@njit(cache=True)
def _grow(ai, af, k):
    if k < ai.shape[0]:
        return ai, af
    ni = np.zeros((2 * ai.shape[0] + 16, ai.shape[1]), dtype=np.int64)
    nf = np.zeros((2 * af.shape[0] + 16, af.shape[1]))
    ni[: ai.shape[0]] = ai
    nf[: af.shape[0]] = af
    return ni, nf


@njit(cache=True)
def _rebalance_nb(i, col, reason, record, price, nav, c, q, cg, qg, L, units, cost_rate, rv, p_ref,
                  reb_i, reb_f, nr):
    """Trade the perp position back to ``L x nav`` at ``price`` (the fee-free gross book alike),
    recording the rebalance when ``record``. Returns the new state and the trade cost."""
    q_new = L * nav / price
    cost = cost_rate * abs(q_new - q) * price
    if record:
        reb_i, reb_f = _grow(reb_i, reb_f, nr)
        reb_i[nr, 0], reb_i[nr, 1], reb_i[nr, 2] = i, col, reason
        reb_f[nr, 0], reb_f[nr, 1] = price, q * price / nav
        reb_f[nr, 2], reb_f[nr, 3] = nav - cost, units * (q_new - q)
        nr += 1
    c = nav - cost - q_new * price
    navg = cg + qg * price
    qg = L * navg / price
    cg = navg - qg * price
    rv += math.log(price / p_ref) ** 2
    return c, q_new, cost, cg, qg, rv, price, reb_i, reb_f, nr


@njit(cache=True)
def simulate_products_nb(close_time, price, high, low, has_hl, funding, has_funding, lev, trigger, reset,
                         reb_offset_ms, fee_day, trade_cost, invest):
    """Leveraged products, one holding per column, bought at bar 0's close at NAV 1.

    Parameters
    ----------
    close_time : int64 (n,), bar close instants, ms UTC.
    price, high, low : float64 (n, 1 or m), underlying close and bar extremes (USD).
    has_hl : bool, check rebalance triggers at the bar extremes (else at the close only).
    funding : float64 (n, 1 or m), funding rate of the print in the bar, NaN = none.
    has_funding : bool (m,), whether each column pays/receives funding.
    lev : float64 (m,), target leverage L (signed, negative = inverse).
    trigger : float64 (m,), intraday rebalance when |L'| >= trigger x |L| (inf = never).
    reset : int64 (m,), ``enums.Reset``.
    reb_offset_ms : int64 (m,), daily rebalance instant as ms after 00:00 UTC.
    fee_day : float64 (m,), management fee, fraction of NAV per day, charged at each daily instant.
    trade_cost : float64 (m,), cost of a rebalance trade, fraction of traded notional.
    invest : float64 (m,), USD invested (= product units at NAV 1).

    Returns
    -------
    out : float64 (N_SERIES, n, m) in ``enums.SERIES`` order; reb_i, reb_f : rebalance records.
    """
    n = close_time.shape[0]
    m = lev.shape[0]
    out = np.zeros((N_SERIES, n, m))
    reb_i = np.zeros((64, 3), dtype=np.int64)
    reb_f = np.zeros((64, 4))
    # typed values for the counter and the constants passed to _rebalance_nb / _grow: a literal
    # argument (0, True, _TRIGGER) is its own numba type, so each call site compiled its own
    # specialisation (_rebalance_nb three times, _grow twice on a cold run)
    nr = np.int64(0)
    for col in range(m):
        pc = col if price.shape[1] > 1 else 0
        fc = col if funding.shape[1] > 1 else 0
        L = lev[col]
        units = invest[col]
        p0 = price[0, pc]
        q = L / p0
        c = 1.0 - L
        qg, cg = q, c
        p_ref = p0
        rv = 0.0
        cum_fund = 0.0
        cum_mgmt = 0.0
        cum_cost = 0.0
        last_fee = close_time[0]
        alive = True
        lam = math.copysign(trigger[col] * abs(L), L)  # signed leverage that triggers a rebalance
        can_trigger = trigger[col] < np.inf and L != 0.0 and L != 1.0
        for i in range(n):
            P = price[i, pc]
            if i > 0 and alive:
                P_prev = price[i - 1, pc]
                if has_funding[col]:
                    fr = funding[i, fc]
                    if not np.isnan(fr):
                        # print at the bar's open: paid on the position held into the bar, at the
                        # last known price (previous close); shorts receive when fr > 0
                        flow = -q * P_prev * fr
                        c += flow
                        cum_fund += flow
                if has_hl:
                    X = high[i, pc] if L < 1.0 else low[i, pc]  # adverse extreme for |L'|
                else:
                    X = P
                # intrabar triggers: the path is taken as continuous from the previous close to X
                k = 0
                while can_trigger and k < _MAX_TRIGGERS_PER_BAR and has_hl:
                    ps = trigger_price_nb(c, q, lam)
                    if not (ps > 0.0) or (L < 1.0 and X < ps) or (L > 1.0 and X > ps):
                        break
                    # already past the level at the open (funding moved NAV): trade at the open
                    if (L < 1.0 and ps < P_prev) or (L > 1.0 and ps > P_prev):
                        ps = P_prev
                    c, q, cost, cg, qg, rv, p_ref, reb_i, reb_f, nr = _rebalance_nb(
                        i, col, np.int64(_TRIGGER), np.bool_(True), ps, c + q * ps, c, q, cg, qg, L, units,
                        trade_cost[col], rv, p_ref, reb_i, reb_f, nr)
                    cum_cost += cost
                    k += 1
                if c + q * X <= 0.0:
                    # NAV reaches 0 inside the bar: the product is closed, holders keep nothing
                    pw = -c / q if q != 0.0 else X
                    reb_i, reb_f = _grow(reb_i, reb_f, nr)
                    reb_i[nr, 0], reb_i[nr, 1], reb_i[nr, 2] = i, col, _TERMINATED
                    reb_f[nr, 0], reb_f[nr, 1], reb_f[nr, 2], reb_f[nr, 3] = pw, np.inf * np.sign(L), 0.0, -units * q
                    nr += 1
                    alive = False
                    c = 0.0
                    q = 0.0
                if alive:
                    nav = c + q * P
                    day_now = (close_time[i] - reb_offset_ms[col]) // DAY_MS
                    day_prev = (close_time[i - 1] - reb_offset_ms[col]) // DAY_MS
                    daily = day_now > day_prev
                    if daily:
                        mg = nav * fee_day[col] * (close_time[i] - last_fee) / DAY_MS
                        c -= mg
                        nav -= mg
                        cum_mgmt += mg
                        last_fee = close_time[i]
                    reason = -1
                    if reset[col] == _RESET_BAR:
                        reason = 99  # every bar; not recorded
                    elif daily:
                        reason = _DAILY
                    elif can_trigger and not has_hl and abs(q * P / nav) >= abs(lam):
                        reason = _TRIGGER
                    if reason >= 0:
                        c, q, cost, cg, qg, rv, p_ref, reb_i, reb_f, nr = _rebalance_nb(
                            i, col, reason, reason != 99, P, nav, c, q, cg, qg, L, units, trade_cost[col], rv,
                            p_ref, reb_i, reb_f, nr)
                        cum_cost += cost
            nav = c + q * P if alive else 0.0
            navg = cg + qg * P
            eq = units * nav
            out[_EQUITY, i, col] = eq
            out[_EQUITY_USD, i, col] = eq
            out[_POSITION, i, col] = units if alive else 0.0
            out[_NOTIONAL, i, col] = units * q * P
            out[_LEVERAGE, i, col] = abs(q * P / nav) if nav > 0.0 else 0.0
            out[_CUM_FUNDING, i, col] = units * cum_fund
            out[_CUM_FEES, i, col] = units * (cum_mgmt + cum_cost)
            out[_NAV, i, col] = nav
            out[_NAV_GROSS, i, col] = navg
            out[_IDEAL, i, col] = 1.0 + L * (P / p0 - 1.0)
            out[_EFF_LEV, i, col] = q * P / nav if nav > 0.0 else 0.0
            out[_PERP_POS, i, col] = units * q
            out[_LOG_DECAY, i, col] = math.log(navg) - L * math.log(P / p0) if navg > 0.0 else np.nan
            out[_LOG_DECAY_EST, i, col] = -0.5 * (L * L - L) * (rv + math.log(P / p_ref) ** 2)
            out[_CUM_MGMT, i, col] = units * cum_mgmt
            out[_CUM_COSTS, i, col] = units * cum_cost
    return out, reb_i[:nr], reb_f[:nr]
