"""Daily-reset (and constant-leverage) leveraged products on a perp -> :class:`SimResult`.

Model per product unit (details in ``docs/instruments.md``):

* bought at bar 0's close at NAV 1; holds USD cash and a perp position ``q`` so that
  ``NAV = cash + q P`` and the effective leverage is ``L' = q P / NAV``;
* rebalance = set ``q = L NAV / P`` (cost ``trade_cost x |traded notional|``);
* ``reset='daily'``: rebalance at the first bar close at or after each day's
  ``rebalance_hour`` (UTC), plus intraday when ``|L'| >= trigger x |L|``; with high/low data the
  trigger is checked along the bar (path taken as continuous from the previous close to the
  adverse extreme; each trigger level crossed is executed at exactly that price), otherwise
  at the close;
* ``reset='bar'``: rebalance at every bar close (constant leverage, for comparison);
* management fee ``fee_per_day x NAV x days since the last charge`` at each daily instant;
* funding of the backing perp: a print inside bar i pays ``-q x P_{i-1} x rate`` (a short,
  L < 0, receives ``|L'| NAV rate`` when the rate is positive);
* NAV reaching 0 closes the product (record ``terminated``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from backtest.options.inputs import (
    InstrumentInputError, as_underlying, column_count, column_labels, per_column,
)
from backtest.products import enums as E
from backtest.products.nb import simulate_products_nb
from backtest.result import SimResult

Num = float | int | Sequence[float] | np.ndarray
Choice = str | Sequence[str]


@dataclass(frozen=True)
class ProductSettings:
    """Settings of a leveraged-product holding; every field except ``trigger_check`` is a scalar
    or one value per column.

    Parameters
    ----------
    leverage : target leverage L, signed (-1, -2, -3 for inverse products; any non-zero value).
    reset : ``'daily'`` (daily reset + triggers) or ``'bar'`` (rebalanced every bar).
    rebalance_hour : daily reset time, UTC hours (0.0 = 00:00; FTX used 00:02).
    trigger : intraday rebalance when ``|L'| >= trigger x |L|`` (FTX: 4/3; None or inf = never).
    fee_per_day : management fee, fraction of NAV per day (0.0003 = 0.03 %/day).
    trade_cost : cost of each rebalance trade, fraction of traded notional (0).
    include_funding : pay/receive the backing perp's funding (True).
    investment : USD invested at NAV 1 (= product units held).
    trigger_check : ``'extreme'`` (along the bar using high/low when the data has them) or
        ``'close'`` (closes only). One value for all columns.
    """

    leverage: Num = -1.0
    reset: Choice = "daily"
    rebalance_hour: Num = 0.0
    trigger: Num | None = 4.0 / 3.0
    fee_per_day: Num = 0.0003
    trade_cost: Num = 0.0
    include_funding: bool | Sequence[bool] = True
    investment: Num = 10_000.0
    trigger_check: str = "extreme"


def _arrays(s: ProductSettings, m: int) -> dict[str, np.ndarray]:
    f = lambda name, v, **kw: per_column(name, v, m, **kw)  # noqa: E731
    a = {
        "lev": f("leverage", s.leverage),
        "reset": f("reset", s.reset, choices=E.Reset.names),
        "rebalance_hour": f("rebalance_hour", s.rebalance_hour),
        "trigger": f("trigger", s.trigger),
        "fee_day": f("fee_per_day", s.fee_per_day),
        "trade_cost": f("trade_cost", s.trade_cost),
        "has_funding": f("include_funding", s.include_funding, dtype=bool),
        "invest": f("investment", s.investment),
    }
    a["trigger"] = np.where(np.isnan(a["trigger"]), np.inf, a["trigger"])  # None = never
    fin = np.isfinite
    checks = [
        ("leverage", "lev", fin(a["lev"]) & (a["lev"] != 0), "a finite non-zero number (e.g. -1, -2, -3)"),
        ("rebalance_hour", "rebalance_hour", (a["rebalance_hour"] >= 0) & (a["rebalance_hour"] < 24),
         "in [0, 24) UTC hours"),
        ("trigger", "trigger", a["trigger"] > 1, "> 1 (a multiple of |L|, e.g. 4/3), or None for no trigger"),
        ("fee_per_day", "fee_day", (a["fee_day"] >= 0) & (a["fee_day"] < 0.1), "in [0, 0.1) per day"),
        ("trade_cost", "trade_cost", (a["trade_cost"] >= 0) & (a["trade_cost"] < 0.1), "in [0, 0.1)"),
        ("investment", "invest", fin(a["invest"]) & (a["invest"] > 0), "a finite number > 0 (USD)"),
    ]
    for public, key, ok, what in checks:
        if not ok.all():
            j = int(np.argmax(~ok))
            raise InstrumentInputError(f"ProductSettings.{public}={a[key][j].item()!r} (column {j}) must be {what}")
    a["offset_ms"] = np.round(a["rebalance_hour"] * 3_600_000).astype(np.int64)
    return a


def simulate_product(data: Any, settings: ProductSettings = ProductSettings(), *, funding_rate: Any = None,
                     price: str = "mark", columns: Any = None, currency: str = "USDT") -> SimResult:
    """Simulate holdings of leveraged products, one per column.

    Parameters
    ----------
    data : an :class:`~backtest.options.inputs.Underlying`, a DataFrame/Series, or an object
        with a ``.frame`` DataFrame (``MarketData``). ``price`` may have one path per column
        (shape (n, m)) for Monte Carlo runs.
    settings : :class:`ProductSettings`; per-column sequences make a grid.
    funding_rate : optional (n,) funding rates per bar (NaN = no print) overriding the data's.
    price : ``'mark'`` (mark close/high/low when the data has them) or ``'close'``.
    columns : optional column labels.
    currency : name of the settlement currency (USD-margined: ``'USDT'``).

    Returns
    -------
    SimResult
        ``kind='inverse_product'``; series (n_bars, n_cols): the required ones (``equity`` =
        investment x NAV, ``position`` = product units, ``notional`` = perp notional = L' x equity,
        ``leverage`` = |L'|, ``cum_fees`` = management fees + trade costs) plus ``nav``,
        ``nav_gross`` (same rebalances, no fees/funding/costs), ``ideal_nav``
        (1 + L x cumulative return), ``effective_leverage`` (signed L'), ``perp_position``
        (coins), ``log_decay`` (ln nav_gross - L ln(S_t/S_0)), ``log_decay_estimate``
        (-(L^2 - L)/2 x sum of squared log returns between rebalances), ``cum_mgmt_fees``,
        ``cum_trade_costs``; records ``rebalances`` (bar, col, reason, price,
        leverage_before, nav, traded).
    """
    if settings.trigger_check not in ("extreme", "close"):
        raise InstrumentInputError(
            f"ProductSettings.trigger_check={settings.trigger_check!r} must be 'extreme' or 'close'")
    u = as_underlying(data, price=price, funding_rate=funding_rate)
    values = {k: v for k, v in asdict(settings).items() if k != "trigger_check"}
    m = column_count(values)
    for name, arr in (("price", u.price), ("funding_rate", u.funding_rate)):
        k = 1 if arr is None else arr.shape[1]
        if k > 1:
            if m not in (1, k):
                raise InstrumentInputError(f"{name} has {k} path columns but the settings give {m} columns")
            m = k
    a = _arrays(settings, m)
    has_hl = settings.trigger_check == "extreme" and u.high is not None
    hi = u.high if has_hl else u.price
    lo = u.low if has_hl else u.price
    fund = u.funding_rate if u.funding_rate is not None else np.full((u.n, 1), np.nan)
    has_funding = a["has_funding"] & (u.funding_rate is not None)
    out, ri, rf = simulate_products_nb(
        u.close_time, u.price, hi, lo, has_hl, fund, has_funding, a["lev"], a["trigger"], a["reset"],
        a["offset_ms"], a["fee_day"], a["trade_cost"], a["invest"])
    rec = np.empty(ri.shape[0], dtype=E.rebalance_dt)
    for j, name in enumerate(E.REB_INT):
        rec[name] = ri[:, j]
    for j, name in enumerate(E.REB_FLOAT):
        rec[name] = rf[:, j]
    series = {name: np.ascontiguousarray(out[k]) for k, name in enumerate(E.SERIES)}
    meta = {
        "instrument": "inverse_product",
        "price_source": u.source,
        "trigger_check": "extreme (high/low)" if has_hl else "close",
        "funding": bool(u.funding_rate is not None),
        "settings": {k: (v if not isinstance(v, float) or math.isfinite(v) else str(v))
                     for k, v in asdict(settings).items() if not isinstance(v, (list, tuple, np.ndarray))},
        "rebalance_reasons": list(E.RebalanceReason.names),
        "notes": [
            "bought at bar 0's close at NAV 1; equity = investment x NAV",
            "notional = perp notional = effective leverage x equity (negative for inverse products)",
            "reset='bar' rebalances are not recorded (one per bar)",
        ],
    }
    return SimResult(kind="inverse_product", currency=currency, index=u.index,
                     columns=column_labels(values, m, columns), series=series, records={"rebalances": rec},
                     price_usd=np.ones(u.n), initial_capital=a["invest"].copy(), meta=meta,
                     underlying=u.price[:, 0].copy())
