"""Market specifications: contract specs and leverage/maintenance tier tables, as data.

Exchange rules are data in ccxt's shape (``fetchMarkets`` fields plus ``fetchLeverageTiers``
rows with Binance's maintenance amount ``maintAmt``/``cum``). Formulas live in
:mod:`backtest.mechanics` (readable) and :mod:`backtest.engine.nb` (kernel). Nothing here
branches on an exchange's name.

Bundled specs live in ``backtest/markets/<exchange>.json``; a downloaded snapshot in the data
store (``data/markets/<exchange>.json``, same shape) takes precedence when present.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

BUNDLED_DIR = Path(__file__).resolve().parent / "markets"

# Columns of a tier table array, shape (n_tiers, 5).
TIER_MIN, TIER_MAX, TIER_MMR, TIER_CUM, TIER_MAXLEV = range(5)


class MarketSpecError(ValueError):
    """A market spec or tier table is invalid; the message names the value and the fix."""


@dataclass(frozen=True)
class TierTable:
    """One leverage/maintenance bracket table.

    ``rows`` has shape (n_tiers, 5): min notional, max notional, maintenance margin rate,
    maintenance amount (``cum``), max leverage. Notional is in the settlement currency for
    linear contracts (USDT) and in the coin for inverse contracts (Binance COIN-M brackets).
    """

    rows: np.ndarray

    @classmethod
    def from_ccxt(cls, tiers: list[dict[str, Any]], *, where: str = "tiers") -> "TierTable":
        """Build from ccxt-shaped rows (``minNotional``, ``maxNotional``,
        ``maintenanceMarginRate``, ``maxLeverage`` and optionally ``maintAmt`` or
        ``info.cum``). A missing maintenance amount is derived with Binance's recursion
        ``cum_n = cum_{n-1} + minNotional_n * (mmr_n - mmr_{n-1})``."""
        if not tiers:
            raise MarketSpecError(f"{where}: tier table is empty; give at least one tier")
        rows = np.empty((len(tiers), 5), dtype=np.float64)
        cum_prev, mmr_prev = 0.0, 0.0
        for i, t in enumerate(tiers):
            try:
                lo = float(t["minNotional"])
                hi = float(t["maxNotional"]) if t.get("maxNotional") is not None else np.inf
                mmr = float(t["maintenanceMarginRate"])
                lev = float(t["maxLeverage"]) if t.get("maxLeverage") is not None else np.inf
            except KeyError as exc:
                raise MarketSpecError(
                    f"{where}[{i}]: missing field {exc.args[0]!r}; ccxt tier rows need "
                    "minNotional, maxNotional, maintenanceMarginRate, maxLeverage") from None
            cum = t.get("maintAmt")
            if cum is None:
                cum = (t.get("info") or {}).get("cum")
            if cum is None:
                cum = 0.0 if i == 0 else cum_prev + lo * (mmr - mmr_prev)
            rows[i] = (lo, hi, mmr, float(cum), lev)
            cum_prev, mmr_prev = float(cum), mmr
        table = cls(rows)
        table.validate(where)
        return table

    def validate(self, where: str = "tiers") -> None:
        r = self.rows
        if r.ndim != 2 or r.shape[1] != 5 or r.shape[0] == 0:
            raise MarketSpecError(f"{where}: expected an (n_tiers, 5) table, got shape {r.shape}")
        if not np.all(np.isfinite(r[:, [TIER_MIN, TIER_MMR, TIER_CUM]])):
            raise MarketSpecError(f"{where}: non-finite min notional, rate or maintenance amount")
        if r[0, TIER_MIN] != 0.0:
            raise MarketSpecError(
                f"{where}[0]: minNotional is {r[0, TIER_MIN]}, must be 0 (the first tier starts at 0)")
        for i in range(len(r)):
            if not r[i, TIER_MAX] > r[i, TIER_MIN]:
                raise MarketSpecError(
                    f"{where}[{i}]: maxNotional {r[i, TIER_MAX]} is not above minNotional {r[i, TIER_MIN]}")
            if not (0.0 < r[i, TIER_MMR] < 1.0):
                raise MarketSpecError(
                    f"{where}[{i}]: maintenanceMarginRate {r[i, TIER_MMR]} outside (0, 1)")
            if not r[i, TIER_MAXLEV] >= 1.0:
                raise MarketSpecError(f"{where}[{i}]: maxLeverage {r[i, TIER_MAXLEV]} below 1")
            if i > 0:
                if r[i, TIER_MIN] != r[i - 1, TIER_MAX]:
                    raise MarketSpecError(
                        f"{where}[{i}]: hole or overlap in the tier table: tier {i} starts at "
                        f"{r[i, TIER_MIN]} but tier {i - 1} ends at {r[i - 1, TIER_MAX]}; "
                        "each minNotional must equal the previous maxNotional")
                if r[i, TIER_MMR] < r[i - 1, TIER_MMR]:
                    raise MarketSpecError(
                        f"{where}[{i}]: maintenanceMarginRate {r[i, TIER_MMR]} decreases from "
                        f"{r[i - 1, TIER_MMR]}; rates must not fall as notional grows")
                expected = r[i - 1, TIER_CUM] + r[i, TIER_MIN] * (r[i, TIER_MMR] - r[i - 1, TIER_MMR])
                if abs(expected - r[i, TIER_CUM]) > 1e-6 * max(1.0, abs(expected)):
                    raise MarketSpecError(
                        f"{where}[{i}]: maintAmt {r[i, TIER_CUM]} breaks continuity of the "
                        f"maintenance margin at {r[i, TIER_MIN]} (expected {expected:.10g}); "
                        "fix the value or omit maintAmt to derive it")

    @property
    def n(self) -> int:
        return self.rows.shape[0]


@dataclass(frozen=True)
class MarketSpec:
    """Everything the engine needs to know about one perpetual contract.

    Attributes
    ----------
    symbol : ccxt unified symbol, e.g. ``BTC/USDT:USDT`` or ``BTC/USD:BTC``.
    inverse : True for coin-margined contracts (PnL and margin in the coin).
    contract_size : base units per contract (linear) or USD per contract (inverse).
    settle : settlement currency (``USDT``, ``BTC``).
    taker_fee, maker_fee : fee rates as fractions of traded notional.
    lot_size : contract quantity step; orders are rounded toward zero to it.
    min_notional : minimum order notional in quote/USD (0 = none); closing is always allowed.
    liquidation_fee_rate : clearance fee as a fraction of the liquidated notional.
    tiers : the current tier table.
    tier_history : ``(start_ms, TierTable)`` pairs sorted by start; empty means ``tiers`` always.
    """

    symbol: str
    inverse: bool
    contract_size: float
    settle: str
    taker_fee: float
    maker_fee: float
    lot_size: float
    min_notional: float
    liquidation_fee_rate: float
    tiers: TierTable
    tier_history: tuple[tuple[int, TierTable], ...] = field(default_factory=tuple)
    exchange: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, exchange: str = "") -> "MarketSpec":
        sym = d.get("symbol", "?")
        where = f"{exchange}:{sym}" if exchange else sym
        if bool(d.get("linear")) == bool(d.get("inverse")):
            raise MarketSpecError(f"{where}: exactly one of 'linear' and 'inverse' must be true")
        try:
            spec = cls(
                symbol=sym,
                inverse=bool(d["inverse"]),
                contract_size=float(d.get("contractSize") or 1.0),
                settle=str(d["settle"]),
                taker_fee=float(d.get("taker", 0.0)),
                maker_fee=float(d.get("maker", 0.0)),
                lot_size=float((d.get("precision") or {}).get("amount") or 0.0),
                min_notional=float(((d.get("limits") or {}).get("cost") or {}).get("min") or 0.0),
                liquidation_fee_rate=float(d.get("liquidationFeeRate", 0.0)),
                tiers=TierTable.from_ccxt(d["tiers"], where=f"{where} tiers"),
                tier_history=tuple(
                    (int(h["from"]), TierTable.from_ccxt(h["tiers"], where=f"{where} tier_history[{k}]"))
                    for k, h in enumerate(d.get("tier_history") or [])),
                exchange=exchange,
            )
        except KeyError as exc:
            raise MarketSpecError(f"{where}: missing field {exc.args[0]!r} in the market spec") from None
        spec.validate()
        return spec

    def validate(self) -> None:
        w = self.symbol
        if not self.contract_size > 0:
            raise MarketSpecError(f"{w}: contractSize {self.contract_size} must be > 0")
        for name in ("taker_fee", "maker_fee", "liquidation_fee_rate", "lot_size", "min_notional"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v >= 0):
                raise MarketSpecError(f"{w}: {name} {v} must be a finite number >= 0")
        starts = [s for s, _ in self.tier_history]
        if starts != sorted(starts):
            raise MarketSpecError(f"{w}: tier_history must be sorted by 'from' (got {starts})")

    def replace(self, **changes: Any) -> "MarketSpec":
        from dataclasses import replace as _replace

        out = _replace(self, **changes)
        out.validate()
        return out

    def tier_arrays(self, timestamps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tier tables stacked for the kernel.

        Returns
        -------
        tiers : float64 (n_versions, max_tiers, 5), padded by repeating the last tier
        n_tiers : int64 (n_versions,)
        version : int64 (n_bars,), the table in force at each bar's open time (``timestamps``:
            the bars' open times, increasing)
        """
        tables = [t for _, t in self.tier_history] or [self.tiers]
        starts = np.array([s for s, _ in self.tier_history] or [0], dtype=np.int64)
        width = max(t.n for t in tables)
        out = np.empty((len(tables), width, 5), dtype=np.float64)
        for k, t in enumerate(tables):
            out[k, : t.n] = t.rows
            out[k, t.n:] = t.rows[-1]
        n_tiers = np.array([t.n for t in tables], dtype=np.int64)
        ts = np.asarray(timestamps, dtype=np.int64)
        # bars from the first at or after each table's start (the first table also before it):
        # one search per table instead of one per bar
        cuts = np.searchsorted(ts, starts, side="left")
        cuts[0] = 0
        version = np.repeat(np.arange(len(tables), dtype=np.int64), np.diff(cuts, append=ts.shape[0]))
        return out, n_tiers, version


def load_market(exchange: str, symbol: str, *, data_dir: str | Path | None = None) -> MarketSpec:
    """Load a market spec: the store's snapshot ``<data_dir>/markets/<exchange>.json`` if it
    exists and holds the symbol, else the bundled one."""
    candidates = []
    if data_dir is not None:
        candidates.append(Path(data_dir) / "markets" / f"{exchange}.json")
    candidates.append(BUNDLED_DIR / f"{exchange}.json")
    known: list[str] = []
    for path in candidates:
        if not path.exists():
            continue
        doc = json.loads(path.read_text())
        markets = doc.get("markets", {})
        if symbol in markets:
            return MarketSpec.from_dict(markets[symbol], exchange=exchange)
        known.extend(markets)
    if not known:
        raise MarketSpecError(
            f"no market spec for exchange {exchange!r}: looked in {', '.join(map(str, candidates))}; "
            f"run `backtest download --exchange {exchange} ...` to snapshot it")
    raise MarketSpecError(
        f"no market spec for {symbol!r} on {exchange!r}; known symbols: {', '.join(sorted(set(known)))}")
