"""Small hand-built SimResult objects for the metrics and report tests (no engine needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from backtest.result import SimResult

H = 3_600_000

FILL = [("bar", "i8"), ("col", "i8"), ("price", "f8"), ("size", "f8"), ("notional", "f8"),
        ("fee", "f8"), ("status", "i8"), ("reason", "i8")]
FUNDING = [("bar", "i8"), ("col", "i8"), ("time", "i8"), ("rate", "f8"), ("mark", "f8"),
           ("position", "f8"), ("amount", "f8")]
CALL = [("bar", "i8"), ("col", "i8"), ("price", "f8"), ("margin_ratio", "f8"), ("response", "i8"),
        ("amount", "f8")]
LIQ = [("bar", "i8"), ("col", "i8"), ("mark_price", "f8"), ("price", "f8"), ("size", "f8"),
       ("clearance_fee", "f8"), ("equity_start", "f8"), ("equity_before", "f8"), ("equity_after", "f8"),
       ("deficit", "f8")]


def index(n: int, bar_ms: int = H, start: str = "2022-03-01") -> pd.DatetimeIndex:
    return pd.date_range(start, periods=n, freq=pd.Timedelta(milliseconds=bar_ms), tz="UTC")


def from_equity(equity, *, kind="perp", currency="USDT", bar_ms=H, start="2022-03-01",
                initial=None, price_usd=None, columns=None, extra=None, records=None, meta=None,
                capital_added=None, position=None) -> SimResult:
    """A result whose only content is an equity path (other series flat/zero unless given)."""
    eq = np.asarray(equity, dtype=np.float64)
    if eq.ndim == 1:
        eq = eq[:, None]
    n, m = eq.shape
    pu = np.ones(n) if price_usd is None else np.asarray(price_usd, dtype=np.float64)
    z = np.zeros((n, m))
    series = {
        "equity": eq, "equity_usd": eq * pu[:, None],
        "position": np.ones((n, m)) if position is None else np.asarray(position, float).reshape(n, m),
        "notional": eq.copy(), "leverage": np.ones((n, m)), "cum_funding": z.copy(),
        "cum_fees": z.copy(),
        "capital_added": z.copy() if capital_added is None else np.asarray(capital_added, float).reshape(n, m),
    }
    series.update(extra or {})
    init = np.full(m, 100.0) if initial is None else np.atleast_1d(np.asarray(initial, dtype=np.float64))
    cols = pd.Index([f"c{j}" for j in range(m)] if columns is None else columns)
    return SimResult(kind=kind, currency=currency, index=index(n, bar_ms, start), columns=cols,
                     series=series, records=records or {}, price_usd=pu, initial_capital=init,
                     meta={"bar_ms": bar_ms, **(meta or {})})


def perp_result(n: int = 72, seed: int = 3) -> SimResult:
    """Two short-perp policies on one price path: 'x2' survives, 'x10' is liquidated at bar 40
    and stops; margin calls, funding every 8 bars, fills at bar 0 and at the liquidation."""
    rng = np.random.default_rng(seed)
    price = 40_000 * np.cumprod(1 + rng.normal(0.0005, 0.006, n))
    price[36:41] *= np.linspace(1.01, 1.07, 5)  # a squeeze
    lev = np.array([2.0, 10.0])
    init = np.array([10_000.0, 10_000.0])
    qty = -lev * init / price[0]  # short
    fee = 0.0004 * np.abs(qty) * price[0]
    rate = np.where(np.arange(n) % 8 == 0, 0.0001, 0.0)
    fund = -qty[None, :] * price[:, None] * rate[:, None]  # a short receives a positive rate
    cum_fund = np.cumsum(fund, axis=0)
    eq = init + qty * (price[:, None] - price[0]) + cum_fund - fee
    pos = np.repeat(qty[None, :], n, axis=0)
    cum_fees = np.repeat(fee[None, :], n, axis=0)
    liq_bar = 40
    eq_before = eq[liq_bar, 1]
    eq[liq_bar:, 1] = 0.0
    pos[liq_bar:, 1] = 0.0
    cum_fund[liq_bar:, 1] = cum_fund[liq_bar - 1, 1]
    cum_fees[liq_bar:, 1] += 12.5
    notional = pos * price[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        leverage = np.where(eq > 0, np.abs(notional) / eq, 0.0)
        mr = np.where(eq > 0, 0.004 * np.abs(notional) / eq, 0.0)
    liq_price = np.repeat((price[0] * (1 + 1 / lev))[None, :], n, axis=0)
    fills = np.array([(0, 0, price[0], qty[0], qty[0] * price[0], fee[0], 0, 0),
                      (0, 1, price[0], qty[1], qty[1] * price[0], fee[1], 0, 0),
                      (liq_bar, 1, price[liq_bar], -qty[1], -qty[1] * price[liq_bar], 12.5, 0, 3)],
                     dtype=FILL)
    frec = [(b, c, int(index(n)[b].value // 10**6), 0.0001, price[b], qty[c], fund[b, c])
            for b in range(0, n, 8) for c in range(2) if not (c == 1 and b >= liq_bar)]
    calls = np.array([(37, 1, price[37], 0.85, 0, 0.0), (39, 1, price[39], 0.95, 0, 0.0)], dtype=CALL)
    liqs = np.array([(liq_bar, 1, price[liq_bar] * 1.01, price[liq_bar], -qty[1], 12.5, eq[liq_bar - 1, 1],
                      eq_before, 0.0, 0.0)],
                    dtype=LIQ)
    return SimResult(
        kind="perp", currency="USDT", index=index(n), columns=pd.Index(["x2", "x10"]),
        series={"equity": eq, "equity_usd": eq.copy(), "position": pos, "notional": notional,
                "leverage": leverage, "margin_ratio": mr, "liq_price": liq_price,
                "cum_funding": cum_fund, "cum_fees": cum_fees, "capital_added": np.zeros((n, 2)),
                "price": np.repeat(price[:, None], 2, axis=1)},
        records={"fills": fills, "funding": np.array(frec, dtype=FUNDING),
                 "margin_calls": calls, "liquidations": liqs},
        price_usd=np.ones(n), initial_capital=init,
        meta={"bar_ms": H, "account": {"margin_call_threshold": 0.8}})


def put_result(n: int = 72) -> SimResult:
    """A BTC-settled rolled put: equity in BTC, Greeks, premium, rolls and a settlement."""
    t = np.arange(n)
    btc = 30_000 * (1 - 0.002 * t)
    eq = (1.0 - 0.01 + 0.0004 * t)[:, None]
    prem = np.where(t >= 24, 0.02, 0.01)[:, None]
    pos = np.ones((n, 1))
    greeks = {"delta": -0.3 - 0.001 * t, "gamma": 1e-5 + 0 * t, "vega": 12.0 - 0.1 * t, "theta": -3.0 + 0 * t}
    rolls = np.array([(0, 0, 28_000.0, 0.01), (24, 0, 27_000.0, 0.01)],
                     dtype=[("bar", "i8"), ("col", "i8"), ("strike", "f8"), ("premium", "f8")])
    sett = np.array([(23, 0, 28_000.0, 0.0)],
                    dtype=[("bar", "i8"), ("col", "i8"), ("strike", "f8"), ("payoff", "f8")])
    return from_equity(eq, kind="put", currency="BTC", initial=[1.0], price_usd=btc, columns=["put-25d"],
                       position=pos, extra={"premium_paid": prem, **{k: v[:, None] for k, v in greeks.items()}},
                       records={"rolls": rolls, "settlements": sett})


def inverse_result(n: int = 72) -> SimResult:
    """A -1x daily-reset product held in USD with an 'ideal_nav' series and rebalances."""
    t = np.arange(n)
    nav = 100 * np.cumprod(1 - 0.001 * np.sin(t / 5.0))
    ideal = nav * (1 + 0.0001 * t)
    reb = np.array([(b, 0, 1.0) for b in range(0, n, 24)],
                   dtype=[("bar", "i8"), ("col", "i8"), ("size", "f8")])
    return from_equity(nav[:, None], kind="inverse_product", currency="USD", initial=[100.0],
                       columns=["short-1x"], extra={"ideal_nav": ideal[:, None]},
                       records={"rebalances": reb})
