"""Candle tables for the book's reference simulator: hand-made bars, numbers computed by hand in
the comments; plus invariants on random books and the two intrabar conventions on the sample."""

from __future__ import annotations

import numpy as np
import pytest

from backtest.book import BookBars, BookSettings, Leg, simulate_book_reference
from backtest.engine.enums import FillStatus
from backtest.engine.settings import Account
from tests.engine.scenario_kit import HOUR, T0, make_bars, make_spec

# One tier: maintenance 1 %, no maintenance amount (hand computations stay short).
ONE_TIER = [{"minNotional": 0.0, "maxNotional": None, "maintenanceMarginRate": 0.01, "maxLeverage": 50.0,
             "maintAmt": 0.0}]
SPEC = make_spec(tiers=ONE_TIER, liquidation_fee=0.0125)


def account(**kw) -> Account:
    base = dict(initial_capital=10_000.0, leverage=5.0, fee_rate=0.0, margin_call_threshold=1.0,
                lag=0, allow_lookahead=True)
    return Account(**{**base, **kw})


def opened_at_bar0(n: int, *exposures: float) -> np.ndarray:
    tgt = np.full((n, len(exposures), 1), np.nan)
    tgt[0, :, 0] = exposures
    return tgt


# ------------------------------------------------------------------------------------------
# An ETH loss liquidates a profitable BTC short in cross, not in isolated
# ------------------------------------------------------------------------------------------

ETH = [(10, 10, 10, 10), (10, 16, 10, 15), (15, 15, 15, 15)]
BTC = [(100, 100, 100, 100), (90, 90, 85, 88), (88, 88, 88, 88)]


@pytest.mark.parametrize("mode", ["cross", "isolated"])
def test_eth_loss_liquidates_profitable_btc_short_only_in_cross(mode):
    """Capital 10,000, leverage 5, both -2x at bar 0: ETH -2,000 at 10, BTC -200 at 100 (IM
    4,000 each). Bar 1: BTC gaps down to 90 (its short gains 2,000) and stays there (high =
    open: its mark does not move on the path); ETH rallies 10 -> 16.

    Cross: MB(p) = 10,000 + 2,000 - 2,000*(p - 10), MM(p) = 0.01*(2,000*p + 200*90); MB = MM at
    p = 31,820/2,020 = 15.7524752 < 16: the account is liquidated, BTC with it, at 90. At that
    point MM = 20*31,820/2,020 + 180 = 495.0495 and the clearance fees 0.0125*(31,504.95 + 18,000) =
    618.81 exceed it: the account keeps 0.

    Isolated: ETH alone, M = 4,000: 4,000 - 2,000*(p - 10) = 20*p at p = 24,000/2,020 = 11.8811881
    (keeps max(0, 237.62 - 297.03) = 0); BTC keeps its margin, wallet 2,000 + M 4,000 + uPnL
    200*(100 - 88) = 2,400 -> equity 8,400 at bars 1 and 2."""
    bars = BookBars.from_legs(["ETH", "BTC"], [make_bars(ETH), make_bars(BTC)])
    series, rec = simulate_book_reference(bars, opened_at_bar0(3, -2.0, -2.0), [SPEC, SPEC],
                                          BookSettings(account=account(margin_mode=mode)))
    liq = rec["liquidations"]
    if mode == "cross":
        assert liq["instrument"].tolist() == [0, 1] and liq["bar"].tolist() == [1, 1]
        assert liq["price"][0] == pytest.approx(31_820 / 2_020, rel=1e-12)
        assert liq["price"][1] == 90.0
        # BTC's own cross liquidation price at that point is where it stands (the account at ratio 1)
        assert liq["trigger_price"][1] == pytest.approx(90.0, rel=1e-9)
        assert liq["clearance_fee"].sum() == pytest.approx(20 * 31_820 / 2_020 + 180, rel=1e-9)  # all that is left
        assert series["position"][1:, :, 0].tolist() == [[0.0, 0.0], [0.0, 0.0]]
        assert series["equity"][1:, 0].tolist() == [0.0, 0.0]
    else:
        assert liq["instrument"].tolist() == [0] and liq["bar"].tolist() == [1]
        assert liq["price"][0] == pytest.approx(24_000 / 2_020, rel=1e-12)
        assert series["position"][1:, 1, 0].tolist() == [-200.0, -200.0]
        assert series["equity"][1:, 0] == pytest.approx([8_400.0, 8_400.0], rel=1e-12)


# ------------------------------------------------------------------------------------------
# Reductions before increases
# ------------------------------------------------------------------------------------------

def test_reductions_before_increases_free_the_margin():
    """Cross, leverage 2, capital 10,000, flat prices (B at 50, A at 100), no fees.
    Bar 0: A -1.8x -> -180 contracts, IM 18,000/2 = 9,000.
    Bar 1: A -> -0.2x (-20, IM 1,000) and B (listed first in the book) -> -1.5x (-300, IM 7,500).
    The reduction executes first: 1,000 + 7,500 = 8,500 <= 10,000, B is filled whole.
    Column 1 reduces A one bar later: at bar 1 B needs 9,000 + 7,500 = 16,500 > 10,000 and is
    rejected (excess='reject')."""
    flat_b, flat_a = make_bars([(50, 50, 50, 50)] * 3), make_bars([(100, 100, 100, 100)] * 3)
    bars = BookBars.from_legs(["B", "A"], [flat_b, flat_a])
    tgt = np.full((3, 2, 2), np.nan)
    tgt[0, 1, :] = -1.8
    tgt[1, 0, :] = -1.5
    tgt[1, 1, 0] = -0.2
    tgt[2, 1, 1] = -0.2
    series, rec = simulate_book_reference(bars, tgt, [SPEC, SPEC],
                                          BookSettings(account=account(leverage=2.0, excess="reject")))
    f = rec["fills"]
    col0 = f[(f["col"] == 0) & (f["bar"] == 1)]
    assert col0["instrument"].tolist() == [1, 0]  # A's reduction, then B
    assert col0["status"].tolist() == [FillStatus.FILLED, FillStatus.FILLED]
    assert series["position"][1, :, 0].tolist() == [-300.0, -20.0]
    col1 = f[(f["col"] == 1) & (f["bar"] == 1)]
    assert col1["instrument"].tolist() == [0] and col1["status"].tolist() == [FillStatus.REJECTED]
    assert series["position"][1, :, 1].tolist() == [0.0, -180.0]


# ------------------------------------------------------------------------------------------
# The two intrabar conventions
# ------------------------------------------------------------------------------------------

def test_intrabar_together_and_alone_differ():
    """Cross, capital 10,000, A -200 at 100 and B -2,000 at 10 (-2x each). Bar 1: A's mark high
    125, B's 12.5, both closing where they opened.
    Together: p_A = 100 + 25s, p_B = 10 + 2.5s; MB = 10,000 - 10,000s,
    MM = 0.01*(200*p_A + 2,000*p_B) = 400 + 100s; liquidated at s = 9,600/10,100 = 0.9504950
    (A at 123.762376, B at 12.3762376); at s = 1 MB = 0: ratio inf.
    Alone: A at 125 with B at 10: MB = 5,000, MM = 0.01*(25,000 + 20,000) = 450 -> 0.09; B at
    12.5 with A at 100: the same 0.09. No liquidation."""
    a = make_bars([(100, 100, 100, 100), (100, 125, 100, 100)])
    b = make_bars([(10, 10, 10, 10), (10, 12.5, 10, 10)])
    bars = BookBars.from_legs(["A", "B"], [a, b])
    tgt = np.repeat(opened_at_bar0(2, -2.0, -2.0), 2, axis=2)
    series, rec = simulate_book_reference(bars, tgt, [SPEC, SPEC],
                                          BookSettings(account=account(), intrabar=["together", "alone"]))
    liq = rec["liquidations"]
    assert liq["col"].tolist() == [0, 0]
    assert liq["s"][0] == pytest.approx(9_600 / 10_100, rel=1e-12)
    assert liq["price"] == pytest.approx([100 + 25 * 9_600 / 10_100, 10 + 2.5 * 9_600 / 10_100], rel=1e-12)
    assert series["margin_ratio_adverse"][1, 1] == pytest.approx(0.09, rel=1e-12)
    assert series["position"][1, :, 1].tolist() == [-200.0, -2000.0]


# ------------------------------------------------------------------------------------------
# Invariants on random books
# ------------------------------------------------------------------------------------------

def _walk(seed: int, n: int, p0: float, t0: int = T0):
    rng = np.random.default_rng(seed)
    c = p0 * np.exp(np.cumsum(rng.normal(0, 0.02, n) + rng.choice([0, 0.08, -0.08], n, p=[0.9, 0.05, 0.05])))
    o = np.concatenate([[p0], c[:-1]]) * np.exp(rng.normal(0, 0.002, n))
    h = np.maximum(o, c) * np.exp(np.abs(rng.normal(0, 0.01, n)))
    lo = np.minimum(o, c) * np.exp(-np.abs(rng.normal(0, 0.01, n)))
    ts = t0 + HOUR * np.arange(n)
    funding = [(int(ts[i]) + (0 if i % 2 else HOUR // 2), float(rng.normal(1e-4, 5e-4))) for i in range(0, n, 3)]
    return make_bars(np.c_[o, h, lo, c], funding=funding, t0=t0)


def _random_book(seed: int, n: int = 40, m: int = 6):
    rng = np.random.default_rng(seed)
    legs = [_walk(seed * 10 + 1, n, 100.0), _walk(seed * 10 + 2, n, 20.0),
            _walk(seed * 10 + 3, n - 5, 5.0, t0=T0 + 5 * HOUR)]  # listed five bars later
    bars = BookBars.from_legs(["A", "B", "C"], legs)
    spec = make_spec(taker=0.0005, liquidation_fee=0.0125)
    tgt = rng.uniform(-6.0, 2.0, (n, 3, m))
    tgt[rng.random((n, 3, m)) < 0.6] = np.nan
    tgt[:5, 2, :] = np.nan  # C before its listing
    modes = [Leg(margin_mode=list(rng.choice(["cross", "isolated"], m)), leverage=float(rng.choice([5.0, 10.0, 20.0])))
             for _ in range(3)]
    acc = Account(initial_capital=10_000.0, margin_call_threshold=list(rng.choice([0.7, 1.0], m)),
                  margin_call_response=["none", "reduce", "top_up", "none", "reduce", "top_up"][:m],
                  margin_call_target=0.5, reserve=list(rng.choice([0.0, 2_000.0], m)),
                  after_liquidation=list(rng.choice(["stop", "continue"], m)), excess=list(rng.choice(["clip", "reject"], m)),
                  slippage=0.0005, lag=1)
    s = BookSettings(account=acc, legs=modes, intrabar=list(rng.choice(["together", "alone"], m)))
    return bars, tgt, [spec] * 3, s


def _check_book(seed: int) -> int:
    """Per bar: equity = initial capital + capital added + sum_k (price + funding - fees +
    liquidation PnL); the account's funding and fees are the positions' sums (plus clearance
    fees); a cross liquidation in a column that stops leaves no cross position open from that
    bar on. Returns the number of cross liquidations checked."""
    bars, tgt, specs, s = _random_book(seed)
    series, rec = simulate_book_reference(bars, tgt, specs, s)
    parts = (series["pnl_price"] + series["pnl_funding"] - series["pnl_fees"] + series["pnl_liquidation"]).sum(axis=1)
    expected = 10_000.0 + series["capital_added"] + parts
    assert np.allclose(series["equity"], expected, rtol=1e-10, atol=1e-7)
    assert np.allclose(series["cum_funding"], series["pnl_funding"].sum(axis=1), rtol=1e-12, atol=1e-9)
    liq = rec["liquidations"]
    n, _, m = tgt.shape
    clearance = np.zeros((n, m))
    np.add.at(clearance, (liq["bar"], liq["col"]), liq["clearance_fee"])
    assert np.allclose(series["cum_fees"], series["pnl_fees"].sum(axis=1) + clearance.cumsum(axis=0), atol=1e-9)
    stop = np.array(s.account.after_liquidation) == "stop"
    cross_mode = np.array([np.broadcast_to(np.asarray(leg.margin_mode), (m,)) for leg in s.legs]) == "cross"  # (K, m)
    checked = 0
    for r in liq:
        j, t = int(r["col"]), int(r["bar"])
        if cross_mode[r["instrument"], j] and stop[j]:
            assert (series["position"][t:, cross_mode[:, j], j] == 0.0).all()
            checked += 1
    assert (series["position"][:5, 2, :] == 0.0).all()  # not listed yet: flat
    return checked


def test_equity_identity_and_cross_liquidation_closes_all():
    # the books do liquidate cross accounts (the check is not vacuous)
    assert sum(_check_book(seed) for seed in (1, 2, 3, 4)) > 0


# ------------------------------------------------------------------------------------------
# The two conventions on the real sample (BTC + ETH, 2022)
# ------------------------------------------------------------------------------------------

def test_intrabar_conventions_on_sample_2022(capsys):
    """A cross BTC + ETH short book in 2022 (opened at the June low, 2022-06-19, and held
    through the summer rally; leverage grid):
    'together' (every mark at its adverse extreme at once) is never less conservative than
    'alone' (each extreme with the other mark at its open): its ratio at the adverse end is at
    least alone's at every bar while the two states are the same, and each column is liquidated
    no later. The sizes of the difference are printed."""
    from backtest.data import load_market_data
    from backtest.market import load_market

    legs, specs = [], []
    for sym in ("BTC/USDT:USDT", "ETH/USDT:USDT"):
        md = load_market_data("binanceusdm", sym, "1h", start="2022-01-01", end="2023-01-01")
        legs.append(md.to_perp_bars())
        specs.append(load_market("binanceusdm", sym))
    bars = BookBars.from_legs(["BTC", "ETH"], legs)
    n = bars.n
    grid = [-1.0, -1.5, -2.0, -3.0, -4.0]  # per instrument: gross 2x .. 8x
    tgt = np.full((n, 2, 2 * len(grid)), np.nan)
    t_open = int(np.searchsorted(bars.timestamp, 1_655_596_800_000))  # 2022-06-19 00:00 UTC
    tgt[t_open, :, :] = np.repeat(np.array(grid), 2)[None, :]
    conv = ["together", "alone"] * len(grid)
    acc = Account(initial_capital=100_000.0, leverage=10.0, margin_call_threshold=1.0, lag=0, allow_lookahead=True)
    series, rec = simulate_book_reference(bars, tgt, specs, BookSettings(account=acc, intrabar=conv))
    liq = rec["liquidations"]
    first = [int(liq["bar"][liq["col"] == j].min()) if (liq["col"] == j).any() else n for j in range(tgt.shape[2])]
    together, alone = series["margin_ratio_adverse"][:, 0::2], series["margin_ratio_adverse"][:, 1::2]
    with capsys.disabled():
        print()
        for i, x in enumerate(grid):
            upto = min(first[2 * i], first[2 * i + 1])
            same = slice(t_open + 1, upto)
            rel = together[same, i] / np.maximum(alone[same, i], 1e-300) - 1.0
            print(f"  {x:+.1f}x each: first liquidation bar together={first[2 * i]} alone={first[2 * i + 1]}; "
                  f"adverse ratio together/alone - 1: mean {rel.mean():.4f}, max {rel.max():.4f}")
            assert (together[same, i] >= alone[same, i] * (1 - 1e-12)).all()
            assert first[2 * i] <= first[2 * i + 1]
            assert rel.max() > 0.0  # the extremes are not simultaneous somewhere in 2022
    assert any(f < n for f in first[0::2])  # the grid reaches a liquidation
