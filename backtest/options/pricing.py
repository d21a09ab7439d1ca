"""European option prices and Greeks: Black-76 on the forward, generalized Black-Scholes, inverse
(coin-settled) options, put skew and Deribit option fees. Vectorized numpy; every argument
broadcasts.

Conventions (units in each docstring):

* ``T`` in years of 365 calendar days; ``sigma`` annualised, as a fraction (0.8 = 80 %).
* Generalized Black-Scholes (Haug, "The Complete Guide to Option Pricing Formulas", ch. 1) on
  an underlying ``S`` with cost of carry ``b`` and discount rate ``r``: the forward is
  ``F = S * exp(b T)``, the discount factor ``D = exp(-r T)``. ``b = r`` is Black-Scholes,
  ``b = r - q`` Merton (dividend yield q), ``b = 0`` Black-76 with ``S = F``.
* Greeks are with respect to ``S``; vega per 1.00 of vol (divide by 100 for a vol point);
  theta per year of calendar time with ``S`` held fixed (divide by 365 for a day).
* Crypto default: ``r = 0`` (Deribit quotes inverse prices undiscounted, in forward space).

The same formulas are written once more, scalar, in :mod:`backtest.options.nb` for the
simulation kernel; the tests check the two against each other and against published values.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from backtest.options.inputs import InstrumentInputError
from backtest.options.nb import norm_cdf_ufunc

_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)

GREEKS = ("price", "delta", "gamma", "vega", "theta")


def norm_cdf(x: Any) -> np.ndarray:
    """Standard normal CDF, via ``erfc`` (accurate in both tails)."""
    return norm_cdf_ufunc(np.asarray(x, dtype=np.float64))


def norm_pdf(x: Any) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return _INV_SQRT_2PI * np.exp(-0.5 * x * x)


def _check(name: str, a: np.ndarray, ok: np.ndarray, what: str) -> None:
    bad = ~ok
    if bad.any():
        idx = np.argwhere(bad)[0] if a.ndim else ()
        val = float(a[tuple(idx)] if a.ndim else a[()])
        where = f" at index {tuple(int(i) for i in idx)}" if a.ndim else ""
        raise InstrumentInputError(f"{name}{where} is {val!r}; it must be {what}")


def _inputs(S: Any, K: Any, T: Any, sigma: Any, r: Any, b: Any, is_call: Any):
    S, K, T, sigma, r, b = (np.asarray(x, dtype=np.float64) for x in (S, K, T, sigma, r, b))
    call = np.asarray(is_call, dtype=bool)
    _check("underlying/forward price", S, np.isfinite(S) & (S > 0), "finite and > 0")
    _check("strike", K, np.isfinite(K) & (K > 0), "finite and > 0")
    _check("time to expiry T", T, np.isfinite(T) & (T >= 0), "finite and >= 0 (years)")
    _check("volatility sigma", sigma, np.isfinite(sigma) & (sigma > 0),
           "finite and > 0 (an annualised fraction, 0.8 = 80 %)")
    _check("rate r", r, np.isfinite(r), "finite")
    _check("carry b", b, np.isfinite(b), "finite")
    return np.broadcast_arrays(S, K, T, sigma, r, b, call)


def gbs_greeks(S: Any, K: Any, T: Any, sigma: Any, *, r: Any = 0.0, b: Any = 0.0,
               is_call: Any = False) -> dict[str, np.ndarray]:
    """Generalized Black-Scholes price and Greeks.

    Parameters
    ----------
    S : underlying price (> 0).
    K : strike (> 0), same currency as S.
    T : years to expiry (>= 0; at 0 the price is the discounted intrinsic value).
    sigma : annualised volatility, fraction (> 0).
    r : continuously compounded discount rate per year.
    b : cost of carry per year (forward ``F = S e^{bT}``).
    is_call : bool (array); False = put.

    Returns
    -------
    dict with float64 arrays (broadcast shape):
        ``price`` (currency of S per unit), ``delta`` (dV/dS), ``gamma`` (d2V/dS2, per unit of S),
        ``vega`` (dV/dsigma per 1.00 vol), ``theta`` (dV/dt per year, S fixed).

    Raises
    ------
    InstrumentInputError
        If a price/strike is not > 0, T < 0, or sigma is not finite and > 0.
    """
    S, K, T, sigma, r, b, call = _inputs(S, K, T, sigma, r, b, is_call)
    live = T > 0
    Tl = np.where(live, T, 1.0)
    sq = sigma * np.sqrt(Tl)
    d1 = (np.log(S / K) + (b + 0.5 * sigma * sigma) * Tl) / sq
    d2 = d1 - sq
    cb = np.exp((b - r) * Tl)       # e^{(b-r)T}: multiplies S terms
    disc = np.exp(-r * Tl)
    pdf1 = norm_pdf(d1)
    sign = np.where(call, 1.0, -1.0)
    nd1 = norm_cdf(sign * d1)
    nd2 = norm_cdf(sign * d2)
    price = sign * (S * cb * nd1 - K * disc * nd2)
    delta = sign * cb * nd1
    gamma = cb * pdf1 / (S * sq)
    vega = S * cb * pdf1 * np.sqrt(Tl)
    theta = (-S * cb * pdf1 * sigma / (2.0 * np.sqrt(Tl))
             - sign * (b - r) * S * cb * nd1 - sign * r * K * disc * nd2)
    # Expiry: intrinsic value (no discounting left), step delta, no time value.
    intrinsic = np.maximum(sign * (S - K), 0.0)
    itm = np.where(sign * (S - K) > 0, sign, 0.0)
    return {
        "price": np.where(live, price, intrinsic),
        "delta": np.where(live, delta, itm),
        "gamma": np.where(live, gamma, 0.0),
        "vega": np.where(live, vega, 0.0),
        "theta": np.where(live, theta, 0.0),
    }


def gbs_price(S: Any, K: Any, T: Any, sigma: Any, *, r: Any = 0.0, b: Any = 0.0,
              is_call: Any = False) -> np.ndarray:
    """Generalized Black-Scholes price (see :func:`gbs_greeks`)."""
    return gbs_greeks(S, K, T, sigma, r=r, b=b, is_call=is_call)["price"]


def black76_greeks(F: Any, K: Any, T: Any, sigma: Any, *, r: Any = 0.0,
                   is_call: Any = False) -> dict[str, np.ndarray]:
    """Black-76 on the forward ``F`` (discount ``D = e^{-rT}``): price ``D [F N(d1) - K N(d2)]``
    for a call, ``D [K N(-d2) - F N(-d1)]`` for a put; Greeks with respect to F
    (delta ``D N(d1)`` / ``-D N(-d1)``; theta per year with F fixed). Units as
    :func:`gbs_greeks`."""
    return gbs_greeks(F, K, T, sigma, r=r, b=0.0, is_call=is_call)


def black76(F: Any, K: Any, T: Any, sigma: Any, *, r: Any = 0.0, is_call: Any = False) -> np.ndarray:
    """Black-76 price on the forward (see :func:`black76_greeks`)."""
    return black76_greeks(F, K, T, sigma, r=r, is_call=is_call)["price"]


def bsm_greeks(S: Any, K: Any, T: Any, sigma: Any, *, r: Any = 0.0, q: Any = 0.0,
               is_call: Any = False) -> dict[str, np.ndarray]:
    """Black-Scholes-Merton on spot with dividend (or coin lending) yield ``q``: ``b = r - q``."""
    return gbs_greeks(S, K, T, sigma, r=r, b=np.asarray(r, float) - np.asarray(q, float), is_call=is_call)


def forward_price(S: Any, T: Any, carry: Any = 0.0) -> np.ndarray:
    """Forward from the perp mark: ``F = S exp(carry T)`` (carry annualised, T in years)."""
    return np.asarray(S, float) * np.exp(np.asarray(carry, float) * np.asarray(T, float))


def parity_gap(call: Any, put: Any, F: Any, K: Any, T: Any, *, r: Any = 0.0) -> np.ndarray:
    """Black-76 put-call parity residual ``C - P - D (F - K)`` (zero for consistent prices)."""
    return (np.asarray(call, float) - np.asarray(put, float)
            - np.exp(-np.asarray(r, float) * np.asarray(T, float)) * (np.asarray(F, float) - np.asarray(K, float)))


def skewed_vol(atm_vol: Any, K: Any, F: Any, T: Any, skew: Any = 0.10) -> np.ndarray:
    """Put-wing skew: ``sigma(K) = atm_vol * (1 + skew * max(0, -m))`` with the time-scaled
    log-moneyness ``m = ln(K/F) / sqrt(T)``; strikes at or above the forward keep ``atm_vol``.

    A 1-month 10 %-OTM put (m = -0.367) at skew 0.10 gets +3.7 % relative vol.
    ``T`` must be > 0 (years).
    """
    atm = np.asarray(atm_vol, float)
    T = np.asarray(T, float)
    _check("time to expiry T", T, np.isfinite(T) & (T > 0), "> 0 (years) for a skew adjustment")
    m = np.log(np.asarray(K, float) / np.asarray(F, float)) / np.sqrt(T)
    return atm * (1.0 + np.asarray(skew, float) * np.maximum(0.0, -m))


# --- inverse (coin-settled) options, Deribit style -------------------------------------------

def inverse_price(F: Any, K: Any, T: Any, sigma: Any, *, is_call: Any = False) -> np.ndarray:
    """Coin price of a coin-settled option: ``Black-76(F, K, T, sigma; D = 1) / F`` (Deribit
    quotes BTC options in forward space, undiscounted). Coins per contract of 1 coin."""
    F = np.asarray(F, float)
    return black76(F, K, T, sigma, is_call=is_call) / F


def inverse_payoff(K: Any, S_T: Any, *, is_call: Any = False) -> np.ndarray:
    """Coin payoff at expiry per contract: put ``max(K - S_T, 0) / S_T``, call
    ``max(S_T - K, 0) / S_T`` (Deribit options docs; ``S_T`` = delivery price, USD)."""
    K, S_T = np.asarray(K, float), np.asarray(S_T, float)
    _check("delivery price S_T", S_T, np.isfinite(S_T) & (S_T > 0), "finite and > 0")
    sign = np.where(np.asarray(is_call, bool), 1.0, -1.0)
    return np.maximum(sign * (S_T - K), 0.0) / S_T


def inverse_net_delta(F: Any, K: Any, T: Any, sigma: Any, *, is_call: Any = False) -> np.ndarray:
    """Delta of an inverse option as a coin-margined account sees it (Deribit convention):
    ``delta_BS - p_coin`` per contract (coins). Buying the option pays ``p_coin`` out of the
    coin balance, so a long put's net delta is more negative than its Black-Scholes delta."""
    g = black76_greeks(F, K, T, sigma, is_call=is_call)
    return g["delta"] - g["price"] / np.asarray(F, float)


def option_fee(premium: Any, underlying: Any = 1.0, *, fee_rate: Any = 0.0003, cap: Any = 0.125) -> np.ndarray:
    """Deribit option trading fee per contract: ``min(fee_rate * underlying, cap * premium)``.

    Give both in the same currency: coin-settled ``underlying = 1`` (0.0003 BTC per contract)
    and the premium in coin; USD book ``underlying`` = index price (USD) and the premium in USD.
    Example (Deribit "Fees"): a premium of 0.0001 BTC pays 0.0000125 BTC.
    """
    return np.minimum(np.asarray(fee_rate, float) * np.asarray(underlying, float),
                      np.asarray(cap, float) * np.asarray(premium, float))
