"""Cross-check against vectorbt's Portfolio.from_orders where both can model the case:
exposure within 1x, no funding, no liquidation, same fees, no lot rounding."""

import numpy as np
import pandas as pd
import pytest
import vectorbt as vbt

from backtest.engine import Account, PerpBars, simulate_perp
from backtest.market import MarketSpec, TierTable


def _spec(fee: float) -> MarketSpec:
    tiers = TierTable.from_ccxt([{"minNotional": 0, "maxNotional": 1e12, "maintenanceMarginRate": 0.004,
                                  "maxLeverage": 125, "maintAmt": 0}])
    return MarketSpec(symbol="TEST/USDT:USDT", inverse=False, contract_size=1.0, settle="USDT",
                      taker_fee=fee, maker_fee=fee, lot_size=0.0, min_notional=0.0,
                      liquidation_fee_rate=0.0125, tiers=tiers)


def _path(rng: np.random.Generator, n: int) -> pd.DataFrame:
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.concatenate([[100.0], close[:-1]]) * np.exp(rng.normal(0, 0.002, n))
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.003, n)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.003, n)))
    idx = pd.date_range("2022-01-01", periods=n, freq="1h", tz="UTC")
    return pd.DataFrame({"open": open_, "high": high, "low": low, "close": close}, index=idx)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("fee", [0.0, 0.0005])
def test_equity_equals_vectorbt_from_orders(seed, fee):
    rng = np.random.default_rng(seed)
    n, m = 400, 4
    df = _path(rng, n)
    target = rng.uniform(-1.0, 1.0, (n, m))
    target[rng.random((n, m)) < 0.3] = np.nan  # NaN keeps the position in both
    target[:, 0] = -1.0                          # a plain 1x short
    res = simulate_perp(PerpBars.from_frame(df), target, _spec(fee),
                        Account(initial_capital=10_000.0, leverage=10.0, margin_mode="cross"))
    assert len(res.records["liquidations"]) == 0

    # vectorbt: the target decided at bar t-1's close trades at bar t's open.
    size = pd.DataFrame(target, index=df.index).shift(1)
    pf = vbt.Portfolio.from_orders(
        close=df["close"], size=size, size_type="targetpercent", price=df["open"], fees=fee,
        init_cash=10_000.0, direction="both", freq="1h", cash_sharing=False)
    expected = pf.value().to_numpy()
    np.testing.assert_allclose(res.series["equity"], expected, rtol=1e-9, atol=0)
    np.testing.assert_allclose(res.series["position"], pf.assets().to_numpy(), rtol=1e-9, atol=1e-9)
