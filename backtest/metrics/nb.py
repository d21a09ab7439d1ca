"""Numba kernels of the metrics: every column's numbers in one pass over its bars (numpy in,
numpy out).

:func:`column_metrics_nb` reads a block of columns of the stored series (each column contiguous,
shape (n_cols, n_bars): the transposed block of the result's (n_bars, n_cols) arrays) and writes
one :data:`column_metrics_dt` record per column; :func:`fills_by_column_nb`,
:func:`liquidations_by_column_nb` and :func:`held_mean_nb` reduce the record arrays and the
Greek series per column, each array read once. :mod:`backtest.metrics.compute` turns these
numbers into the JSON-able metrics block; :mod:`backtest.metrics.reference` is the slow
per-column implementation (vectorbt's returns accessor and numpy) they are tested against.

Definitions (README, "Metrics"): per-bar returns ``r_t = max(E_t, 0) / (max(E_{t-1}, 0) + F_t) - 1``
(0 once the capital at risk is 0), growth index ``G_t = prod(1 + r_s)``, drawdown
``G_t / max(1, max G_s) - 1``. The statistics the reference takes from vectorbt (total return,
CAGR, volatility, Sharpe, Sortino, max drawdown) are computed here with vectorbt 1.2's own
arithmetic, operation for operation (``vectorbt/returns/nb.py``: ``cum_returns_final_1d_nb``,
``annualized_return_1d_nb``, ``annualized_volatility_1d_nb``, ``sharpe_ratio_1d_nb``,
``sortino_ratio_1d_nb``, ``max_drawdown_1d_nb``; numba's ``nanmean``/``nanvar``): sums and
products run over the bars in order, the variance around the mean in a second pass, so the numbers
are the same to the last bit.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np
from numba import njit, prange

from backtest.engine.nb import cval_nb

DBL_MAX = np.finfo(np.float64).max

# One column's stored series, each float64 (n_bars,) in the result's units: ``equity`` in the
# basis currency, the cumulative ones (``capital_added``, ``cum_funding``, ``cum_fees``,
# ``premium_paid``) in the settlement currency, converted per bar with ``Clock.to_basis``.
ColumnSeries = namedtuple("ColumnSeries", [
    "equity", "capital_added", "cum_funding", "cum_fees", "premium_paid", "position", "leverage",
])

# What every column shares: ``to_basis`` float64 (n_bars,) turns a settlement-currency amount of
# bar t into the basis currency; ``day_end`` bool (n_bars,) marks the last bar of each UTC day;
# ``ann`` the bars per year; ``has_premium`` whether ``premium_paid`` is a real series.
Clock = namedtuple("Clock", ["to_basis", "day_end", "ann", "has_premium"])

column_metrics_dt = np.dtype([
    ("initial", np.float64),          # equity before the first bar, basis currency
    ("capital_added", np.float64),    # sum of the per-bar additions
    ("final_equity", np.float64),
    ("total_return", np.float64),     # vectorbt: nanprod(r + 1) - 1
    ("cagr", np.float64),             # vectorbt: nanprod(r + 1) ** (ann / n) - 1
    ("volatility", np.float64),       # vectorbt: std(r, ddof=1) * ann ** (1 / 2)
    ("sharpe", np.float64),           # vectorbt: mean / std * sqrt(ann); inf when std is 0
    ("sortino", np.float64),          # vectorbt: mean * ann / downside risk; inf when it is 0
    ("flat", np.bool_),               # the returns are constant up to rounding (no Sharpe)
    ("max_drawdown", np.float64),     # vectorbt on the returns with a 0 prepended, as a positive number
    ("max_dd_bars", np.int64),        # the spell holding the deepest trough (0: no drawdown)
    ("max_dd_recovered", np.bool_),
    ("longest_dd_bars", np.int64),
    ("ulcer_index", np.float64),
    ("worst_bar_return", np.float64),
    ("worst_day_return", np.float64),
    ("min_growth", np.float64),       # lowest growth index (the ruin rule's input)
    ("exposure_time", np.float64),
    ("avg_leverage", np.float64),
    ("max_leverage", np.float64),
    ("funding_paid", np.float64),
    ("funding_received", np.float64),
    ("funding_net", np.float64),
    ("fees", np.float64),
    ("premium_spent", np.float64),
    ("first_bad_bar", np.int64),      # first bar whose equity is not finite; -1: none
], align=True)


@njit(cache=True, inline="always")
def nan_to_num_nb(x):
    """``np.nan_to_num`` of one value: NaN -> 0, +-inf -> +-the largest float."""
    if np.isnan(x):
        return 0.0
    if np.isinf(x):
        return DBL_MAX if x > 0 else -DBL_MAX
    return x


@njit(cache=True, inline="always")
def flow_return_nb(e_prev, added, equity):
    """One bar's time-weighted return (``returns.flow_returns``): ``e_prev`` is the previous
    close's equity floored at 0, ``added`` the capital added during the bar (a start-of-bar flow).
    Returns (return, this close's equity floored at 0)."""
    e = max(equity, 0.0)
    base = e_prev + added
    if base > 0:
        return e / base - 1.0, e
    return 0.0, e


@njit(cache=True)
def column_1d_nb(s, clock, initial, out):
    """Every series metric of one column, written to the record ``out`` (:data:`column_metrics_dt`).

    Pass 1 walks the bars once: (1) the bar's flows from the cumulative series, (2) its return
    and the growth index, (3) drawdown, its spells and vectorbt's drawdown, (4) the calendar
    day's return, (5) the sums for the mean and downside risk, (6) exposure, leverage and money.
    Pass 2 sums the squared deviations from the mean (numba's ``nanvar``, which vectorbt's
    standard deviation uses, takes the mean first).
    """
    n = s.equity.shape[0]
    tb = clock.to_basis
    e_prev = max(initial, 0.0)
    c_added = 0.0       # previous cumulative values (0 before the first bar), nan_to_num'ed
    c_fund = 0.0
    c_fees = 0.0
    c_prem = 0.0
    added_sum = 0.0
    g = 1.0             # growth index; point 0 (before the first bar) is 1
    peak = 1.0          # running maximum of the growth index, points 0..t
    vbt_peak = 100.0    # vectorbt's running maximum of 100 * G (its padded series starts at 100)
    vbt_min_dd = 0.0
    min_growth = np.inf
    # drawdown spells, on points q = t + 1 (point 0 is the start)
    last_peak_q = 0
    in_spell = False
    spell_start = 0
    best_dd = 0.0       # deepest drawdown so far (point 0: 0)
    trough_open = False  # the deepest trough lies in the spell still open
    max_dd_bars = 0
    max_dd_recovered = True
    longest = 0
    dd2_sum = 0.0
    day_prev = 1.0
    worst_day = np.inf
    r_sum = 0.0
    down2_sum = 0.0
    r_min = np.inf
    r_max = -np.inf
    r_absmax = 0.0
    held = 0
    lev_sum = 0.0
    lev_max = -np.inf
    fund_paid = 0.0
    fund_recv = 0.0
    fund_net = 0.0
    fees = 0.0
    prem = 0.0
    first_bad = -1
    for t in range(n):
        eq = s.equity[t]
        if first_bad < 0 and not np.isfinite(eq):
            first_bad = t
        # 1. flows of the bar: increments of the cumulative series, in the basis currency
        c = nan_to_num_nb(s.capital_added[t])
        added = (c - c_added) * tb[t]
        c_added = c
        added_sum += added
        c = nan_to_num_nb(s.cum_funding[t])
        fund = (c - c_fund) * tb[t]
        c_fund = c
        fund_paid += max(-fund, 0.0)
        fund_recv += max(fund, 0.0)
        fund_net += fund
        c = nan_to_num_nb(s.cum_fees[t])
        fees += (c - c_fees) * tb[t]
        c_fees = c
        if clock.has_premium:
            c = nan_to_num_nb(s.premium_paid[t])
            prem += (c - c_prem) * tb[t]
            c_prem = c
        # 2. return and growth
        r, e_prev = flow_return_nb(e_prev, added, eq)
        g = g * (1.0 + r)
        min_growth = min(min_growth, g)
        r_min = min(r_min, r)
        r_max = max(r_max, r)
        r_absmax = max(r_absmax, abs(r))
        # 3. drawdown: a point below the running peak is under water; a spell runs from the last
        # peak point to the first point back at the peak (or to the last point)
        q = t + 1
        if g < peak:
            dd = g / peak - 1.0
            if not in_spell:
                in_spell = True
                spell_start = last_peak_q
            if dd < best_dd:  # strictly: the first of equal troughs is the deepest
                best_dd = dd
                trough_open = True
        else:
            peak = g
            dd = g / peak - 1.0
            if in_spell:
                longest = max(longest, q - spell_start)
                if trough_open:
                    max_dd_bars = q - spell_start
                    max_dd_recovered = True
                    trough_open = False
                in_spell = False
            last_peak_q = q
        dd2_sum += dd * dd
        v = g * 100.0
        if v > vbt_peak:
            vbt_peak = v
        vbt_min_dd = min(vbt_min_dd, v / vbt_peak - 1)
        # 4. the day's return at its last bar: growth over the previous day's last growth
        if clock.day_end[t]:
            day_ret = g / day_prev - 1.0 if day_prev > 0 else 0.0
            worst_day = min(worst_day, day_ret)
            day_prev = g
        # 5. sums for the mean return and vectorbt's downside risk (returns above 0 count as 0)
        r_sum += r
        down = r if r <= 0 else 0.0
        down2_sum += down * down
        # 6. exposure and leverage
        if nan_to_num_nb(s.position[t]) != 0:
            held += 1
        lev = nan_to_num_nb(s.leverage[t])
        lev_sum += lev
        lev_max = max(lev_max, lev)
    if in_spell:  # the spell still open ends at the last point, not recovered
        longest = max(longest, n - spell_start)
        if trough_open:
            max_dd_bars = n - spell_start
            max_dd_recovered = False

    # pass 2: numba's nanvar (sum of squared deviations from the mean, over the count)
    mean = r_sum / n
    ssd = 0.0
    e_prev = max(initial, 0.0)
    c_added = 0.0
    for t in range(n):
        c = nan_to_num_nb(s.capital_added[t])
        added = (c - c_added) * tb[t]
        c_added = c
        r, e_prev = flow_return_nb(e_prev, added, s.equity[t])
        d = r - mean
        ssd += d * d

    ann = clock.ann
    out.initial = initial
    out.capital_added = added_sum
    out.final_equity = s.equity[n - 1]
    out.total_return = g - 1.0
    out.cagr = g ** (ann / n) - 1
    if n < 2:
        out.volatility = np.nan
        out.sharpe = np.nan
        out.sortino = np.nan
    else:
        std = np.sqrt(ssd / n * n / (n - 1))
        out.volatility = std * ann ** (1.0 / 2.0)
        out.sharpe = np.inf if std == 0.0 else mean / std * np.sqrt(ann)
        downside = np.sqrt(down2_sum / n) * np.sqrt(ann)
        out.sortino = np.inf if downside == 0.0 else mean * ann / downside
    out.flat = (r_max - r_min) <= 1e-12 * max(r_absmax, 1e-300)
    out.max_drawdown = -vbt_min_dd + 0.0  # + 0.0 turns -0.0 into 0.0
    out.max_dd_bars = max_dd_bars
    out.max_dd_recovered = max_dd_recovered
    out.longest_dd_bars = longest
    out.ulcer_index = np.sqrt(dd2_sum / n)
    out.worst_bar_return = r_min
    out.worst_day_return = worst_day
    out.min_growth = min_growth
    out.exposure_time = held / n
    out.avg_leverage = lev_sum / n
    out.max_leverage = lev_max
    out.funding_paid = fund_paid
    out.funding_received = fund_recv
    out.funding_net = fund_net
    out.fees = fees
    out.premium_spent = prem if clock.has_premium else np.nan
    out.first_bad_bar = first_bad


@njit(cache=True, parallel=True)
def column_metrics_nb(equity, capital_added, cum_funding, cum_fees, premium_paid, position, leverage,
                      clock, initial, out):
    """:func:`column_1d_nb` for a block of columns, in parallel.

    Parameters
    ----------
    equity, capital_added, cum_funding, cum_fees, position, leverage : float64 (n_block, n_bars),
        C-contiguous: one row per column (the transposed block of the result's series).
    premium_paid : float64 (n_block, n_bars), or (n_block, 0) when ``clock.has_premium`` is False.
    clock : :data:`Clock`.
    initial : float64 (n_block,), equity before the first bar in the basis currency.
    out : :data:`column_metrics_dt` (n_block,), written.
    """
    for k in prange(equity.shape[0]):
        s = ColumnSeries(equity[k], capital_added[k], cum_funding[k], cum_fees[k], premium_paid[k],
                         position[k], leverage[k])
        column_1d_nb(s, clock, initial[k], out[k])


@njit(cache=True, parallel=True)
def held_mean_nb(values, position, out):
    """Mean of each column's finite ``values`` over the bars that hold a position (NaN: none).

    ``values`` and ``position`` float64 (n_block, n_bars), one row per column; ``out`` float64
    (n_block,), written.
    """
    for k in prange(values.shape[0]):
        total = 0.0
        count = 0
        for t in range(values.shape[1]):
            v = values[k, t]
            if nan_to_num_nb(position[k, t]) != 0 and np.isfinite(v):
                total += v
                count += 1
        out[k] = total / count if count else np.nan


@njit(cache=True)
def compact_fills_by_column_nb(counts, bar, status, size, price, contract_size, inverse, rejected_status, to_basis):
    """:func:`fills_by_column_nb` on the perp kernel's compact fills (no ``col`` or ``notional``
    field): the records of column ``j`` are the next ``counts[j]`` ones (column order), and the
    notional is the records' ``abs(size) * v(price)`` (``engine.nb.cval_nb``, the engine's
    formula), so every product and sum is the records' own, bit for bit.

    ``counts`` int (n_cols,); ``bar``, ``status`` int (n_records,), ``size``, ``price`` float64
    (n_records,), any strides (fields of the compact record array); ``contract_size`` float,
    ``inverse`` bool; ``to_basis`` float64 (n_bars,).
    Returns (executed int64 (n_cols,), rejected int64 (n_cols,), turnover float64 (n_cols,)).
    """
    n_cols = counts.shape[0]
    executed = np.zeros(n_cols, dtype=np.int64)
    rejected = np.zeros(n_cols, dtype=np.int64)
    turnover = np.zeros(n_cols)
    i = 0
    for j in range(n_cols):
        for _ in range(counts[j]):
            if status[i] == rejected_status:
                rejected[j] += 1
            elif size[i] != 0:
                executed[j] += 1
                notional = abs(size[i]) * cval_nb(price[i], contract_size, inverse)
                turnover[j] += abs(notional) * to_basis[bar[i]]
            i += 1
    return executed, rejected, turnover


@njit(cache=True)
def fills_by_column_nb(col, bar, notional, status, size, rejected_status, to_basis, n_cols):
    """Per column: executed fills (not rejected, non-zero size), rejected orders, and turnover
    (sum of |notional| of the executed fills, each valued at its bar's ``to_basis``).

    ``col``, ``bar``, ``status`` int64 (n_records,), ``notional``, ``size`` float64 (n_records,);
    a record kind without a status passes ``rejected_status`` values nowhere in ``status``.
    Returns (executed int64 (n_cols,), rejected int64 (n_cols,), turnover float64 (n_cols,)).
    """
    executed = np.zeros(n_cols, dtype=np.int64)
    rejected = np.zeros(n_cols, dtype=np.int64)
    turnover = np.zeros(n_cols)
    for i in range(col.shape[0]):
        j = col[i]
        if status[i] == rejected_status:
            rejected[j] += 1
        elif size[i] != 0:
            executed[j] += 1
            turnover[j] += abs(notional[i]) * to_basis[bar[i]]
    return executed, rejected, turnover


@njit(cache=True)
def liquidations_by_column_nb(col, bar, equity_start, equity_after, deficit, to_basis, n_cols):
    """Per column: liquidation count, first bar (-1: none), equity lost (sum of
    ``max(equity_start - equity_after, 0)``) and deficit, each valued at its bar's ``to_basis``.

    ``col``, ``bar`` int64 (n_records,); the rest float64 (n_records,).
    Returns (count int64, first_bar int64, lost float64, deficit float64), each (n_cols,).
    """
    count = np.zeros(n_cols, dtype=np.int64)
    first = np.full(n_cols, -1, dtype=np.int64)
    lost = np.zeros(n_cols)
    short = np.zeros(n_cols)
    for i in range(col.shape[0]):
        j = col[i]
        b = bar[i]
        count[j] += 1
        if first[j] < 0 or b < first[j]:
            first[j] = b
        lost[j] += max(equity_start[i] - equity_after[i], 0.0) * to_basis[b]
        short[j] += deficit[i] * to_basis[b]
    return count, first, lost, short


@njit(cache=True)
def gather_rows_nb(a, j0, out):
    """``out[k, t] = a[t, j0 + k]``: a block of columns of an (n_bars, n_cols) series as rows.

    Copied in tiles of bars so that a series stored bar by bar (C order) is read a cache-sized
    tile at a time, not one cache line per value (measured on 26,280 bars x 1,000 columns:
    numpy's transposing copy of six whole series took 2.7 s, these tiles ~0.1 s per series).
    """
    n = a.shape[0]
    w = out.shape[0]
    tile = 256
    for t0 in range(0, n, tile):
        t1 = min(n, t0 + tile)
        for k in range(w):
            for t in range(t0, t1):
                out[k, t] = a[t, j0 + k]


@njit(cache=True, inline="always")
def _is_flat_nb(lo, hi, absmax):
    """The same rule as ``column_metrics_dt.flat``: values constant up to rounding."""
    return (hi - lo) <= 1e-12 * max(absmax, 1e-300)


@njit(cache=True)
def relative_1d_nb(equity, capital_added, to_basis, initial, u_ret):
    """Beta and correlation of one column's bar returns to the underlying's bar returns.

    The column's returns are the flow returns of :func:`column_1d_nb` (``flow_return_nb``);
    ``u_ret[t]`` is the underlying's return over bar t, ``u_t / u_{t-1} - 1``. Bar 0 has no
    underlying return (the price before it is not in the series), so both are paired over bars
    1..n-1. Two passes, as numpy's ``cov``: the means first, then the centred sums.

    Returns
    -------
    (beta, correlation): ``cov(r, u) / var(u)`` and ``cov(r, u) / (std(r) std(u))``; beta NaN
    when the underlying's returns are constant (or fewer than 2 pairs), correlation NaN also
    when the column's returns are constant (a flat column has no correlation; its beta is 0).
    """
    n = equity.shape[0]
    if n < 3:
        return np.nan, np.nan
    e_prev = max(initial, 0.0)
    c_prev = 0.0
    r_sum = 0.0
    u_sum = 0.0
    r_lo = np.inf
    r_hi = -np.inf
    r_abs = 0.0
    u_lo = np.inf
    u_hi = -np.inf
    u_abs = 0.0
    for t in range(n):
        c = nan_to_num_nb(capital_added[t])
        r, e_prev = flow_return_nb(e_prev, (c - c_prev) * to_basis[t], equity[t])
        c_prev = c
        if t == 0:
            continue
        u = u_ret[t]
        r_sum += r
        u_sum += u
        r_lo = min(r_lo, r)
        r_hi = max(r_hi, r)
        r_abs = max(r_abs, abs(r))
        u_lo = min(u_lo, u)
        u_hi = max(u_hi, u)
        u_abs = max(u_abs, abs(u))
    k = n - 1
    r_mean = r_sum / k
    u_mean = u_sum / k
    s_ru = 0.0
    s_rr = 0.0
    s_uu = 0.0
    e_prev = max(initial, 0.0)
    c_prev = 0.0
    for t in range(n):
        c = nan_to_num_nb(capital_added[t])
        r, e_prev = flow_return_nb(e_prev, (c - c_prev) * to_basis[t], equity[t])
        c_prev = c
        if t == 0:
            continue
        dr = r - r_mean
        du = u_ret[t] - u_mean
        s_ru += dr * du
        s_rr += dr * dr
        s_uu += du * du
    if _is_flat_nb(u_lo, u_hi, u_abs) or s_uu == 0.0:
        return np.nan, np.nan
    beta = s_ru / s_uu
    if _is_flat_nb(r_lo, r_hi, r_abs) or s_rr == 0.0:
        return beta, np.nan
    return beta, s_ru / np.sqrt(s_rr * s_uu)


@njit(cache=True, parallel=True)
def relative_metrics_nb(equity, capital_added, to_basis, initial, u_ret, beta, corr):
    """:func:`relative_1d_nb` for a block of columns, in parallel.

    Parameters
    ----------
    equity, capital_added : float64 (n_block, n_bars), one row per column (as
        :func:`column_metrics_nb` reads them).
    to_basis : float64 (n_bars,), settlement currency -> basis currency at each bar.
    initial : float64 (n_block,), equity before the first bar in the basis currency.
    u_ret : float64 (n_bars,), the underlying's bar returns (``u_ret[0]`` is not read).
    beta, corr : float64 (n_block,), written.
    """
    for k in prange(equity.shape[0]):
        beta[k], corr[k] = relative_1d_nb(equity[k], capital_added[k], to_basis, initial[k], u_ret)
