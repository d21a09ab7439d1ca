"""Numba kernels of the put simulator: scalar generalized Black-Scholes, skew, strike grid, and
the rolling long-put simulation over (bars, columns).

The readable vectorized formulas live in :mod:`backtest.options.pricing`; tests check both.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, vectorize

from backtest.options import enums as E
from backtest.options.enums import KernelError, RollReason, SizeMode, StrikeMode

DAY_MS = 86_400_000
YEAR_MS = 365 * DAY_MS
_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
N_SERIES = len(E.SERIES)
# Enum values as plain globals (numba freezes global ints as constants).
_ERR_VOL, _ERR_EXP, _ERR_STRIKE, _ERR_DELTA = (KernelError.VOL, KernelError.NO_EXPIRY,
                                               KernelError.NO_STRIKE, KernelError.DELTA_ABOVE_ROLL)
_INITIAL, _SCHEDULED, _EARLY_DELTA, _EARLY_DTE, _ENTRY, _EXIT = (
    RollReason.INITIAL, RollReason.SCHEDULED, RollReason.EARLY_DELTA, RollReason.EARLY_DTE, RollReason.ENTRY,
    RollReason.EXIT)
_MONEYNESS, _NOTIONAL = StrikeMode.MONEYNESS, SizeMode.NOTIONAL
(_EQUITY, _EQUITY_USD, _POSITION, _NOTIONAL_S, _LEVERAGE, _CUM_FEES, _DELTA, _GAMMA, _VEGA, _THETA,
 _DELTA_EXPOSURE, _ACCOUNT_DELTA, _PREMIUM_PAID, _CUM_RECEIVED, _OPTION_VALUE, _STRIKE, _DTE, _PUT_VOL,
 _ATM_VOL) = (E.EQUITY, E.EQUITY_USD, E.POSITION, E.NOTIONAL, E.LEVERAGE, E.CUM_FEES, E.DELTA, E.GAMMA,
              E.VEGA, E.THETA, E.DELTA_EXPOSURE, E.ACCOUNT_DELTA, E.PREMIUM_PAID, E.CUM_RECEIVED,
              E.OPTION_VALUE, E.STRIKE, E.DAYS_TO_EXPIRY, E.PUT_VOL, E.ATM_VOL)


@vectorize(["float64(float64)"], cache=True)
def norm_cdf_ufunc(x):
    """Standard normal CDF as a numpy ufunc."""
    return 0.5 * math.erfc(-x / _SQRT2)


@njit(cache=True)
def norm_cdf_nb(x):
    return 0.5 * math.erfc(-x / _SQRT2)


@njit(cache=True)
def gbs_nb(is_call, S_, K, T, sigma, r, b):
    """Generalized Black-Scholes for T > 0, sigma > 0 (units as ``pricing.gbs_greeks``).

    Returns (price, delta, gamma, vega per 1.00 vol, theta per year).
    """
    sqt = math.sqrt(T)
    sq = sigma * sqt
    d1 = (math.log(S_ / K) + (b + 0.5 * sigma * sigma) * T) / sq
    d2 = d1 - sq
    cb = math.exp((b - r) * T)
    disc = math.exp(-r * T)
    pdf1 = _INV_SQRT_2PI * math.exp(-0.5 * d1 * d1)
    sign = 1.0 if is_call else -1.0
    nd1 = norm_cdf_nb(sign * d1)
    nd2 = norm_cdf_nb(sign * d2)
    price = sign * (S_ * cb * nd1 - K * disc * nd2)
    delta = sign * cb * nd1
    gamma = cb * pdf1 / (S_ * sq)
    vega = S_ * cb * pdf1 * sqt
    theta = -S_ * cb * pdf1 * sigma / (2.0 * sqt) - sign * (b - r) * S_ * cb * nd1 - sign * r * K * disc * nd2
    return price, delta, gamma, vega, theta


@njit(cache=True)
def skewed_vol_nb(atm, K, F, T, skew):
    """``atm * (1 + skew * max(0, -ln(K/F)/sqrt(T)))`` (see ``pricing.skewed_vol``)."""
    m = math.log(K / F) / math.sqrt(T)
    return atm * (1.0 + skew * max(0.0, -m))


@njit(cache=True)
def nice_step_nb(F, frac=0.025):
    """Automatic strike step: the largest of 1, 2.5, 5 x 10^k not above ``frac * F``."""
    x = frac * F
    base = 10.0 ** math.floor(math.log10(x))
    for mult in (5.0, 2.5, 1.0):
        if mult * base <= x * (1.0 + 1e-12):
            return mult * base
    return base


@njit(cache=True)
def option_delta_nb(is_call, S_, K, T, atm, skew, b):
    F = S_ * math.exp(b * T)
    sig = skewed_vol_nb(atm, K, F, T, skew)
    return gbs_nb(is_call, S_, K, T, sig, 0.0, b)[1]


@njit(cache=True)
def strike_for_delta_nb(is_call, S_, T, atm, skew, b, target, step):
    """Grid strike whose |delta| (put or call) is closest to ``target`` (ties -> lower strike).

    The continuous strike is found by bisection on ln K (a put's |delta| rises with K, a
    call's falls); then the grid strikes just below and above it are compared. Returns 0.0 if
    no grid strike > 0.
    """
    F = S_ * math.exp(b * T)
    lo, hi = math.log(F * 1e-4), math.log(F * 1e2)
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        d = abs(option_delta_nb(is_call, S_, math.exp(mid), T, atm, skew, b))
        if (d > target) if is_call else (d < target):
            lo = mid
        else:
            hi = mid
    k_star = math.exp(0.5 * (lo + hi))
    k_lo = math.floor(k_star / step + 1e-9) * step
    k_hi = k_lo + step
    if k_lo <= 0.0:
        return k_hi
    e_lo = abs(abs(option_delta_nb(is_call, S_, k_lo, T, atm, skew, b)) - target)
    e_hi = abs(abs(option_delta_nb(is_call, S_, k_hi, T, atm, skew, b)) - target)
    return k_lo if e_lo <= e_hi else k_hi


@njit(cache=True)
def _grow(a, k):
    """``a`` with room for row ``k`` (doubled when full; same dtype)."""
    if k < a.shape[0]:
        return a
    out = np.zeros((2 * a.shape[0] + 16, a.shape[1]), dtype=a.dtype)
    out[: a.shape[0]] = a
    return out


@njit(cache=True)
def _flat_nb(out, i, c, cash, coin, S_, atm, prem, fees, recv):
    out[_EQUITY, i, c] = cash
    out[_EQUITY_USD, i, c] = cash * S_ if coin else cash
    out[_LEVERAGE, i, c] = 0.0
    out[_CUM_FEES, i, c] = fees
    out[_ACCOUNT_DELTA, i, c] = cash if coin else 0.0
    out[_PREMIUM_PAID, i, c] = prem
    out[_CUM_RECEIVED, i, c] = recv
    out[_STRIKE, i, c] = np.nan
    out[_DTE, i, c] = np.nan
    out[_PUT_VOL, i, c] = np.nan
    out[_ATM_VOL, i, c] = atm


@njit(cache=True)
def simulate_puts_nb(close_time, price, atm_vol, carry, hold, expiries, start_bar, coin, is_call,
                     strike_mode, moneyness, target_delta, strike_step, min_days, roll_delta, roll_dte,
                     size_mode, exposure, budget, skew, fee_rate, fee_cap, dfee_rate, dfee_cap,
                     slippage, init_cap, cover):
    """Rolling long puts (or calls, ``is_call``), one independent account per column.

    Parameters
    ----------
    close_time : int64 (n,), bar close instants, ms UTC.
    price : float64 (n, 1 or m), underlying close (USD): forward base, settlement price.
    atm_vol : float64 (n, 1 or m), ATM vol as of each close (fraction), NaN where unknown.
    carry : float64 (n, 1 or m), annualised carry b (forward = price * exp(b T)).
    hold : float64 (n, 1 or m), 1.0 = hold puts after this close, 0.0 = hold none (already lagged).
    expiries : int64 (k,), increasing expiry instants (ms UTC).
    start_bar : int64 (m,), first bar at which each column may trade.
    coin : bool, coin-settled (inverse) options and a coin account if True, else USD.
    is_call : bool, calls instead of puts (strike: the smallest grid strike >= moneyness x F;
        payoff ``max(S_T - K, 0)``; notional ``+contracts x S``).
    strike_mode .. init_cap : per-column parameter arrays (m,), see ``sim.PutSettings``.
    cover : float64 (m,), coins a notional-mode purchase buys (a protective column's holding);
        0 = size from the cash, ``exposure x cash / S``.

    Returns
    -------
    out : float64 (N_SERIES, n, m), series in ``enums.SERIES`` order.
    roll_i, roll_f, settle_i, settle_f : raw record buffers (``enums`` column layouts).
    status : int64 (3,) = (KernelError code, bar, col); value : float64 (1,) offending value.
    """
    n = close_time.shape[0]
    m = init_cap.shape[0]
    out = np.zeros((N_SERIES, n, m))
    roll_i = np.zeros((64, 5), dtype=np.int64)
    roll_f = np.zeros((64, 11))
    settle_i = np.zeros((64, 3), dtype=np.int64)
    settle_f = np.zeros((64, 6))
    # counters typed int64 from the start: a literal 0 would make numba compile _grow once for
    # Literal[int](0) and once for int64 (each a separate specialisation, ~1.5 s of a cold run)
    nr = np.int64(0)
    ns = np.int64(0)
    status = np.zeros(3, dtype=np.int64)
    value = np.zeros(1)
    for c in range(m):
        pc = c if price.shape[1] > 1 else 0
        vc = c if atm_vol.shape[1] > 1 else 0
        cc = c if carry.shape[1] > 1 else 0
        hc = c if hold.shape[1] > 1 else 0
        cash = init_cap[c]
        n_ct = 0.0
        K = 0.0
        exp_t = np.int64(0)
        holding = False
        bought_before = False
        prem = 0.0
        fees = 0.0
        recv = 0.0
        for i in range(n):
            t = close_time[i]
            S_ = price[i, pc]
            atm = atm_vol[i, vc]
            unit = 1.0 if coin else S_  # fee base: fee_rate x underlying, in settlement currency
            if i < start_bar[c]:
                _flat_nb(out, i, c, cash, coin, S_, atm, prem, fees, recv)
                continue
            want = hold[i, hc] > 0.5
            vol_ok = atm > 0.0 and atm < np.inf
            b = carry[i, cc]
            reason = -1
            sold = 0.0
            sale = 0.0
            sale_fee = 0.0
            if holding and exp_t <= t:
                pay_usd = max(S_ - K, 0.0) if is_call else max(K - S_, 0.0)
                pay = pay_usd / S_ if coin else pay_usd
                dfee = min(dfee_rate[c] * unit, dfee_cap[c] * pay)
                cash += n_ct * (pay - dfee)
                recv += n_ct * pay
                fees += n_ct * dfee
                settle_i = _grow(settle_i, ns)
                settle_f = _grow(settle_f, ns)
                settle_i[ns, 0], settle_i[ns, 1], settle_i[ns, 2] = i, c, exp_t
                settle_f[ns, 0], settle_f[ns, 1], settle_f[ns, 2] = K, S_, n_ct
                settle_f[ns, 3], settle_f[ns, 4], settle_f[ns, 5] = pay, n_ct * pay, n_ct * dfee
                ns += 1
                holding = False
                n_ct = 0.0
                reason = _SCHEDULED
            if (holding or want) and not vol_ok:
                status[0], status[1], status[2] = _ERR_VOL, i, c
                value[0] = atm
                return out, roll_i[:nr], roll_f[:nr], settle_i[:ns], settle_f[:ns], status, value
            if holding:
                T = (exp_t - t) / YEAR_MS
                F = S_ * math.exp(b * T)
                sig = skewed_vol_nb(atm, K, F, T, skew[c])
                p, d, _g, _v, _th = gbs_nb(is_call, S_, K, T, sig, 0.0, b)
                if not want:
                    reason = _EXIT
                elif abs(d) >= roll_delta[c]:
                    reason = _EARLY_DELTA
                elif T * 365.0 <= roll_dte[c]:
                    reason = _EARLY_DTE
                if reason >= 0:
                    px = (p / F if coin else p) * (1.0 - slippage[c])
                    f1 = min(fee_rate[c] * unit, fee_cap[c] * px)
                    sold, sale, sale_fee = n_ct, n_ct * px, n_ct * f1
                    cash += sale - sale_fee
                    recv += sale
                    fees += sale_fee
                    holding = False
                    n_ct = 0.0
            if want and not holding:
                if not bought_before:
                    reason = _INITIAL
                elif reason < 0:
                    reason = _ENTRY
                min_ms = max(min_days[c], roll_dte[c]) * DAY_MS
                j = np.searchsorted(expiries, t + min_ms, side="right")
                if j >= expiries.shape[0]:
                    status[0], status[1], status[2] = _ERR_EXP, i, c
                    value[0] = t + min_ms
                    return out, roll_i[:nr], roll_f[:nr], settle_i[:ns], settle_f[:ns], status, value
                exp_t = expiries[j]
                T = (exp_t - t) / YEAR_MS
                F = S_ * math.exp(b * T)
                step = strike_step[c] if strike_step[c] > 0.0 else nice_step_nb(F)
                if strike_mode[c] == _MONEYNESS and is_call:
                    K = math.ceil(moneyness[c] * F / step - 1e-9) * step
                elif strike_mode[c] == _MONEYNESS:
                    K = math.floor(moneyness[c] * F / step + 1e-9) * step
                else:
                    K = strike_for_delta_nb(is_call, S_, T, atm, skew[c], b, target_delta[c], step)
                if not K > 0.0:
                    status[0], status[1], status[2] = _ERR_STRIKE, i, c
                    value[0] = step
                    return out, roll_i[:nr], roll_f[:nr], settle_i[:ns], settle_f[:ns], status, value
                sig = skewed_vol_nb(atm, K, F, T, skew[c])
                p, d, _g, _v, _th = gbs_nb(is_call, S_, K, T, sig, 0.0, b)
                if abs(d) >= roll_delta[c]:
                    status[0], status[1], status[2] = _ERR_DELTA, i, c
                    value[0] = d
                    return out, roll_i[:nr], roll_f[:nr], settle_i[:ns], settle_f[:ns], status, value
                fill = (p / F if coin else p) * (1.0 + slippage[c])
                f1 = min(fee_rate[c] * unit, fee_cap[c] * fill)
                per = fill + f1
                if size_mode[c] == _NOTIONAL and cover[c] > 0.0:
                    want_n = cover[c]  # a protective put covers the held coins, whatever the price
                elif size_mode[c] == _NOTIONAL:
                    want_n = exposure[c] * cash / unit
                elif per > 0.0:
                    want_n = budget[c] * cash / per
                else:
                    want_n = 0.0  # a put worth nothing at any size: buy none rather than infinitely many
                clipped = 0
                if want_n * per > cash:
                    want_n = cash / per if cash > 0.0 else 0.0
                    clipped = 1
                if want_n < 0.0:
                    want_n = 0.0
                n_ct = want_n
                cash -= n_ct * per
                prem += n_ct * fill
                fees += n_ct * f1
                holding = True
                bought_before = True
                roll_i = _grow(roll_i, nr)
                roll_f = _grow(roll_f, nr)
                roll_i[nr, 0], roll_i[nr, 1], roll_i[nr, 2] = i, c, reason
                roll_i[nr, 3], roll_i[nr, 4] = exp_t, clipped
                roll_f[nr, 0], roll_f[nr, 1], roll_f[nr, 2], roll_f[nr, 3] = K, n_ct, n_ct * fill, n_ct * f1
                roll_f[nr, 4], roll_f[nr, 5], roll_f[nr, 6], roll_f[nr, 7] = S_, F, sig, d
                roll_f[nr, 8], roll_f[nr, 9], roll_f[nr, 10] = sold, sale, sale_fee
                nr += 1
            elif reason == _EXIT:
                # a sale without a purchase: the new-put fields are empty
                roll_i = _grow(roll_i, nr)
                roll_f = _grow(roll_f, nr)
                roll_i[nr, 0], roll_i[nr, 1], roll_i[nr, 2], roll_i[nr, 3], roll_i[nr, 4] = i, c, reason, -1, 0
                roll_f[nr, 0], roll_f[nr, 1], roll_f[nr, 2], roll_f[nr, 3] = np.nan, 0.0, 0.0, 0.0
                roll_f[nr, 4], roll_f[nr, 5], roll_f[nr, 6], roll_f[nr, 7] = S_, np.nan, np.nan, np.nan
                roll_f[nr, 8], roll_f[nr, 9], roll_f[nr, 10] = sold, sale, sale_fee
                nr += 1
            if not holding:
                _flat_nb(out, i, c, cash, coin, S_, atm, prem, fees, recv)
                continue
            # valuation at the close (model price at this bar's vol)
            T = (exp_t - t) / YEAR_MS
            F = S_ * math.exp(b * T)
            sig = skewed_vol_nb(atm, K, F, T, skew[c])
            p, d, g, v, th = gbs_nb(is_call, S_, K, T, sig, 0.0, b)
            conv = 1.0 / F if coin else 1.0  # USD per contract -> settlement currency
            val = p * conv
            equity = cash + n_ct * val
            eq_usd = equity * S_ if coin else equity
            pos_delta = n_ct * (d - val) if coin else n_ct * d  # coin: Deribit net delta
            notional = (1.0 if is_call else -1.0) * n_ct * (1.0 if coin else S_)
            out[_EQUITY, i, c] = equity
            out[_EQUITY_USD, i, c] = eq_usd
            out[_POSITION, i, c] = n_ct
            out[_NOTIONAL_S, i, c] = notional
            out[_LEVERAGE, i, c] = abs(notional) / equity if equity > 0.0 else 0.0
            out[_CUM_FEES, i, c] = fees
            out[_DELTA, i, c] = pos_delta
            out[_GAMMA, i, c] = n_ct * g
            out[_VEGA, i, c] = n_ct * v * conv / 100.0
            out[_THETA, i, c] = n_ct * th * conv / 365.0
            out[_DELTA_EXPOSURE, i, c] = pos_delta * S_ / eq_usd if eq_usd > 0.0 else 0.0
            out[_ACCOUNT_DELTA, i, c] = equity + pos_delta if coin else pos_delta
            out[_PREMIUM_PAID, i, c] = prem
            out[_CUM_RECEIVED, i, c] = recv
            out[_OPTION_VALUE, i, c] = n_ct * val
            out[_STRIKE, i, c] = K
            out[_DTE, i, c] = T * 365.0
            out[_PUT_VOL, i, c] = sig
            out[_ATM_VOL, i, c] = atm
    return out, roll_i[:nr], roll_f[:nr], settle_i[:ns], settle_f[:ns], status, value
