"""Numba kernel of a book: several perpetuals in one margin account (numpy in, numpy out).

Implements docs/mechanics.md ("Books") in the order of events it states, and gives the numbers
of the slow reference simulator :func:`backtest.book.reference.simulate_book_reference`, which
it is property-tested against. Columns (accounts) run in parallel (``prange``); the instruments
are the second axis inside a column.

Every exchange formula is the single-instrument engine's compiled helper
(:mod:`backtest.engine.nb`: contract value, uPnL, tier choice and maintenance margin, the
re-tiered liquidation / margin-call price, tier cap, funding amount, the in-loop policy, the
exchange-check tolerance), imported, not restated. What is new here is the book's own
bookkeeping (margin groups, orders across instruments, the intrabar path) and three small
formulas of :mod:`backtest.mechanics` that the engine has no compiled form of:
:func:`path_price_nb` (``mechanics.path_price``), :func:`cross_liquidation_outcome_nb`
(``mechanics.cross_liquidation_outcome``) and :func:`isolated_liquidation_outcome_nb`
(``mechanics.liquidation_outcome``), each tested against its readable form.

State is named: the positions of a column are a structured array (:data:`position_state_dt`,
one record per instrument) and the account a structured record (:data:`account_state_dt`);
the market and the settings travel as named tuples (:class:`BookMarket`, :class:`BookFunding`,
:class:`BookParams`, :class:`BookOutputs`). The column loop :func:`book_col_nb` reads as the
numbered steps of the docs, each step a small function.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np
from numba import njit, prange

from backtest.engine.nb import (
    ALL_BITS, CHECK_RTOL, DUST_RTOL, LOT_EPS, POL_CPPI, POL_DRAWDOWN, adverse_extreme_nb, cval_nb, fits_nb,
    funding_amount_nb, level_ok_nb, mm_nb, policy_target_nb, solve_price_nb, tier_cap_nb, upnl_nb,
)
from numba.cpython.unsafe.numbers import trailing_zeros

# Enum values as module constants so numba folds them (backtest.engine.enums / settings).
ST_FILLED = 0
ST_CLIPPED = 1
ST_REJECTED = 2
RS_TARGET = 0
RS_CALL = 1
RS_ROLL = 2
RS_SETTLE = 3
RS_LIQ = 4
ROLL_SETTLE = 2     # backtest.book.options.ROLL_* (checked against them in the tests)
ROLL_EARLY = 3
RESP_REDUCE = 1
RESP_TOP_UP = 2
AFTER_STOP = 0
EXCESS_REJECT = 1
CROSS_G = -1        # the margin group of every cross position (isolated groups are numbered k)
PATH_ALL = -1       # the 'together' path: every mark moves
BISECT_STEPS = 200  # the reference's bisection length (a float in [0, 1] reaches machine precision)
QUIET_RTOL = 1e-9   # margin of the quiet-stretch safety check (its plain sums against the exact ones)

__all__ = ["CHECK_RTOL", "LOT_EPS", "POL_CPPI", "POL_DRAWDOWN"]  # re-exported for readers of the rules

# Every function below the parallel driver is compiled with ``_nrt=False`` (no reference
# counting), as the engine's column kernel: nothing in a column allocates (its arrays are the
# caller's, alive for the whole call), and with reference counting each call of a helper
# increfs and decrefs every array of the named tuples it receives (BookMarket alone holds 14),
# atomic operations that the two threads contend for, plus every scratch-row view. Measured on
# the benchmark (K = 2): the kernel 2.8x faster (benchmarks/README.md, "Books").
# No helper is inlined at numba's level (``inline="always"``): LLVM inlines the small ones
# anyway when it links the column loop, and numba-level inlining copied each helper's IR into
# every caller before type inference: measured, the first compile of a book with option legs
# 132.5 s -> 114.2 s on 2 cores, the benchmark (K = 2) unchanged (0.150 vs 0.157).
# Constants reach the helpers as typed values (``np.int64(CROSS_G)``, ``np.int64(ST_FILLED)``,
# ``np.bool_(True)``, counters started at ``np.int64(0)``): numba compiles a function once per
# argument type, and a literal argument is its own type (``Literal[int](-1)``), so each helper
# was compiled up to 12 times. One signature each: first compile 114 s -> 54.5 s; the benchmark
# within 7 % (K = 2: 0.113, K = 10: 0.176; benchmarks/README.md, "Books").

position_state_dt = np.dtype([
    ("contracts", np.float64),    # signed contracts
    ("entry", np.float64),        # entry price
    ("margin", np.float64),       # isolated margin M_k (0 for a cross position)
    ("realised", np.float64),     # price PnL realised by fills
    ("funding", np.float64),      # funding received (+) / paid (-)
    ("fees", np.float64),         # trading fees paid
    ("liquidation", np.float64),  # liquidation PnL - clearance fees + deficit share
    ("stopped", np.bool_),        # after_liquidation='stop' froze this instrument
], align=True)
"""One position of a column's book (the reference's ``_Pos``)."""

option_state_dt = np.dtype([
    ("contracts", np.float64),    # long contracts of the leg's current contract (>= 0)
    ("keep", np.float64),         # the count a roll keeps (held into the roll's open instant)
    ("realised", np.float64),     # sales and settlements at their prices - purchases at theirs
    ("fees", np.float64),         # trading and delivery fees paid
    ("stopped", np.bool_),        # sold in a cross liquidation with after_liquidation='stop'
], align=True)
"""One option leg of a column's book (docs/mechanics.md, "Options in a book")."""

account_state_dt = np.dtype([
    ("wallet", np.float64),         # W: the cross wallet (all cash not held as isolated margin)
    ("capital_added", np.float64),
    ("reserve_left", np.float64),
    ("peak", np.float64),           # highest equity at a close (the policies read it)
    ("prev_equity", np.float64),    # equity at the previous close
    ("cum_funding", np.float64),
    ("cum_fees", np.float64),       # trading + clearance fees
    ("lent", np.float64),           # the options' collateral value added to W for a margin step
    ("w_before", np.float64),       # W before that addition
    ("w_lent", np.float64),         # W right after it (W unchanged by the step: restored exactly)
], align=True)
"""The account of one column (the reference's ``_Account``)."""

BookMarket = namedtuple("BookMarket", [
    "open", "mark_open", "mark_high", "mark_low", "mark_close",  # float64 (n, K); NaN before listing
    "prev_mark_close",  # float64 (n, K): previous bar's mark close (the mark open at a first bar)
    "listed",           # bool (n, K)
    "tiers",            # float64 (K, V, T, 5): each instrument's tier tables, padded
    "ntiers",           # int64 (K, V)
    "tier_ver",         # int64 (n, K): the table in force (0 before listing)
    "cs", "lot", "min_notional", "liq_fee",  # float64 (K,)
    "inverse",          # bool: every instrument inverse (one settlement coin) or every one linear
    "usd_k",            # int64 (n,): the first listed instrument (inverse books: its mark close is
                        # the settlement coin's USD price)
    "nxt",              # int64 (n,): from each bar, the next bar (itself included) where any
                        # instrument has a funding print, a tier-table change or its first bar,
                        # or an option leg's roll at the previous close (events that end a
                        # quiet stretch); n: none ahead
    "open_prints_only", # bool (n,): the bar's only events are funding prints at its open instant
                        # (a quiet stretch may start at it, once they are paid)
    "mmr_max",          # float: the highest maintenance-margin rate of the book's tier tables
    # option legs (backtest.book.options.OptionPaths; J may be 0)
    "o_k",              # int64 (J,): the underlying's instrument
    "o_roll", "o_old", "o_val", "o_adv", "o_unit", "o_dfee",   # (n, J) at each close instant
    "o_fee_rate", "o_fee_cap", "o_slip",                        # float64 (J,)
])
"""The instruments of a book on its bars."""

BookFunding = namedtuple("BookFunding", [
    "bar", "k", "at_open", "rate", "mark",  # (E,) every print of every instrument, sorted by (book
                                            # bar, at the open first, instrument, print)
])
"""Funding prints of every instrument, in the order the reference pays them."""

BookParams = namedtuple("BookParams", [
    # per column (m,)
    "init_cap", "thr", "resp", "tau", "reserve", "after_liq", "excess", "slip",
    "pol_kind", "pol_maxdd", "pol_floor", "pol_mult", "pol_ratchet", "pol_maxexp", "alone",
    # per instrument and column (K, m)
    "isolated", "lev", "fee",
    "coll",             # bool (m,): the option legs count in the cross account's margin balance
    "lag",              # int
    "target",           # float64 (n, K + J, m): the perpetuals, then the option legs
    "obits",            # uint64 (ceil((n - lag) / 64), m): bit r % 64 of obits[r // 64, j] is set
                        # when target row r of column j holds a value for some instrument
])
"""Settings of every column (``backtest.book.settings.book_arrays``) and the target."""

BookOutputs = namedtuple("BookOutputs", [
    "series", "sslot",      # float64 (n_stored, m, n); int64 (len(BOOK_SERIES),): row or -1
    "pseries", "pslot",     # float64 (n_pstored, K + J, m, n); int64 (len(POSITION_SERIES),)
    "fills", "calls", "liqs",   # record buffers (book_fill_dt, book_margin_call_dt, book_liquidation_dt)
    "rstart", "rcap",       # int64 (3, m): each column's first slot and capacity per buffer
    "counts",               # int64 (3, m): records each column produced (may exceed rcap: rerun)
    "fpos",                 # float64 (m, E): the position that paid each print (0: none)
    "quiet",                # int64 (m,): bars each column valued in quiet stretches (diagnostic)
])
"""Where a book run writes. Series slots follow ``BOOK_SERIES`` / ``POSITION_SERIES``."""

# slots of BOOK_SERIES and POSITION_SERIES (backtest.book.settings), in their order
S_EQUITY, S_EQUITY_USD, S_RATIO, S_RATIO_ADV, S_GROSS, S_FUNDING, S_FEES, S_ADDED, S_DIST = range(9)
P_POSITION, P_NOTIONAL, P_LIQ, P_PRICE, P_FUNDING, P_FEES, P_LIQUIDATION = range(7)


# --------------------------------------------------------------------------------------------
# Formulas of backtest.mechanics without a compiled form in the engine
# --------------------------------------------------------------------------------------------

# The account's sums (margin balance, maintenance, equity, the other positions' TMM1/UPNL1) are
# correctly rounded, as ``math.fsum`` in backtest.mechanics and the reference: a clipped order
# sits at the exchange check's limit, and the next bar's check of the same size is a tie that a
# last-bit difference in a plain sum would decide the other way (a lot more or less).

@njit(cache=True, _nrt=False)
def fsum_add_nb(p, n, x):
    """Add ``x`` to the exact sum held as ``n`` non-overlapping partials in ``p`` (Shewchuk's
    algorithm, as CPython's ``math.fsum``); returns the new number of partials."""
    i = 0
    for q in range(n):
        y = p[q]
        if abs(x) < abs(y):
            x, y = y, x
        hi = x + y
        lo = y - (hi - x)
        if lo != 0.0:
            p[i] = lo
            i += 1
        x = hi
    p[i] = x
    return i + 1


@njit(cache=True, _nrt=False)
def fsum_value_nb(p, n):
    """The correctly rounded value of the partials (CPython's ``math.fsum`` final step, half-way
    cases rounded as it does). Finite inputs only (the account's sums are)."""
    if n == 0:
        return 0.0
    n -= 1
    hi = p[n]
    lo = 0.0
    while n > 0:
        x = hi
        n -= 1
        y = p[n]
        hi = x + y
        yr = hi - x
        lo = y - yr
        if lo != 0.0:
            break
    if n > 0 and ((lo < 0.0 and p[n - 1] < 0.0) or (lo > 0.0 and p[n - 1] > 0.0)):
        y = lo * 2.0
        x = hi + y
        yr = x - hi
        if y == yr:
            hi = x
    return hi


@njit(cache=True, _nrt=False)
def path_price_nb(open_, adverse, s):
    """``mechanics.path_price``: the mark at fraction ``s`` of the intrabar path from the mark
    open toward the position's adverse extreme (``s = 1`` returns the extreme itself)."""
    if s >= 1.0:
        return adverse
    if s <= 0.0:
        return open_
    return open_ + s * (adverse - open_)


@njit(cache=True, _nrt=False)
def cross_liquidation_outcome_nb(wallet, upnls, fees, charged, shares, fs):
    """``mechanics.cross_liquidation_outcome`` ([BN-LIQ] on a cross account): ``upnls``,
    ``fees`` (n,) of the closed positions; writes the fees charged and each position's share of
    the insurance fund's deficit into ``charged``/``shares``; returns what the account keeps,
    ``max(0, W + sum uPnL - sum fees)``. ``fs``: float64 (3, >= n) scratch for the sums."""
    n = upnls.shape[0]
    nu = np.int64(0)
    nf = np.int64(0)
    nl = np.int64(0)
    for i in range(n):
        nu = fsum_add_nb(fs[0], nu, upnls[i])
        nf = fsum_add_nb(fs[1], nf, fees[i])
        nl = fsum_add_nb(fs[2], nl, max(0.0, -upnls[i]))
    total = fsum_value_nb(fs[1], nf)
    lost = fsum_value_nb(fs[2], nl)
    left = wallet + fsum_value_nb(fs[0], nu)
    scale = 1.0 if total <= 0.0 else min(1.0, max(0.0, left) / total)
    deficit = max(0.0, -left)
    for i in range(n):
        charged[i] = fees[i] * scale
        if lost > 0.0:
            shares[i] = deficit * max(0.0, -upnls[i]) / lost
        else:
            shares[i] = deficit / n
    return max(0.0, left - total)


@njit(cache=True, _nrt=False)
def isolated_liquidation_outcome_nb(balance, upnl, notional, fee_rate):
    """``mechanics.liquidation_outcome`` ([BN-LIQ]): ``(keep, deficit, fee_charged)``."""
    left = balance + upnl
    fee = min(fee_rate * notional, max(0.0, left))
    return max(0.0, left - fee_rate * notional), max(0.0, -left), fee


# --------------------------------------------------------------------------------------------
# Positions and margin groups
# --------------------------------------------------------------------------------------------

@njit(cache=True, _nrt=False)
def sign_nb(x):
    return (x > 0.0) - (x < 0.0)


@njit(cache=True, _nrt=False)
def value_nb(mkt, k, price):
    return cval_nb(price, mkt.cs[k], mkt.inverse)


@njit(cache=True, _nrt=False)
def pos_upnl_nb(mkt, P, k, price):
    return upnl_nb(P[k].contracts, P[k].entry, price, mkt.cs[k], mkt.inverse)


@njit(cache=True, _nrt=False)
def pos_mm_nb(mkt, t, k, contracts, price):
    """Maintenance margin of ``contracts`` of instrument k at ``price`` (its tier table of bar t)."""
    ver = mkt.tier_ver[t, k]
    return mm_nb(mkt.tiers[k], ver, mkt.ntiers[k, ver], abs(contracts) * value_nb(mkt, k, price))


@njit(cache=True, _nrt=False)
def is_member_nb(P, iso, g, k):
    """Position k is open and in margin group g (CROSS_G, or the isolated position g)."""
    if P[k].contracts == 0.0:
        return False
    if g == CROSS_G:
        return not iso[k]
    return k == g


@njit(cache=True, _nrt=False)
def group_margin_nb(mkt, t, P, W, iso, g, marks, fs):
    """``(MB, MM, open positions)`` of group g with each member at ``marks[k]``: the cross
    account ``MB = W + sum uPnL``, ``MM = sum MM_i`` (``mechanics.cross_account_margin``), an
    isolated position ``M_k + uPnL_k``. ``fs``: scratch for the sums (rows 0, 1)."""
    nu = np.int64(0)
    nm = np.int64(0)
    cnt = np.int64(0)
    for k in range(P.shape[0]):
        if is_member_nb(P, iso, g, k):
            nu = fsum_add_nb(fs[0], nu, pos_upnl_nb(mkt, P, k, marks[k]))
            nm = fsum_add_nb(fs[1], nm, pos_mm_nb(mkt, t, k, P[k].contracts, marks[k]))
            cnt += 1
    up = fsum_value_nb(fs[0], nu)
    mm = fsum_value_nb(fs[1], nm)
    if g == CROSS_G:
        return W + up, mm, cnt
    return P[g].margin + up, mm, cnt


@njit(cache=True, _nrt=False)
def ratio_of_nb(mb, mm, cnt):
    """``mechanics.margin_ratio`` of a group; 0 for a group without positions."""
    if cnt == 0:
        return 0.0
    return np.inf if mb <= 0.0 else mm / mb


@njit(cache=True, _nrt=False)
def equity_nb(mkt, P, W, prices, fs, extra=0.0):
    """``W + extra + sum_k (M_k + uPnL_k)`` with each open position at ``prices[k]`` and
    ``extra`` the option legs' value (one instrument without options: the single-instrument
    engine's sum, term for term; else correctly rounded)."""
    if P.shape[0] == 1:
        e = W + P[0].margin + (pos_upnl_nb(mkt, P, np.int64(0), prices[0]) if P[0].contracts != 0.0 else 0.0)
        return e + extra if extra != 0.0 else e
    n = fsum_add_nb(fs[0], np.int64(0), W)
    if extra != 0.0:
        n = fsum_add_nb(fs[0], n, extra)
    for k in range(P.shape[0]):
        n = fsum_add_nb(fs[0], n, P[k].margin)
        if P[k].contracts != 0.0:
            n = fsum_add_nb(fs[0], n, pos_upnl_nb(mkt, P, k, prices[k]))
    return fsum_value_nb(fs[0], n)


@njit(cache=True, _nrt=False)
def close_equity_nb(mkt, P, W, prices, extra=0.0):
    """The equity of step 6 (valuation at the closes), ``W + sum_k (M_k + uPnL_k)`` as a plain
    sum, for a column without a drawdown or CPPI policy: there it is only stored, so its last
    bit decides nothing. A policy reads it at the next order (it scales the target: without a
    lot size a last-bit difference moves the size, and a far liquidation price amplifies that
    past the tests' 1e-9), so such a column, the exchange checks and the sizing at the open keep
    the exact sum (:func:`equity_nb`). One instrument: the engine's expression, as
    :func:`equity_nb`."""
    x = cash_nb(P, W)
    for k in range(P.shape[0]):
        if P[k].contracts != 0.0:
            x += pos_upnl_nb(mkt, P, k, prices[k])
    return x + extra if extra != 0.0 else x


@njit(cache=True, _nrt=False)
def cash_nb(P, W):
    """``W + sum_k M_k``: the account's cash (constant through a quiet stretch)."""
    x = W
    for k in range(P.shape[0]):
        x += P[k].margin
    return x


@njit(cache=True, _nrt=False)
def marks_at_nb(mkt, t, P, iso, g, path, s, marks):
    """Marks of group g's positions at fraction s of bar t's intrabar path ``path`` (PATH_ALL:
    every mark moves; k: only instrument k's) into ``marks``."""
    for k in range(P.shape[0]):
        if is_member_nb(P, iso, g, k):
            adverse = mkt.mark_high[t, k] if P[k].contracts < 0.0 else mkt.mark_low[t, k]
            moves = path == PATH_ALL or path == k
            marks[k] = path_price_nb(mkt.mark_open[t, k], adverse, s if moves else 0.0)


@njit(cache=True, _nrt=False)
def bar_path_nb(mkt, t, P, iso, g, ends):
    """Bar t's intrabar path of group g as the rows :func:`solve_path_nb` reads: ``ends[0, k]``
    the mark open, ``ends[1, k]`` the position's adverse extreme (a short's mark high, a long's
    mark low)."""
    for k in range(P.shape[0]):
        if is_member_nb(P, iso, g, k):
            ends[0, k] = mkt.mark_open[t, k]
            ends[1, k] = mkt.mark_high[t, k] if P[k].contracts < 0.0 else mkt.mark_low[t, k]


@njit(cache=True, _nrt=False)
def path_marks_nb(P, iso, g, path, s, ends, marks):
    """Marks of group g's positions at fraction s of the path from ``ends[0]`` to ``ends[1]``
    (PATH_ALL: every mark moves; k: only instrument k's) into ``marks``: on a bar's path
    (:func:`bar_path_nb`) the same numbers as :func:`marks_at_nb`."""
    for k in range(P.shape[0]):
        if is_member_nb(P, iso, g, k):
            moves = path == PATH_ALL or path == k
            marks[k] = path_price_nb(ends[0, k], ends[1, k], s if moves else 0.0)


@njit(cache=True, _nrt=False)
def past_threshold_nb(mkt, t, P, W, iso, g, threshold, marks, fs):
    """Group g at ``marks`` has reached ``threshold`` (1: liquidatable, ``MB <= MM``)."""
    mb, mm, cnt = group_margin_nb(mkt, t, P, W, iso, g, marks, fs)
    if cnt == 0:
        return False
    if threshold >= 1.0:
        return mb <= mm
    return ratio_of_nb(mb, mm, cnt) >= threshold


@njit(cache=True, _nrt=False)
def solve_path_nb(mkt, t, P, W, iso, g, path, threshold, ends, marks, fs):
    """First point of the path from ``ends[0]`` to ``ends[1]`` (float64 (2, >= K): each
    position's mark at s = 0 and s = 1; bar t's intrabar path, :func:`bar_path_nb`, or the
    common adverse move of :func:`liq_distance_nb`) where group g reaches ``threshold`` (tiers
    of bar t): returns s, the marks in ``marks``. One moving mark: the re-tiered price formula
    (``solve_price_nb``) with the others' ``TMM1/threshold`` and ``UPNL1`` at their starts;
    several: bisection (the reference's, step for step)."""
    path_marks_nb(P, iso, g, path, 0.0, ends, marks)
    if past_threshold_nb(mkt, t, P, W, iso, g, threshold, marks, fs):
        return 0.0
    K = P.shape[0]
    mover = -1
    n_movers = 0
    for k in range(K):
        if is_member_nb(P, iso, g, k) and (path == PATH_ALL or path == k):
            mover = k
            n_movers += 1
    if n_movers == 1:
        k = mover
        nm = np.int64(0)
        nu = np.int64(0)
        for i in range(K):
            if i != k and is_member_nb(P, iso, g, i):
                nm = fsum_add_nb(fs[0], nm, pos_mm_nb(mkt, t, i, P[i].contracts, ends[0, i]))
                nu = fsum_add_nb(fs[1], nu, pos_upnl_nb(mkt, P, i, ends[0, i]))
        tmm = fsum_value_nb(fs[0], nm)
        upnl1 = fsum_value_nb(fs[1], nu)
        balance = W if g == CROSS_G else P[g].margin
        ver = mkt.tier_ver[t, k]
        lp = solve_price_nb(P[k].contracts, P[k].entry, balance - tmm / threshold + upnl1, mkt.cs[k],
                            mkt.inverse, mkt.tiers[k], ver, mkt.ntiers[k, ver], threshold)
        if level_ok_nb(lp):
            o = ends[0, k]
            a = ends[1, k]
            marks[k] = lp
            return min(1.0, max(0.0, (lp - o) / (a - o))) if a != o else 1.0
    lo = 0.0
    hi = 1.0
    for _ in range(BISECT_STEPS):
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            break
        path_marks_nb(P, iso, g, path, mid, ends, marks)
        if past_threshold_nb(mkt, t, P, W, iso, g, threshold, marks, fs):
            hi = mid
        else:
            lo = mid
    path_marks_nb(P, iso, g, path, hi, ends, marks)
    return hi


@njit(cache=True, _nrt=False)
def position_liq_price_nb(mkt, t, P, W, iso, k, upn, mmv, fs):
    """Position k's liquidation price with the account as it stands: isolated, alone on its
    margin; cross, Binance's cross formula with ``TMM1``/``UPNL1`` the other cross positions'
    maintenance and uPnL (``upn``/``mmv``, at the prices they were valued at), re-tiered. 0.0 = none."""
    C = P[k].contracts
    ver = mkt.tier_ver[t, k]
    if iso[k]:
        backing = P[k].margin
    else:
        nm = np.int64(0)
        nu = np.int64(0)
        for i in range(P.shape[0]):
            if i != k and is_member_nb(P, iso, np.int64(CROSS_G), i):
                nm = fsum_add_nb(fs[0], nm, mmv[i])
                nu = fsum_add_nb(fs[1], nu, upn[i])
        backing = W - fsum_value_nb(fs[0], nm) + fsum_value_nb(fs[1], nu)
    lp = solve_price_nb(C, P[k].entry, backing, mkt.cs[k], mkt.inverse, mkt.tiers[k], ver, mkt.ntiers[k, ver], 1.0)
    return lp if level_ok_nb(lp) else 0.0


# The account's distance to liquidation (BOOK_SERIES ``liq_distance``; docs/mechanics.md,
# "Books", step 6): the smallest common adverse move x from the closes (the book's intrabar
# convention applied to a move of any size: every position's mark moves at once toward its own
# adverse side, a short's to ``P (1 + x)``, a long's to ``P (1 - x)``, as the ``liqcap`` book
# policy's ``strategies.policies.book.moved_price``) at which a margin group reaches ratio 1,
# the smallest over the groups. Solved by :func:`solve_path_nb`, the solver of the bar's own
# intrabar path, on the path from the closes to the move ``x_hi``.
DIST_DOUBLINGS = 10         # a group of shorts only is searched up to x = 2**10 (a 1,025x price)
INVERSE_LONG_FLOOR = 2.0 ** -20   # an inverse long's price is searched down to this fraction of
                                  # its close (its coin uPnL is unbounded at price 0)


@njit(cache=True, _nrt=False)
def moved_price_nb(contracts, price, x):
    """``strategies.policies.book.moved_price``: the price after a common adverse move ``x``
    (fraction): a short's ``P (1 + x)``, a long's ``P (1 - x)``."""
    return price * (1.0 + x) if contracts < 0.0 else price * (1.0 - x)


@njit(cache=True, _nrt=False)
def common_move_nb(P, iso, g, starts, x, ends):
    """The path of the common adverse move from ``starts`` to ``x`` for group g's positions, as
    the rows :func:`solve_path_nb` reads (``ends[0]`` the starts, ``ends[1]`` the moved prices)."""
    for k in range(P.shape[0]):
        if is_member_nb(P, iso, g, k):
            ends[0, k] = starts[k]
            ends[1, k] = moved_price_nb(P[k].contracts, starts[k], x)


@njit(cache=True, _nrt=False)
def liq_distance_nb(mkt, t, P, W, iso, starts, ends, marks, fs):
    """The account's distance to liquidation at the marks ``starts`` (float64 (K,)): the
    smallest common adverse move x (fraction, >= 0) at which a margin group (the cross account
    with balance W, each isolated position) reaches ``MB <= MM``, tiers of bar t. The search
    runs to ``x_hi = 1`` for a group holding a long (its price to 0; an inverse long's to
    ``INVERSE_LONG_FLOOR`` of it), doubling up to ``2**DIST_DOUBLINGS`` for shorts only; a
    group that no move up to ``x_hi`` liquidates is at ``inf``. NaN when no position is open.
    ``ends``: float64 (2, >= K) scratch; ``marks``: the marks at the solution of the last group."""
    best = np.inf
    any_open = False
    for gg in range(-1, P.shape[0]):
        g = np.int64(gg)
        if g >= 0 and not iso[g]:
            continue
        if not group_open_nb(P, iso, g):
            continue
        any_open = True
        has_long = False
        for k in range(P.shape[0]):
            if is_member_nb(P, iso, g, k) and P[k].contracts > 0.0:
                has_long = True
        x_hi = (1.0 - INVERSE_LONG_FLOOR if mkt.inverse else 1.0) if has_long else 1.0
        common_move_nb(P, iso, g, starts, x_hi, ends)
        path_marks_nb(P, iso, g, np.int64(PATH_ALL), 1.0, ends, marks)
        past = past_threshold_nb(mkt, t, P, W, iso, g, 1.0, marks, fs)
        d = 0
        while not past and not has_long and d < DIST_DOUBLINGS:
            x_hi *= 2.0
            common_move_nb(P, iso, g, starts, x_hi, ends)
            path_marks_nb(P, iso, g, np.int64(PATH_ALL), 1.0, ends, marks)
            past = past_threshold_nb(mkt, t, P, W, iso, g, 1.0, marks, fs)
            d += 1
        if past:
            s = solve_path_nb(mkt, t, P, W, iso, g, np.int64(PATH_ALL), 1.0, ends, marks, fs)
            best = min(best, s * x_hi)
    return best if any_open else np.nan


# --------------------------------------------------------------------------------------------
# Trades
# --------------------------------------------------------------------------------------------

@njit(cache=True, _nrt=False)
def execute_nb(mkt, P, W, k, new_c, price, isolated, lev, fee_rate, keep_isolated_margin):
    """Trade instrument k to ``new_c`` at ``price``; returns ``(W, fee)``.

    Realised PnL and the fee go to W; isolated margin: an increase moves ``dN/L`` from W to
    M_k, a reduction releases the closed fraction of M_k, a flip releases all of it then
    allocates ``N(C*)/L``. ``keep_isolated_margin`` (a margin-call cut): M_k and the cut's
    realised PnL stay with the smaller position (all of it returns to W on a full close)."""
    p = P[k]
    c = p.contracts
    d = new_c - c
    if d == 0.0:
        return W, 0.0
    cs = mkt.cs[k]
    inv = mkt.inverse
    v = cval_nb(price, cs, inv)
    fee = fee_rate * abs(d) * v
    if c != 0.0 and sign_nb(d) != sign_nb(c):
        closed = min(abs(d), abs(c))
        realised = upnl_nb(sign_nb(c) * closed, p.entry, price, cs, inv)
        p.realised += realised
        if isolated and keep_isolated_margin:
            p.margin += realised
        else:
            W += realised
        if isolated and (not keep_isolated_margin or new_c == 0.0):
            release = p.margin if closed >= abs(c) else p.margin * closed / abs(c)
            p.margin -= release
            W += release
        if new_c != 0.0 and sign_nb(new_c) != sign_nb(c):
            p.entry = price
            if isolated:
                alloc = abs(new_c) * v / lev
                W -= alloc
                p.margin += alloc
        elif new_c == 0.0:
            p.entry = 0.0
    else:
        if c == 0.0:
            p.entry = price
        elif inv:
            p.entry = (abs(c) + abs(d)) / (abs(c) / p.entry + abs(d) / price)
        else:
            p.entry = (abs(c) * p.entry + abs(d) * price) / (abs(c) + abs(d))
        if isolated:
            alloc = abs(d) * v / lev
            W -= alloc
            p.margin += alloc
    W -= fee
    p.fees += fee
    p.contracts = new_c
    return W, fee


@njit(cache=True, _nrt=False)
def round_lots_nb(contracts, lot):
    """Round toward zero to the lot size (the reference's rule)."""
    if lot <= 0.0:
        return contracts
    n = np.floor(abs(contracts) / lot + LOT_EPS)
    return sign_nb(contracts) * (n * lot) if n > 0 else 0.0


@njit(cache=True, _nrt=False)
def same_size_nb(a, b, lot):
    if lot > 0.0:
        return a == b
    return abs(a - b) <= DUST_RTOL * max(abs(a), abs(b))


@njit(cache=True, _nrt=False)
def adds_exposure_nb(c, new_c):
    if new_c == 0.0:
        return False
    return c == 0.0 or sign_nb(new_c) != sign_nb(c) or abs(new_c) > abs(c)


@njit(cache=True, _nrt=False)
def order_usd_nb(mkt, k, d, price):
    """Order notional in USD (the unit of the minimum-notional rule)."""
    return abs(d) * mkt.cs[k] * (1.0 if mkt.inverse else price)


@njit(cache=True, _nrt=False)
def order_allowed_nb(mkt, t, P, W, iso, lev, fee, k, new_c, price, fs):
    """Exchange checks of an order that adds exposure on instrument k, on the account as the
    bar's earlier fills left it (docs, step 3): (a) tier cap; (b) available margin, the other
    cross positions valued at their trade opens."""
    p = P[k]
    c = p.contracts
    v = value_nb(mkt, k, price)
    n_new = abs(new_c) * v
    ver = mkt.tier_ver[t, k]
    if not fits_nb(n_new, tier_cap_nb(mkt.tiers[k], ver, mkt.ntiers[k, ver], lev[k])):
        return False
    f = fee[k] * abs(new_c - c) * v
    nu = np.int64(0)
    ni = np.int64(0)
    for i in range(P.shape[0]):
        if i != k and is_member_nb(P, iso, np.int64(CROSS_G), i):
            po = mkt.open[t, i]
            nu = fsum_add_nb(fs[0], nu, pos_upnl_nb(mkt, P, i, po))
            ni = fsum_add_nb(fs[1], ni, abs(P[i].contracts) * value_nb(mkt, i, po) / lev[i])
    upnl = fsum_value_nb(fs[0], nu)
    im = fsum_value_nb(fs[1], ni)
    if not iso[k]:
        return fits_nb(im + n_new / lev[k] + f, W + upnl + pos_upnl_nb(mkt, P, k, mkt.open[t, k]))
    free = W + (upnl - im)
    if c == 0.0 or sign_nb(new_c) == sign_nb(c):
        return fits_nb((abs(new_c) - abs(c)) * v / lev[k] + f, free)
    w_after_close = W + p.margin + pos_upnl_nb(mkt, P, k, price) - fee[k] * abs(c) * v + (upnl - im)
    return fits_nb(n_new / lev[k] + fee[k] * abs(new_c) * v, w_after_close)


@njit(cache=True, _nrt=False)
def largest_allowed_nb(mkt, t, P, W, iso, lev, fee, k, desired, price, fs):
    """Largest lot-rounded size toward ``desired`` passing the checks (the reference's
    bisection); never below the current position on the same side."""
    c = P[k].contracts
    lot = mkt.lot[k]
    side = sign_nb(desired)
    lower = abs(c) if (c != 0.0 and sign_nb(c) == side) else 0.0
    if lot > 0.0:
        lo = np.int64(round(abs(lower) / lot))
        hi = np.int64(round(abs(desired) / lot))
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if order_allowed_nb(mkt, t, P, W, iso, lev, fee, k, side * (mid * lot), price, fs):
                lo = mid
            else:
                hi = mid
        return side * (lo * lot) if lo > 0 else 0.0
    lo_q = lower
    hi_q = abs(desired)
    for _ in range(BISECT_STEPS):
        mid = 0.5 * (lo_q + hi_q)
        if mid <= lo_q or mid >= hi_q:
            break
        if order_allowed_nb(mkt, t, P, W, iso, lev, fee, k, side * mid, price, fs):
            lo_q = mid
        else:
            hi_q = mid
    return side * lo_q


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------

@njit(cache=True, _nrt=False)
def slot_nb(o, r, j, buf):
    """Slot of column j's next record in buffer r; the spare last slot once past capacity (the
    count keeps going: the wrapper reruns with the exact capacities)."""
    c = o.counts[r, j]
    o.counts[r, j] = c + 1
    return o.rstart[r, j] + c if c < o.rcap[r, j] else buf.shape[0] - 1


@njit(cache=True, _nrt=False)
def put_fill_nb(o, t, j, inst, price, size, notional, fee, status, reason):
    """Column j's next fill record (``book_fill_dt``)."""
    r = o.fills[slot_nb(o, 0, j, o.fills)]
    r.bar = t
    r.col = j
    r.instrument = inst
    r.price = price
    r.size = size
    r.notional = notional
    r.fee = fee
    r.status = status
    r.reason = reason


@njit(cache=True, _nrt=False)
def write_fill_nb(mkt, o, t, j, k, price, size, fee, status, reason):
    """A fill of perpetual k: notional ``|size| * v(price)``."""
    put_fill_nb(o, t, j, k, price, size, abs(size) * value_nb(mkt, k, price), fee, status, reason)


# --------------------------------------------------------------------------------------------
# Option legs (docs/mechanics.md, "Options in a book")
# --------------------------------------------------------------------------------------------

@njit(cache=True, _nrt=False)
def write_option_fill_nb(o, t, j, inst, price, size, fee, status, reason):
    """A fill of an option leg (instrument ``K + leg``): price per contract, notional = premium."""
    put_fill_nb(o, t, j, inst, price, size, abs(size) * price, fee, status, reason)


@njit(cache=True, _nrt=False)
def option_trade_nb(o, A, S, t, j, inst, size, price, fee, status, reason):
    """Buy (size > 0) or sell (size < 0) contracts of an option leg at ``price``, ``fee`` in
    all: the cash into/out of W, the price PnL and the fee into the leg, and its fill record
    (the reference's ``opt_trade``)."""
    A.wallet += -size * price - fee
    S.realised += -size * price
    S.fees += fee
    A.cum_fees += fee
    S.contracts += size
    write_option_fill_nb(o, t, j, inst, price, size, fee, status, reason)


@njit(cache=True, _nrt=False)
def option_fee_nb(mkt, q, p, price):
    """Trading fee per contract of leg q at path index p: ``min(fee_rate*unit, fee_cap*price)``."""
    return min(mkt.o_fee_rate[q] * mkt.o_unit[p, q], mkt.o_fee_cap[q] * price)


@njit(cache=True, _nrt=False)
def option_dust_nb(want, held):
    """An option order within rounding dust of the held count is not placed (``DUST_RTOL``,
    as a perpetual without lots)."""
    return abs(want - held) <= DUST_RTOL * max(want, held)


@njit(cache=True, _nrt=False)
def options_value_nb(Q, vals, p):
    """``sum_j q_j * vals[p, j]`` over the legs holding contracts (a plain sum in leg order)."""
    x = 0.0
    for q in range(Q.shape[0]):
        c = Q[q].contracts
        if c != 0.0:
            x += c * vals[p, q]
    return x


@njit(cache=True, _nrt=False)
def lend_nb(A, x):
    """Add the options' collateral value ``x`` to W for a margin step (:func:`restore_nb`)."""
    A.lent = x
    A.w_before = A.wallet
    if x != 0.0:
        A.wallet += x
    A.w_lent = A.wallet


@njit(cache=True, _nrt=False)
def real_wallet_nb(A):
    """W without the collateral value lent to it (exactly the W before, when unchanged)."""
    if A.lent == 0.0:
        return A.wallet
    return A.w_before if A.wallet == A.w_lent else A.wallet - A.lent


@njit(cache=True, _nrt=False)
def restore_nb(A):
    """Take the lent collateral back out of W (exactly the W before, when the step left W
    alone); nothing when a cross liquidation sold the options (``lent`` is then 0)."""
    if A.lent != 0.0:
        if A.wallet == A.w_lent:
            A.wallet = A.w_before
        else:
            A.wallet -= A.lent
    A.lent = 0.0


@njit(cache=True, _nrt=False)
def settle_options_nb(mkt, o, A, Q, t, j, K):
    """Step 1, after the open instant's prints: each leg's count going into the roll is kept,
    and an expired contract is settled at its payoff less the delivery fee."""
    p = t - 1
    for q in range(Q.shape[0]):
        S = Q[q]
        S.keep = S.contracts
        c = S.contracts
        if mkt.o_roll[p, q] == ROLL_SETTLE and c != 0.0:
            pay = mkt.o_old[p, q]
            dfee = mkt.o_dfee[p, q]
            fee = c * dfee
            A.wallet += c * (pay - dfee)
            S.realised += c * pay
            S.fees += fee
            A.cum_fees += fee
            S.contracts = 0.0
            write_option_fill_nb(o, t, j, K + q, pay, -c, fee, np.int64(ST_FILLED), np.int64(RS_SETTLE))


@njit(cache=True, _nrt=False)
def sell_options_nb(mkt, prm, o, A, Q, t, j, K, at_open):
    """A cross liquidation with the options as collateral: every leg sold at its collateral
    value (``old[t-1]`` on a gap at the opens, else ``adv[t]``), no fee; the proceeds are the
    value already lent to W. ``after_liquidation='stop'`` freezes the legs."""
    for q in range(Q.shape[0]):
        S = Q[q]
        S.keep = 0.0  # nothing is left to re-buy on a roll
        c = S.contracts
        if c != 0.0:
            v = mkt.o_old[t - 1, q] if at_open else mkt.o_adv[t, q]
            S.realised += c * v
            S.contracts = 0.0
            write_option_fill_nb(o, t, j, K + q, v, -c, 0.0, np.int64(ST_FILLED), np.int64(RS_LIQ))
        if prm.after_liq[j] == AFTER_STOP:
            S.stopped = True
    A.lent = 0.0


@njit(cache=True, _nrt=False)
def option_want_nb(mkt, prm, A, Q, t, j, K, q, e_open):
    """Leg q's wanted contracts at bar t's open (NaN: no order): ``target * E_open / unit``
    (policy-scaled; ``E_open`` dust: 0), or the kept count on a roll for a NaN target."""
    p = t - 1
    if Q[q].stopped or not np.isfinite(mkt.o_val[p, q]):
        return np.nan
    raw = prm.target[t - prm.lag, K + q, j]
    if np.isnan(raw):
        r = mkt.o_roll[p, q]
        return Q[q].keep if (r == ROLL_SETTLE or r == ROLL_EARLY) else np.nan
    e = policy_target_nb(raw, prm.pol_kind[j], prm.pol_maxdd[j], prm.pol_floor[j], prm.pol_mult[j],
                         prm.pol_ratchet[j], prm.pol_maxexp[j], A.prev_equity, A.peak, prm.init_cap[j])
    if e_open <= DUST_RTOL * prm.init_cap[j]:
        return 0.0
    return max(e, 0.0) * e_open / mkt.o_unit[p, q]


@njit(cache=True, _nrt=False)
def option_sales_nb(mkt, prm, o, A, Q, t, j, K, e_open):
    """Step 3, the option legs' reductions (after the perpetuals'): an early roll sells the old
    contracts whole (reason ``roll``), then a leg above its wanted count sells the excess."""
    p = t - 1
    slip = mkt.o_slip
    for q in range(Q.shape[0]):
        S = Q[q]
        if S.stopped:
            continue
        if mkt.o_roll[p, q] == ROLL_EARLY and S.contracts != 0.0:
            c = S.contracts
            px = mkt.o_old[p, q] * (1.0 - slip[q])
            option_trade_nb(o, A, S, t, j, K + q, -c, px, c * option_fee_nb(mkt, q, p, px), np.int64(ST_FILLED),
                            np.int64(RS_ROLL))
        want = option_want_nb(mkt, prm, A, Q, t, j, K, q, e_open)
        if np.isnan(want) or want >= S.contracts or option_dust_nb(want, S.contracts):
            continue
        d = S.contracts - want
        px = mkt.o_val[p, q] * (1.0 - slip[q])
        option_trade_nb(o, A, S, t, j, K + q, -d, px, d * option_fee_nb(mkt, q, p, px), np.int64(ST_FILLED),
                        np.int64(RS_TARGET))


@njit(cache=True, _nrt=False)
def option_purchases_nb(mkt, prm, o, A, P, Q, iso, lev, t, j, e_open, fs):
    """Step 3, the option legs' increases (after the perpetuals'): each purchase paid from W
    and checked against the cross account's free margin at the trade opens, options excluded:
    ``sum_cross N_i/L_i + d*(price + fee) <= W + sum_cross uPnL_i``; clip (closed form) or reject."""
    p = t - 1
    K = P.shape[0]
    for q in range(Q.shape[0]):
        S = Q[q]
        want = option_want_nb(mkt, prm, A, Q, t, j, K, q, e_open)
        if np.isnan(want) or want <= S.contracts or option_dust_nb(want, S.contracts):
            continue
        reason = RS_ROLL if np.isnan(prm.target[t - prm.lag, K + q, j]) else RS_TARGET
        d = want - S.contracts
        px = mkt.o_val[p, q] * (1.0 + mkt.o_slip[q])
        f1 = option_fee_nb(mkt, q, p, px)
        per = px + f1
        nu = np.int64(0)
        ni = np.int64(0)
        for i in range(K):
            if is_member_nb(P, iso, np.int64(CROSS_G), i):
                po = mkt.open[t, i]
                nu = fsum_add_nb(fs[0], nu, pos_upnl_nb(mkt, P, i, po))
                ni = fsum_add_nb(fs[1], ni, abs(P[i].contracts) * value_nb(mkt, i, po) / lev[i])
        available = A.wallet + fsum_value_nb(fs[0], nu)
        im = fsum_value_nb(fs[1], ni)
        status = ST_FILLED
        if not fits_nb(im + d * per, available):
            if prm.excess[j] == EXCESS_REJECT:
                write_option_fill_nb(o, t, j, K + q, px, d, 0.0, np.int64(ST_REJECTED), reason)
                continue
            fit = max(0.0, (available - im) / per) if per > 0.0 else d
            d = min(d, fit)
            status = ST_CLIPPED
        option_trade_nb(o, A, S, t, j, K + q, d, px, d * f1, status, reason)



# --------------------------------------------------------------------------------------------
# The steps of a bar
# --------------------------------------------------------------------------------------------

@njit(cache=True, _nrt=False)
def pay_funding_nb(fe, o, A, P, iso, mkt, j, e):
    """Print e on its instrument's position (cross: into W; isolated: into M_k); the position
    that paid is stored (``fpos``), from which the wrapper builds the funding records."""
    k = fe.k[e]
    C = P[k].contracts
    if C == 0.0:
        return
    amount = funding_amount_nb(C, fe.mark[e], fe.rate[e], mkt.cs[k], mkt.inverse)
    if iso[k]:
        P[k].margin += amount
    else:
        A.wallet += amount
    P[k].funding += amount
    A.cum_funding += amount
    o.fpos[j, e] = C



@njit(cache=True, _nrt=False)
def liquidate_nb(mkt, prm, o, A, P, Q, in_call, iso, t, j, g, marks, s, gap, at_open, scr, ids):
    """Close every position of group g at its mark in ``marks`` (Binance: the account is
    liquidated as a whole; the clearance fee on each position) and write one liquidation record
    per position: its trigger (its own liquidation price with the others at their execution
    marks), execution mark, size, fee charged and share of the deficit."""
    fs = scr[9:12]  # scratch of the correctly rounded sums
    K = P.shape[0]
    upn, mmv, clear, charged, shares = scr[0], scr[1], scr[2], scr[3], scr[4]
    at_marks, start, trig, sizes = scr[5], scr[6], scr[7], scr[8]
    n = np.int64(0)
    for k in range(K):
        if is_member_nb(P, iso, g, k):
            ids[n] = k
            upn[n] = pos_upnl_nb(mkt, P, k, marks[k])
            mmv[n] = pos_mm_nb(mkt, t, k, P[k].contracts, marks[k])
            clear[n] = mkt.liq_fee[k] * abs(P[k].contracts) * value_nb(mkt, k, marks[k])
            n += 1
    for k in range(K):
        # the other positions at their mark opens (the state the path starts from)
        at_marks[k] = marks[k] if is_member_nb(P, iso, g, k) else mkt.mark_open[t, k]
        start[k] = (mkt.prev_mark_close[t, k] if at_open else mkt.mark_open[t, k]) if mkt.listed[t, k] else 0.0
    # the options: at the open, the contracts held then (a gap: old[t-1]; step 5, after the bar's
    # rolls: val[t-1]); at the execution point adv[t] (a gap: old[t-1]); W without the lent value
    opt = Q.shape[0] > 0 and t >= 1
    ov_start = options_value_nb(Q, mkt.o_old if at_open else mkt.o_val, t - 1) if opt else 0.0
    ov_exec = (options_value_nb(Q, mkt.o_old, t - 1) if at_open else options_value_nb(Q, mkt.o_adv, t)) if opt \
        else 0.0
    w_real = real_wallet_nb(A)
    equity_start = equity_nb(mkt, P, w_real, start, fs, ov_start)
    equity_before = equity_nb(mkt, P, w_real, at_marks, fs, ov_exec)
    if g == CROSS_G and prm.coll[j] and Q.shape[0] > 0:
        # the options count as collateral: sold into W (their value is lent there) first
        sell_options_nb(mkt, prm, o, A, Q, t, j, K, at_open)
    balance = A.wallet if g == CROSS_G else P[g].margin
    for i in range(n):
        k = ids[i]
        nm = np.int64(0)
        nu = np.int64(0)
        if g == CROSS_G:  # TMM1, UPNL1 of the others (mechanics.cross_others)
            for q in range(n):
                if q != i:
                    nm = fsum_add_nb(fs[0], nm, mmv[q])
                    nu = fsum_add_nb(fs[1], nu, upn[q])
        other_mm = fsum_value_nb(fs[0], nm)
        other_upnl = fsum_value_nb(fs[1], nu)
        ver = mkt.tier_ver[t, k]
        lp = solve_price_nb(P[k].contracts, P[k].entry, balance - other_mm + other_upnl, mkt.cs[k], mkt.inverse,
                            mkt.tiers[k], ver, mkt.ntiers[k, ver], 1.0)
        trig[i] = lp if level_ok_nb(lp) else marks[k]
    if g == CROSS_G:
        A.wallet = cross_liquidation_outcome_nb(A.wallet, upn[:n], clear[:n], charged, shares, fs)
    else:
        keep, deficit, fee = isolated_liquidation_outcome_nb(
            P[g].margin, upn[0], abs(P[g].contracts) * value_nb(mkt, g, marks[g]), mkt.liq_fee[g])
        charged[0] = fee
        shares[0] = deficit
        A.wallet += keep
        P[g].margin = 0.0
    for i in range(n):
        k = ids[i]
        sizes[i] = P[k].contracts
        P[k].liquidation += upn[i] - charged[i] + shares[i]
        A.cum_fees += charged[i]
        P[k].contracts = 0.0
        P[k].entry = 0.0
    in_call[g + 1] = False
    ov_after = 0.0
    if opt:
        ov_after = options_value_nb(Q, mkt.o_old, t - 1) if at_open else options_value_nb(Q, mkt.o_adv, t)
    equity_after = equity_nb(mkt, P, real_wallet_nb(A), at_marks, fs, ov_after)
    for i in range(n):
        k = ids[i]
        r = o.liqs[slot_nb(o, 2, j, o.liqs)]
        r.bar = t
        r.col = j
        r.instrument = k
        r.s = s
        r.trigger_price = trig[i]
        r.price = marks[k]
        r.size = sizes[i]
        r.clearance_fee = charged[i]
        r.deficit = shares[i]
        r.gap = 1 if gap else 0
        r.equity_start = equity_start
        r.equity_before = equity_before
        r.equity_after = equity_after
    if prm.after_liq[j] == AFTER_STOP:
        # a cross liquidation stops every cross-mode instrument, an isolated one its own
        for k in range(K):
            if (g == CROSS_G and not iso[k]) or k == g:
                P[k].stopped = True


@njit(cache=True, _nrt=False)
def gap_check_nb(mkt, prm, o, A, P, Q, in_call, iso, t, j, marks, scr, ids):
    """Step 2: each margin group (the cross account, then each isolated position) already
    liquidatable at its mark opens is liquidated there (``gap = 1``)."""
    fs = scr[9:12]  # scratch of the correctly rounded sums
    K = P.shape[0]
    for q in range(K + 1):
        g = q - 1
        if g != CROSS_G and not iso[g]:
            continue
        for k in range(K):
            marks[k] = mkt.mark_open[t, k]
        if past_threshold_nb(mkt, t, P, A.wallet, iso, g, 1.0, marks, fs):
            liquidate_nb(mkt, prm, o, A, P, Q, in_call, iso, t, j, g, marks, 0.0, np.bool_(True), np.bool_(True), scr,
                         ids)


@njit(cache=True, _nrt=False)
def orders_nb(mkt, prm, o, A, P, Q, iso, lev, fee, t, j, scr):
    """Step 3: size every order from the account's equity at the trade opens, execute the
    reductions (book order), then the increases, opens and flips, each checked against the
    account as the earlier fills left it (clip or reject)."""
    fs = scr[9:12]  # scratch of the correctly rounded sums
    K = P.shape[0]
    opens, desired, price, pending = scr[0], scr[1], scr[2], scr[3]
    for k in range(K):
        opens[k] = mkt.open[t, k] if mkt.listed[t, k] else 0.0
    J = Q.shape[0]
    opt = J > 0 and t >= 1  # a leg trades from the close instant of bar t - 1
    e_open = equity_nb(mkt, P, A.wallet, opens, fs, options_value_nb(Q, mkt.o_old, t - 1) if opt else 0.0)
    init = prm.init_cap[j]
    any_order = opt
    for k in range(K):
        pending[k] = 0.0
        raw = prm.target[t - prm.lag, k, j]
        if np.isnan(raw) or not mkt.listed[t, k] or P[k].stopped:
            continue
        e = policy_target_nb(raw, prm.pol_kind[j], prm.pol_maxdd[j], prm.pol_floor[j], prm.pol_mult[j],
                             prm.pol_ratchet[j], prm.pol_maxexp[j], A.prev_equity, A.peak, init)
        if e_open <= DUST_RTOL * init:  # nothing (or float dust) to size from: close only
            want = 0.0
        else:
            want = round_lots_nb(e * e_open / value_nb(mkt, k, mkt.open[t, k]), mkt.lot[k])
        c = P[k].contracts
        if same_size_nb(want, c, mkt.lot[k]):
            continue
        d = want - c
        pf = mkt.open[t, k] * (1.0 + prm.slip[j] * sign_nb(d))
        if want != 0.0 and not fits_nb(mkt.min_notional[k], order_usd_nb(mkt, k, d, pf)):
            continue
        desired[k] = want
        price[k] = pf
        # 1: a reduction (executes first), 2: adds exposure
        pending[k] = 2.0 if adds_exposure_nb(c, want) else 1.0
        any_order = True
    if not any_order:
        return
    for k in range(K):
        if pending[k] == 1.0:
            d = desired[k] - P[k].contracts
            W, f = execute_nb(mkt, P, A.wallet, k, desired[k], price[k], iso[k], lev[k], fee[k], np.bool_(False))
            A.wallet = W
            A.cum_fees += f
            write_fill_nb(mkt, o, t, j, k, price[k], d, f, np.int64(ST_FILLED), np.int64(RS_TARGET))
    if opt:
        option_sales_nb(mkt, prm, o, A, Q, t, j, K, e_open)
    for k in range(K):
        if pending[k] == 2.0:
            c = P[k].contracts
            want = desired[k]
            pf = price[k]
            d = want - c
            status = ST_FILLED
            if not order_allowed_nb(mkt, t, P, A.wallet, iso, lev, fee, k, want, pf, fs):
                if prm.excess[j] == EXCESS_REJECT:
                    write_fill_nb(mkt, o, t, j, k, pf, d, 0.0, np.int64(ST_REJECTED), np.int64(RS_TARGET))
                    continue
                want = largest_allowed_nb(mkt, t, P, A.wallet, iso, lev, fee, k, want, pf, fs)
                if same_size_nb(want, c, mkt.lot[k]):
                    want = c
                if want != 0.0 and not fits_nb(mkt.min_notional[k], order_usd_nb(mkt, k, want - c, pf)):
                    want = c
                d = want - c
                status = ST_CLIPPED
            W, f = execute_nb(mkt, P, A.wallet, k, want, pf, iso[k], lev[k], fee[k], np.bool_(False))
            A.wallet = W
            A.cum_fees += f
            write_fill_nb(mkt, o, t, j, k, pf, d, f, status, np.int64(RS_TARGET))
    if opt:
        option_purchases_nb(mkt, prm, o, A, P, Q, iso, lev, t, j, e_open, fs)


@njit(cache=True, _nrt=False)
def pay_prints_nb(fe, o, A, P, iso, mkt, t, j, ptr, at_open):
    """Steps 1 and 4: the prints of bar t at the open instant (``at_open``), or strictly inside
    the bar, of every listed instrument not stopped; returns the next print's index."""
    E = fe.bar.shape[0]
    while ptr < E and fe.bar[ptr] == t and (fe.at_open[ptr] or not at_open):
        k = fe.k[ptr]
        if mkt.listed[t, k] and not P[k].stopped:
            pay_funding_nb(fe, o, A, P, iso, mkt, j, ptr)
        ptr += 1
    return ptr


@njit(cache=True, _nrt=False)
def call_sizes_nb(mkt, P, iso, g, q, sizes):
    """Every position of group g cut by the common fraction q (each lot-rounded)."""
    for k in range(P.shape[0]):
        if is_member_nb(P, iso, g, k):
            c = P[k].contracts
            sizes[k] = round_lots_nb(c * q, mkt.lot[k]) if q < 1.0 else c


@njit(cache=True, _nrt=False)
def within_target_nb(ratio, target):
    """A margin-call cut's ratio is at most the call target up to the exchange checks'
    tolerance (``fits_nb``, ``CHECK_RTOL``): a size whose ratio is the target in exact arithmetic
    passes whatever the last bit of the sums (the engine's closed form keeps it)."""
    return ratio != np.inf and fits_nb(ratio, target)


@njit(cache=True, _nrt=False)
def reduce_for_call_nb(mkt, prm, o, A, P, T, iso, lev, fee, t, j, g, marks, scr):
    """Margin-call ``reduce``: cut every position of group g by one common fraction (each
    lot-rounded) to the largest size whose ratio at the call marks, after the fills (slippage,
    fees; isolated: margin and the cut's PnL kept with the position), is at most the target
    (:func:`within_target_nb`);
    found by the reference's bisection on the fraction, each trial on a copy ``T`` of the
    positions."""
    fs = scr[9:12]  # scratch of the correctly rounded sums
    K = P.shape[0]
    sizes = scr[0]
    mb, mm, cnt = group_margin_nb(mkt, t, P, A.wallet, iso, g, marks, fs)
    if mb <= 0.0:
        return  # nothing left to protect; the liquidation check decides
    slip = prm.slip[j]
    tau = prm.tau[j]
    lo = 0.0
    hi = 1.0
    for _ in range(BISECT_STEPS):
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            break
        call_sizes_nb(mkt, P, iso, g, mid, sizes)
        for k in range(K):
            T[k].contracts = P[k].contracts
            T[k].entry = P[k].entry
            T[k].margin = P[k].margin
        W = A.wallet
        for k in range(K):
            if is_member_nb(P, iso, g, k):
                pf = marks[k] * (1.0 + slip * sign_nb(sizes[k] - T[k].contracts))
                W, _ = execute_nb(mkt, T, W, k, sizes[k], pf, iso[k], lev[k], fee[k], np.bool_(True))
        mb_t, mm_t, cnt_t = group_margin_nb(mkt, t, T, W, iso, g, marks, fs)
        if within_target_nb(ratio_of_nb(mb_t, mm_t, cnt_t), tau):
            lo = mid
        else:
            hi = mid
    call_sizes_nb(mkt, P, iso, g, lo, sizes)
    for k in range(K):
        if is_member_nb(P, iso, g, k):
            new_c = sizes[k]
            pf = marks[k] * (1.0 + slip * sign_nb(new_c - P[k].contracts))
            d = new_c - P[k].contracts
            W, f = execute_nb(mkt, P, A.wallet, k, new_c, pf, iso[k], lev[k], fee[k], np.bool_(True))
            A.wallet = W
            A.cum_fees += f
            write_fill_nb(mkt, o, t, j, k, pf, d, f, np.int64(ST_FILLED), np.int64(RS_CALL))


@njit(cache=True, _nrt=False)
def top_up_for_call_nb(mkt, prm, A, P, iso, t, j, g, marks, fs):
    """Margin-call ``top_up``: add ``MM/target - MB`` (at most the reserve left) to W (cross)
    or M_g; returns the amount."""
    mb, mm, _ = group_margin_nb(mkt, t, P, A.wallet, iso, g, marks, fs)
    x = max(0.0, min(mm / prm.tau[j] - mb, A.reserve_left))
    if g == CROSS_G:
        A.wallet += x
    else:
        P[g].margin += x
    A.capital_added += x
    A.reserve_left -= x
    return x


@njit(cache=True, _nrt=False)
def n_paths_nb(P, iso, g, alone):
    """``together``: one path (every mark moves); ``alone``: one per cross position (> 1)."""
    if g != CROSS_G or not alone:
        return 0
    cnt = np.int64(0)
    for k in range(P.shape[0]):
        if is_member_nb(P, iso, g, k):
            cnt += 1
    return cnt if cnt > 1 else 0


@njit(cache=True, _nrt=False)
def nth_path_nb(P, iso, g, q, multi):
    """The q-th path of group g: PATH_ALL when there is one path, else its q-th position."""
    if multi == 0:
        return PATH_ALL
    seen = np.int64(0)
    for k in range(P.shape[0]):
        if is_member_nb(P, iso, g, k):
            if seen == q:
                return k
            seen += 1
    return PATH_ALL


@njit(cache=True, _nrt=False)
def margin_check_nb(mkt, prm, o, A, P, Q, T, in_call, iso, lev, fee, t, j, g, marks, scr, ids):
    """Step 5 for group g: a margin call at the first point of the path where the ratio
    reaches the threshold (with its response), then a liquidation at the first point where
    ``MB <= MM``; returns the group's ratio at the path's end afterwards."""
    fs = scr[9:12]  # scratch of the correctly rounded sums
    ends = scr[12:14]  # the path's ends (solve_path_nb)
    theta = prm.thr[j]
    alone = prm.alone[j]
    multi = n_paths_nb(P, iso, g, alone)
    if not group_open_nb(P, iso, g):
        return 0.0
    if not in_call[g + 1]:
        # the common bar: every path's end below the threshold and not liquidatable, so
        # nothing happens and the end ratios computed here are the answer (instead of
        # computing them three times: the call check, the liquidation check, the end ratio)
        quiet = True
        worst = 0.0
        for q in range(max(multi, 1)):
            path = nth_path_nb(P, iso, g, q, multi)
            marks_at_nb(mkt, t, P, iso, g, path, 1.0, marks)
            mb, mm, cnt = group_margin_nb(mkt, t, P, A.wallet, iso, g, marks, fs)
            r_end = ratio_of_nb(mb, mm, cnt)
            if r_end >= theta or mb <= mm:
                quiet = False
                break
            worst = r_end if q == 0 else max(worst, r_end)
        if quiet:
            return worst
        for q in range(max(multi, 1)):
            path = nth_path_nb(P, iso, g, q, multi)
            marks_at_nb(mkt, t, P, iso, g, path, 1.0, marks)
            mb, mm, cnt = group_margin_nb(mkt, t, P, A.wallet, iso, g, marks, fs)
            if ratio_of_nb(mb, mm, cnt) >= theta:
                in_call[g + 1] = True
                bar_path_nb(mkt, t, P, iso, g, ends)
                s = solve_path_nb(mkt, t, P, A.wallet, iso, g, path, theta, ends, marks, fs)
                mb, mm, cnt = group_margin_nb(mkt, t, P, A.wallet, iso, g, marks, fs)
                ratio_at_call = ratio_of_nb(mb, mm, cnt)
                amount = 0.0
                resp = prm.resp[j]
                if resp == RESP_REDUCE:
                    reduce_for_call_nb(mkt, prm, o, A, P, T, iso, lev, fee, t, j, g, marks, scr)
                elif resp == RESP_TOP_UP:
                    amount = top_up_for_call_nb(mkt, prm, A, P, iso, t, j, g, marks, fs)
                r = o.calls[slot_nb(o, 1, j, o.calls)]
                r.bar = t
                r.col = j
                r.instrument = g
                r.path = path
                r.s = s
                r.margin_ratio = ratio_at_call
                r.response = resp
                r.amount = amount
                break
    if group_open_nb(P, iso, g):
        multi = n_paths_nb(P, iso, g, alone)
        for q in range(max(multi, 1)):
            path = nth_path_nb(P, iso, g, q, multi)
            marks_at_nb(mkt, t, P, iso, g, path, 1.0, marks)
            if past_threshold_nb(mkt, t, P, A.wallet, iso, g, 1.0, marks, fs):
                bar_path_nb(mkt, t, P, iso, g, ends)
                s = solve_path_nb(mkt, t, P, A.wallet, iso, g, path, 1.0, ends, marks, fs)
                gap = s == 0.0 and past_threshold_nb(mkt, t, P, A.wallet, iso, g, 1.0, marks, fs)
                liquidate_nb(mkt, prm, o, A, P, Q, in_call, iso, t, j, g, marks, s, gap, np.bool_(False), scr, ids)
                break
    return end_ratio_nb(mkt, t, P, A.wallet, iso, g, alone, marks, fs)


@njit(cache=True, _nrt=False)
def end_ratio_nb(mkt, t, P, W, iso, g, alone, marks, fs):
    """Group g's ratio at the end of the bar's adverse path (the worst path's, ``alone``); 0
    for a group without positions."""
    if not group_open_nb(P, iso, g):
        return 0.0
    multi = n_paths_nb(P, iso, g, alone)
    worst = 0.0
    for q in range(max(multi, 1)):
        path = nth_path_nb(P, iso, g, q, multi)
        marks_at_nb(mkt, t, P, iso, g, path, 1.0, marks)
        mb, mm, cnt = group_margin_nb(mkt, t, P, W, iso, g, marks, fs)
        r_end = ratio_of_nb(mb, mm, cnt)
        worst = r_end if q == 0 else max(worst, r_end)
    return worst


@njit(cache=True, _nrt=False)
def group_open_nb(P, iso, g):
    """Group g holds a position."""
    for k in range(P.shape[0]):
        if is_member_nb(P, iso, g, k):
            return True
    return False


@njit(cache=True, _nrt=False)
def close_nb(mkt, prm, o, A, P, Q, in_call, iso, t, j, adverse_ratio, scr):
    """Step 6: valuation at the mark closes (account series, per-position series), the end of
    call episodes whose ratio is back below the threshold, the policies' equity and peak.
    Only what is stored or decides something is computed: the groups' ratios when the ratio
    series is stored or a group is in a call, the per-position series and the gross notional
    when stored (a sweep storing the equity alone values each bar with one sum)."""
    fs = scr[9:12]  # scratch of the correctly rounded sums
    K = P.shape[0]
    closes, upn, mmv = scr[0], scr[1], scr[2]
    for k in range(K):
        closes[k] = mkt.mark_close[t, k] if mkt.listed[t, k] else 0.0
    J = Q.shape[0]
    ov = options_value_nb(Q, mkt.o_old, t) if J > 0 else 0.0  # the contracts held, at this close
    w_mb = A.wallet + ov if (J > 0 and prm.coll[j] and ov != 0.0) else A.wallet  # the cross MB's W
    if prm.pol_kind[j] == POL_DRAWDOWN or prm.pol_kind[j] == POL_CPPI:
        equity = equity_nb(mkt, P, A.wallet, closes, fs, ov)
    else:
        equity = close_equity_nb(mkt, P, A.wallet, closes, ov)
    se, ss = o.series, o.sslot
    ps, ls = o.pseries, o.pslot
    any_call = False
    for g in range(K + 1):
        any_call = any_call or in_call[g]
    want_pos = False
    for q in range(ls.shape[0]):
        want_pos = want_pos or ls[q] >= 0
    if ss[S_RATIO] >= 0 or any_call or want_pos:
        # the groups' ratios at the closes (the cross account first)
        worst = 0.0
        thr = prm.thr[j]
        for k in range(K):
            upn[k] = 0.0
            mmv[k] = 0.0
            if P[k].contracts != 0.0:
                upn[k] = pos_upnl_nb(mkt, P, k, closes[k])
                mmv[k] = pos_mm_nb(mkt, t, k, P[k].contracts, closes[k])
                if iso[k]:
                    r_k = ratio_of_nb(P[k].margin + upn[k], mmv[k], np.int64(1))
                    worst = max(worst, r_k)
                    if in_call[k + 1] and r_k < thr:
                        in_call[k + 1] = False
            elif iso[k] and in_call[k + 1]:
                in_call[k + 1] = False  # no position: ratio 0, below the threshold
        mb, mm, n_cross = group_margin_nb(mkt, t, P, w_mb, iso, np.int64(CROSS_G), closes, fs)
        r_cross = ratio_of_nb(mb, mm, n_cross)
        worst = max(worst, r_cross)
        if in_call[0] and r_cross < thr:
            in_call[0] = False
        put3_nb(se, ss[S_RATIO], j, t, worst)
    if want_pos or ss[S_GROSS] >= 0:
        gross = 0.0  # a plain sum: stored, decides nothing
        want_liq = ls[P_LIQ] >= 0
        for k in range(K):
            C = P[k].contracts
            notional = C * value_nb(mkt, k, closes[k]) if C != 0.0 else 0.0
            gross += abs(notional)
            if want_pos:
                liq = 0.0
                if C != 0.0 and want_liq:
                    liq = position_liq_price_nb(mkt, t, P, w_mb, iso, k, upn, mmv, fs)
                put4_nb(ps, ls[P_POSITION], k, j, t, C)
                put4_nb(ps, ls[P_NOTIONAL], k, j, t, notional)
                put4_nb(ps, ls[P_LIQ], k, j, t, liq)
                put4_nb(ps, ls[P_PRICE], k, j, t, P[k].realised + upn[k])
                put4_nb(ps, ls[P_FUNDING], k, j, t, P[k].funding)
                put4_nb(ps, ls[P_FEES], k, j, t, P[k].fees)
                put4_nb(ps, ls[P_LIQUIDATION], k, j, t, P[k].liquidation)
        if want_pos:
            for q in range(J):
                c = Q[q].contracts
                put4_nb(ps, ls[P_POSITION], K + q, j, t, c)
                put4_nb(ps, ls[P_NOTIONAL], K + q, j, t, 0.0)  # delta-equivalent: filled by the wrapper
                put4_nb(ps, ls[P_LIQ], K + q, j, t, 0.0)
                put4_nb(ps, ls[P_PRICE], K + q, j, t, Q[q].realised + (c * mkt.o_old[t, q] if c != 0.0 else 0.0))
                put4_nb(ps, ls[P_FUNDING], K + q, j, t, 0.0)
                put4_nb(ps, ls[P_FEES], K + q, j, t, Q[q].fees)
                put4_nb(ps, ls[P_LIQUIDATION], K + q, j, t, 0.0)
        put3_nb(se, ss[S_GROSS], j, t, gross / equity if equity > 0.0 else 0.0)
    if ss[S_DIST] >= 0:
        # options as collateral count at their close value (their response to the move is not
        # modelled: docs/mechanics.md, "Books", step 6)
        put3_nb(se, ss[S_DIST], j, t, liq_distance_nb(mkt, t, P, w_mb, iso, closes, scr[12:14], scr[3], fs))
    usd = mkt.mark_close[t, mkt.usd_k[t]] if mkt.inverse else 1.0
    put3_nb(se, ss[S_EQUITY], j, t, equity)
    put3_nb(se, ss[S_EQUITY_USD], j, t, equity * usd if mkt.inverse else equity)
    put3_nb(se, ss[S_RATIO_ADV], j, t, adverse_ratio)
    put3_nb(se, ss[S_FUNDING], j, t, A.cum_funding)
    put3_nb(se, ss[S_FEES], j, t, A.cum_fees)
    put3_nb(se, ss[S_ADDED], j, t, A.capital_added)
    A.prev_equity = equity
    A.peak = max(A.peak, equity)


@njit(cache=True, _nrt=False)
def put3_nb(out, slot, j, t, val):
    if slot >= 0:
        out[slot, j, t] = val


@njit(cache=True, _nrt=False)
def put4_nb(out, slot, k, j, t, val):
    if slot >= 0:
        out[slot, k, j, t] = val


# --------------------------------------------------------------------------------------------
# Quiet stretches
# --------------------------------------------------------------------------------------------

# A quiet bar has no funding print (but at its open instant, paid by step 1 before the bar is
# found quiet), no tier-table change and no listing for any instrument (``mkt.nxt``,
# ``mkt.open_prints_only``), no order of its column (``prm.obits``), no group in a call, and every
# group's margin ratio below the call threshold at every mark the bar's steps look at (the mark
# opens, every point of every intrabar path, the closes). Steps 1 to 5 then do nothing (no
# print, no gap liquidation, no order, no call, no liquidation) and the bar is step 6 alone;
# a run of such bars is valued without the other steps (the engine's quiet stretches, for a
# book): at an 8-hour rebalance with 8-hourly funding at the bars' opens, 7 bars out of 8.
#
# The safety check is conservative, one check for the whole stretch: every open position's mark
# at its most adverse over the stretch (a short's highest mark high, a long's lowest mark low),
# all together. Each position adds ``MM_k(P) - thr * uPnL_k(P)`` to ``MM - thr * MB`` (which
# is negative exactly when the ratio is below ``thr``); that term grows as its mark moves
# against the position when ``thr`` exceeds every maintenance rate (its slope is
# ``|C| * (thr - mmr)`` per unit of contract value moved, the tier's ``mmr``, continuous across
# tiers), so its worst over the stretch's marks is at that extreme, and the group's worst is the
# sum of its terms' worsts. A column whose threshold does not exceed ``mmr_max`` takes no
# stretches.

@njit(cache=True, _nrt=False)
def next_order_nb(prm, j, t, n):
    """The first bar >= t at which column j has a target order (row ``t - lag`` holds a value
    for some instrument), from the bitmap ``prm.obits``; n: none."""
    ob = prm.obits
    nwords = ob.shape[0]
    r = max(t - prm.lag, 0)
    k = r >> 6
    w = ob[k, j] & (ALL_BITS << np.uint64(r & 63)) if k < nwords else np.uint64(0)
    while w == 0 and k < nwords - 1:
        k += 1
        w = ob[k, j]
    return k * 64 + np.int64(trailing_zeros(w)) + prm.lag if w != 0 else n


@njit(cache=True, _nrt=False)
def stretch_limit_nb(mkt, t, tnext, n):
    """Where a quiet stretch from bar t ends at the latest: the next order (``tnext``) or the
    next event, bar t's own funding prints at its open instant excepted (step 1 pays them
    before the stretch starts: the rest of such a bar may be quiet)."""
    if mkt.nxt[t] == t and not mkt.open_prints_only[t]:
        return t
    return min(mkt.nxt[t + 1] if t + 1 < n else n, tnext)


@njit(cache=True, _nrt=False)
def groups_below_nb(mkt, t, P, W, iso, thr, marks):
    """Every margin group's ``MM < thr * MB`` with its positions at ``marks``, by a margin
    (``QUIET_RTOL`` of the sums' magnitude) that covers the rounding of these plain sums."""
    mb = W
    mm = 0.0
    scale = abs(W)
    for k in range(P.shape[0]):
        if P[k].contracts != 0.0:
            u = pos_upnl_nb(mkt, P, k, marks[k])
            mk = pos_mm_nb(mkt, t, k, P[k].contracts, marks[k])
            if iso[k]:
                b = P[k].margin + u
                tol = QUIET_RTOL * (abs(P[k].margin) + abs(u) + mk)
                if not mk + tol < thr * (b - tol):
                    return False
            else:
                mb += u
                mm += mk
                scale += abs(u) + mk
    tol = QUIET_RTOL * scale
    return mm + tol < thr * (mb - tol)


@njit(cache=True, _nrt=False)
def quiet_end_nb(mkt, prm, A, P, in_call, iso, t, j, limit, marks, options_in_margin):
    """End of the quiet stretch from bar t (t: bar t is not quiet), at most ``limit`` (the next
    event or order; a roll or settlement of an option leg is an event). The whole range is
    checked first (its extremes: one pass per position); when it is not safe, the stretch grows
    bar by bar with running extremes and stops before the first bar that breaks the check.
    ``options_in_margin``: the column holds options that count as collateral (their value
    moves the cross account's margin balance every bar): no stretch. Options held without
    collateral only change the valuation, which step 6 does on every bar of a stretch."""
    if limit <= t or options_in_margin:
        return t
    thr = min(prm.thr[j], 1.0)  # below the call threshold and below liquidation (ratio 1)
    if thr <= mkt.mmr_max:
        return t
    for g in range(in_call.shape[0]):
        if in_call[g]:
            return t
    K = P.shape[0]
    for k in range(K):
        C = P[k].contracts
        if C != 0.0:
            marks[k] = adverse_extreme_nb(mkt.mark_high[:, k], mkt.mark_low[:, k], C < 0.0, t, limit)
    # the tier tables are those of bar t throughout (a change ends the stretch)
    if groups_below_nb(mkt, t, P, A.wallet, iso, thr, marks):
        return limit
    b = t
    while b < limit:
        for k in range(K):
            C = P[k].contracts
            if C != 0.0:
                a = mkt.mark_high[b, k] if C < 0.0 else mkt.mark_low[b, k]
                if b == t or (a > marks[k] if C < 0.0 else a < marks[k]):
                    marks[k] = a
        if not groups_below_nb(mkt, t, P, A.wallet, iso, thr, marks):
            break
        b += 1
    return b


@njit(cache=True, _nrt=False)
def adverse_ratio_nb(mkt, prm, P, W, iso, t, j, marks, fs):
    """The account's worst group ratio at the end of bar t's adverse path (what step 5 returns
    on a bar where it acts on nothing)."""
    adverse = end_ratio_nb(mkt, t, P, W, iso, np.int64(CROSS_G), prm.alone[j], marks, fs)
    for k in range(P.shape[0]):
        if iso[k]:
            adverse = max(adverse, end_ratio_nb(mkt, t, P, W, iso, k, prm.alone[j], marks, fs))
    return adverse


@njit(cache=True, _nrt=False)
def value_stretch_nb(mkt, prm, o, A, P, Q, in_call, iso, t, end, j, marks, scr):
    """Bars [t, end) of a quiet stretch: step 6 of each (the adverse ratio only when stored; a
    sweep storing the equity alone in a column without a policy: a tight loop of the same sums)."""
    ss, ls = o.sslot, o.pslot
    lean = ss[S_RATIO] < 0 and ss[S_GROSS] < 0 and ss[S_RATIO_ADV] < 0 and ss[S_DIST] < 0 \
        and prm.pol_kind[j] != POL_DRAWDOWN \
        and prm.pol_kind[j] != POL_CPPI and Q.shape[0] == 0  # option legs: close_nb values them
    for q in range(ls.shape[0]):
        lean = lean and ls[q] < 0
    if lean:
        # only the account's equity (and constants) stored, no policy: close_nb's plain equity
        # sum with the cash (constant over the stretch) summed once
        se = o.series
        cash = cash_nb(P, A.wallet)
        K = P.shape[0]
        equity = A.prev_equity
        for b in range(t, end):
            equity = cash
            for k in range(K):
                if P[k].contracts != 0.0:
                    equity += pos_upnl_nb(mkt, P, k, mkt.mark_close[b, k])
            usd = mkt.mark_close[b, mkt.usd_k[b]] if mkt.inverse else 1.0
            put3_nb(se, ss[S_EQUITY], j, b, equity)
            put3_nb(se, ss[S_EQUITY_USD], j, b, equity * usd if mkt.inverse else equity)
            put3_nb(se, ss[S_FUNDING], j, b, A.cum_funding)
            put3_nb(se, ss[S_FEES], j, b, A.cum_fees)
            put3_nb(se, ss[S_ADDED], j, b, A.capital_added)
            A.peak = max(A.peak, equity)
        A.prev_equity = equity
        return
    want_adv = ss[S_RATIO_ADV] >= 0
    for b in range(t, end):
        adverse = adverse_ratio_nb(mkt, prm, P, A.wallet, iso, b, j, marks, scr[9:12]) if want_adv else 0.0
        close_nb(mkt, prm, o, A, P, Q, in_call, iso, b, j, adverse, scr)


# --------------------------------------------------------------------------------------------
# The column loop and the parallel driver
# --------------------------------------------------------------------------------------------

@njit(cache=True, _nrt=False)
def book_col_nb(mkt, fe, prm, o, j, A, P, Q, T, in_call, iso, lev, fee, marks, scr, ids):
    """One column (one account) over every bar, in the order of docs/mechanics.md, "Books";
    quiet stretches (above) valued by step 6 alone."""
    n = mkt.open.shape[0]
    K = P.shape[0]
    J = Q.shape[0]
    coll = J > 0 and prm.coll[j]
    ptr = np.int64(0)
    tnext = np.int64(-1)  # the next bar with an order of this column
    t = np.int64(0)
    while t < n:
        if tnext < t:
            tnext = next_order_nb(prm, j, t, n)
        # 1. funding at the open instant, paid by the positions held going into the open; then
        #    the option legs' settlements
        ptr = pay_prints_nb(fe, o, A, P, iso, mkt, t, j, ptr, np.bool_(True))
        opt = J > 0 and t >= 1
        if opt:
            settle_options_nb(mkt, o, A, Q, t, j, K)
        # a quiet stretch from here (bars with nothing left to do but step 6)?
        held = False
        if coll:
            for q in range(J):
                held = held or Q[q].contracts != 0.0
        end = quiet_end_nb(mkt, prm, A, P, in_call, iso, t, j, stretch_limit_nb(mkt, t, tnext, n), marks, held)
        if end > t:
            value_stretch_nb(mkt, prm, o, A, P, Q, in_call, iso, t, end, j, marks, scr)
            o.quiet[j] += end - t
            t = end
            continue
        # 2. gap check at the mark opens: each margin group past liquidation there
        #    (options as collateral: their value at the open lent to W for the check)
        if coll and opt:
            lend_nb(A, options_value_nb(Q, mkt.o_old, t - 1))
        gap_check_nb(mkt, prm, o, A, P, Q, in_call, iso, t, j, marks, scr, ids)
        if coll and opt:
            restore_nb(A)
        # 3. orders at the open: reductions first, then increases
        if t >= prm.lag:
            orders_nb(mkt, prm, o, A, P, Q, iso, lev, fee, t, j, scr)
        # 4. funding strictly inside the bar, paid by the positions after the fills
        ptr = pay_prints_nb(fe, o, A, P, iso, mkt, t, j, ptr, np.bool_(False))
        # 5. margin call / liquidation on the intrabar path: the cross account, then each
        #    isolated position in the book's order
        #    (options as collateral: their value at the adverse extremes lent to W, a constant)
        if coll:
            lend_nb(A, options_value_nb(Q, mkt.o_adv, t))
        adverse = margin_check_nb(mkt, prm, o, A, P, Q, T, in_call, iso, lev, fee, t, j, np.int64(CROSS_G), marks, scr, ids)
        for k in range(K):
            if iso[k]:
                adverse = max(adverse, margin_check_nb(mkt, prm, o, A, P, Q, T, in_call, iso, lev, fee, t, j, k,
                                                       marks, scr, ids))
        if coll:
            restore_nb(A)
        # 6. valuation at the mark closes
        close_nb(mkt, prm, o, A, P, Q, in_call, iso, t, j, adverse, scr)
        t += 1


@njit(cache=True, parallel=True)
def funding_records_nb(fpos, fe, fe_time, cs, inverse, out, starts):
    """The funding records (``book_funding_dt``) from the position that paid each print
    (``fpos`` (m, E), 0: none), column j's from ``out[starts[j]]`` in print order; the amount by
    :func:`funding_amount_nb`, the formula the kernel paid it with."""
    for jj in prange(fpos.shape[0]):
        j = np.int64(jj)
        q = starts[j]
        for e in range(fpos.shape[1]):
            C = fpos[j, e]
            if C != 0.0:
                k = fe.k[e]
                r = out[q]
                r.bar = fe.bar[e]
                r.col = j
                r.instrument = k
                r.time = fe_time[e]
                r.rate = fe.rate[e]
                r.mark = fe.mark[e]
                r.position = C
                r.amount = funding_amount_nb(C, fe.mark[e], fe.rate[e], cs[k], inverse)
                q += 1


@njit(cache=True)
def run_col_nb(mkt, fe, prm, o, acct, pos, opts, trial, in_call, marks, scr, ids, j):
    """Column ``j`` of a book from its initial state: the body both drivers
    (:func:`simulate_book_nb`, :func:`simulate_book_serial_nb`) run for each column."""
    A = acct[j]
    A.wallet = prm.init_cap[j]
    A.reserve_left = prm.reserve[j]
    A.peak = prm.init_cap[j]
    A.prev_equity = prm.init_cap[j]
    iso = prm.isolated[:, j].copy()
    lev = prm.lev[:, j].copy()
    fee = prm.fee[:, j].copy()
    book_col_nb(mkt, fe, prm, o, j, A, pos[j], opts[j], trial[j], in_call[j], iso, lev, fee, marks[j], scr[j], ids[j])


@njit(cache=True, parallel=True)
def simulate_book_nb(mkt, fe, prm, o, acct, pos, opts, trial, in_call, marks, scr, ids):
    """Simulate every column of a book (columns in parallel).

    Parameters
    ----------
    mkt, fe, prm : :class:`BookMarket`, :class:`BookFunding`, :class:`BookParams`.
    o : :class:`BookOutputs` (written; ``o.counts`` must be zeros).
    acct : :data:`account_state_dt` (m,), pos, trial : :data:`position_state_dt` (m, K), opts :
        :data:`option_state_dt` (m, J),
        in_call : bool (m, K + 1), marks : float64 (m, K), scr : float64 (m, 14, 2K + 4), ids : int64
        (m, K): each column's state and scratch space, owned by the caller (zeros).
    """
    for jj in prange(acct.shape[0]):
        run_col_nb(mkt, fe, prm, o, acct, pos, opts, trial, in_call, marks, scr, ids, np.int64(jj))


@njit(cache=True)
def simulate_book_serial_nb(mkt, fe, prm, o, acct, pos, opts, trial, in_call, marks, scr, ids):
    """:func:`simulate_book_nb` one column after the other (the same body, ``range`` for
    ``prange``), for small books (``backtest.book.core.PARALLEL_MIN_BAR_COLUMNS``): the parallel
    driver's own compilation (parfor lowering and LLVM optimising the linked column kernel
    again) costs ~17 s of CPU against ~4 s for this one, more than a small book's run saves on
    two threads (benchmarks/README.md, "Start-up"). Same numbers: the columns are independent.

    Parameters
    ----------
    mkt, fe, prm : :class:`BookMarket`, :class:`BookFunding`, :class:`BookParams`.
    o : :class:`BookOutputs` (written; ``o.counts`` must be zeros).
    acct : :data:`account_state_dt` (m,), pos, trial : :data:`position_state_dt` (m, K), opts :
        :data:`option_state_dt` (m, J),
        in_call : bool (m, K + 1), marks : float64 (m, K), scr : float64 (m, 14, 2K + 4), ids : int64
        (m, K): each column's state and scratch space, owned by the caller (zeros).
    """
    for jj in range(acct.shape[0]):
        run_col_nb(mkt, fe, prm, o, acct, pos, opts, trial, in_call, marks, scr, ids, np.int64(jj))
