"""Builders for hand-made candle tables, market specs and random engine inputs."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from backtest.engine.bars import PerpBars
from backtest.engine.enums import RECORD_DTYPES
from backtest.engine.settings import Account, Policy
from backtest.market import MarketSpec

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC, ms
HOUR = 3_600_000

# Binance USDⓈ-M levels 1-4 as in its 2020 FAQ table (maintenance amounts by the recursion).
LINEAR_TIERS = [
    {"minNotional": 0.0, "maxNotional": 50_000.0, "maintenanceMarginRate": 0.004, "maxLeverage": 125.0, "maintAmt": 0.0},
    {"minNotional": 50_000.0, "maxNotional": 250_000.0, "maintenanceMarginRate": 0.005, "maxLeverage": 100.0, "maintAmt": 50.0},
    {"minNotional": 250_000.0, "maxNotional": 1_000_000.0, "maintenanceMarginRate": 0.01, "maxLeverage": 50.0, "maintAmt": 1_300.0},
    {"minNotional": 1_000_000.0, "maxNotional": None, "maintenanceMarginRate": 0.025, "maxLeverage": 20.0, "maintAmt": 16_300.0},
]

# Binance COIN-M BTCUSD brackets (coin notional), first five levels, as in backtest/markets.
INVERSE_TIERS = [
    {"minNotional": 0.0, "maxNotional": 5.0, "maintenanceMarginRate": 0.004, "maxLeverage": 125.0, "maintAmt": 0.0},
    {"minNotional": 5.0, "maxNotional": 10.0, "maintenanceMarginRate": 0.005, "maxLeverage": 100.0, "maintAmt": 0.005},
    {"minNotional": 10.0, "maxNotional": 20.0, "maintenanceMarginRate": 0.01, "maxLeverage": 50.0, "maintAmt": 0.055},
    {"minNotional": 20.0, "maxNotional": 50.0, "maintenanceMarginRate": 0.025, "maxLeverage": 20.0, "maintAmt": 0.355},
    {"minNotional": 50.0, "maxNotional": None, "maintenanceMarginRate": 0.05, "maxLeverage": 10.0, "maintAmt": 1.605},
]


def make_spec(*, inverse: bool = False, tiers: list[dict] | None = None, contract_size: float | None = None,
              taker: float = 0.0, lot: float = 0.001, min_notional: float = 0.0,
              liquidation_fee: float = 0.0125, tier_history: list[dict] | None = None) -> MarketSpec:
    """A market spec in ccxt's shape (defaults: linear, contract size 1, no fees, lot 0.001)."""
    d: dict[str, Any] = {
        "symbol": "TEST/USD:BTC" if inverse else "TEST/USDT:USDT",
        "linear": not inverse, "inverse": inverse,
        "settle": "BTC" if inverse else "USDT",
        "contractSize": contract_size if contract_size is not None else (100.0 if inverse else 1.0),
        "taker": taker, "maker": 0.0,
        "precision": {"amount": lot},
        "limits": {"cost": {"min": min_notional}},
        "liquidationFeeRate": liquidation_fee,
        "tiers": tiers if tiers is not None else (INVERSE_TIERS if inverse else LINEAR_TIERS),
    }
    if tier_history:
        d["tier_history"] = tier_history
    return MarketSpec.from_dict(d, exchange="test")


def make_bars(candles: Sequence[Sequence[float]], *, bar_ms: int = HOUR, funding: Sequence[tuple] = (),
              t0: int = T0) -> PerpBars:
    """Bars from rows ``(open, high, low, close)`` (mark = trade) or
    ``(open, high, low, close, mark_open, mark_high, mark_low, mark_close)``.

    ``funding``: ``(time_ms, rate)`` or ``(time_ms, rate, mark)`` raw prints (mark NaN = none)."""
    rows = [list(c) + list(c) if len(c) == 4 else list(c) for c in candles]
    a = np.asarray(rows, dtype=np.float64)
    ts = t0 + bar_ms * np.arange(len(rows), dtype=np.int64)
    kw: dict[str, Any] = {}
    if funding:
        kw = {"funding_time": np.array([f[0] for f in funding], dtype=np.int64),
              "funding_rate": np.array([f[1] for f in funding], dtype=np.float64),
              "funding_mark": np.array([f[2] if len(f) > 2 else np.nan for f in funding], dtype=np.float64)}
    return PerpBars.from_arrays(ts, *[a[:, i] for i in range(8)], bar_ms=bar_ms, **kw)


def targets(*columns: Sequence[float]) -> np.ndarray:
    """(n_bars, n_cols) target from per-column lists (None = NaN = keep)."""
    cols = [[np.nan if v is None else v for v in c] for c in columns]
    return np.asarray(cols, dtype=np.float64).T


def recs(records: dict[str, np.ndarray], name: str, col: int | None = None, bar: int | None = None) -> np.ndarray:
    r = records[name]
    assert r.dtype == RECORD_DTYPES[name]
    if col is not None:
        r = r[r["col"] == col]
    if bar is not None:
        r = r[r["bar"] == bar]
    return r


# ------------------------------------------------------------------------------------------
# Random inputs (property tests; also usable to compare implementations)
# ------------------------------------------------------------------------------------------

def random_case(seed: int, n_bars: int = 36, n_cols: int = 4):
    """Random bars, funding, targets, spec and per-column settings.

    Returns ``(bars, target, spec, account, policy)``. Prices follow a random walk with jumps
    (so liquidations and margin calls happen), mark prices differ from trade prices, funding
    prints fall on bar opens, with jitter, and strictly inside bars."""
    rng = np.random.default_rng(seed)
    inverse = bool(rng.random() < 0.35)
    p0 = 30_000.0 if inverse else 100.0
    r = rng.normal(0.0, 0.02, n_bars) + rng.choice([0.0, 0.12, -0.12], n_bars, p=[0.9, 0.05, 0.05])
    close = p0 * np.exp(np.cumsum(r))
    open_ = np.concatenate([[p0], close[:-1]]) * np.exp(rng.normal(0, 0.002, n_bars))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.015, n_bars)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.015, n_bars)))
    mo = open_ * np.exp(rng.normal(0, 0.001, n_bars))
    mc = close * np.exp(rng.normal(0, 0.001, n_bars))
    mh = np.maximum(mo, mc) * np.exp(np.abs(rng.normal(0, 0.012, n_bars)))
    ml = np.minimum(mo, mc) * np.exp(-np.abs(rng.normal(0, 0.012, n_bars)))
    bar_ms = HOUR
    ts = T0 + bar_ms * np.arange(n_bars, dtype=np.int64)
    f_bars = np.sort(rng.choice(n_bars, size=n_bars // 3, replace=False))
    f_time = ts[f_bars] + rng.choice([0, 3, -2, bar_ms // 2, bar_ms // 4], f_bars.size)
    f_rate = rng.normal(1e-4, 5e-4, f_bars.size)
    f_mark = np.where(rng.random(f_bars.size) < 0.5, np.nan, mo[f_bars] * (1 + rng.normal(0, 0.002, f_bars.size)))
    bars = PerpBars.from_arrays(ts, open_, high, low, close, mo, mh, ml, mc,
                                funding_time=f_time, funding_rate=f_rate, funding_mark=f_mark, bar_ms=bar_ms)

    base = INVERSE_TIERS if inverse else LINEAR_TIERS
    history = None
    if rng.random() < 0.5:
        # a stricter table from the middle of the sample on (higher rates, same floors; 1.75x
        # keeps each rate below 1/maxLeverage, as a market spec requires)
        stricter = [dict(t, maintenanceMarginRate=t["maintenanceMarginRate"] * 1.75, maintAmt=None) for t in base]
        history = [{"from": 0, "tiers": base}, {"from": int(ts[n_bars // 2]), "tiers": stricter}]
    lot = 1.0 if inverse else float(rng.choice([0.001, 0.0, 0.1]))
    spec = make_spec(inverse=inverse, taker=float(rng.choice([0.0, 0.0005])), lot=lot,
                     min_notional=float(rng.choice([0.0, 5.0])) if not inverse else 0.0,
                     liquidation_fee=float(rng.choice([0.0125, 0.002])), tier_history=history)

    tgt = rng.uniform(-8.0, 3.0, (n_bars, n_cols))
    tgt[rng.random((n_bars, n_cols)) < 0.5] = np.nan
    tgt[rng.random((n_bars, n_cols)) < 0.05] = 0.0
    ic = 1.0 if inverse else 10_000.0
    threshold = rng.choice([0.6, 0.8, 1.0], n_cols)
    account = Account(
        initial_capital=ic,
        margin_mode=list(rng.choice(["cross", "isolated"], n_cols)),
        leverage=list(rng.choice([1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 125.0], n_cols)),
        margin_call_threshold=list(threshold),
        margin_call_response=list(rng.choice(["none", "reduce", "top_up"], n_cols)),
        margin_call_target=list(threshold * rng.choice([0.4, 0.7], n_cols)),
        reserve=list(rng.choice([0.0, 0.1 * ic, np.inf], n_cols)),
        after_liquidation=list(rng.choice(["stop", "continue"], n_cols)),
        excess=list(rng.choice(["clip", "reject"], n_cols)),
        fee_rate=None if rng.random() < 0.5 else float(rng.choice([0.0, 0.001])),
        slippage=list(rng.choice([0.0, 0.001], n_cols)),
        lag=(lag := int(rng.choice([0, 1]))),
        allow_lookahead=lag == 0,  # a random target is known before the open: lag 0 is fine here
    )
    policy = Policy(
        kind=list(rng.choice(["none", "drawdown", "cppi"], n_cols)),
        max_drawdown=list(rng.choice([0.2, 0.5], n_cols)),
        floor=list(rng.choice([0.0, 0.3], n_cols)),
        multiplier=list(rng.choice([1.0, 3.0], n_cols)),
        ratchet=list(rng.choice([0.0, 1.0], n_cols) == 1.0),
        max_exposure=list(rng.choice([np.inf, 4.0], n_cols)),
    )
    return bars, tgt, spec, account, policy
