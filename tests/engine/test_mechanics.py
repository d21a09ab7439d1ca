"""The readable exchange formulas (backtest.mechanics) against the exchanges' worked examples.

Every vector comes from tests/fixtures/exchange/mechanics_test_vectors.json (copied from the
research data, each entry names its source). Tolerances follow the source's printed precision:
a value printed with d decimals is checked to half a unit of its last digit (or one unit when
the source truncates), unless stated otherwise next to the case.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backtest import mechanics as mk
from backtest.market import BUNDLED_DIR, MarketSpec, MarketSpecError, TierTable, load_market

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "exchange"
VECTORS = json.loads((FIX / "mechanics_test_vectors.json").read_text())
HISTORY = json.loads((FIX / "binance_usdm_tier_history_btc_eth_2022-2024.json").read_text())
MAJORS = json.loads((FIX / "binance_usdm_leverage_tiers_2024-10-24_majors.json").read_text())
COINM = json.loads((FIX / "binance_coinm_btcusd_tiers_ccxt_fixture.json").read_text())

BTC_2024 = TierTable.from_ccxt(MAJORS["tiers"]["BTC/USDT:USDT"]).rows


def one_tier(mmr: float, cum: float = 0.0) -> np.ndarray:
    """A single-tier table (min 0, no cap): no re-tiering possible."""
    return np.array([[0.0, np.inf, mmr, cum, 125.0]])


def coinm_table_from_fixture() -> np.ndarray:
    """COIN-M BTCUSD brackets from the ccxt fixture's floors and rates; cum from the recursion."""
    rows = COINM["BTC/USD:BTC"]
    floors = [r["minQtyBTC"] for r in rows]
    rates = [r["maintenanceMarginRate"] for r in rows]
    caps = [r["maxQtyBTC"] if r["maxQtyBTC"] is not None else np.inf for r in rows]
    cum = mk.maintenance_amounts(floors, rates)
    return np.column_stack([floors, caps, rates, cum, np.full(len(rows), np.inf)]).astype(float)


# ------------------------------------------------------------------------------------------
# Binance USDⓈ-M liquidation price (freqtrade's tests, numbers from Binance's FAQ)
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", VECTORS["binance_linear_liq_price"],
                         ids=lambda c: f"{c['mode']}-{c.get('symbol', c['entry'])}")
def test_binance_linear_liquidation_price(case):
    other_mm = other_upnl = 0.0
    if case["mode"] == "cross":
        others = [(o["qty"], o["entry"], o["mark"], o["mmr"], o["cum"]) for o in case["other_positions"]]
        other_mm, other_upnl = mk.cross_other_positions(others)
        # the derived intermediates are printed with 6 and 5 decimals
        assert other_mm == pytest.approx(case["TMM1_derived"], abs=5e-7)
        assert other_upnl == pytest.approx(case["UPNL1_derived"], abs=5e-6)
    lp = mk.binance_liquidation_price_linear(case["side"], case["qty"], case["entry"], case["WB"],
                                             case["mmr"], case["cum"], other_mm, other_upnl)
    # the expected price is printed with 2 decimals
    assert lp == pytest.approx(case["expected"], abs=0.005)


BINANCE_GENERIC = [r for r in VECTORS["generic_isolated_liq_price"]["rows"] if r[0] == "binance"]


@pytest.mark.parametrize("row", BINANCE_GENERIC, ids=lambda r: f"{'short' if r[1] else 'long'}-L{r[2]}-EP{r[3]}-q{r[4]}")
def test_generic_isolated_liquidation_price_binance(row):
    _, is_short, lev, entry, amount, expected = row
    side = -1 if is_short else 1
    mmr, cum = 0.01, 0.01  # freqtrade's test parameters
    # freqtrade compares the short 3x row with pytest.approx (rel 1e-6; the exact value is
    # 13.2112211221122); the others are the formula's full-precision float output
    rel = 1e-6 if (is_short and lev == 3.0) else 1e-12
    closed = mk.isolated_liquidation_price(side, entry, lev, mmr, cum, qty=amount)
    general = mk.binance_liquidation_price_linear(side, amount, entry, amount * entry / lev, mmr, cum)
    retiered = mk.liquidation_price(side * amount, entry, amount * entry / lev, one_tier(mmr, cum))
    for value in (closed, general, retiered):
        assert value == pytest.approx(expected, rel=rel)


# ------------------------------------------------------------------------------------------
# Binance API positions (ccxt fixtures)
# ------------------------------------------------------------------------------------------

def test_binance_api_linear_position():
    p = VECTORS["binance_api_positions"]["linear_cross"]
    upnl = mk.unrealized_pnl(p["positionAmt"], p["entryPrice"], p["markPrice"])
    notional = mk.position_notional(p["positionAmt"], p["markPrice"])
    mm = mk.maintenance_margin(notional, BTC_2024)
    # Binance prints 8 decimals and truncates (607.52416678 * 0.004 = 2.430096667..; shown 2.43009666)
    assert upnl == pytest.approx(p["unRealizedProfit"], abs=1e-8)
    assert notional == pytest.approx(p["notional"], abs=1e-8)
    assert mm == pytest.approx(p["maintMargin"], abs=1e-8)
    assert mk.tier_index(BTC_2024, notional) == 0 and BTC_2024[0, 2] == p["mmr"]
    # consistency only: ccxt backs the collateral out of the liquidation price; an 8-decimal
    # collateral moves LP by 5e-9 / (Q * (1 - mmr)) = 5.6e-7
    lp = mk.liquidation_price(p["positionAmt"], p["entryPrice"], p["ccxt_collateral"], BTC_2024)
    assert lp == pytest.approx(p["liquidationPrice"], abs=1e-6)


def test_binance_api_inverse_position():
    p = VECTORS["binance_api_positions"]["inverse_cross"]
    cs = p["contractSize_usd"]
    table = coinm_table_from_fixture()
    upnl = mk.unrealized_pnl(p["positionAmt"], p["entryPrice"], p["markPrice"], cs, inverse=True)
    notional = mk.position_notional(p["positionAmt"], p["markPrice"], cs, inverse=True)
    assert upnl == pytest.approx(p["unRealizedProfit_btc"], abs=1e-8)       # 8 decimals, truncated
    assert notional == pytest.approx(abs(p["notionalValue_btc"]), abs=5e-9)  # 8 decimals
    # Binance computes MM from the 8-decimal notional: exact on it, 0.004 * 5e-9 on ours
    assert mk.maintenance_margin(abs(p["notionalValue_btc"]), table) == pytest.approx(
        p["maintenanceMargin_btc"], abs=1e-15)
    assert mk.maintenance_margin(notional, table) == pytest.approx(p["maintenanceMargin_btc"], abs=2e-11)
    # consistency: 8-decimal collateral, dLP/dWB = LP / (WB + s*Q/EP) ~ 1.8e7 -> 0.09
    lp = mk.liquidation_price(p["positionAmt"], p["entryPrice"], p["ccxt_collateral_btc"], table, cs, inverse=True)
    assert lp == pytest.approx(p["liquidationPrice"], abs=0.09)


# ------------------------------------------------------------------------------------------
# Binance COIN-M (FAQ and developer forum)
# ------------------------------------------------------------------------------------------

def test_coinm_maintenance_margin_faq():
    v = VECTORS["binance_coinm_maintenance_margin"]
    table = coinm_table_from_fixture()
    notional = mk.position_notional(v["contracts"], v["mark"], v["contract_size_usd"], inverse=True)
    assert notional == pytest.approx(v["notional_btc"], abs=1e-15)
    assert mk.maintenance_margin(notional, table) == pytest.approx(v["maintenance_margin_btc"], abs=1e-15)
    k = mk.tier_index(table, v["tier_example"]["position_btc"])
    assert table[k, 2] == v["tier_example"]["mmr"]
    assert table[k, 3] == pytest.approx(v["tier_example"]["maintenance_amount_btc"], abs=1e-12)


def test_coinm_liquidation_price_forum_case():
    v = VECTORS["binance_coinm_liq_price"]
    table = coinm_table_from_fixture()
    qty_usd = v["contracts"] * v["contract_size_usd"]
    lp = mk.liquidation_price(v["contracts"] * v["side"], v["entry"], v["WB_btc"], table,
                              v["contract_size_usd"], inverse=True)
    # the tier at the liquidation price (297.6 BTC) is the 12.5 % tier used by the calculator
    assert table[mk.tier_index(table, qty_usd / lp), 2] == v["derived"]["mmr"]
    # Binance's calculator shows 33,599.40; the formula gives 33,599.4186: the calculator's
    # internal rounding is unpublished, the gap (6e-7 relative) is below 0.02
    assert lp == pytest.approx(v["binance_calculator_liq"], abs=0.02)
    # the poster's full-precision figure is the same formula with the older amount 11.81 BTC
    poster = mk.binance_liquidation_price_inverse(v["side"], qty_usd, v["entry"], v["WB_btc"],
                                                  v["derived"]["mmr"], 11.81)
    assert poster == pytest.approx(v["poster_result"], rel=1e-12)


# ------------------------------------------------------------------------------------------
# Tier tables
# ------------------------------------------------------------------------------------------

def test_tier_examples_2020_table():
    v = VECTORS["binance_usdm_tier_examples_2020_table"]
    first = HISTORY["history"]["BTC/USDT:USDT"][0]["tiers"]  # levels 1-3 are the FAQ's 2020 levels
    floors = [t["minNotional"] for t in first]
    rates = [t["maintenanceMarginRate"] for t in first]
    cum = mk.maintenance_amounts(floors, rates)
    rows = np.column_stack([floors, [t["maxNotional"] for t in first], rates, cum,
                            [t["maxLeverage"] for t in first]])
    assert rows[mk.tier_index(rows, 264_000.0), 2] == v["notional_264000_mmr"]
    assert rows[mk.tier_index(rows, 500_000.0), 3] == pytest.approx(v["notional_500000_cum"], abs=1e-9)
    assert cum[2] == pytest.approx(250_000 * (0.01 - 0.005) + 50, abs=1e-9)


def _assert_continuous(rows: np.ndarray, where: str) -> None:
    """Binance's recursion holds and MM is continuous at every boundary."""
    derived = mk.maintenance_amounts(rows[:, 0], rows[:, 2])
    np.testing.assert_allclose(rows[:, 3], derived, rtol=1e-9, atol=1e-9, err_msg=where)
    for k in range(1, rows.shape[0]):
        edge = rows[k, 0]
        below = edge * rows[k - 1, 2] - rows[k - 1, 3]
        assert mk.maintenance_margin(edge, rows) == pytest.approx(below, rel=1e-12, abs=1e-9), (where, k)


def _bundled_specs():
    out = []
    for path in sorted(BUNDLED_DIR.glob("*.json")):
        for symbol in json.loads(path.read_text())["markets"]:
            out.append((path.stem, symbol))
    return out


@pytest.mark.parametrize("exchange,symbol", _bundled_specs())
def test_bundled_tier_tables_load_and_are_continuous(exchange, symbol):
    spec = load_market(exchange, symbol)
    assert isinstance(spec, MarketSpec)
    _assert_continuous(spec.tiers.rows, f"{exchange}:{symbol} tiers")
    for k, (start, table) in enumerate(spec.tier_history):
        _assert_continuous(table.rows, f"{exchange}:{symbol} tier_history[{k}] from {start}")


@given(st.lists(st.integers(-3, 40), min_size=1, max_size=60, unique=True), st.integers(0, 1))
@settings(max_examples=200, deadline=None)
def test_tier_version_of_each_bar_is_the_last_table_started_at_its_open(offsets, on_starts):
    """``tier_arrays`` finds, for increasing bar times, the last table whose start is at or
    before each bar's open (the first table before every start), checked bar by bar."""
    spec = load_market("binanceusdm", "BTC/USDT:USDT")
    starts = [s for s, _ in spec.tier_history]
    assert len(starts) > 2
    step = (starts[-1] - starts[0]) // 30
    grid = {starts[0] + k * step + 1 for k in offsets}  # between starts (and before the first)
    ts = np.array(sorted(grid | (set(starts) if on_starts else set())), dtype=np.int64)  # and on them
    tables, n_tiers, version = spec.tier_arrays(ts)
    assert version.shape == ts.shape and version.dtype == np.int64
    for t, v in zip(ts, version):
        expected = max([k for k, s in enumerate(starts) if s <= t], default=0)
        assert v == expected, (t, v, expected)
        np.testing.assert_array_equal(tables[v, :n_tiers[v]], spec.tier_history[v][1].rows)


def _fixture_tables():
    out = []
    for sym, blocks in HISTORY["history"].items():
        out += [(f"history {sym} #{k}", b["tiers"]) for k, b in enumerate(blocks)]
    out += [(f"2024-10-24 {sym}", t) for sym, t in MAJORS["tiers"].items()]
    return out


@pytest.mark.parametrize("where,tiers", _fixture_tables(), ids=lambda x: x if isinstance(x, str) else "")
def test_exchange_tier_tables_are_continuous(where, tiers):
    _assert_continuous(TierTable.from_ccxt(tiers, where=where).rows, where)


def test_tier_table_with_a_hole_names_the_tier():
    spec = json.loads((BUNDLED_DIR / "binanceusdm.json").read_text())["markets"]["BTC/USDT:USDT"]
    spec = dict(spec, tier_history=[])
    tiers = [dict(t) for t in spec["tiers"]]
    tiers[2]["minNotional"] += 1.0  # hole between tier index 1 and 2
    with pytest.raises(MarketSpecError, match=r"tiers\[2\]: hole or overlap.*tier 2 starts at"):
        MarketSpec.from_dict(dict(spec, tiers=tiers), exchange="binanceusdm")


def test_tier_boundaries_belong_to_the_upper_tier():
    # [minNotional, maxNotional): 50,000 USDT is tier 2; beyond the last cap, the last tier
    assert mk.tier_index(BTC_2024, 49_999.99) == 0
    assert mk.tier_index(BTC_2024, 50_000.0) == 1
    assert mk.tier_index(BTC_2024, 0.0) == 0
    assert mk.tier_index(BTC_2024, 5e9) == BTC_2024.shape[0] - 1
    # MM is continuous there: 50,000*0.4 % - 0 = 50,000*0.5 % - 50 = 200
    assert mk.maintenance_margin(50_000.0, BTC_2024) == pytest.approx(200.0, abs=1e-9)


def test_max_notional_at_leverage():
    # 2024-10-24 BTCUSDT brackets: 125x up to 50,000; 20x up to 100,000,000; 1x everything
    assert mk.max_notional_at_leverage(BTC_2024, 125) == 50_000
    assert mk.max_notional_at_leverage(BTC_2024, 100) == 600_000
    assert mk.max_notional_at_leverage(BTC_2024, 20) == 100_000_000
    assert mk.max_notional_at_leverage(BTC_2024, 21) == 70_000_000
    assert mk.max_notional_at_leverage(BTC_2024, 1) == 1_800_000_000
    assert mk.max_notional_at_leverage(BTC_2024, 126) == 0.0


# ------------------------------------------------------------------------------------------
# Re-tiering at the liquidation price
# ------------------------------------------------------------------------------------------

def _bisect_root(contracts, entry, balance, rows, cs=1.0, inverse=False, threshold=1.0):
    """Root of threshold*MB(P) - MM(P) on the piecewise (tiered) function, by bisection in log price."""
    def gap(p):
        mb = balance + mk.unrealized_pnl(contracts, entry, p, cs, inverse)
        return threshold * mb - mk.maintenance_margin(mk.position_notional(contracts, p, cs, inverse), rows)

    lo, hi = math.log(entry) - 12.0, math.log(entry) + 12.0
    assert (gap(math.exp(lo)) > 0) != (gap(math.exp(hi)) > 0), "no sign change"
    lo_pos = gap(math.exp(lo)) > 0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if (gap(math.exp(mid)) > 0) == lo_pos:
            lo = mid
        else:
            hi = mid
    return math.exp(0.5 * (lo + hi))


def test_isolated_short_retiers_to_a_higher_tier():
    # short 0.8 BTC at 60,000 (48,000 USDT, tier 1 of the 2024 table), 5x isolated: margin 9,600
    c, ep, margin = -0.8, 60_000.0, 48_000.0 / 5
    tier1_lp = mk.binance_liquidation_price_linear(-1, 0.8, ep, margin, 0.004, 0.0)
    assert tier1_lp == pytest.approx((9_600 + 48_000) / (0.8 * 1.004))  # 71,713.15
    assert mk.tier_index(BTC_2024, 0.8 * tier1_lp) == 1                # 57,370 USDT: tier 2
    lp = mk.liquidation_price(c, ep, margin, BTC_2024)
    assert lp == pytest.approx((9_600 + 50 + 48_000) / (0.8 * 1.005), rel=1e-14)  # 71,703.98
    assert mk.tier_index(BTC_2024, 0.8 * lp) == 1
    assert lp == pytest.approx(_bisect_root(c, ep, margin, BTC_2024), rel=1e-12)


@settings(max_examples=150, deadline=None)
@given(side=st.sampled_from([-1, 1]), qty=st.floats(0.001, 30_000.0), entry=st.floats(100.0, 100_000.0),
       margin_frac=st.floats(0.002, 0.9), inverse=st.booleans(), threshold=st.sampled_from([1.0, 0.8]))
def test_liquidation_price_is_the_root_of_the_piecewise_function(side, qty, entry, margin_frac, inverse, threshold):
    """The iterated closed form equals the bisection root on the tiered MM, for any tier."""
    if inverse:
        rows, cs = coinm_table_from_fixture(), 100.0
        contracts = side * max(1.0, round(qty * entry / cs / 10))  # up to ~3e6 USD of contracts
    else:
        rows, cs, contracts = BTC_2024, 1.0, side * qty
    balance = margin_frac * mk.position_notional(contracts, entry, cs, inverse)
    lp = mk.liquidation_price(contracts, entry, balance, rows, cs, inverse, threshold=threshold)
    if lp is None:
        # no liquidation: threshold*MB > MM at every price (check a wide grid)
        for p in entry * np.exp(np.linspace(-12, 12, 241)):
            mb = balance + mk.unrealized_pnl(contracts, entry, p, cs, inverse)
            assert threshold * mb > mk.maintenance_margin(mk.position_notional(contracts, p, cs, inverse), rows)
        return
    assert lp == pytest.approx(_bisect_root(contracts, entry, balance, rows, cs, inverse, threshold), rel=1e-9)


def test_margin_call_price_reaches_the_threshold():
    c, ep, wallet = -2.0, 30_000.0, 6_000.0
    p = mk.margin_call_price(c, ep, wallet, BTC_2024, 0.8)
    mb = wallet + mk.unrealized_pnl(c, ep, p)
    mm = mk.maintenance_margin(mk.position_notional(c, p), BTC_2024)
    assert mk.margin_ratio(mm, mb) == pytest.approx(0.8, rel=1e-12)
    assert p < mk.liquidation_price(c, ep, wallet, BTC_2024)


# ------------------------------------------------------------------------------------------
# Closed forms, bankruptcy, liquidation outcome
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("side,lev", [(-1, 2), (-1, 5), (-1, 10), (1, 2), (1, 5), (1, 10)])
def test_isolated_closed_forms_match_the_general_formula(side, lev):
    ep, mmr = 60_000.0, 0.004
    # linear, 50,000 USDT notional in tier 1 (short 5x: 71,713.15 in the research note)
    q = 50_000.0 / ep
    general = mk.binance_liquidation_price_linear(side, q, ep, q * ep / lev, mmr, 0.0)
    assert mk.isolated_liquidation_price(side, ep, lev, mmr, qty=q) == pytest.approx(general, rel=1e-13)
    # inverse, 100 contracts of 100 USD
    general_inv = mk.binance_liquidation_price_inverse(side, 10_000.0, ep, 10_000.0 / ep / lev, mmr, 0.0)
    assert mk.isolated_liquidation_price(side, ep, lev, mmr, qty=10_000.0, inverse=True) == pytest.approx(
        general_inv, rel=1e-13)


def test_inverse_one_x_short_and_linear_one_x_long_cannot_be_liquidated():
    assert mk.isolated_liquidation_price(-1, 60_000.0, 1.0, 0.004, inverse=True) is None
    assert mk.isolated_liquidation_price(1, 60_000.0, 1.0, 0.004) is None
    # the re-tiering solver agrees: 1x short of 300 contracts backed by 300*100/60,000 BTC, also
    # when rounding leaves the balance a few ulps short (no price of 1e20 from a 1e-16 denominator)
    for balance in (300 * 100 / 60_000.0, 300 * 100 / 60_000.0 * (1 - 2e-16)):
        assert mk.liquidation_price(-300, 60_000.0, balance, coinm_table_from_fixture(), 100.0, inverse=True) is None


def test_inverse_liquidation_price_found_through_the_first_tier():
    # A large inverse short (3,000,000 x 100 USD at 28,000: 10,714 BTC, last tier) backed by a
    # little less than 1x. The last tier's line never reaches zero (B + cum - Q/EP > 0), but the
    # piecewise function does where the notional is tiny (first tier, cum 0):
    # LP = Q*(mmr_1 - 1)/(B - Q/EP)
    rows = coinm_table_from_fixture()
    q, ep = 3e8, 28_000.0
    b = q / ep - 0.05
    lp = mk.liquidation_price(-3e6, ep, b, rows, 100.0, inverse=True)
    assert lp == pytest.approx(q * (0.004 - 1) / (b - q / ep), rel=1e-12)
    assert mk.tier_index(rows, q / lp) == 0


@pytest.mark.parametrize("lev", [2.0, 5.0, 10.0, 20.0])
def test_bankruptcy_price_is_the_zero_mmr_liquidation_price(lev):
    ep, q = 20_000.0, 1.5
    # jesse's rule (models/Position.py): long EP*(1 - 1/L), short EP*(1 + 1/L)
    assert mk.bankruptcy_price(1, ep, q * ep / lev, q) == pytest.approx(ep * (1 - 1 / lev), rel=1e-14)
    assert mk.bankruptcy_price(-1, ep, q * ep / lev, q) == pytest.approx(ep * (1 + 1 / lev), rel=1e-14)
    zero_mm = np.array([[0.0, np.inf, 0.0, 0.0, 125.0]])
    for side in (1, -1):
        assert mk.liquidation_price(side * q, ep, q * ep / lev, zero_mm) == pytest.approx(
            mk.bankruptcy_price(side, ep, q * ep / lev, q), rel=1e-12)
        usd = 1000.0
        assert mk.liquidation_price(side * 10, ep, usd / ep / lev, zero_mm, 100.0, inverse=True) == pytest.approx(
            mk.bankruptcy_price(side, ep, usd / ep / lev, usd, inverse=True), rel=1e-12)


def test_liquidation_keeps_nothing_when_mmr_is_below_the_clearance_fee():
    # at LP the backing balance equals MM, so the account keeps max(0, N*(mmr - f) - cum); the
    # fee is charged from what is left and nothing is owed to the insurance fund
    c, ep, margin = -0.5, 40_000.0, 2_000.0
    for rows, fee, tier1 in [(BTC_2024, 0.0125, True), (one_tier(0.05), 0.01, False)]:
        lp = mk.liquidation_price(c, ep, margin, rows)
        n = mk.position_notional(c, lp)
        keep, deficit, charged = mk.liquidation_outcome(margin, mk.unrealized_pnl(c, ep, lp), n, fee)
        k = mk.tier_index(rows, n)
        mm = n * rows[k, 2] - rows[k, 3]
        assert keep == pytest.approx(max(0.0, n * (rows[k, 2] - fee) - rows[k, 3]), abs=1e-9)
        assert deficit == 0.0
        assert charged == pytest.approx(min(fee * n, mm), rel=1e-12)
        if tier1:
            assert keep == 0.0 and charged < fee * n
        else:
            assert keep == pytest.approx(n * 0.04, rel=1e-12) and charged == pytest.approx(0.01 * n, rel=1e-12)


def test_liquidation_past_bankruptcy_leaves_a_deficit():
    # a gap past the bankruptcy price: balance 1,000, uPnL -1,500 -> nothing to charge the fee
    # from, the insurance fund covers 500
    assert mk.liquidation_outcome(1000.0, -1500.0, 11_500.0, 0.0125) == (0.0, 500.0, 0.0)


# ------------------------------------------------------------------------------------------
# lfest-rs isolated margin (maintenance = half the initial margin, fixed)
# ------------------------------------------------------------------------------------------

LFEST = VECTORS["lfest_rs_isolated"]
LFEST_CASES = ([(1, int(k), v) for k, v in LFEST["long_liquidates_at_bid_below"].items()]
               + [(-1, int(k), v) for k, v in LFEST["short_liquidates_at_ask_above"].items()])


@pytest.mark.parametrize("side,lev,expected", LFEST_CASES)
def test_lfest_isolated_liquidation(side, lev, expected):
    entry, qty = LFEST["entry"], LFEST["qty"]
    margin = qty * entry / lev
    fixed_mm = LFEST["maint_fraction_of_initial"] * margin
    # a constant maintenance margin is MM = N*0 - cum with cum = -fixed_mm
    lp = mk.binance_liquidation_price_linear(side, qty, entry, margin, 0.0, -fixed_mm)
    assert lp == pytest.approx(expected, abs=5e-4)  # 83.333 / 116.667 printed with 3 decimals


# ------------------------------------------------------------------------------------------
# Funding (freqtrade) and inverse PnL (BitMEX)
# ------------------------------------------------------------------------------------------

FUNDING_SINGLE = [c for c in VECTORS["funding_freqtrade"]["single_event_short_received"] if c["mark"] != "nan"]


@pytest.mark.parametrize("case", FUNDING_SINGLE, ids=lambda c: f"{c['rate']}@{c['mark']}")
def test_funding_single_event_short_receives(case):
    # (the NaN-mark case is freqtrade's data fallback; the engine always has a mark: bars.py
    # uses the bar's mark open when the print has none)
    received = mk.funding_cash_flow(-case["size"], case["mark"], case["rate"])
    assert received == pytest.approx(case["fee"], abs=1e-15)
    assert mk.funding_cash_flow(case["size"], case["mark"], case["rate"]) == pytest.approx(-case["fee"], abs=1e-15)


def _ts(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).replace(tzinfo=timezone.utc)


@pytest.mark.parametrize("case", VECTORS["funding_freqtrade"]["ada_8h_series"]["cases_short"],
                         ids=lambda c: f"{c['amount']}-{c['open']}-{c['close']}")
def test_funding_series_short(case):
    events = VECTORS["funding_freqtrade"]["ada_8h_series"]["events"]
    start, end = _ts(case["open"]), _ts(case["close"])
    # freqtrade's window (binance.py::funding_fee_cutoff): a trade opened in the first 15 s of a
    # minute counts from that minute; events in [start, end] are paid
    if start.second < 15:
        start = start.replace(second=0)
    total = sum(mk.funding_cash_flow(-case["amount"], e["mark"], e["rate"])
                for e in events if start <= _ts(e["t"]) <= end)
    assert total == pytest.approx(case["expected"], abs=1e-11)  # printed to 11 decimals


def test_funding_inverse_in_coin():
    # Binance COIN-M: nominal value = multiplier x contracts / mark; 100 contracts of 100 USD at
    # mark 25,000 (the FAQ's 0.4 BTC) with rate 0.01 %: a short receives 0.4 * 0.0001 BTC
    assert mk.funding_cash_flow(-100, 25_000.0, 0.0001, 100.0, inverse=True) == pytest.approx(4e-5, abs=1e-18)


def test_bitmex_inverse_pnl():
    ex = VECTORS["bitmex_inverse_pnl"]["example"]
    pnl = mk.unrealized_pnl(ex["contracts"], ex["entry"], ex["exit"], 1.0, inverse=True)
    assert pnl == pytest.approx(ex["pnl_btc_derived"], abs=5e-11)  # printed with 10 decimals
    short = mk.unrealized_pnl(-ex["contracts"], ex["entry"], ex["exit"], 1.0, inverse=True)
    assert short == pytest.approx(-ex["pnl_btc_derived"], abs=5e-11)
