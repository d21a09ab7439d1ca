"""Throughput of the book kernel (``simulate_book``) against the single-instrument engine
(``simulate_perp``), in one process.

Work: books of K = 2 and 10 instruments x 1,000 columns x one year of hourly bars (8,760),
every instrument short at a target exposure (the columns: gross 1x to 5x, cross margin),
rebalanced every 8 hours, a funding print every 8 hours, 0.05 % fee; the engine runs one of
the instruments with the same columns and rebalancing. Measured end to end (validation,
kernel, records, result), median of ``--repeat`` runs after a warm-up run, the two taking
turns; both store the sweep outputs (``series=("equity",)``; the book: the account's equity
and the records).

Reported: instrument-bar-columns per second for the book, bar-columns per second for the
engine, and their ratio (the target: the book at least half the engine's rate per instrument).

With ``--options``, each book also runs with one option leg (rolled 110 % calls on instrument 0,
hedging its short notional, implied vol 60 %): the cost of an option leg (a book with options
takes quiet stretches only between the legs' rolls and trades).

Usage: ``python benchmarks/bench_book.py [--repeat 3] [--k 2 10] [--options]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from backtest.book import BookBars, BookSettings, simulate_book
from backtest.engine import simulate_perp
from backtest.engine.bars import PerpBars
from backtest.engine.settings import Account
from backtest.market import MarketSpec

N, M, HOUR, FEE = 8_760, 1_000, 3_600_000, 0.0005
T0 = 1_672_531_200_000  # 2023-01-01 UTC
TIERS = [
    {"minNotional": 0.0, "maxNotional": 50_000.0, "maintenanceMarginRate": 0.004, "maxLeverage": 125.0, "maintAmt": 0.0},
    {"minNotional": 50_000.0, "maxNotional": 250_000.0, "maintenanceMarginRate": 0.005, "maxLeverage": 100.0,
     "maintAmt": 50.0},
    {"minNotional": 250_000.0, "maxNotional": 1_000_000.0, "maintenanceMarginRate": 0.01, "maxLeverage": 50.0,
     "maintAmt": 1_300.0},
    {"minNotional": 1_000_000.0, "maxNotional": None, "maintenanceMarginRate": 0.025, "maxLeverage": 20.0,
     "maintAmt": 16_300.0},
]


def make_bars(seed: int, p0: float) -> PerpBars:
    rng = np.random.default_rng(seed)
    sigma = 0.6 * np.sqrt(HOUR / (365 * 86_400_000))
    close = p0 * np.exp(np.cumsum(rng.normal(0, sigma, N)))
    open_ = np.concatenate([[p0], close[:-1]])
    wig = np.abs(rng.normal(0, sigma, N))
    high = np.maximum(open_, close) * (1 + wig)
    low = np.minimum(open_, close) * (1 - wig)
    ts = T0 + HOUR * np.arange(N, dtype=np.int64)
    ft = ts[::8]
    return PerpBars.from_arrays(ts, open_, high, low, close, open_, high, low, close, funding_time=ft,
                                funding_rate=rng.normal(1e-4, 1e-4, ft.size), funding_mark=np.full(ft.size, np.nan),
                                bar_ms=HOUR)


def spec() -> MarketSpec:
    return MarketSpec.from_dict({
        "symbol": "X/USDT:USDT", "linear": True, "inverse": False, "settle": "USDT", "contractSize": 1.0,
        "taker": FEE, "maker": 0.0, "precision": {"amount": 0.001}, "limits": {"cost": {"min": 0.0}},
        "liquidationFeeRate": 0.0125, "tiers": TIERS}, exchange="bench")


def gross() -> np.ndarray:
    return np.linspace(1.0, 5.0, M)


def run_book(bars: BookBars, specs, target, acc, options=()) -> float:
    t0 = time.perf_counter()
    simulate_book(bars, target, specs, BookSettings(account=acc, options=list(options)), series=("equity",))
    return time.perf_counter() - t0


def run_engine(bars: PerpBars, sp, target, acc) -> float:
    t0 = time.perf_counter()
    simulate_perp(bars, target, sp, acc, series=("equity",))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--k", type=int, nargs="+", default=[2, 10])
    ap.add_argument("--options", action="store_true", help="also run each book with one call leg")
    a = ap.parse_args()
    acc = Account(initial_capital=10_000.0, leverage=10.0, margin_mode="cross", lag=1)
    sp = spec()
    legs = [make_bars(k, 100.0 * (k + 1)) for k in range(max(a.k))]
    e_tgt = np.full((N, M), np.nan)
    e_tgt[::8] = -gross()[None, :]
    print(f"{N} hourly bars x {M} columns, rebalanced every 8 h; median of {a.repeat} runs after a warm-up")
    for kk in a.k:
        bars = BookBars.from_legs([f"S{k}" for k in range(kk)], legs[:kk])
        tgt = np.full((N, kk, M), np.nan)
        tgt[::8] = -(gross() / kk)[None, None, :]
        run_book(bars, [sp] * kk, tgt, acc)  # warm-up (and compile)
        run_engine(legs[0], sp, e_tgt, acc)
        tb, te = [], []
        for _ in range(a.repeat):
            tb.append(run_book(bars, [sp] * kk, tgt, acc))
            te.append(run_engine(legs[0], sp, e_tgt, acc))
        b, e = statistics.median(tb), statistics.median(te)
        rb, re_ = kk * N * M / b / 1e6, N * M / e / 1e6
        print(f"K={kk:2d}: book {b:7.3f} s = {rb:6.1f} M instrument-bar-columns/s; engine {e:6.3f} s = "
              f"{re_:6.1f} M bar-columns/s; book / engine per instrument = {rb / re_:.3f}")
        if a.options:
            from backtest.book import OptionLeg
            from backtest.options import PutSettings

            leg = OptionLeg("S0", PutSettings(option_type="call", moneyness=1.10, roll_dte=7, vol_source="iv"),
                            iv=np.full(N, 0.6))
            otg = np.concatenate([tgt, np.full((N, 1, M), np.nan)], axis=1)
            otg[8::8, kk, :] = (gross() / kk)[None, :]   # from the first contract (bought at bar 0's close)
            run_book(bars, [sp] * kk, otg, acc, [leg])   # warm-up
            to = statistics.median(run_book(bars, [sp] * kk, otg, acc, [leg]) for _ in range(a.repeat))
            ro = (kk + 1) * N * M / to / 1e6
            print(f"      + 1 call leg: {to:7.3f} s = {ro:6.1f} M instrument-bar-columns/s (K + 1 instruments); "
                  f"{to / b:.2f}x the book without it")


if __name__ == "__main__":
    main()
