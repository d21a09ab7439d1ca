"""Baselines on the run's window: spot buy-and-hold, a 1x short held, and cash.

Every ``backtest run`` / ``backtest sweep`` adds them (``baselines = false`` turns them off) as one
result named :data:`NAME` with three columns, ``meta['baseline'] = True``: the report ranks them
in its tables, marked as baselines, and never counts them as the best of the comparison.

* **spot buy-and-hold** (:data:`SPOT`): :data:`CAPITAL` USD buys the underlying at the first
  bar's close, paying the market's taker fee once (no funding, no leverage, never sold): USD
  equity ``C * (1 - taker_fee) * close_t / close_0`` (``close``: the ``[data]`` market's trade
  close, standing in for spot);
* **1x short held** (:data:`SHORT`): the perp engine with the engine's default account (cross,
  leverage setting 20, fee = the market's taker fee, lag 1, stop after a liquidation) and a
  target of -1x equity on the first bar, then NaN (keep): filled at the second bar's open (the
  first bar's close in a continuous market), held without rebalancing, funding and fees
  included; the strategy ``short_hold`` with ``rebalance = false`` under ``const(1)``;
* **cash** (:data:`CASH`): :data:`CAPITAL` USD held, constant.

All three start from :data:`CAPITAL` USD (for a coin-margined market, the short's coin capital
is ``CAPITAL / mark_close_0``, so that its USD value at the first bar is the same) and settle in
the short's currency: the market's settlement currency for a linear perp (USDT, valued at 1 USD),
the coin for an inverse one (USD equity / the mark close, as the engine values its coin equity).
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import pandas as pd

from backtest.engine.enums import FillReason, FillStatus, RECORD_DTYPES, SERIES
from backtest.engine.settings import Account
from backtest.result import SimResult

NAME = "baselines"
SPOT, SHORT, CASH = "spot buy-and-hold", "1x short held", "cash"
LABELS = (SPOT, SHORT, CASH)
CAPITAL = float(cast(float, Account().initial_capital))  # USD each baseline starts with (the engine's default)


def short_target(n_bars: int) -> np.ndarray:
    """The held short's target (n_bars,): -1x equity on the first bar, NaN (keep) after."""
    target = np.full(n_bars, np.nan)
    target[0] = -1.0
    return target


def short_account(spec: Any, mark_close_0: float, capital_usd: float = CAPITAL) -> Account:
    """The engine's default account, holding ``capital_usd`` (in the coin for an inverse market:
    ``capital_usd / mark_close_0``)."""
    return Account(initial_capital=capital_usd / mark_close_0 if spec.inverse else capital_usd)


def baselines_result(data: Any, spec: Any, *, capital_usd: float = CAPITAL) -> SimResult:
    """The three baselines of a run as one result (module docstring: definitions).

    Parameters
    ----------
    data : the run's market data (a loader ``MarketData``, ``PerpBars`` or an aligned frame, as
        :func:`backtest.engine.simulate_perp` takes), at least 2 bars.
    spec : its market spec (fees, contract, tiers).
    capital_usd : what each baseline starts with, USD (> 0).

    Returns
    -------
    SimResult of kind ``'baseline'``, columns :data:`LABELS`, the short's currency and USD prices,
    series :data:`backtest.engine.enums.SERIES` (spot: long ``position`` in units of the
    underlying, leverage 1; cash: flat; ``margin_ratio`` and ``liq_price`` 0 where there is no
    margin), records of the short (column 1) plus the spot purchase as a ``fills`` record
    (column 0), ``underlying`` = the mark close, ``meta['baseline'] = True``.
    """
    from backtest.engine import simulate_perp
    from backtest.engine.core import _bars_from

    if isinstance(capital_usd, bool) or not isinstance(capital_usd, (int, float)) or not capital_usd > 0:
        raise ValueError(f"capital_usd={capital_usd!r}: the baselines' capital must be a number of USD > 0")
    bars = _bars_from(data)
    n = bars.n
    if n < 2:
        raise ValueError(f"the data has {n} bar(s); the baselines need at least 2 (a first close to buy at)")
    short = simulate_perp(bars, short_target(n), spec, short_account(spec, float(bars.mark_close[0]), capital_usd),
                          columns=[SHORT])
    pu = np.asarray(short.price_usd, dtype=np.float64)
    close = np.asarray(bars.close, dtype=np.float64)
    fee_rate = float(spec.taker_fee)
    units = capital_usd * (1.0 - fee_rate) / close[0]  # bought at the first close, net of the fee
    spot_usd = units * close
    fee = capital_usd * fee_rate / pu[0]  # settlement currency, paid at bar 0
    spot = {"equity": spot_usd / pu, "equity_usd": spot_usd, "position": np.full(n, units),
            "notional": spot_usd / pu, "leverage": np.ones(n), "cum_fees": np.full(n, fee)}
    cash = {"equity": capital_usd / pu, "equity_usd": np.full(n, capital_usd)}
    series = {}
    for key in SERIES:
        mid = np.asarray(short.series[key], dtype=np.float64)[:, 0]
        series[key] = np.column_stack([spot.get(key, np.zeros(n)), mid, cash.get(key, np.zeros(n))])

    records = {}
    for kind in RECORD_DTYPES:
        rec = np.array(short.records[kind], copy=True)
        rec["col"] = 1
        if kind == "fills":
            buy = np.zeros(1, dtype=rec.dtype)
            buy[0]["bar"], buy[0]["col"], buy[0]["price"], buy[0]["size"] = 0, 0, close[0], units
            buy[0]["notional"], buy[0]["fee"] = units * close[0] / pu[0], fee
            buy[0]["status"], buy[0]["reason"] = FillStatus.FILLED, FillReason.TARGET
            rec = np.concatenate([buy, rec])
        records[kind] = rec

    initial = np.array([capital_usd / pu[0], float(short.initial_capital[0]), capital_usd / pu[0]])
    meta = {
        "baseline": True,
        "bar_ms": bars.bar_ms,
        "symbol": spec.symbol,
        "exchange": spec.exchange,
        "capital_usd": float(capital_usd),
        "spot_fee_rate": fee_rate,
        # the ruin rule's smallest tradable equity: the short's; spot and cash trade no further
        "min_equity_usd": [0.0, float(np.ravel(short.meta["min_equity_usd"])[0]), 0.0],
        "short_account": {k: v[0] for k, v in short.meta["settings"].items()},
        "notes": [
            f"{SPOT}: {capital_usd:g} USD buys {spec.symbol}'s underlying at the first bar's close (trade close, "
            f"standing in for spot), one taker fee of {fee_rate:g}, no funding, no leverage",
            f"{SHORT}: the perp engine's default account (cross), -1x equity set on the first bar and held "
            "without rebalancing (filled at the second bar's open), funding and fees included",
            f"{CASH}: {capital_usd:g} USD held",
        ] + list(short.meta.get("notes", [])),
    }
    return SimResult(kind="baseline", currency=short.currency, index=short.index, columns=pd.Index(LABELS),
                     series=series, records=records, price_usd=pu, initial_capital=initial, meta=meta,
                     underlying=short.underlying)
