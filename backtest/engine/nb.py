"""Numba kernel of the perpetual-futures engine (numpy in, numpy out).

Implements README.md ("Engine semantics") for linear and inverse perpetuals, isolated and
cross margin, with funding, tiered maintenance margin, margin calls and mark-price liquidation.
Bars on axis 0, columns on axis 1; columns run in parallel (``prange``). Two specialisations
(:func:`simulate_dense_nb`, :func:`simulate_sparse_nb`) differ only in speed: the sparse one
values quiet stretches between target orders in a tight loop. The readable form of
every formula is in :mod:`backtest.mechanics`; :mod:`backtest.engine.reference` is the slow
reference this kernel is tested against.
"""

from __future__ import annotations

import numpy as np
from numba import literally, njit, prange
from numba.cpython.unsafe.numbers import trailing_zeros

# Enum values repeated as module constants so numba folds them.
CROSS = 1
RESP_REDUCE = 1
RESP_TOP_UP = 2
AFTER_STOP = 0
EXCESS_REJECT = 1
POL_DRAWDOWN = 1
POL_CPPI = 2
ST_FILLED = 0
ST_CLIPPED = 1
ST_REJECTED = 2
RS_TARGET = 0
RS_CALL = 1

LOT_EPS = 1e-9  # tolerance when rounding quantities to the lot size


DUST_RTOL = 1e-9   # without a lot size, a change this small relative to the position is no order
CHECK_RTOL = 1e-12  # relative tolerance of the exchange checks (an order exactly at a limit passes)


@njit(cache=True, inline="always")
def same_size_nb(a, b, lot):
    if lot > 0.0:
        return a == b
    return abs(a - b) <= DUST_RTOL * max(abs(a), abs(b))


@njit(cache=True, inline="always")
def order_usd_nb(d, price, cs, inverse):
    """Order notional in USD/USDT, the unit of the minimum-notional rule."""
    return abs(d) * cs if inverse else abs(d) * cs * price


@njit(cache=True, inline="always")
def adds_exposure_nb(C, new_c):
    """Open, increase on the same side, or flip: the orders the exchange checks."""
    if new_c == 0.0:
        return False
    return C == 0.0 or (new_c > 0.0) != (C > 0.0) or abs(new_c) > abs(C)


@njit(cache=True, inline="always")
def fits_nb(need, avail):
    return need <= avail + CHECK_RTOL * (abs(need) + abs(avail))


@njit(cache=True, inline="always")
def order_allowed_nb(new_c, C, EP, W, M, cross, pf, e_open, ncap, cs, inverse, lev, fr):
    """(a) tier cap ``N <= Ncap``; (b) available margin (cross: ``N/L + fee <= E_open``;
    isolated increase: ``dN/L + fee <= W``; isolated flip: ``N/L + fee <= W after the close``)."""
    v = cval_nb(pf, cs, inverse)
    n_new = abs(new_c) * v
    if not fits_nb(n_new, ncap):
        return False
    fee = fr * abs(new_c - C) * v
    if cross:
        return fits_nb(n_new / lev + fee, e_open)
    if C == 0.0 or (new_c > 0.0) == (C > 0.0):
        return fits_nb((abs(new_c) - abs(C)) * v / lev + fee, W)
    w_after = W + M + upnl_nb(C, EP, pf, cs, inverse) - fr * abs(C) * v
    return fits_nb(n_new / lev + fr * abs(new_c) * v, w_after)


@njit(cache=True)
def largest_allowed_nb(desired, C, EP, W, M, cross, pf, e_open, ncap, cs, inverse, lev, fr, lot):
    """Largest lot-rounded size toward ``desired`` passing the checks; never below the current
    position on the same side (a flip may end at 0 = just close). Closed form, then stepped
    lot by lot to absorb rounding."""
    side = 1.0 if desired > 0.0 else -1.0
    same_side = C != 0.0 and (C > 0.0) == (desired > 0.0)
    lower = abs(C) if same_side else 0.0
    upper = abs(desired)
    v = cval_nb(pf, cs, inverse)
    per = v * (1.0 / lev + fr)
    if cross:
        room = e_open + fr * abs(C) * v if (same_side or C == 0.0) else e_open - fr * abs(C) * v
        guess = room / per
    elif same_side or C == 0.0:
        guess = abs(C) + W / per
    else:
        guess = (W + M + upnl_nb(C, EP, pf, cs, inverse) - fr * abs(C) * v) / per
    guess = min(guess, ncap / v, upper)
    if lot <= 0.0:
        return side * max(guess, lower)
    n_lo = np.floor(lower / lot + 0.5)
    n_hi = np.floor(upper / lot + 0.5)
    n = np.floor(max(guess, 0.0) / lot + LOT_EPS)
    n = min(max(n, n_lo), n_hi)
    while n > n_lo and not order_allowed_nb(side * n * lot, C, EP, W, M, cross, pf, e_open, ncap, cs, inverse,
                                            lev, fr):
        n -= 1.0
    while n < n_hi and order_allowed_nb(side * (n + 1.0) * lot, C, EP, W, M, cross, pf, e_open, ncap, cs,
                                        inverse, lev, fr):
        n += 1.0
    return side * n * lot if n > 0.0 else 0.0


@njit(cache=True, inline="always")
def flex_nb(flat, rs, cs, i, col):
    """Flexible 2D read from the flat memory of a 2D array with element strides ``rs``/``cs``
    (stride 0 broadcasts a dimension of size 1, vectorbt-style). One compiled kernel then serves
    row-major, column-major and broadcast targets without copying them."""
    return flat[i * rs + col * cs]


@njit(cache=True, inline="always")
def put_nb(out, slot, j, i, val):
    """Store a series value if the series was requested (``slot`` -1 = not stored)."""
    if slot >= 0:
        out[slot, j, i] = val


@njit(cache=True, inline="always")
def cval_nb(price, cs, inverse):
    """Value of one contract at ``price`` in the settlement currency."""
    return cs / price if inverse else cs * price


@njit(cache=True, inline="always")
def upnl_nb(pos, ep, price, cs, inverse):
    if pos == 0.0:
        return 0.0
    if inverse:
        return pos * cs * (1.0 / ep - 1.0 / price)
    return pos * cs * (price - ep)


@njit(cache=True, inline="always")
def tier_of_nb(tiers, ver, nt, notional):
    k = 0
    while k < nt - 1 and notional >= tiers[ver, k, 1]:
        k += 1
    return k


@njit(cache=True, inline="always")
def mm_nb(tiers, ver, nt, notional):
    k = tier_of_nb(tiers, ver, nt, notional)
    return notional * tiers[ver, k, 2] - tiers[ver, k, 3]


@njit(cache=True, inline="always")
def floor_lot_nb(q, lot, inv_lot):
    """Round a non-negative quantity down to the lot size (``inv_lot = 1 / lot``: a product
    instead of a division on the chain from one bar's equity to the next order)."""
    if lot <= 0.0:
        return q
    return np.floor(q * inv_lot + LOT_EPS) * lot


ALL_BITS = np.uint64(0xFFFFFFFFFFFFFFFF)
LEVEL_ALL = -1.0  # solve result: every positive price is past the level (balance exhausted)


@njit(cache=True)
def line_root_nb(s, q, ep, backing, mmr, cum, inverse):
    """Root of ``B + uPnL(P) = N(P)*mmr - cum`` on one tier's line (Binance's formulas);
    ``inf`` when the line has no root. A denominator (inverse) or numerator (linear) within
    1e-12 (relative) of zero is zero, so that an inverse 1x short or a linear 1x long has no
    liquidation price instead of one of 1e20 or 1e-12."""
    if inverse:
        den = backing + cum + s * q / ep
        if abs(den) <= 1e-12 * (abs(backing) + abs(cum) + q / ep):
            return np.inf
        return q * (mmr + s) / den
    den = q * mmr - s * q
    if den == 0.0:
        return np.inf
    num = backing + cum - s * q * ep
    if abs(num) <= 1e-12 * (abs(backing) + abs(cum) + q * ep):  # a 1x long: no price, not 1e-12
        return 0.0
    return num / den


@njit(cache=True)
def solve_price_nb(pos, ep, backing, cs, inverse, tiers, ver, nt, theta):
    """Price where the margin ratio ``MM/MB`` reaches ``theta`` (1: the liquidation price),
    with the tier re-chosen at the price (Binance's "assumed margin level").

    Start at the tier of the entry notional; re-solve with the tier at each root until it is
    the tier used (each tier's line lies below the piecewise MM, so the roots move
    monotonically toward the true one; a revisited tier is a boundary where both lines meet).
    Returns the price, 0.0 when no positive price reaches it, ``LEVEL_ALL`` (short) or ``inf``
    (long) when every price does.
    """
    q = abs(pos) * cs
    s = 1.0 if pos > 0 else -1.0
    k = tier_of_nb(tiers, ver, nt, abs(pos) * cval_nb(ep, cs, inverse))
    seen = 0
    for _ in range(2 * nt + 2):
        seen |= 1 << k
        p = line_root_nb(s, q, ep, backing / 1.0, tiers[ver, k, 2] / theta, tiers[ver, k, 3] / theta, inverse)
        if np.isfinite(p) and p > 0.0:
            j = tier_of_nb(tiers, ver, nt, abs(pos) * cval_nb(p, cs, inverse))
        else:
            # is this tier's line below zero at every price? (gap at the entry price)
            gap = theta * backing - (abs(pos) * cval_nb(ep, cs, inverse) * tiers[ver, k, 2] - tiers[ver, k, 3])
            if gap <= 0.0:
                return LEVEL_ALL if s < 0.0 else np.inf
            if k == 0 or (seen & 1):
                return 0.0
            k = 0
            continue
        if j == k or (seen >> j) & 1:
            return p
        k = j
    return p


@njit(cache=True, inline="always")
def range_max_nb(a, i, end, sg):
    """``sg * max(sg * a[i:end])`` (``sg`` = 1: the maximum, -1: the minimum) over a non-empty
    range of non-NaN values, with four independent running extremes (one chain of dependent
    comparisons would cost its latency per element on a long stretch; the extreme of a set
    does not depend on the order it is taken in)."""
    m0 = sg * a[i]
    m1 = m0
    m2 = m0
    m3 = m0
    b = i + 1
    while b + 4 <= end:
        v0 = sg * a[b]
        v1 = sg * a[b + 1]
        v2 = sg * a[b + 2]
        v3 = sg * a[b + 3]
        m0 = v0 if v0 > m0 else m0
        m1 = v1 if v1 > m1 else m1
        m2 = v2 if v2 > m2 else m2
        m3 = v3 if v3 > m3 else m3
        b += 4
    while b < end:
        v0 = sg * a[b]
        m0 = v0 if v0 > m0 else m0
        b += 1
    m0 = m1 if m1 > m0 else m0
    m2 = m3 if m3 > m2 else m2
    return sg * (m2 if m2 > m0 else m0)


@njit(cache=True, inline="always")
def adverse_extreme_nb(mark_high, mark_low, short, i, end):
    """The most adverse mark over bars ``[i, end)``: a short's highest mark high, a long's
    lowest mark low."""
    if short:
        return range_max_nb(mark_high, i, end, 1.0)
    return range_max_nb(mark_low, i, end, -1.0)


@njit(cache=True, inline="always")
def level_ok_nb(level):
    """A usable price level (not none, not 'every price')."""
    return level > 0.0 and np.isfinite(level)


@njit(cache=True)
def tier_cap_nb(tiers, ver, nt, leverage):
    """Largest notional the tier table allows at an exchange leverage setting."""
    cap = 0.0
    for k in range(nt):
        if tiers[ver, k, 4] >= leverage and tiers[ver, k, 1] > cap:
            cap = tiers[ver, k, 1]
    return cap


@njit(cache=True, inline="always")
def ratio_past_nb(C, EP, B, price, cs, inverse, tiers, ver, nt, theta):
    """Direct check: margin ratio ``MM/MB >= theta`` at ``price`` (``MB <= 0`` counts)."""
    mb = B + upnl_nb(C, EP, price, cs, inverse)
    mm = mm_nb(tiers, ver, nt, abs(C) * cval_nb(price, cs, inverse))
    return mb <= 0.0 or mm >= theta * mb


@njit(cache=True, inline="always")
def past_nb(C, price, level):
    """True when ``price`` is at or beyond ``level`` on the position's adverse side.

    ``MB(P) - MM(P)`` is monotone in the price for a fixed position (MM grows with slope
    ``mmr < 1`` in the notional), so "ratio >= theta at P" is exactly "P at or past the
    theta-price": while the position and its balance are unchanged the kernel compares prices
    with cached levels; right after a change it checks the ratio directly and solves a level
    only when it needs the price itself (an event, or the ``liq_price`` output)."""
    if level == LEVEL_ALL:
        return True
    if level <= 0.0:
        return False
    return price >= level if C < 0.0 else price <= level


@njit(cache=True, inline="always")
def policy_target_nb(e, kind, max_dd, floor, mult, ratchet, max_exp, e_prev, peak, init_cap):
    """The in-loop leverage policy (``backtest.engine.settings.Policy``) applied to a target ``e``:
    the factor from the equity at the previous close ``e_prev`` and its running peak ``peak``
    (both >= ``init_cap`` at the start), then ``|target| <= max_exp``. The one formula: the
    kernel and the reference simulator both call it.

    * drawdown: ``dd = 1 - e_prev / peak``, factor ``clip(1 - dd / max_dd, floor, 1)``;
    * CPPI: floor value ``F = floor * (peak if ratchet else init_cap)`` (``ratchet`` a bool),
      factor ``mult * max(e_prev - F, 0) / e_prev``, 0 when ``e_prev <= 0``;
    * none: factor 1.
    """
    if kind == POL_DRAWDOWN:
        dd = 1.0 - e_prev / peak if peak > 0.0 else 0.0
        e = e * min(1.0, max(floor, 1.0 - dd / max_dd))
    elif kind == POL_CPPI:
        fl = floor * (peak if ratchet else init_cap)
        e = e * (mult * max(e_prev - fl, 0.0) / e_prev if e_prev > 0.0 else 0.0)
    if e > max_exp:
        return max_exp
    if e < -max_exp:
        return -max_exp
    return e


# ``_nrt=False``: compiled without numba's reference counting. The column kernel allocates
# nothing (its arrays are the caller's, alive for the whole call); with reference counting, the
# array views and the inlined helpers' array arguments cost calls into the runtime inside the
# bar loop, and every call spills the live floating-point state to the stack (W2, kernel alone:
# about 10 % of the time).
@njit(cache=True, _nrt=False)
def simulate_col_nb(
    j, open_, mark_open, mark_high, mark_low, mark_close,
    fe_bar, fe_at_open, fe_rate, fe_mark,
    target, trs, tcs, lag, inverse, cs, lot, min_notional, liq_fee,
    tiers, ntiers, tier_ver,
    init_cap, mode, lev, thr, resp, tau, reserve, after_liq, excess, fr, slip,
    pol_kind, pol_maxdd, pol_floor, pol_mult, pol_ratchet, pol_maxexp,
    omap, out, fills, n_fills, fpos, calls, n_calls, liqs, n_liqs, pchg, n_pchg, fo, co, lo, qo, fc, cc, lc, qc,
    inv_vo, nxt, bits, jt, sparse,
):
    """One column; ``fo``, ``co``, ``lo``, ``qo``: where its fill, margin-call, liquidation and
    position-change records start in the shared buffers, ``fc``, ``cc``, ``lc``, ``qc``: how
    many it may write (:func:`record_caps_nb`); ``fpos[j, p]``: the position that paid funding
    print ``p`` (left at 0 when none did); ``inv_vo``: 1 / contract value at each bar's open,
    shared by the columns (sizing multiplies by it: no division on the chain from one bar's
    equity to the next order).

    ``sparse`` (a compile-time constant: two specialisations) turns on quiet stretches: ``bits``
    (:func:`target_scan_nb`, column ``jt``) tells where the next target order is and ``nxt``
    where the next funding print or tier change is, and the bars before them are valued in a
    tight loop while no adverse mark reaches the state's margin-call price (a flat column's
    stretch runs to its next order: it pays no funding and reads the tier table there). Such a
    bar is the general bar with nothing to do (no order, no print, not in a call, the mark short
    of the call level, hence of the liquidation level), computed with the same expressions, so both
    specialisations give the same numbers; the dense one is used when most bars have an order
    (its loop is tighter without the stretch code). A stretch whose most adverse mark is no
    further than a price already found safe, or is below the call threshold itself, needs no
    level and no check per bar; a flat column's stretch only writes its equity."""
    literally(sparse)
    n = open_.shape[0]
    nfe = fe_bar.shape[0]
    nf = 0
    nc = 0
    nl = np.int64(0)  # int64, not Literal[int](0): one liquidate_nb compilation
    nq = 0
    c_last = 0.0    # sparse: the position of the last position-change record (0 before bar 0)

    # equity is always stored (row 0 of ``out``); the position too by the dense specialisation
    # (row ``omap[2]``; the sparse one writes a record per change instead, ``pchg``); the margin
    # ratio and the liquidation price when asked for (slots as local scalars: stores into ``out``
    # cannot alias them, so they stay in registers instead of being reloaded after every store)
    eq_o = out[0, j]
    pos_o = out[max(omap[2], 0), j]  # written only by the dense specialisation (omap[2] >= 0 there)
    o5, o6 = omap[5], omap[6]
    W = init_cap
    M = 0.0
    C = 0.0
    EP = 0.0
    reserve_left = reserve
    stopped = False
    in_call = False
    e_prev = init_cap
    peak = init_cap  # highest equity at a close so far (read by the drawdown and CPPI policies)
    track_peak = pol_kind == POL_DRAWDOWN or pol_kind == POL_CPPI
    cross = mode == CROSS
    inv_lot = 1.0 / lot if lot > 0.0 else 0.0
    ptr = 0
    lp = 0.0        # liquidation price of the current state (valid when lp_ok)
    pcall = 0.0     # margin-call price of the current state (valid when pc_ok)
    lp_ok = False
    pc_ok = False
    # ``safe``: an adverse mark price at which the current state was found below the margin-call
    # threshold (<= 1), hence not liquidatable, nor at any less adverse price (monotone, see
    # past_nb); valid while ``safe_ok``, i.e. until the state changes (a funding receipt keeps it:
    # it raises the balance, hence lowers the ratio at every price)
    safe_ok = False
    safe = 0.0
    # typed int64 from the start (not the literals -1 and 0): a helper called with literal
    # arguments is compiled once more for them (solve_price_nb, a second compilation on an
    # empty cache; benchmarks/README.md "Start-up")
    ver = np.int64(-1)
    nt = np.int64(0)
    ncap = 0.0      # tier cap (notional) at this column's leverage setting
    nwords = bits.shape[0]
    tnext = -1      # sparse: the next bar with a target order (n: none)

    # a while loop, so that a quiet stretch jumps to its end (a ``for`` loop would step through
    # the bars it valued)
    i = -1
    while i < n - 1:
        i += 1
        if sparse:
            if tnext < i:  # the first target row >= i - lag holding a value, from the bitmap
                r = max(i - lag, 0)
                k = r >> 6
                w = bits[k, jt] & (ALL_BITS << np.uint64(r & 63)) if k < nwords else np.uint64(0)
                while w == 0 and k < nwords - 1:
                    k += 1
                    w = bits[k, jt]
                tnext = k * 64 + np.int64(trailing_zeros(w)) + lag if w != 0 else n
            # a funding print or a tier change ends a stretch with a position; a flat column's
            # runs to its next order (it pays nothing, and the tier table is read at that order)
            end = tnext if C == 0.0 and i > 0 else min(nxt[i], tnext)
            if end > i + 1 and not stopped and not in_call:  # (bar 0 is never in one: nxt[0] = 0)
                # ---- quiet stretch [i, end): see the docstring
                ok = True
                lim = np.inf  # stop where sg * adverse mark >= lim
                sg = 1.0 if C <= 0.0 else -1.0
                B = W if cross else M
                if C != 0.0:
                    if not pc_ok:
                        # the stretch's most adverse mark: below the call threshold there, the
                        # whole stretch is quiet and no level needs solving
                        mx = adverse_extreme_nb(mark_high, mark_low, C < 0.0, i, end)
                        if not (safe_ok and sg * mx <= sg * safe):
                            if ratio_past_nb(C, EP, B, mx, cs, inverse, tiers, ver, nt, thr):
                                pcall = solve_price_nb(C, EP, B, cs, inverse, tiers, ver, nt, thr)
                                pc_ok = True
                            else:
                                safe = mx
                                safe_ok = True
                    if pc_ok:
                        if pcall == LEVEL_ALL:
                            ok = False
                        elif pcall > 0.0:
                            lim = sg * pcall
                    if o6 >= 0 and not lp_ok:
                        lp = solve_price_nb(C, EP, B, cs, inverse, tiers, ver, nt, 1.0)
                        lp_ok = True
                if C == 0.0:
                    K = W + M
                    for b in range(i, end):
                        eq_o[b] = K
                    if o5 >= 0:
                        for b in range(i, end):
                            out[o5, j, b] = 0.0
                    if o6 >= 0:
                        for b in range(i, end):
                            out[o6, j, b] = 0.0
                    e_prev = K
                    if K > peak:
                        peak = K
                    i = end - 1
                    continue
                if ok and lim == np.inf and o5 < 0 and o6 < 0:
                    # no adverse mark can reach the call level: no check per bar
                    K = W + M
                    eq = e_prev
                    if track_peak:
                        for b in range(i, end):
                            eq = K + upnl_nb(C, EP, mark_close[b], cs, inverse)
                            eq_o[b] = eq
                            if eq > peak:
                                peak = eq
                    else:  # no policy reads the peak: a loop without a running maximum
                        for b in range(i, end):
                            eq_o[b] = K + upnl_nb(C, EP, mark_close[b], cs, inverse)
                    e_prev = eq_o[end - 1]
                    i = end - 1
                    continue
                if ok:  # a position, a call level in reach: stop at the first bar that reaches it
                    K = W + M
                    b = i
                    eq = e_prev
                    while b < end:
                        if sg * (mark_high[b] if C < 0.0 else mark_low[b]) >= lim:
                            break
                        pcl = mark_close[b]
                        upl = upnl_nb(C, EP, pcl, cs, inverse)
                        eq = K + upl
                        eq_o[b] = eq
                        if o5 >= 0:
                            mb = B + upl
                            mm = mm_nb(tiers, ver, nt, abs(C) * cval_nb(pcl, cs, inverse))
                            out[o5, j, b] = mm / mb if mb > 0.0 else 1.0
                        if o6 >= 0:
                            out[o6, j, b] = lp if level_ok_nb(lp) else 0.0
                        if eq > peak:
                            peak = eq
                        b += 1
                    if b > i:
                        e_prev = eq
                        last = mark_high[b - 1] if C < 0.0 else mark_low[b - 1]
                        if not (safe_ok and sg * last <= sg * safe):
                            safe = last
                            safe_ok = True
                        i = b - 1
                        continue
        if tier_ver[i] != ver:
            ver = tier_ver[i]
            nt = ntiers[ver]
            ncap = tier_cap_nb(tiers, ver, nt, lev)
            lp_ok = False
            pc_ok = False
            safe_ok = False
        mo = mark_open[i]
        if stopped:
            # frozen column: flat, no funding, equity = what is left, to the last bar
            for b in range(i, n):
                eq_o[b] = W
                if not sparse:
                    pos_o[b] = 0.0
                put_nb(out, o5, j, b, 0.0)
                put_nb(out, o6, j, b, 0.0)
            break

        # ---- 1. funding prints at the open instant: the position held going into the open pays
        while ptr < nfe and fe_bar[ptr] < i:
            ptr += 1
        while ptr < nfe and fe_bar[ptr] == i and fe_at_open[ptr]:
            if C != 0.0:
                W, M, amt = pay_funding_nb(fpos, j, ptr, fe_rate, fe_mark, C, W, M, cross, cs, inverse)
                if amt != 0.0:
                    lp_ok = False
                    pc_ok = False
                    safe_ok = safe_ok and amt > 0.0  # a receipt only lowers the ratio at every price
            ptr += 1

        # ---- 2. gap check: carried position liquidatable at the mark open (not when the open is
        # no more adverse than a price already found safe for this state)
        if C != 0.0 and not (safe_ok and (mo <= safe if C < 0.0 else mo >= safe)):
            B = W if cross else M
            if past_nb(C, mo, lp) if lp_ok else ratio_past_nb(C, EP, B, mo, cs, inverse, tiers, ver, nt, 1.0):
                if not lp_ok:
                    lp = solve_price_nb(C, EP, B, cs, inverse, tiers, ver, nt, 1.0)
                W, M, C, EP, stopped, in_call, nl = liquidate_nb(
                    i, j, liqs, rslot_nb(lo, nl, lc, liqs), nl, C, EP, W, M, cross, mo,
                    lp if level_ok_nb(lp) else mo, np.int64(1), cs,  # int64: one liquidate_nb compilation
                    inverse, liq_fee, after_liq, mark_close[i - 1])
                lp_ok = False
                pc_ok = False
                safe_ok = False

        # ---- 3. fill at the open
        ti = i - lag
        if not stopped and ti >= 0 and (tnext == i or not sparse):  # sparse: rows without a value are not read
            e = flex_nb(target, trs, tcs, ti, j)
            if not np.isnan(e):
                e = policy_target_nb(e, pol_kind, pol_maxdd, pol_floor, pol_mult, pol_ratchet, pol_maxexp,
                                     e_prev, peak, init_cap)
                po = open_[i]
                e_open = W + M + upnl_nb(C, EP, po, cs, inverse)
                if e_open <= DUST_RTOL * init_cap:  # nothing (or float dust) to size from: close only
                    cs_t = 0.0
                else:
                    cs_t = e * e_open * inv_vo[i]
                    sg = 1.0 if cs_t >= 0.0 else -1.0
                    cs_t = sg * floor_lot_nb(abs(cs_t), lot, inv_lot)
                if not same_size_nb(cs_t, C, lot):
                    d = cs_t - C
                    pf = po * (1.0 + slip) if d > 0.0 else po * (1.0 - slip)
                    # the minimum notional is an exchange check: at the limit up to the last bits passes
                    go = cs_t == 0.0 or fits_nb(min_notional, order_usd_nb(d, pf, cs, inverse))
                    status = ST_FILLED
                    if go and adds_exposure_nb(C, cs_t) and not order_allowed_nb(
                            cs_t, C, EP, W, M, cross, pf, e_open, ncap, cs, inverse, lev, fr):
                        if excess == EXCESS_REJECT:
                            write_fill_nb(fills, rslot_nb(fo, nf, fc, fills), i, pf, d, 0.0, ST_REJECTED, RS_TARGET)
                            nf += 1
                            go = False
                        else:
                            cs_t = largest_allowed_nb(cs_t, C, EP, W, M, cross, pf, e_open, ncap, cs, inverse,
                                                      lev, fr, lot)
                            if same_size_nb(cs_t, C, lot):
                                cs_t = C
                            if cs_t != 0.0 and not fits_nb(min_notional, order_usd_nb(cs_t - C, pf, cs, inverse)):
                                cs_t = C  # what is left of the order is below the minimum: no trade
                            status = ST_CLIPPED
                    if go:
                        W, M, C, EP, nf = apply_fill_nb(
                            i, fills, rslot_nb(fo, nf, fc, fills), nf, C, EP, W, M, cross, cs_t, pf, cs, inverse,
                            lev,
                            fr, status, RS_TARGET)
                        lp_ok = False
                        pc_ok = False
                        safe_ok = False

        # ---- 4. funding prints strictly inside the bar: the position after the fill pays
        while ptr < nfe and fe_bar[ptr] == i:
            if C != 0.0 and not stopped:
                W, M, amt = pay_funding_nb(fpos, j, ptr, fe_rate, fe_mark, C, W, M, cross, cs, inverse)
                if amt != 0.0:
                    lp_ok = False
                    pc_ok = False
                    safe_ok = safe_ok and amt > 0.0
            ptr += 1

        # ---- 5. margin check at the adverse mark extreme
        if C != 0.0 and not stopped:
            px = mark_high[i] if C < 0.0 else mark_low[i]
            B = W if cross else M
            called = False
            # (a mark no more adverse than a price already found safe for this state: no call)
            if not in_call and not (safe_ok and (px <= safe if C < 0.0 else px >= safe)):
                called = past_nb(C, px, pcall) if pc_ok else ratio_past_nb(C, EP, B, px, cs, inverse, tiers, ver,
                                                                             nt, thr)
                if not called:  # below the threshold (<= 1) at the extreme: no liquidation this bar
                    safe = px
                    safe_ok = True
            if called:
                if past_nb(C, mo, pcall) if pc_ok else ratio_past_nb(C, EP, B, mo, cs, inverse, tiers, ver, nt, thr):
                    pc = mo
                else:
                    if not pc_ok:
                        pcall = solve_price_nb(C, EP, B, cs, inverse, tiers, ver, nt, thr)
                        pc_ok = True
                    pc = pcall if level_ok_nb(pcall) else px
                mb_c = B + upnl_nb(C, EP, pc, cs, inverse)
                mm_c = mm_nb(tiers, ver, nt, abs(C) * cval_nb(pc, cs, inverse))
                ratio_c = mm_c / mb_c if mb_c > 0.0 else np.inf
                in_call = True
                amount = 0.0
                if resp == RESP_TOP_UP:
                    x = mm_c / tau - mb_c
                    if x > reserve_left:
                        x = reserve_left
                    if x > 0.0:
                        if cross:
                            W += x
                        else:
                            M += x
                        reserve_left -= x
                        amount = x
                        lp_ok = False
                        pc_ok = False
                        safe_ok = False
                elif resp == RESP_REDUCE and mb_c > 0.0:
                    # largest |C'| whose ratio at pc, after the reducing trade's slippage (and,
                    # in cross mode, its fee) has hit the backing balance, is at most tau:
                    # |C'| (v*mmr - tau*phi) <= tau*(MB - |C|*phi) + cum, phi = loss per contract cut
                    vc = cval_nb(pc, cs, inverse)
                    pf = pc * (1.0 + slip) if C < 0.0 else pc * (1.0 - slip)
                    sgn = 1.0 if C > 0.0 else -1.0
                    if inverse:
                        phi = sgn * cs * (1.0 / pf - 1.0 / pc)
                    else:
                        phi = sgn * cs * (pc - pf)
                    if cross:
                        phi += fr * cval_nb(pf, cs, inverse)
                    k = tier_of_nb(tiers, ver, nt, abs(C) * vc)
                    a = 0.0
                    for _ in range(nt + 1):
                        mmr = tiers[ver, k, 2]
                        cum = tiers[ver, k, 3]
                        rhs = tau * (mb_c - abs(C) * phi) + cum
                        den = vc * mmr - tau * phi
                        if den > 0.0:
                            a = rhs / den
                        else:
                            a = abs(C) if rhs >= 0.0 else 0.0
                        k2 = tier_of_nb(tiers, ver, nt, max(a, 0.0) * vc)
                        if k2 >= k:
                            break
                        k = k2
                    newabs = floor_lot_nb(min(max(a, 0.0), abs(C)), lot, inv_lot)
                    if newabs < abs(C):
                        cs_t = newabs if C > 0.0 else -newabs
                        amount = abs(C) - newabs
                        W, M, C, EP, nf = apply_reduce_keep_nb(
                            i, fills, rslot_nb(fo, nf, fc, fills), nf, C, EP, W, M, cross, cs_t, pf, cs, inverse, fr)
                        lp_ok = False
                        pc_ok = False
                        safe_ok = False
                r = calls[rslot_nb(co, nc, cc, calls)]
                r["bar"] = i
                r["col"] = j
                r["price"] = pc
                r["margin_ratio"] = ratio_c
                r["response"] = resp
                r["amount"] = amount
                nc += 1
            if C != 0.0 and in_call:  # in a call episode (or one began at this bar): check the liquidation
                B = W if cross else M
                if past_nb(C, px, lp) if lp_ok else ratio_past_nb(C, EP, B, px, cs, inverse, tiers, ver, nt, 1.0):
                    if not lp_ok:
                        lp = solve_price_nb(C, EP, B, cs, inverse, tiers, ver, nt, 1.0)
                    if level_ok_nb(lp):
                        gap = 1 if (C < 0.0 and mo >= lp) or (C > 0.0 and mo <= lp) else 0
                        trig = lp
                    else:  # the balance is exhausted at every price: execute at the extreme
                        gap = 0
                        trig = px
                    W, M, C, EP, stopped, in_call, nl = liquidate_nb(
                        i, j, liqs, rslot_nb(lo, nl, lc, liqs), nl, C, EP, W, M, cross, mo if gap else trig, trig,
                        gap, cs,
                        inverse, liq_fee, after_liq, mo)
                    lp_ok = False
                    pc_ok = False
                    safe_ok = False

        # ---- 6. valuation at the mark close
        pcl = mark_close[i]
        upl = upnl_nb(C, EP, pcl, cs, inverse)
        eq = W + M + upl
        eq_o[i] = eq
        if not sparse:
            pos_o[i] = C
        elif C != c_last:
            r = pchg[rslot_nb(qo, nq, qc, pchg)]
            r["bar"] = i
            r["position"] = C
            nq += 1
            c_last = C
        if C != 0.0:
            B = W if cross else M
            if o5 >= 0:
                mb = B + upl
                mm = mm_nb(tiers, ver, nt, abs(C) * cval_nb(pcl, cs, inverse))
                out[o5, j, i] = mm / mb if mb > 0.0 else 1.0
            if o6 >= 0:
                if not lp_ok:
                    lp = solve_price_nb(C, EP, B, cs, inverse, tiers, ver, nt, 1.0)
                    lp_ok = True
                out[o6, j, i] = lp if level_ok_nb(lp) else 0.0
            if in_call and not (past_nb(C, pcl, pcall) if pc_ok else
                                ratio_past_nb(C, EP, B, pcl, cs, inverse, tiers, ver, nt, thr)):
                in_call = False
        else:
            put_nb(out, o5, j, i, 0.0)
            put_nb(out, o6, j, i, 0.0)
            in_call = False
        e_prev = eq
        if eq > peak:
            peak = eq

    n_fills[j] = nf
    n_calls[j] = nc
    n_liqs[j] = nl
    n_pchg[j] = nq


@njit(cache=True, inline="always")
def rslot_nb(start, k, cap, buf):
    """Slot of a column's k-th record; the buffer's spare last slot once past its capacity."""
    return start + k if k < cap else buf.shape[0] - 1


@njit(cache=True, inline="always")
def write_fill_nb(fills, slot, i, price, size, fee, status, reason):
    """A fill in the kernel's compact form (``enums.fill_nb_dt``: no column, no notional; the
    wrapper adds both when the records are read)."""
    r = fills[slot]
    r["bar"] = i
    r["price"] = price
    r["size"] = size
    r["fee"] = fee
    r["status"] = status
    r["reason"] = reason


@njit(cache=True, inline="always")
def funding_amount_nb(C, mark, rate, cs, inverse):
    """Funding cash flow of position ``C`` at a print: ``-C * v(mark) * rate`` (the wrapper
    builds the funding records with the same expression, so their amounts are these bits)."""
    return -C * cval_nb(mark, cs, inverse) * rate


@njit(cache=True, inline="always")
def pay_funding_nb(fpos, j, p, fe_rate, fe_mark, C, W, M, cross, cs, inverse):
    """Funding print ``p`` on position ``C`` into the backing balance; the position that paid
    is stored (``fpos[j, p]``), from which the funding records are built."""
    amt = funding_amount_nb(C, fe_mark[p], fe_rate[p], cs, inverse)
    if cross:
        W += amt
    else:
        M += amt
    fpos[j, p] = C
    return W, M, amt


@njit(cache=True, inline="always")
def apply_fill_nb(i, fills, slot, nf, C, EP, W, M, cross, cs_t, pf, cs, inverse, lev, fr, status, reason):
    """Trade from ``C`` to ``cs_t`` at ``pf``; fees from the wallet; isolated margin moves."""
    d = cs_t - C
    vf = cval_nb(pf, cs, inverse)
    fee = fr * abs(d) * vf
    W -= fee
    if d != 0.0:
        if C == 0.0:
            C = cs_t
            EP = pf
            if not cross:
                im = abs(cs_t) * vf / lev
                W -= im
                M += im
        elif cs_t != 0.0 and (cs_t > 0.0) == (C > 0.0):
            if abs(cs_t) > abs(C):
                add = abs(cs_t) - abs(C)
                if inverse:
                    EP = abs(cs_t) / (abs(C) / EP + add / pf)
                else:
                    EP = (abs(C) * EP + add * pf) / abs(cs_t)
                if not cross:
                    im = add * vf / lev
                    W -= im
                    M += im
            else:
                closed = abs(C) - abs(cs_t)
                sgn = 1.0 if C > 0.0 else -1.0
                W += upnl_nb(sgn * closed, EP, pf, cs, inverse)
                if not cross:
                    rel = M * closed / abs(C)
                    M -= rel
                    W += rel
            C = cs_t
        else:
            W += upnl_nb(C, EP, pf, cs, inverse)
            if not cross:
                W += M
                M = 0.0
            if cs_t != 0.0:
                C = cs_t
                EP = pf
                if not cross:
                    im = abs(cs_t) * vf / lev
                    W -= im
                    M += im
            else:
                C = 0.0
                EP = 0.0
    write_fill_nb(fills, slot, i, pf, d, fee, status, reason)
    return W, M, C, EP, nf + 1


@njit(cache=True)
def apply_reduce_keep_nb(i, fills, slot, nf, C, EP, W, M, cross, cs_t, pf, cs, inverse, fr):
    """Margin-call reduce: realised PnL stays with the backing balance (isolated margin is kept)."""
    d = cs_t - C
    vf = cval_nb(pf, cs, inverse)
    fee = fr * abs(d) * vf
    W -= fee
    closed = abs(d)
    sgn = 1.0 if C > 0.0 else -1.0
    realized = upnl_nb(sgn * closed, EP, pf, cs, inverse)
    if cross:
        W += realized
    else:
        M += realized
    C = cs_t
    if C == 0.0:
        EP = 0.0
        if not cross:
            W += M
            M = 0.0
    write_fill_nb(fills, slot, i, pf, d, fee, ST_FILLED, RS_CALL)
    return W, M, C, EP, nf + 1


@njit(cache=True)
def liquidate_nb(i, j, liqs, slot, nl, C, EP, W, M, cross, pl, lp, gap, cs, inverse, liq_fee, after_liq, p0):
    """Close the whole position at ``pl``; the backing balance keeps max(0, B + uPnL - fee).
    ``p0``: the mark before the adverse move (the record's ``equity_start`` is valued at it)."""
    vl = cval_nb(pl, cs, inverse)
    fee_l = liq_fee * abs(C) * vl
    upl = upnl_nb(C, EP, pl, cs, inverse)
    B = W if cross else M
    eq_before = W + M + upl
    eq_start = W + M + upnl_nb(C, EP, p0, cs, inverse)
    left = B + upl
    if left >= fee_l:
        charged = fee_l
        deficit = 0.0
        keep = left - fee_l
    elif left >= 0.0:
        charged = left
        deficit = 0.0
        keep = 0.0
    else:
        charged = 0.0
        deficit = -left
        keep = 0.0
    if cross:
        W = keep
    else:
        W = W + keep
        M = 0.0
    r = liqs[slot]
    r["bar"] = i
    r["col"] = j
    r["trigger_price"] = lp
    r["price"] = pl
    r["size"] = C
    r["clearance_fee"] = charged
    r["equity_start"] = eq_start
    r["equity_before"] = eq_before
    r["equity_after"] = W
    r["deficit"] = deficit
    r["gap"] = gap
    stopped = after_liq == AFTER_STOP
    return W, M, 0.0, 0.0, stopped, False, nl + 1


@njit(cache=True, parallel=True)
def simulate_nb(
    open_, mark_open, mark_high, mark_low, mark_close,
    fe_bar, fe_at_open, fe_rate, fe_mark,
    target, trs, tcs, lag, inverse, cs, lot, min_notional, liq_fee,
    tiers, ntiers, tier_ver,
    init_cap, mode, lev, thr, resp, tau, reserve, after_liq, excess, fr, slip,
    pol_kind, pol_maxdd, pol_floor, pol_mult, pol_ratchet, pol_maxexp, omap,
    out, fills, fpos, calls, liqs, pchg, rec_start, rec_cap, bits, sparse,
):
    """Simulate all columns into buffers allocated by the caller (numpy allocates large arrays
    on transparent huge pages, which makes first writes several times cheaper than numba's
    allocator).

    Buffers
    -------
    out : float64 (n_stored, n_cols, n_bars): equity in row 0, the position in row ``omap[2]``
        (dense specialisation only), and the margin ratio and liquidation price in rows
        ``omap[5]`` and ``omap[6]`` when those are not -1 (``omap[s]``: the row of series ``s``
        of ``enums.SERIES``); each column's bars are contiguous. The other series are derived
        from these and the records (``core._derived``).
    fills, calls, liqs, pchg : record buffers (``enums.fill_nb_dt``, ``margin_call_dt``,
        ``liquidation_dt``, ``position_change_dt``); column ``j`` owns ``rec_cap[r, j]``
        records from ``rec_start[r, j]`` (r = 0..3 in that order, sized by
        :func:`record_caps_nb`); the last record of each buffer is a spare that takes any write
        past a column's capacity, which the caller detects from the returned counts. The sparse
        specialisation writes a ``pchg`` record (bar, position at its close) at each bar whose
        closing position differs from the previous bar's, instead of the position series
    fpos : float64 (n_cols, n_prints), zeros: ``fpos[j, p]`` is set to the position that paid
        funding print ``p`` (8 bytes per print and column instead of a 56-byte record; the
        wrapper builds the funding records from it)
    bits : uint64 (n_words, n_target_cols), :func:`target_scan_nb`'s bitmap of the target,
        read by the sparse specialisation (quiet stretches)
    sparse : which specialisation runs (compiled on first use: each is compiled only when used)

    Returns
    -------
    n_fills, n_calls, n_liqs, n_pchg : int64 (n_cols,) records used per column
    """
    literally(sparse)
    n = open_.shape[0]
    m = init_cap.shape[0]
    n_fills = np.zeros(m, dtype=np.int64)
    n_calls = np.zeros(m, dtype=np.int64)
    n_liqs = np.zeros(m, dtype=np.int64)
    n_pchg = np.zeros(m, dtype=np.int64)
    inv_vo = np.empty(n)  # contracts per unit of the settlement currency at each bar's open
    if inverse:  # (the branch outside the loops, so that they vectorize)
        for i in prange(n):
            inv_vo[i] = 1.0 / (cs / open_[i])
    else:
        for i in prange(n):
            inv_vo[i] = 1.0 / (cs * open_[i])
    # sparse: from each bar, the next bar with a funding print or a tier-table change (shared
    # events that end a quiet stretch); bar 0 is one
    nxt = np.empty(n if sparse else 0, dtype=np.int64)
    if sparse:
        ev = np.zeros(n, dtype=np.bool_)
        ev[0] = True
        for k in range(fe_bar.shape[0]):
            if 0 <= fe_bar[k] < n:
                ev[fe_bar[k]] = True
        for i in range(1, n):
            ev[i] |= tier_ver[i] != tier_ver[i - 1]
        nx = n  # no event ahead: a stretch may run to the last bar
        for i in range(n - 1, -1, -1):
            if ev[i]:
                nx = i
            nxt[i] = nx
    mt = bits.shape[1]
    for jj in prange(m):
        j = np.int64(jj)
        jt = j if mt > 1 else np.int64(0)  # the column of the target bitmap
        simulate_col_nb(
            j, open_, mark_open, mark_high, mark_low, mark_close,
            fe_bar, fe_at_open, fe_rate, fe_mark,
            target, trs, tcs, lag, inverse, cs, lot, min_notional, liq_fee,
            tiers, ntiers, tier_ver,
            init_cap[jj], mode[jj], lev[jj], thr[jj], resp[jj], tau[jj], reserve[jj], after_liq[jj],
            excess[jj], fr[jj], slip[jj],
            pol_kind[jj], pol_maxdd[jj], pol_floor[jj], pol_mult[jj], pol_ratchet[jj], pol_maxexp[jj],
            omap, out, fills, n_fills, fpos, calls, n_calls, liqs, n_liqs, pchg, n_pchg,
            rec_start[0, jj], rec_start[1, jj], rec_start[2, jj], rec_start[3, jj],
            rec_cap[0, jj], rec_cap[1, jj], rec_cap[2, jj], rec_cap[3, jj], inv_vo,
            nxt, bits, jt, sparse,
        )
    return n_fills, n_calls, n_liqs, n_pchg


@njit(cache=True, parallel=True)
def target_scan_nb(flat, rs, cs, rows, mt, last):
    """One pass over the target's memory (``mt`` columns of ``rows`` rows, element strides
    ``rs``/``cs``), in its own order (row-major: tasks take 64 rows, one word per column, and the
    inner loop runs along a row and vectorizes; column-major: a task per column and 64 rows).

    Returns
    -------
    bits : uint64 (ceil(last / 64), mt): bit ``t % 64`` of ``bits[t // 64, j]`` is set when row
        ``t < last`` of column ``j`` holds a value (not NaN): where the orders are, read by the
        sparse kernel, and their count per column (:func:`record_caps_nb`)
    has_inf : bool (mt,), column holds an infinite value in any row (an error: the caller
        finds where)
    """
    nw = (last + 63) // 64
    nch = (rows + 63) // 64
    bits = np.zeros((nw, mt), dtype=np.uint64)
    infs = np.zeros((nch, mt), dtype=np.bool_)
    if cs == 1 and mt > 1:  # row-major
        for k in prange(nch):
            t0 = k * 64
            f = infs[k]
            if k < nw:
                w = bits[k]
                for t in range(t0, min(last, t0 + 64)):
                    row = flat[t * rs:t * rs + mt]
                    sh = np.uint64(t - t0)
                    for j in range(mt):
                        e = row[j]
                        w[j] |= np.uint64(e == e) << sh
                        f[j] |= np.isnan(e * 0.0) & (e == e)
            for t in range(max(t0, last), min(rows, t0 + 64)):
                row = flat[t * rs:t * rs + mt]
                for j in range(mt):
                    e = row[j]
                    f[j] |= np.isnan(e * 0.0) & (e == e)
    else:  # column-major (or one column): a task per column and word, so one column splits too
        for q in prange(mt * nch):
            j = q // nch
            k = q - j * nch
            t0 = k * 64
            acc = np.uint64(0)
            bad = False
            for t in range(t0, min(last, t0 + 64)):
                e = flat[j * cs + t * rs]
                acc |= np.uint64(e == e) << np.uint64(t - t0)
                bad |= np.isnan(e * 0.0) & (e == e)
            for t in range(max(t0, last), min(rows, t0 + 64)):
                e = flat[j * cs + t * rs]
                bad |= np.isnan(e * 0.0) & (e == e)
            if k < nw:
                bits[k, j] = acc
            infs[k, j] = bad
    has_inf = np.zeros(mt, dtype=np.bool_)
    for k in range(nch):
        for j in range(mt):
            has_inf[j] |= infs[k, j]
    return bits, has_inf


@njit(cache=True, inline="always")
def popcount_nb(x):
    """Set bits of a uint64 (the classic bit-parallel sum, which LLVM turns into ``popcnt``)."""
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)


@njit(cache=True)
def record_caps_nb(bits, rows, lag, n, resp, after_liq):
    """Most records each column can write, (4, n_cols) for fills, margin calls, liquidations
    and position changes (funding is stored per print, not as records), so that the record
    buffers are sized to the work rather than to 2 x bars x columns (fresh memory is zeroed by
    the OS page by page, which made the oversized buffers the largest single cost of a sweep).
    ``bits``: :func:`target_scan_nb` of the target (``rows`` rows; one column is broadcast).

    Bounds: one target order (filled, clipped or rejected) per bar with a target, plus one
    margin-call reduce per bar for the ``reduce`` response; one margin call per bar; and a
    liquidation needs a position opened by a target order since the previous one (at most one
    when the column stops after a liquidation); the position changes only at a bar with a fill
    or a liquidation."""
    m = resp.shape[0]
    mt = bits.shape[1]
    caps = np.empty((4, m), dtype=np.int64)
    for j in range(m):
        jt = j if mt > 1 else 0
        c = np.int64(0)
        for k in range(bits.shape[0]):
            c += np.int64(popcount_nb(bits[k, jt]))
        if rows == 1:  # a target broadcast over the bars (one row) is read at every bar
            c *= max(n - lag, 0)
        caps[0, j] = c + (n if resp[j] == RESP_REDUCE else 0)
        caps[1, j] = n
        caps[2, j] = min(c, 1) if after_liq[j] == AFTER_STOP else c
        caps[3, j] = caps[0, j] + caps[2, j]
    return caps


@njit(cache=True)
def compact_nb(buf, counts, starts):
    """Move each column's used records (``counts[j]`` from ``starts[j]``) to the front of
    ``buf``, in place, in column order; returns how many records that is. Each destination is at
    or before its source, so a forward copy never overwrites records not yet moved."""
    dst = 0
    for j in range(counts.shape[0]):
        src = starts[j]
        c = counts[j]
        if src != dst:
            for k in range(c):
                buf[dst + k] = buf[src + k]
        dst += c
    return dst


@njit(cache=True)
def simulate_sparse_nb(
    open_, mark_open, mark_high, mark_low, mark_close,
    fe_bar, fe_at_open, fe_rate, fe_mark,
    target, trs, tcs, lag, inverse, cs, lot, min_notional, liq_fee,
    tiers, ntiers, tier_ver,
    init_cap, mode, lev, thr, resp, tau, reserve, after_liq, excess, fr, slip,
    pol_kind, pol_maxdd, pol_floor, pol_mult, pol_ratchet, pol_maxexp, omap,
    out, fills, fpos, calls, liqs, pchg, rec_start, rec_cap, bits,
):
    """:func:`simulate_nb`, sparse specialisation (quiet stretches). The two entry points fix
    ``sparse`` at compile time, so each compiles only when used and a call does not re-resolve a
    literal argument."""
    return simulate_nb(
        open_, mark_open, mark_high, mark_low, mark_close,
        fe_bar, fe_at_open, fe_rate, fe_mark,
        target, trs, tcs, lag, inverse, cs, lot, min_notional, liq_fee,
        tiers, ntiers, tier_ver,
        init_cap, mode, lev, thr, resp, tau, reserve, after_liq, excess, fr, slip,
        pol_kind, pol_maxdd, pol_floor, pol_mult, pol_ratchet, pol_maxexp, omap,
        out, fills, fpos, calls, liqs, pchg, rec_start, rec_cap, bits, True,
    )


@njit(cache=True)
def simulate_dense_nb(
    open_, mark_open, mark_high, mark_low, mark_close,
    fe_bar, fe_at_open, fe_rate, fe_mark,
    target, trs, tcs, lag, inverse, cs, lot, min_notional, liq_fee,
    tiers, ntiers, tier_ver,
    init_cap, mode, lev, thr, resp, tau, reserve, after_liq, excess, fr, slip,
    pol_kind, pol_maxdd, pol_floor, pol_mult, pol_ratchet, pol_maxexp, omap,
    out, fills, fpos, calls, liqs, pchg, rec_start, rec_cap, bits,
):
    """:func:`simulate_nb`, dense specialisation."""
    return simulate_nb(
        open_, mark_open, mark_high, mark_low, mark_close,
        fe_bar, fe_at_open, fe_rate, fe_mark,
        target, trs, tcs, lag, inverse, cs, lot, min_notional, liq_fee,
        tiers, ntiers, tier_ver,
        init_cap, mode, lev, thr, resp, tau, reserve, after_liq, excess, fr, slip,
        pol_kind, pol_maxdd, pol_floor, pol_mult, pol_ratchet, pol_maxexp, omap,
        out, fills, fpos, calls, liqs, pchg, rec_start, rec_cap, bits, False,
    )


@njit(cache=True, parallel=True)
def expand_changes_nb(bar, pos, starts, counts, out):
    """Fill ``out`` (n_cols, n_bars) with the position at each bar's close from position-change
    records (column ``j``'s ``counts[j]`` records from ``starts[j]``, in bar order): flat before
    the first change, then each change's position up to the next."""
    m, n = out.shape
    for j in prange(m):
        row = out[j]
        c = 0.0
        b = 0
        for k in range(starts[j], starts[j] + counts[j]):
            nxt = bar[k]
            for t in range(b, nxt):
                row[t] = c
            c = pos[k]
            b = nxt
        for t in range(b, n):
            row[t] = c
