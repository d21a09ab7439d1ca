"""Leverage policies computed from market data (no equity path): each returns a multiplier
series (n_bars,) that scales the strategy's signal. The value at bar t uses data up to bar t's
close; the engine applies the target at bar t+1's open.

Notation: B = bars per 365-day year, r_t = ln(C_t / C_{t-1}) (log return), R_t = C_t / C_{t-1} - 1
(simple return), sigma = annualised volatility (fraction), mmr = maintenance margin rate.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from strategies.frame import DAYS_PER_YEAR, MarketFrame
from strategies.indicators import (average_true_range, ewma_variance, log_returns, moving_average,
                                   rolling_std, rolling_sum)
from backtest.market import TIER_MAX, TIER_MAXLEV, TIER_MIN
from strategies.policies.base import (MAX_POLICY_DEPTH, LeveragePolicy, PolicyError, Precomputed, nesting_depth,
                                      parse, register_policy)


@register_policy
class Const(Precomputed):
    """``const(L)``: leverage ``L`` on every bar.

    Attributes
    ----------
    leverage : the multiplier (> 0).
    """

    name: ClassVar[str] = "const"
    positional: ClassVar[tuple[str, ...]] = ("leverage",)
    leverage: float = Field(1.0, gt=0)

    def _leverage(self, market: MarketFrame, _spec: Any) -> np.ndarray:
        return np.full(market.n, self.leverage)


class VolForecast(Precomputed):
    """Volatility-forecast fields shared by ``voltarget`` and ``liqcap``.

    Attributes
    ----------
    estimator : ``'ewma'``: zero-mean exponentially weighted variance of log returns with
        half-life ``halflife_days`` (RiskMetrics; lambda = 0.94 per day is a half-life of 11.2
        days), ``sigma_t = sqrt(B * sum_i w_i r_{t-i}^2 / sum_i w_i)``, ``w_i = 0.5**(i / h)``;
        ``'rolling'``: sample standard deviation (ddof=1) of the last ``window_days`` of log
        returns times sqrt(B); ``'iv'``: the ``iv`` column (implied vol, e.g. DVOL / 100).
    halflife_days : EWMA half-life, days.
    window_days : rolling window, days.
    warmup_days : EWMA: days of returns needed before the first forecast.
    iv_fill_days : ``'iv'``: gaps up to this long are bridged with the last value, days.
    """

    estimator: Literal["ewma", "rolling", "iv"] = "ewma"
    halflife_days: float = Field(10.0, gt=0)
    window_days: float = Field(30.0, gt=0)
    warmup_days: float = Field(30.0, ge=0)
    iv_fill_days: float = Field(2.0, ge=0)

    def forecast(self, market: MarketFrame) -> np.ndarray:
        """Annualised volatility forecast sigma_t (fraction), float64 (n_bars,), NaN where undefined."""
        if self.estimator == "iv":
            iv = market.col("iv", needed_by=self.label())
            if not np.isfinite(iv).any():
                raise PolicyError(f"{self.label()}: column 'iv' has no values; load the implied-vol "
                                  "index (e.g. DVOL) or use estimator='ewma'")
            if self.iv_fill_days <= 0:
                return iv
            return pd.Series(iv).ffill(limit=market.bars(self.iv_fill_days)).to_numpy(np.float64)
        r = log_returns(market.col("close", needed_by=self.label()))
        if self.estimator == "ewma":
            s2 = ewma_variance(r, self.halflife_days / market.bar_days, market.bars(self.warmup_days))
            return np.sqrt(s2 * market.bars_per_year)
        w = market.bars(self.window_days)
        return rolling_std(r, [w], ddof=1)[w] * math.sqrt(market.bars_per_year)


@register_policy
class VolTarget(VolForecast):
    """``voltarget(target_vol)``: ``L_t = min(max_leverage, target_vol / sigma_t)``.

    The forecast sigma_t comes from :class:`VolForecast` (bars up to t). L = 0 where there is
    no forecast yet; L = max_leverage where sigma_t = 0.

    Attributes
    ----------
    target_vol : annualised volatility target of the position (fraction, > 0), e.g. 0.5.
    max_leverage : cap on L (> 0).
    """

    name: ClassVar[str] = "voltarget"
    positional: ClassVar[tuple[str, ...]] = ("target_vol",)
    target_vol: float = Field(0.5, gt=0)
    max_leverage: float = Field(3.0, gt=0)

    def _leverage(self, market: MarketFrame, _spec: Any) -> np.ndarray:
        sigma = self.forecast(market)
        with np.errstate(divide="ignore", invalid="ignore"):
            lev = np.minimum(self.max_leverage, self.target_vol / sigma)
        return lev


@register_policy
class Kelly(Precomputed):
    """``kelly(fraction)``: fractional Kelly for a short earning funding carry.

    With dS/S = mu dt + sigma dW and a short of f x equity receiving funding phi (per year,
    positive when longs pay shorts), equity grows at g(f) = f (phi - mu) - f^2 sigma^2 / 2,
    maximal at f* = (phi - mu) / sigma^2 (continuous-time Kelly). The policy uses

    ``L_t = clip(fraction * (phi_t - mu_t - cost) / sigma_t^2, 0, max_leverage)``

    (for ``side='long'`` the edge is ``mu_t - phi_t - cost``), with trailing estimates over
    the last W = ``window_days`` of bars:

    * ``mu_t = B * mean(R_{t-W+1..t})`` (or ``expected_return`` if given),
    * ``sigma_t^2 = B * var(R_{t-W+1..t}, ddof=1)``,
    * ``phi_t = (B / W) * sum(funding_rate_{t-W+1..t})`` (NaN prints count 0; or ``funding`` if given).

    L = 0 in the warm-up and where the edge is <= 0.

    Attributes
    ----------
    fraction : Kelly fraction c in (0, 1] (0.25-0.5 is usual: mu is poorly estimated).
    window_days : estimation window, days.
    expected_return : annual drift mu of the underlying (fraction) instead of the estimate.
    funding : annual funding phi (fraction) instead of the trailing realised funding.
    cost : annual cost drag (fees, slippage) subtracted from the edge (fraction, >= 0).
    side : ``'short'`` or ``'long'`` (the direction the signal trades).
    max_leverage : cap on L (> 0).
    """

    name: ClassVar[str] = "kelly"
    positional: ClassVar[tuple[str, ...]] = ("fraction",)
    fraction: float = Field(0.5, gt=0, le=1)
    window_days: float = Field(90.0, gt=0)
    expected_return: float | None = None
    funding: float | None = None
    cost: float = Field(0.0, ge=0)
    side: Literal["short", "long"] = "short"
    max_leverage: float = Field(5.0, gt=0)

    def estimates(self, market: MarketFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mu_t, sigma_t^2, phi_t), annualised, float64 (n_bars,) each."""
        close = market.col("close", needed_by=self.label())
        w, b = market.bars(self.window_days), market.bars_per_year
        ret = np.full(market.n, np.nan)
        ret[1:] = close[1:] / close[:-1] - 1.0
        var = rolling_std(ret, [w], ddof=1)[w] ** 2 * b
        if self.expected_return is None:
            mu = moving_average(ret, [w])[w] * b
        else:
            mu = np.where(np.isnan(var), np.nan, self.expected_return)
        if self.funding is None:
            rate = market.col("funding_rate", needed_by=self.label())
            if not np.isfinite(rate).any():
                raise PolicyError(
                    f"{self.label()}: column 'funding_rate' has no funding prints; load the funding "
                    "history or give funding=<annual rate>")
            phi = rolling_sum(rate, w) * b / w
        else:
            phi = np.full(market.n, self.funding)
        return mu, var, phi

    def _leverage(self, market: MarketFrame, _spec: Any) -> np.ndarray:
        mu, var, phi = self.estimates(market)
        edge = (phi - mu) if self.side == "short" else (mu - phi)
        edge = edge - self.cost
        with np.errstate(divide="ignore", invalid="ignore"):
            f = self.fraction * edge / var
        f = np.where((var == 0) & (edge > 0), np.inf, f)
        return np.clip(f, 0.0, self.max_leverage)


@register_policy
class LiqCap(VolForecast):
    """``liqcap(k)``: keep the liquidation price at least x = k forecast moves away.

    Adverse move over the horizon h: ``x_t = k * sigma_t * sqrt(horizon_days / 365)``
    (``method='vol'``) or ``x_t = k * (ATR_t / C_t) * sqrt(h / bar)`` (``method='atr'``, the
    per-bar ATR scaled to the horizon like a standard deviation).

    Linear (USDT-margined) short at leverage L, isolated, no fees: margin E = N / L; at price
    P = P0 (1 + x) the margin balance N/L - N x equals maintenance N (1 + x) mmr, so the
    liquidation distance is x = (1/L - mmr) / (1 + mmr) and the cap is

    ``L_max = 1 / (mmr + x (1 + mmr))``.

    Inverse (coin-margined) short with coin collateral: LP = P0 (1 - mmr) / (1 - 1/L) gives
    x = (1/L - mmr) / (1 - 1/L) and ``L_max = (1 + x) / (x + mmr)``.

    L = 0 where there is no forecast yet.

    Attributes
    ----------
    k : number of forecast moves (> 0).
    horizon_days : monitoring horizon h, days.
    method : ``'vol'`` (volatility forecast, see :class:`VolForecast`) or ``'atr'``.
    atr_days : ATR window (simple average of true range), days.
    mmr : maintenance margin rate (0.004 = Binance BTCUSDT first tier).
    contract : ``'linear'`` or ``'inverse'``.
    """

    name: ClassVar[str] = "liqcap"
    positional: ClassVar[tuple[str, ...]] = ("k",)
    k: float = Field(3.0, gt=0)
    horizon_days: float = Field(1.0, gt=0)
    method: Literal["vol", "atr"] = "vol"
    atr_days: float = Field(14.0, gt=0)
    mmr: float = Field(0.004, ge=0, lt=1)
    contract: Literal["linear", "inverse"] = "linear"

    def move(self, market: MarketFrame) -> np.ndarray:
        """Required liquidation distance x_t as a fraction of price, (n_bars,)."""
        if self.method == "vol":
            return self.k * self.forecast(market) * math.sqrt(self.horizon_days / DAYS_PER_YEAR)
        n = market.bars(self.atr_days)
        close = market.col("close", needed_by=self.label())
        atr = average_true_range(market.col("high", needed_by=self.label()),
                                 market.col("low", needed_by=self.label()), close, [n])[n]
        return self.k * atr / close * math.sqrt(self.horizon_days / market.bar_days)

    def _leverage(self, market: MarketFrame, _spec: Any) -> np.ndarray:
        x = self.move(market)
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.contract == "linear":
                return 1.0 / (self.mmr + x * (1.0 + self.mmr))
            return (1.0 + x) / (x + self.mmr)


def tier_cap(rows: np.ndarray, equity: float) -> float:
    """Largest leverage L with L <= maxLeverage of the tier holding the notional L x equity.

    In tier i (notional in [lo_i, hi_i), max leverage m_i) the reachable leverages are
    [lo_i / E, min(m_i, hi_i / E)], non-empty when m_i >= lo_i / E; the cap is the largest
    upper end over those tiers. ``rows`` is a tier table, shape (n_tiers, 5) (see
    :class:`backtest.market.TierTable`); equity in the settlement currency.
    """
    lo, hi, m = rows[:, TIER_MIN], rows[:, TIER_MAX], rows[:, TIER_MAXLEV]
    upper = np.minimum(m, hi / equity)
    ok = m >= lo / equity
    return float(upper[ok].max())


@register_policy
class TierCap(Precomputed):
    """``tiercap(equity)``: the exchange's tier maximum as a hard cap.

    ``L_t = tier_cap(table in force at bar t, equity)`` (see :func:`tier_cap`); uses the
    market spec's tier history. Equity is assumed constant at ``equity`` (the engine enforces
    the tiers again on the actual notional).

    Attributes
    ----------
    equity : account equity in the settlement currency (USDT for linear, coin for inverse).
    """

    name: ClassVar[str] = "tiercap"
    positional: ClassVar[tuple[str, ...]] = ("equity",)
    equity: float = Field(10_000.0, gt=0)

    def _leverage(self, market: MarketFrame, spec: Any) -> np.ndarray:
        if spec is None:
            raise PolicyError(
                f"{self.label()} needs the market spec: pass spec=backtest.market.load_market("
                "'binanceusdm', 'BTC/USDT:USDT') (or your market) to build_targets")
        tables, n_tiers, version = spec.tier_arrays(market.timestamps_ms)
        caps = np.array([tier_cap(tables[v, : n_tiers[v]], self.equity) for v in range(len(n_tiers))])
        return caps[version]


@register_policy
class MinOf(Precomputed):
    """``min(p1,p2,...)``: the smallest of several precomputed caps on each bar.

    Attributes
    ----------
    policies : the precomputed policies combined (at least one).
    """

    name: ClassVar[str] = "min"
    positional: ClassVar[tuple[str, ...]] = ("policies",)
    nested: ClassVar[bool] = True
    policies: tuple[Precomputed, ...] = Field(..., min_length=1)

    def _leverage(self, market: MarketFrame, spec: Any) -> np.ndarray:
        return np.min(np.vstack([p.compute(market, spec=spec) for p in self.policies]), axis=0)


def min_of(*policies: Any) -> MinOf:
    """Combine precomputed policies (instances or label strings) into their minimum."""
    items = [parse(p) if isinstance(p, str) else p for p in policies]
    for p in items:
        if not isinstance(p, LeveragePolicy):
            raise PolicyError(f"min_of: {p!r} is not a policy; give policies or labels such as 'const(3)'")
        if not isinstance(p, Precomputed):
            raise PolicyError(
                f"min_of: {p.label()} is an in-loop policy (computed by the engine from equity); "
                "only precomputed policies can be combined with min_of")
    if not items:
        raise PolicyError("min_of needs at least one policy")
    depth = 1 + max(nesting_depth(p) for p in items)
    if depth > MAX_POLICY_DEPTH:
        raise PolicyError(f"min_of: the combined policy would nest {depth} levels deep; at most "
                          f"{MAX_POLICY_DEPTH} are allowed: list the caps in one min_of(a, b, c) instead")
    return MinOf(policies=tuple(items))
