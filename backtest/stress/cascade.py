"""A liquidation-cascade model: an initial shock liquidates the market's leveraged positions, their
forced orders move the price through the order book, which liquidates more, to the fixed point.

The market's leveraged positions (the *crowd*, :class:`Crowd`) are buckets of isolated positions,
each with a side, an entry price, a leverage and a quantity. A bucket's liquidation price is the
exchange's isolated liquidation price with the initial margin ``N(EP)/L`` and one representative
maintenance rate (:func:`backtest.mechanics.isolated_liquidation_price`, [BN-LIN]); its bankruptcy
price is :func:`backtest.mechanics.bankruptcy_price` ([BN-LIQ]). No formula is restated here.

The cascade (:func:`solve_cascade`), for a shock down (up is the mirror image, shorts instead of
longs): the mark starts at the shocked price ``P_s``. Round ``r`` force-closes every long bucket not
yet closed whose liquidation price is at or above the current price ``P_r``; its forced notional is
its quantity times its liquidation price (the order's notional when the exchange sends it). The
cumulative forced notional ``F_r`` moves the price to::

    P_{r+1} = P_s * (1 - I(F_r))          I(F) = 0.01 * F / depth          (linear)
                                          I(F) = 0.01 * sqrt(F / depth)    (sqrt)

``depth`` is the forced notional (USD) that moves the price by 1 % (default law: ``sqrt``): with ``linear`` the bids are a
uniform ladder that is not refilled during the cascade; ``sqrt`` is the square-root law of market
impact (Toth et al., "Anomalous price impact and the critical nature of liquidity in financial
markets", Phys. Rev. X 1, 021006, 2011), anchored at the same 1 %. The rounds stop when a round
closes nothing: the fixed point ``P* = P_s (1 - I(F(P*)))``.

Why it ends and why it is monotone: ``F`` only grows, so the price only falls and the set of
closed buckets only grows; there are finitely many buckets, so at most ``n_buckets + 1`` rounds.
A larger shock starts lower, so at every round it has closed at least the buckets the smaller
shock closed, and its fixed point is at or below the smaller shock's (the least fixed point
below ``P_s``). With no crowd or an infinite depth ``I = 0`` and ``P* = P_s`` exactly.

The path (:class:`Cascade`, a :class:`~backtest.stress.shocks.Shock`): the data under
:class:`~backtest.stress.shocks.Gap` of the initial shock, then the cascade's move
``c = P*/P_s`` spread geometrically over ``bars`` bars from the shock bar (bar ``j`` of the
cascade ends at ``g_j = c ** (j / bars)``, ``g_bars = c``): in a cascade bar the open and high
(a down cascade; low for an up one) are times the factor at its start, the low and close times the
factor at its end, every later price times ``c``, the funding prints' marks likewise (a print in a
cascade bar times the factor at its start). Trade and mark prices move together (the mark follows
the index, which follows the same sellers). When the cascade adds nothing the result is the
gapped data itself, bit for bit.

What the model leaves out: positions opened or closed voluntarily during the cascade, traders
adding margin, cross-margined accounts (each bucket is isolated, at its initial margin), the
tiered maintenance rate (one representative rate), partial liquidations, the clearance fee's
timing, the order book refilling, arbitrage with other venues, the funding rate's response, and
the bar's own history below its open (the cascade starts from the shocked open). The crowd built
from history assumes positions were opened at the lookback's closes in proportion to the USD
volume traded there, with one leverage mix for every entry, and drops those the mark path since
their entry would already have liquidated.

Defaults (each from a public figure; docs/stress.md, "Liquidation cascades and ADL"):
:data:`DEFAULT_OPEN_INTEREST`, :data:`DEFAULT_LEVERAGE_MIX`, :data:`DEFAULT_DEPTH`,
:data:`DEFAULT_MMR`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backtest.data.marketdata import MarketData
from backtest.data.timeutil import iso
from backtest.mechanics import bankruptcy_price, isolated_liquidation_price
from backtest.stress.common import (
    MARK, TRADE, ShockError, bar_at, check_market_data, check_number, parse_instant, print_bars,
)
from backtest.stress.shocks import Gap, Shock

# Aggregate BTC futures open interest before the 2021-12-04 crash: 390,000 BTC (Arcane Research,
# "Second largest flush in BTC denominated open interest in 2021", Skew data) at about 53,000 USD.
DEFAULT_OPEN_INTEREST = 390_000 * 53_000.0
# Leverage mix (leverage, share of the leveraged notional) from Binance's own statement (2019,
# relayed by thecoinshark.net "Binance Futures told what leverage their users prefer to use"):
# institutions, 81 % of the volume, trade at 20x or less; of the retail 19 %, 60 % at 20x or
# more and 21 % at the maximum 125x. Hence 125x: 0.19 * 0.21 = 0.04; 20x-100x (as 50x):
# 0.19 * 0.39 = 0.074; the rest, 0.886, spread evenly over 3x, 5x, 10x and 20x (an assumption:
# no public figure splits it).
DEFAULT_LEVERAGE_MIX: tuple[tuple[float, float], ...] = (
    (3.0, 0.2215), (5.0, 0.2215), (10.0, 0.2215), (20.0, 0.2215), (50.0, 0.074), (125.0, 0.04))
# Forced notional (USD) moving the price by 1 %: the bid side within 1 % of the mid, summed over
# the main venues. Kaiko: the 2 % market depth of BTC, ETH and altcoins on centralised exchanges
# was about 800 M USD in Nov 2023, 55 % below its pre-FTX level (about 1.8 bn USD); BTC about half
# of it, one side half of that, the first 1 % half again: about 225 M USD; 200 M USD kept.
DEFAULT_DEPTH = 200e6
# Binance BTCUSDT's first maintenance tier, 0.4 % (the tier table in backtest/markets): the rate
# of most retail positions (the tier's notional cap is per account).
DEFAULT_MMR = 0.004
IMPACTS = ("linear", "sqrt")
MAX_ROUNDS_GUARD = 1_000_000  # never reached: rounds <= buckets + 1 (see the module docstring)


class CascadeError(ShockError):
    """A cascade's parameters or result are invalid; the message names the value and the fix."""


def check_value(value: Any, name: str, **bounds: Any) -> float:
    """:func:`~backtest.stress.common.check_number`, raising :class:`CascadeError`."""
    try:
        return check_number(value, name, **bounds)
    except CascadeError:
        raise
    except ShockError as exc:
        raise CascadeError(str(exc)) from None


# ------------------------------------------------------------------------------------ the crowd

@dataclass(frozen=True, eq=False)
class Crowd:
    """The market's leveraged positions, as buckets of isolated positions.

    Attributes
    ----------
    side : int8 (n,), +1 long, -1 short.
    entry : float64 (n,), entry price (quote per base).
    leverage : float64 (n,), initial leverage (>= 1); the isolated margin is ``qty*entry/leverage``.
    qty : float64 (n,), quantity in base units (> 0).
    mmr : the representative maintenance rate used for every bucket.
    liq : float64 (n,), liquidation price (0 for a long, inf for a short, when none exists).
    bankrupt : float64 (n,), bankruptcy price.
    """

    side: np.ndarray
    entry: np.ndarray
    leverage: np.ndarray
    qty: np.ndarray
    mmr: float = DEFAULT_MMR
    liq: np.ndarray = field(init=False)
    bankrupt: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        side = np.asarray(self.side, dtype=np.int8).ravel()
        entry = np.asarray(self.entry, dtype=np.float64).ravel()
        lev = np.asarray(self.leverage, dtype=np.float64).ravel()
        qty = np.asarray(self.qty, dtype=np.float64).ravel()
        n = side.shape[0]
        for name, a in (("entry", entry), ("leverage", lev), ("qty", qty)):
            if a.shape[0] != n:
                raise CascadeError(f"Crowd.{name} has {a.shape[0]} values but side has {n}; give one per bucket")
        if not np.isin(side, (-1, 1)).all():
            raise CascadeError(f"Crowd.side holds {side[~np.isin(side, (-1, 1))][0]!r}; give +1 (long) or -1 (short)")
        for name, a, lo in (("entry", entry, 0.0), ("qty", qty, 0.0)):
            bad = ~(np.isfinite(a) & (a > lo))
            if bad.any():
                raise CascadeError(f"Crowd.{name}[{int(np.argmax(bad))}]={a[bad][0]!r}; give a finite value > 0")
        bad = ~(np.isfinite(lev) & (lev >= 1.0))
        if bad.any():
            raise CascadeError(f"Crowd.leverage[{int(np.argmax(bad))}]={lev[bad][0]!r}; give a leverage >= 1")
        mmr = check_value(self.mmr, "Crowd.mmr", lo=0.0, hi=0.5,
                           fix="give the maintenance rate as a fraction in [0, 0.5] (0.004 = 0.4 %)")
        liq = np.empty(n)
        bk = np.empty(n)
        for i in range(n):
            s = int(side[i])
            p = isolated_liquidation_price(s, float(entry[i]), float(lev[i]), mmr)
            liq[i] = (0.0 if s > 0 else math.inf) if p is None else p
            b = bankruptcy_price(s, float(entry[i]), float(qty[i] * entry[i] / lev[i]), float(qty[i]))
            bk[i] = (0.0 if s > 0 else math.inf) if b is None else b
        for name, v in (("side", side), ("entry", entry), ("leverage", lev), ("qty", qty), ("liq", liq),
                        ("bankrupt", bk)):
            v.setflags(write=False)
            object.__setattr__(self, name, v)
        object.__setattr__(self, "mmr", mmr)

    @property
    def n(self) -> int:
        """Number of buckets."""
        return int(self.side.shape[0])

    def notional(self, price: float, side: int | None = None) -> float:
        """Notional (USD) at ``price`` of the buckets (of one ``side`` when given)."""
        m = np.ones(self.n, dtype=bool) if side is None else self.side == side
        return float(self.qty[m].sum() * price)


def _check_mix(mix: Any) -> tuple[np.ndarray, np.ndarray]:
    try:
        pairs = [(float(lev), float(w)) for lev, w in mix]
    except (TypeError, ValueError):
        raise CascadeError(f"leverage_mix={mix!r} is not a list of (leverage, share) pairs; "
                           "give e.g. [(5, 0.5), (20, 0.5)]") from None
    if not pairs:
        raise CascadeError("leverage_mix is empty; give at least one (leverage, share) pair")
    lev = np.array([p[0] for p in pairs])
    w = np.array([p[1] for p in pairs])
    if not (np.isfinite(lev) & (lev >= 1)).all():
        raise CascadeError(f"leverage_mix holds a leverage below 1 or not finite ({lev.tolist()}); give leverages >= 1")
    if not (np.isfinite(w) & (w >= 0)).all() or w.sum() <= 0:
        raise CascadeError(f"leverage_mix shares {w.tolist()} must be >= 0 with a positive sum")
    if abs(w.sum() - 1.0) > 1e-9:
        raise CascadeError(f"leverage_mix shares sum to {float(w.sum())!r}, not 1; give shares of the leveraged notional "
                           "that sum to 1")
    return lev, w


def crowd_from_history(md: MarketData, k: int, *, open_interest: float = DEFAULT_OPEN_INTEREST,
                       leverage_mix: Any = DEFAULT_LEVERAGE_MIX, lookback_bars: int = 720,
                       long_share: float = 1.0, short_share: float = 1.0, mmr: float = DEFAULT_MMR) -> Crowd:
    """The crowd open at the open of bar ``k``, from the ``lookback_bars`` bars before it.

    Entries: each lookback bar's trade close, weighted by its USD volume (volume x close), times
    every leverage of ``leverage_mix`` with its share. A bucket that the mark path after its
    entry bar (mark lows for a long, highs for a short, of the bars up to ``k - 1``, and bar
    ``k``'s mark open) would already have liquidated is dropped, and the survivors of each side
    scaled to ``share * open_interest`` at bar ``k``'s mark open.

    Parameters
    ----------
    md : market data; ``k`` the bar index of the shock (``k >= lookback_bars``).
    open_interest : USD notional of the open interest at bar ``k``'s mark open (one side's
        notional: every long has a short).
    leverage_mix : pairs ``(leverage, share)``, shares summing to 1.
    lookback_bars : how many bars before ``k`` positions were opened in.
    long_share, short_share : fraction of the open interest held by leveraged longs / shorts
        described by the mix (the rest: hedged or unleveraged, never liquidated here), in [0, 1].
    mmr : representative maintenance rate.

    Returns
    -------
    Crowd with ``2 * lookback_bars * len(leverage_mix)`` buckets at most.
    """
    oi = check_value(open_interest, "open_interest", lo=0.0, fix="give the open interest in USD, >= 0")
    ls = check_value(long_share, "long_share", lo=0.0, hi=1.0, fix="give a fraction in [0, 1]")
    ss = check_value(short_share, "short_share", lo=0.0, hi=1.0, fix="give a fraction in [0, 1]")
    if isinstance(lookback_bars, bool) or not isinstance(lookback_bars, (int, np.integer)) or lookback_bars < 1:
        raise CascadeError(f"lookback_bars={lookback_bars!r}; give a whole number of bars >= 1")
    if k < lookback_bars:
        raise CascadeError(f"the shock bar {iso(int(md.timestamps[k]))} has only {k} bars before it but "
                           f"lookback_bars={lookback_bars}; load earlier data or shorten the lookback")
    lev, w = _check_mix(leverage_mix)
    f = md.frame
    close = f["close"].to_numpy(dtype=np.float64)[k - lookback_bars:k]
    usd = f["volume"].to_numpy(dtype=np.float64)[k - lookback_bars:k] * close
    if not (np.isfinite(usd) & (usd >= 0)).all() or usd.sum() <= 0:
        raise CascadeError(f"the lookback before {iso(int(md.timestamps[k]))} has no positive volume; "
                           "entries are weighted by volume: choose another time or a longer lookback")
    mark_open = float(f["mark_open"].iloc[k])
    # worst mark after each entry bar, up to bar k's open: suffix extremes of bars j+1 .. k-1
    lows = np.append(f["mark_low"].to_numpy(dtype=np.float64)[k - lookback_bars + 1:k], mark_open)
    highs = np.append(f["mark_high"].to_numpy(dtype=np.float64)[k - lookback_bars + 1:k], mark_open)
    low_after = np.minimum.accumulate(lows[::-1])[::-1]
    high_after = np.maximum.accumulate(highs[::-1])[::-1]
    sides, entries, levs, weights = [], [], [], []
    for s, share in ((1, ls), (-1, ss)):
        if share == 0:
            continue
        e = np.repeat(close, lev.size)
        L = np.tile(lev, close.size)
        wt = np.repeat(usd, lev.size) * np.tile(w, close.size)
        worst = np.repeat(low_after if s > 0 else high_after, lev.size)
        probe = Crowd(np.full(e.size, s), e, L, np.ones(e.size), mmr)
        alive = (probe.liq < worst) if s > 0 else (probe.liq > worst)
        alive &= wt > 0
        if not alive.any():
            continue
        wt = wt[alive] / wt[alive].sum()
        sides.append(np.full(int(alive.sum()), s))
        entries.append(e[alive])
        levs.append(L[alive])
        weights.append(wt * share * oi / mark_open)  # quantity: this bucket's share of the side's notional
    if not sides or oi == 0:
        empty = np.zeros(0)
        return Crowd(empty.astype(np.int8), empty, empty, empty, mmr)
    return Crowd(np.concatenate(sides), np.concatenate(entries), np.concatenate(levs), np.concatenate(weights), mmr)


# ------------------------------------------------------------------------------------ the fixed point

def impact(forced: float, depth: float, law: str = "sqrt") -> float:
    """Relative price move ``I(F)`` of a forced notional ``F`` (USD) through ``depth`` (USD per 1 %).

    ``linear``: ``0.01 * F / depth``; ``sqrt``: ``0.01 * sqrt(F / depth)``; 0 for an infinite depth.
    """
    if forced == 0.0 or math.isinf(depth):
        return 0.0
    x = forced / depth
    return 0.01 * (x if law == "linear" else math.sqrt(x))


@dataclass(frozen=True, eq=False)
class CascadeSolution:
    """The cascade's rounds within the bar.

    Attributes
    ----------
    direction : -1 down (longs liquidated), +1 up (shorts liquidated), 0 no shock.
    start : price before the shock (USD); ``shocked`` the price after it, ``P_s``.
    prices : float64 (rounds + 1,), ``P_s`` then the price after each round's forced flow.
    forced : float64 (rounds + 1,), cumulative forced notional (USD) before each price
        (``forced[0] = 0``).
    closed_round : int64 (n_buckets,), the round that closed each bucket (1-based), 0 if none.
    exec_price : float64 (n_buckets,), price a closed bucket is filled at: the price after its
        round's flow (NaN if not closed).
    """

    direction: int
    start: float
    shocked: float
    prices: np.ndarray
    forced: np.ndarray
    closed_round: np.ndarray
    exec_price: np.ndarray

    @property
    def final(self) -> float:
        """The fixed point ``P*``."""
        return float(self.prices[-1])

    @property
    def iterations(self) -> int:
        """Rounds that closed at least one bucket."""
        return int(self.prices.shape[0] - 1)

    @property
    def forced_notional(self) -> float:
        """Total forced notional (USD)."""
        return float(self.forced[-1])

    @property
    def closed(self) -> np.ndarray:
        """bool (n_buckets,), the buckets the cascade closed."""
        return self.closed_round > 0

    @property
    def total_move(self) -> float:
        """``P*/start - 1``: shock and cascade (negative for a drop)."""
        return self.final / self.start - 1.0

    @property
    def cascade_move(self) -> float:
        """``P*/P_s - 1``: what the cascade adds to the shock."""
        return self.final / self.shocked - 1.0


def _check_depth(depth: Any, law: str) -> float:
    if law not in IMPACTS:
        raise CascadeError(f"impact={law!r}; give one of {IMPACTS}")
    if isinstance(depth, (float, np.floating)) and depth == math.inf:
        return math.inf  # no impact at all: the cascade adds nothing to the shock
    return check_value(depth, "depth", lo=0.0, lo_open=True,
                        fix="give the forced notional in USD that moves the price by 1 % (> 0; inf: no impact)")


def solve_cascade(crowd: Crowd, price: float, shock: float, depth: float = DEFAULT_DEPTH,
                  law: str = "sqrt") -> CascadeSolution:
    """Iterate the cascade to its fixed point within a bar.

    Parameters
    ----------
    crowd : the leveraged positions.
    price : mark before the shock (> 0).
    shock : the initial move as a fraction (``-0.05`` = -5 %, > -1); its sign picks the side
        liquidated (down: longs, up: shorts); 0: nothing happens.
    depth : forced notional (USD) that moves the price by 1 % (> 0, ``inf``: no impact).
    law : ``"linear"`` or ``"sqrt"`` (module docstring).

    Returns
    -------
    CascadeSolution. Raises :class:`CascadeError` when the forced flow would push the price to
    zero or below (the depth is too thin for the crowd under the linear law).
    """
    p0 = check_value(price, "price", lo=0.0, lo_open=True, fix="give the mark before the shock, > 0")
    s = check_value(shock, "shock", lo=-1.0, lo_open=True, fix="give a fraction above -1 (-0.05 = a 5 % drop)")
    d = _check_depth(depth, law)
    ps = p0 * (1.0 + s)
    n = crowd.n
    closed_round = np.zeros(n, dtype=np.int64)
    exec_price = np.full(n, np.nan)
    direction = (s > 0) - (s < 0)
    prices, forced = [ps], [0.0]
    if direction == 0 or n == 0:
        return CascadeSolution(direction, p0, ps, np.array(prices), np.array(forced), closed_round, exec_price)
    liq_side = -direction  # a drop liquidates longs (+1)
    mine = crowd.side == liq_side
    notional_at_liq = crowd.qty * np.where(mine, crowd.liq, 0.0)
    p = ps
    for r in range(1, MAX_ROUNDS_GUARD):
        crossed = (crowd.liq >= p) if liq_side > 0 else (crowd.liq <= p)
        hit = mine & (closed_round == 0) & crossed
        if not hit.any():
            break
        closed_round[hit] = r
        # summed over the whole array with the open buckets as zeros: the same summation tree every
        # round and for every shock, so a larger set of closed buckets never sums to less (rounding
        # is monotone), and the fixed point stays monotone in the shock to the last bit
        f = float(np.where(closed_round > 0, notional_at_liq, 0.0).sum())
        move = impact(f, d, law)
        if direction < 0 and move >= 1.0:
            raise CascadeError(
                f"the cascade's forced notional {f:.4g} USD through depth={d:.4g} USD per 1 % moves the price by "
                f"{move:.1%}: the price would reach zero; give a larger depth, a smaller open interest, or the "
                "sqrt impact law")
        p = ps * (1.0 + direction * move)
        exec_price[hit] = p
        prices.append(p)
        forced.append(f)
    return CascadeSolution(direction, p0, ps, np.array(prices), np.array(forced), closed_round, exec_price)


# ------------------------------------------------------------------------------------ the path

@dataclass(frozen=True)
class CascadeModel:
    """Parameters of the cascade (defaults from public figures; module docstring, docs/stress.md).

    Attributes
    ----------
    open_interest : USD notional of the open interest at the shock (one side).
    leverage_mix : ``(leverage, share)`` pairs of the leveraged notional, shares summing to 1.
    long_share, short_share : fraction of the open interest held by leveraged longs / shorts.
    lookback_bars : bars before the shock the crowd's entries are spread over (volume-weighted).
    depth : forced notional (USD) moving the price by 1 % (``inf``: no impact).
    impact : ``"linear"`` or ``"sqrt"``.
    mmr : representative maintenance rate.
    bars : bars the cascade's move is spread over (1: all of it inside the shock bar).
    """

    open_interest: float = DEFAULT_OPEN_INTEREST
    leverage_mix: tuple[tuple[float, float], ...] = DEFAULT_LEVERAGE_MIX
    long_share: float = 1.0
    short_share: float = 1.0
    lookback_bars: int = 720
    depth: float = DEFAULT_DEPTH
    impact: str = "sqrt"
    mmr: float = DEFAULT_MMR
    bars: int = 1

    def __post_init__(self) -> None:
        check_value(self.open_interest, "CascadeModel.open_interest", lo=0.0, fix="give the open interest in USD, >= 0")
        _check_mix(self.leverage_mix)
        for name in ("long_share", "short_share"):
            check_value(getattr(self, name), f"CascadeModel.{name}", lo=0.0, hi=1.0, fix="give a fraction in [0, 1]")
        _check_depth(self.depth, self.impact)
        check_value(self.mmr, "CascadeModel.mmr", lo=0.0, hi=0.5, fix="give a fraction in [0, 0.5]")
        for name in ("lookback_bars", "bars"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise CascadeError(f"CascadeModel.{name}={v!r}; give a whole number of bars >= 1")

    def crowd(self, md: MarketData, k: int) -> Crowd:
        """The crowd open at bar ``k`` (:func:`crowd_from_history`)."""
        return crowd_from_history(md, k, open_interest=self.open_interest, leverage_mix=self.leverage_mix,
                                  lookback_bars=self.lookback_bars, long_share=self.long_share,
                                  short_share=self.short_share, mmr=self.mmr)


@dataclass(frozen=True, eq=False)
class CascadeResult:
    """A cascade on market data: the path and what happened.

    Attributes
    ----------
    data : the cascade path (MarketData that passes the loader's validation).
    bar : index of the shock bar; ``bars`` how many bars carry the cascade's move.
    crowd, solution : the positions and the rounds (:class:`CascadeSolution`).
    """

    data: MarketData
    bar: int
    bars: int
    crowd: Crowd
    solution: CascadeSolution

    def summary(self) -> dict[str, float | int | str]:
        """Plain numbers: ``time`` (ISO), ``start_price`` (mark open before the shock),
        ``shocked_price``, ``final_price``, ``total_drop`` and ``cascade_drop`` (fractions, negative
        for a fall), ``forced_notional`` (USD), ``forced_share`` (of the liquidated side's
        notional), ``iterations``, ``bars``."""
        sol = self.solution
        side = -sol.direction if sol.direction else 1
        side_notional = self.crowd.notional(sol.start, side)
        closed_notional = float((self.crowd.qty * sol.start)[sol.closed].sum())
        return {
            "time": iso(int(self.data.timestamps[self.bar])),
            "start_price": sol.start, "shocked_price": sol.shocked, "final_price": sol.final,
            "total_drop": sol.total_move, "cascade_drop": sol.cascade_move,
            "forced_notional": sol.forced_notional,
            "forced_share": closed_notional / side_notional if side_notional > 0 else 0.0,
            "iterations": sol.iterations, "bars": self.bars,
        }


def spread_factors(c: float, bars: int) -> np.ndarray:
    """Cumulative factors ``g_0 = 1, g_j = c ** (j / bars)``, ``g_bars = c`` exactly, float64 (bars + 1,)."""
    g = c ** (np.arange(bars + 1, dtype=np.float64) / bars)
    g[0], g[-1] = 1.0, c
    return g


def apply_cascade_move(md: MarketData, k: int, c: float, bars: int, what: str) -> MarketData:
    """``md`` with the cascade's move ``c = P*/P_s`` spread over bars ``k .. k + bars - 1`` (module
    docstring); ``c == 1`` returns ``md`` itself."""
    if c == 1.0:
        return md
    if k + bars > md.n:
        raise CascadeError(f"{what}: the cascade spreads over {bars} bars from {iso(int(md.timestamps[k]))} but the "
                           f"data ends {md.n - k} bars later; give fewer bars or more data")
    g = spread_factors(c, bars)
    down = c < 1.0
    frame = md.frame.copy()
    for cols in (TRADE, MARK):
        o, h, lo, cl = cols
        # a falling bar: open/high from the level at its start, low/close from the level at its end
        at_start = (o, h) if down else (o, lo)
        for col in cols:
            v = frame[col].to_numpy(dtype=np.float64, copy=True)
            gj = g[:-1] if col in at_start else g[1:]
            v[k:k + bars] *= gj
            v[k + bars:] *= c
            frame[col] = v
    fund = md.funding.copy()
    pb = print_bars(md)
    mp = fund["mark_price"].to_numpy(dtype=np.float64, copy=True)
    inside = (pb >= k) & (pb < k + bars)
    mp[inside] *= g[pb[inside] - k]
    mp[pb >= k + bars] *= c
    fund["mark_price"] = mp
    out = md.replace(frame=frame, funding=fund.reset_index(drop=True), notes=md.notes + (f"stress: {what}",))
    return check_market_data(out, what=what, base=md)


@dataclass(frozen=True)
class Cascade(Shock):
    """An initial shock of ``size`` at the open of the bar opening at ``at``, followed by the
    liquidation cascade it sets off (:class:`CascadeModel` ``model``).

    ``apply(md)`` returns the cascade path (``run(md).data``); ``run(md)`` returns the
    :class:`CascadeResult` with the crowd, the rounds and :meth:`CascadeResult.summary`. The crowd
    is built from the data before ``at`` (:func:`crowd_from_history`), the cascade starts from the
    shocked mark open. With no open interest, an infinite depth, or no bucket crossed, the path is
    ``Gap(at, size).apply(md)`` bit for bit.
    """

    at: Any
    size: float
    model: CascadeModel = field(default_factory=CascadeModel)

    def __post_init__(self) -> None:
        parse_instant(self.at, "Cascade.at")
        check_value(self.size, "Cascade.size", lo=-1.0, lo_open=True,
                     fix="give a fraction above -1 (-0.05 = a 5 % drop, 0.05 = a 5 % squeeze)")
        if not isinstance(self.model, CascadeModel):
            raise CascadeError(f"Cascade.model={self.model!r} is not a CascadeModel; give CascadeModel(...)")

    def run(self, md: MarketData) -> CascadeResult:
        """The cascade on ``md``: path, crowd and rounds."""
        k = bar_at(md, parse_instant(self.at, "Cascade.at"), "Cascade.at")
        crowd = self.model.crowd(md, k)
        p0 = float(md.frame["mark_open"].iloc[k])
        sol = solve_cascade(crowd, p0, float(self.size), self.model.depth, self.model.impact)
        gapped = Gap(self.at, self.size).apply(md)
        c = sol.final / sol.shocked  # exactly 1 when no bucket was crossed
        data = apply_cascade_move(gapped, k, c, self.model.bars, repr(self))
        return CascadeResult(data, k, self.model.bars, crowd, sol)

    def apply(self, md: MarketData) -> MarketData:
        return self.run(md).data


__all__ = [
    "Cascade", "CascadeError", "CascadeModel", "CascadeResult", "CascadeSolution", "Crowd", "DEFAULT_DEPTH",
    "DEFAULT_LEVERAGE_MIX", "DEFAULT_MMR", "DEFAULT_OPEN_INTEREST", "apply_cascade_move", "crowd_from_history",
    "impact", "solve_cascade", "spread_factors",
]
