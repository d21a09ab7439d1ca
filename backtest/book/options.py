"""Long puts and calls in a book: the option legs' settings and their contract paths.

An option leg is a rolled series of long European puts (or calls, ``put.option_type='call'``)
on one perpetual of the book (its
underlying), priced as the put simulator prices them (Black-76 on the underlying's mark close,
ATM vol from implied vol or EWMA x VRP, put-wing skew, Deribit-style fees; docs/instruments.md).
Which contract the leg holds at each bar does not depend on any account: the leg's expiry
schedule, strike rule and roll rules decide it, exactly as :func:`backtest.options.simulate_puts`
decides them for an always-held put (the path is taken from that simulator, one source of the
rules). Columns only choose **how many** contracts they hold (the book's target for the leg).

:func:`option_paths` turns the legs into per-bar arrays on the book's bars, every value per
contract in the settlement currency (USD for a USDT book, the coin for an inverse book: Deribit's
coin-settled options), at each bar's close instant. The book trades at bar ``t``'s open, the
close instant of bar ``t - 1``: the kernel and the reference read index ``t - 1`` there (see
docs/mechanics.md, "Options in a book").
"""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np

from backtest.engine.settings import SettingsError
from backtest.options import enums as OE
from backtest.options.inputs import YEAR_MS, Underlying
from backtest.options.pricing import gbs_greeks, skewed_vol
from backtest.options.sim import PutSettings, simulate_puts

# roll codes of OptionPaths.roll (what happens to the leg's contract at a bar's close instant)
ROLL_NONE = 0      # the contract held goes on
ROLL_FIRST = 1     # the leg's first contract (nothing held before: the first usable volatility)
ROLL_SETTLE = 2    # the contract held expired: settled at its payoff, replaced by a new one
ROLL_EARLY = 3     # early roll (|delta| or days to expiry): the held contract is sold, a new one bought

# PutSettings fields that a book leg does not use: the book's target sizes the leg, the account
# is the book's, the settlement currency is the book's.
_BOOK_SIZES = ("initial_capital", "size_mode", "exposure", "budget", "purpose")


@dataclass(frozen=True)
class OptionLeg:
    """One option leg of a book: long puts (or calls) on the book instrument ``underlying``.

    Parameters
    ----------
    underlying : symbol of a perpetual of the book (its mark close is the options' underlying).
    put : the contract rules (:class:`~backtest.options.PutSettings`: strike mode and moneyness
        or target delta, strike grid, expiry schedule, minimum days, early-roll delta and days,
        volatility source, skew, carry, fees, delivery fees, slippage), one value each (the
        contract path is shared by every column). Sizing fields (``initial_capital``,
        ``size_mode``, ``exposure``, ``budget``, ``purpose``) must stay at their defaults: the
        book's target sizes the leg. ``settlement`` must match the book ('usd' for a USDT book,
        'coin' for an inverse book); ``carry_from_funding`` is not supported in a book.
    name : label of the leg in results (default ``"<underlying> put"``).
    iv : optional implied volatility (fraction, NaN = missing) on the book's bars, for
        ``vol_source`` 'iv' or 'auto'.
    expiries : optional explicit expiry instants (int64 ms UTC or datetimes) replacing the
        ``put.expiry`` schedule (as ``simulate_puts(expiries=...)``).
    """

    underlying: str
    put: PutSettings = field(default_factory=PutSettings)
    name: str | None = None
    iv: Any = None
    expiries: Any = None

    def label(self) -> str:
        return self.name or f"{self.underlying} {self.put.option_type}"


OptionPaths = namedtuple("OptionPaths", [
    "k",        # int64 (J,): the underlying's instrument index in the book
    "roll",     # int64 (n, J): ROLL_* at each bar's close instant
    "old",      # float64 (n, J): value per contract of the contract held INTO the close instant:
                #   its payoff on ROLL_SETTLE, its model value on ROLL_EARLY / ROLL_NONE, NaN before
    "val",      # float64 (n, J): model value per contract at the close of the contract held after
                #   it (NaN before the first contract)
    "adv",      # float64 (n, J): model value per contract of the contract held during the bar, at
                #   the close's time to expiry with the underlying at its adverse mark (a put: the
                #   mark high; a call: the mark low); intrinsic value there if it expires at the
                #   close; NaN before
    "unit",     # float64 (n, J): fee and sizing base per contract: the underlying's mark close
                #   (USD book) or 1 (coin book: one coin per contract)
    "dfee",     # float64 (n, J): delivery fee per contract on ROLL_SETTLE (0 otherwise)
    "fee_rate", "fee_cap", "slip",  # float64 (J,): trading fee min(fee_rate*unit, fee_cap*price), slippage
    "strike", "expiry",  # float64 / int64 (n, J): the contract held after the close (NaN / -1 before)
    "delta",    # float64 (n, J): delta per contract at the close of the contract held after it
                #   (coins; coin book: Deribit net delta): what a hedge placed at the next open faces
    "vega",     # float64 (n, J): vega per contract per vol point (settlement currency), the same contract
    "delta_in", "vega_in",  # float64 (n, J): the same of the contract held during the bar, at its
                #   close (a contract expiring there: its intrinsic delta, vega 0): the Greeks of the
                #   positions the close reports
])
"""Per-bar contract paths of a book's option legs (:func:`option_paths`)."""


def check_option_legs(legs: Sequence[OptionLeg], symbols: Sequence[str], inverse: bool) -> list[OptionLeg]:
    """Validate the option legs against the book: each an OptionLeg on a symbol of the book,
    puts with the book's settlement, sizing fields at their defaults; a clear SettingsError
    naming the leg and the fix otherwise."""
    if isinstance(legs, OptionLeg):
        legs = [legs]
    out = []
    default = PutSettings()
    for j, leg in enumerate(legs):
        where = f"BookSettings.options[{j}]"
        if not isinstance(leg, OptionLeg):
            raise SettingsError(f"{where} is a {type(leg).__name__}; give an OptionLeg(underlying=..., put=PutSettings(...))")
        if leg.underlying not in symbols:
            raise SettingsError(f"{where}.underlying={leg.underlying!r} is not an instrument of the book "
                                f"{list(symbols)}; put options on one of them")
        p = leg.put
        if not isinstance(p, PutSettings):
            raise SettingsError(f"{where}.put is a {type(p).__name__}; give a PutSettings")
        want = "coin" if inverse else "usd"
        if p.settlement != want:
            raise SettingsError(f"{where}.put.settlement={p.settlement!r} but the book settles in "
                                f"{'a coin (inverse)' if inverse else 'USDT (linear)'}; use settlement={want!r}")
        for name in _BOOK_SIZES:
            if getattr(p, name) != getattr(default, name):
                raise SettingsError(f"{where}.put.{name}={getattr(p, name)!r}: in a book the target sizes an option "
                                    "leg (contracts = target x equity / underlying); leave it at its default")
        for name, v in vars(p).items():
            if isinstance(v, (list, tuple, np.ndarray)):
                raise SettingsError(f"{where}.put.{name}={v!r}: an option leg takes one value per setting (its "
                                    "contract path is shared by every column); use several legs to compare")
        if p.carry_from_funding:
            raise SettingsError(f"{where}.put.carry_from_funding=True is not supported in a book; give a constant "
                                "carry")
        out.append(leg)
    return out


def option_paths(bars: Any, legs: Sequence[OptionLeg], inverse: bool) -> OptionPaths:
    """The contract path of every option leg on the book's bars (:data:`OptionPaths`).

    The path is the put simulator's for an always-held put on the underlying's own bars (its
    mark close, high and low): the same first purchase (the first bar with a usable volatility,
    or ``put.start``), expiries, strikes, early rolls and settlements. Values are recomputed per
    bar with the readable pricing formulas (:mod:`backtest.options.pricing`); a test checks them
    against the simulator's own valuation.
    """
    n, jj = bars.n, len(legs)
    sym = list(bars.symbols)
    nan = lambda: np.full((n, jj), np.nan)  # noqa: E731
    roll = np.zeros((n, jj), dtype=np.int64)
    old, val, adv, unit, dfee = nan(), nan(), nan(), nan(), np.zeros((n, jj))
    strike, delta, vega, delta_in, vega_in = nan(), nan(), nan(), nan(), nan()
    expiry = np.full((n, jj), -1, dtype=np.int64)
    k_of = np.empty(jj, dtype=np.int64)
    fee_rate, fee_cap, slip = (np.empty(jj) for _ in range(3))
    for j, leg in enumerate(legs):
        k = sym.index(leg.underlying)
        k_of[j] = k
        p = leg.put
        fee_rate[j], fee_cap[j], slip[j] = float(p.fee_rate), float(p.fee_cap), float(p.slippage)
        bl = bars.legs[k]
        f = int(bars.first_bar[k])
        iv = None if leg.iv is None else np.asarray(leg.iv, dtype=np.float64)[f:]
        u = Underlying.from_arrays(bl.timestamp, bl.mark_close, high=bl.mark_high, low=bl.mark_low, iv=iv,
                                   bar_ms=int(bars.bar_ms), source="book mark")
        # the path alone: no fees or slippage (they do not move it), the default account
        res = simulate_puts(u, replace(p, fee_rate=0.0, fee_cap=0.0, delivery_fee_rate=0.0, delivery_fee_cap=0.0,
                                       slippage=0.0), expiries=leg.expiries)
        _fill_leg(res, u, p, inverse, f, j, roll, old, val, adv, unit, dfee, strike, expiry, delta, vega, delta_in,
                  vega_in)
    return OptionPaths(k=k_of, roll=roll, old=old, val=val, adv=adv, unit=unit, dfee=dfee, fee_rate=fee_rate,
                       fee_cap=fee_cap, slip=slip, strike=strike, expiry=expiry, delta=delta, vega=vega,
                       delta_in=delta_in, vega_in=vega_in)


def _value(mask, S, K, T, atm, skew, b, coin, call):
    """Model value per contract (settlement currency), delta (coins; coin: net delta) and vega
    per vol point of a put (a call) at underlying S and time T (years > 0), where ``mask``
    holds (NaN elsewhere): the put simulator's pricing rule."""
    v, d, vg = (np.full(mask.shape[0], np.nan) for _ in range(3))
    if mask.any():
        S_, K_, T_, a_ = S[mask], K[mask], T[mask], atm[mask]
        F = S_ * np.exp(b * T_)
        g = gbs_greeks(S_, K_, T_, skewed_vol(a_, K_, F, T_, skew), b=b, is_call=call)
        conv = 1.0 / F if coin else 1.0
        v[mask] = g["price"] * conv
        d[mask] = g["delta"] - v[mask] if coin else g["delta"]
        vg[mask] = g["vega"] * conv / 100.0
    return v, d, vg


def _payoff(K, S, coin, call):
    pay = np.maximum(S - K, 0.0) if call else np.maximum(K - S, 0.0)
    return pay / S if coin else pay


def _fill_leg(res, u, p, coin, f, j, roll, old, val, adv, unit, dfee, strike, expiry, delta, vega, delta_in,
              vega_in) -> None:
    """One leg's columns of the path arrays (book bars from ``f``, the underlying's first bar)."""
    ct = u.close_time
    S = u.price[:, 0]
    call = p.option_type == "call"
    # the adverse extreme of a long option: a put loses most at the mark high, a call at the low
    ext = u.low if call else u.high
    hi = ext[:, 0] if ext is not None else S
    atm = res.series["atm_vol"][:, 0]
    rolls = res.records["rolls"]
    sets = res.records["settlements"]
    nl = ct.shape[0]
    code = np.zeros(nl, dtype=np.int64)
    exp = np.full(nl, -1, dtype=np.int64)
    kk = np.full(nl, np.nan)
    early = (rolls["reason"] == OE.RollReason.EARLY_DELTA) | (rolls["reason"] == OE.RollReason.EARLY_DTE)
    code[rolls["bar"]] = np.where(rolls["reason"] == OE.RollReason.INITIAL, ROLL_FIRST,
                                  np.where(early, ROLL_EARLY, ROLL_SETTLE))
    exp[rolls["bar"]] = rolls["expiry"]
    kk[rolls["bar"]] = rolls["strike"]
    start = int(rolls["bar"][0])
    # the contract after each close: the last roll's, carried forward
    last = np.maximum.accumulate(np.where(code > 0, np.arange(nl), -1))
    held = last >= 0
    exp_after = np.where(held, exp[np.maximum(last, 0)], -1)
    k_after = np.where(held, kk[np.maximum(last, 0)], np.nan)
    b = float(p.carry)
    T = (exp_after - ct) / YEAR_MS
    v_after, d_after, vg_after = _value(held, S, k_after, T, atm, p.skew, b, coin, call)
    # the contract held during bar i (after close i - 1) and its value at close i
    exp_in = np.r_[-1, exp_after[:-1]]
    k_in = np.r_[np.nan, k_after[:-1]]
    has_in = exp_in >= 0
    T_in = (exp_in - ct) / YEAR_MS
    alive = has_in & (T_in > 0)
    v_in, d_in, vg_in = _value(alive, S, k_in, T_in, atm, p.skew, b, coin, call)
    v_adv, _, _ = _value(alive, hi, k_in, T_in, atm, p.skew, b, coin, call)
    settled = code == ROLL_SETTLE
    pay = np.where(has_in, _payoff(np.where(has_in, k_in, 0.0), S, coin, call), np.nan)
    o_old = np.where(settled, pay, np.where(code == ROLL_FIRST, np.nan, np.where(alive, v_in, np.nan)))
    o_old[:start] = np.nan
    o_adv = np.where(alive, v_adv, np.where(has_in, _payoff(np.where(has_in, k_in, 0.0), hi, coin, call), np.nan))
    un = np.ones(nl) if coin else S
    dfee_leg = np.where(settled, np.minimum(p.delivery_fee_rate * un, p.delivery_fee_cap * np.nan_to_num(pay)), 0.0)
    if not np.array_equal(np.flatnonzero(settled), sets["bar"]):  # one rule: the simulator's settlements
        raise RuntimeError(f"option path of {p.option_type}s: the put simulator settled at bars "
                           f"{sets['bar'].tolist()[:5]} but its scheduled rolls are at {np.flatnonzero(settled).tolist()[:5]}")
    sl = slice(f, f + nl)
    roll[sl, j] = code
    old[sl, j] = o_old
    val[sl, j] = np.where(held, v_after, np.nan)
    adv[sl, j] = o_adv
    unit[sl, j] = un
    dfee[sl, j] = dfee_leg
    strike[sl, j] = k_after
    expiry[sl, j] = exp_after
    delta[sl, j] = np.where(held, d_after, np.nan)
    vega[sl, j] = np.where(held, vg_after, np.nan)
    # an expiring contract's delta is its intrinsic one: -1/+1 in the money (coin: net of its value)
    itm = np.where(has_in, (S > k_in) if call else (S < k_in), False)
    d_exp = np.where(itm, 1.0 if call else -1.0, 0.0)
    if coin:
        d_exp = d_exp - np.nan_to_num(pay)
    delta_in[sl, j] = np.where(alive, d_in, np.where(has_in, d_exp, np.nan))
    vega_in[sl, j] = np.where(alive, vg_in, np.where(has_in, 0.0, np.nan))


# Account series derived from the outputs and the paths (the kernel's wrapper and the reference
# both call this: one definition).
OPTION_SERIES = ("option_value", "delta_btc", "vega")


def option_outputs(position: np.ndarray, notional: np.ndarray, paths: OptionPaths, mark_close: np.ndarray,
                   price_usd: np.ndarray, inverse: bool) -> dict[str, np.ndarray]:
    """Fill the option legs' delta-equivalent notional and return the account's option series.

    Parameters
    ----------
    position, notional : float64 (n, K + J, m): contracts at the close of every instrument (the
        perpetuals' notional filled, the option rows' written here in place:
        ``q * delta * S`` in a USDT book, ``q * delta`` coins in a coin book).
    paths : the legs' :data:`OptionPaths`.
    mark_close : float64 (n, K), the perpetuals' mark closes (NaN before a listing).
    price_usd : float64 (n,), USD per unit of the settlement currency.
    inverse : a coin-margined book.

    Returns
    -------
    ``option_value`` (``sum_j q_j * old[t]``, settlement currency), ``delta_btc`` (the book's
    delta, perpetuals and options, in units of the first instrument's coin: the USD delta over
    its mark close) and ``vega`` (settlement currency per vol point), each float64 (n, m).
    """
    n, kj, m = position.shape
    kk = kj - paths.k.shape[0]
    value = np.zeros((n, m))
    vega = np.zeros((n, m))
    usd = notional[:, :kk, :].sum(axis=1) * (price_usd[:, None] if inverse else 1.0)
    for j in range(paths.k.shape[0]):
        q = position[:, kk + j, :]
        held = q != 0.0
        s_k = mark_close[:, paths.k[j]]
        d = np.where(held, q * np.nan_to_num(paths.delta_in[:, j])[:, None], 0.0)
        notional[:, kk + j, :] = d if inverse else d * np.nan_to_num(s_k)[:, None]
        value += np.where(held, q * np.nan_to_num(paths.old[:, j])[:, None], 0.0)
        vega += np.where(held, q * np.nan_to_num(paths.vega_in[:, j])[:, None], 0.0)
        usd += d * np.nan_to_num(s_k)[:, None]
    s0 = mark_close[:, 0]
    delta_btc = np.where(np.isfinite(s0)[:, None], usd / np.where(np.isfinite(s0), s0, 1.0)[:, None], 0.0)
    return {"option_value": value, "delta_btc": delta_btc, "vega": vega}
