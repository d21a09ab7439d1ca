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


# Fee and clearance-fee rates are fractions of notional (0.0005 = 0.05 %). No exchange charges
# 10 % or more; such a value is a rate quoted in percent (0.05 meaning 0.05 %), which would
# make every fee 100x too large, so it is refused.
MAX_FEE_RATE = 0.1


def _is_number(x: Any) -> bool:
    """A JSON number (a bool is not one, although Python counts it as an int)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


class _Problems:
    """Problems of one spec, collected so that one error names all of them."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.items: list[str] = []

    def add(self, key: str, msg: str) -> None:
        self.items.append(f"{key}: {msg}" if key else msg)

    def number(self, d: dict, key: str, path: str, *, required: bool = False, nullable: bool = False,
               default: float | None = None, lo: float | None = None, lo_open: bool = False,
               hi: float | None = None, hi_open: bool = True, fix: str = "") -> float | None:
        """``d[key]`` as a float, checked against ``[lo, hi)`` (bounds optional, ``lo_open``/
        ``hi_open`` exclude them); a problem is recorded (and ``default`` returned) when it is
        missing (``required``), null (unless ``nullable``), not a JSON number, not finite, or
        out of range."""
        fix = f"; {fix}" if fix else ""
        if key not in d:
            if required:
                self.add(path, f"missing; give it as a JSON number{fix}")
            return default
        v = d[key]
        if v is None:
            if not nullable:
                self.add(path, f"is null; give it as a JSON number{fix}")
            return default
        if not _is_number(v):
            self.add(path, f"{v!r} is not a number; write it as a JSON number{fix}")
            return default
        x = float(v)
        if not np.isfinite(x):
            self.add(path, f"{v!r} is not finite{fix}")
            return default
        if lo is not None and (x <= lo if lo_open else x < lo):
            self.add(path, f"{v!r} must be {'>' if lo_open else '>='} {lo:g}{fix}")
            return default
        if hi is not None and (x >= hi if hi_open else x > hi):
            self.add(path, f"{v!r} must be {'<' if hi_open else '<='} {hi:g}{fix}")
            return default
        return x

    def mapping(self, d: dict, key: str, path: str) -> dict:
        """``d[key]`` when it is an object; missing or null: empty; anything else: a problem."""
        v = d.get(key)
        if v is None:
            return {}
        if not isinstance(v, dict):
            self.add(path, f"is a {type(v).__name__}, expected a JSON object")
            return {}
        return v

    def raise_if_any(self) -> None:
        if self.items:
            n = len(self.items)
            head = f"{self.where}: " if self.where else ""
            raise MarketSpecError(f"{head}{n} problem{'s' if n > 1 else ''} in the market spec: "
                                  + "; ".join(self.items))


def _tier_rows(tiers: Any, where: str, p: _Problems) -> np.ndarray | None:
    """ccxt-shaped tier rows -> (n_tiers, 5) array, every field checked (problems into ``p``);
    None when a row cannot be read. A missing maintenance amount is derived with Binance's
    recursion ``cum_n = cum_{n-1} + minNotional_n * (mmr_n - mmr_{n-1})``."""
    if not isinstance(tiers, list):
        p.add(where, f"is a {type(tiers).__name__}, expected a list of tier rows")
        return None
    if not tiers:
        p.add(where, "tier table is empty; give at least one tier")
        return None
    rows = np.empty((len(tiers), 5), dtype=np.float64)
    cum_prev, mmr_prev = 0.0, 0.0
    ok = True
    need = "ccxt tier rows need minNotional, maxNotional, maintenanceMarginRate, maxLeverage"
    for i, t in enumerate(tiers):
        w = f"{where}[{i}]"
        if not isinstance(t, dict):
            p.add(w, f"is a {type(t).__name__}, expected a JSON object; {need}")
            ok = False
            continue
        n0 = len(p.items)
        lo = p.number(t, "minNotional", f"{w}.minNotional", required=True, lo=0.0, fix=need)
        hi = p.number(t, "maxNotional", f"{w}.maxNotional", required=True, nullable=True, default=np.inf,
                      lo=0.0, lo_open=True, fix="null for an open-ended last tier")
        mmr = p.number(t, "maintenanceMarginRate", f"{w}.maintenanceMarginRate", required=True, lo=0.0,
                       lo_open=True, hi=1.0, fix="a fraction of notional (0.004 = 0.4 %)")
        lev = p.number(t, "maxLeverage", f"{w}.maxLeverage", required=True, nullable=True, default=np.inf,
                       lo=1.0, fix="a multiple >= 1 (null: no cap)")
        cum = p.number(t, "maintAmt", f"{w}.maintAmt", nullable=True,
                       fix="the maintenance amount (Binance cum); omit it to derive it")
        if cum is None and isinstance(t.get("info"), dict):
            cum = p.number(t["info"], "cum", f"{w}.info.cum", nullable=True)
        tier_no = t.get("tier")  # informational; ccxt gives it as a float (1.0)
        if "tier" in t and not (_is_number(tier_no) and float(tier_no).is_integer() and tier_no >= 1):
            p.add(f"{w}.tier", f"{tier_no!r} must be a whole number >= 1 (the tier's number)")
        if len(p.items) > n0 or lo is None or mmr is None:
            ok = False
            continue
        hi = np.inf if hi is None else hi
        lev = np.inf if lev is None else lev
        if cum is None:
            cum = 0.0 if i == 0 else cum_prev + lo * (mmr - mmr_prev)
        rows[i] = (lo, hi, mmr, cum, lev)
        cum_prev, mmr_prev = cum, mmr
    return rows if ok else None


def _table_problems(r: np.ndarray, where: str, p: _Problems) -> None:
    """Problems of a whole tier table (shape, order, continuity); into ``p``."""
    if r.ndim != 2 or r.shape[1] != 5 or r.shape[0] == 0:
        p.add(where, f"expected an (n_tiers, 5) table, got shape {r.shape}")
        return
    if not np.all(np.isfinite(r[:, [TIER_MIN, TIER_MMR, TIER_CUM]])):
        p.add(where, "non-finite min notional, rate or maintenance amount")
        return
    if r[0, TIER_MIN] != 0.0:
        p.add(f"{where}[0]", f"minNotional is {r[0, TIER_MIN]}, must be 0 (the first tier starts at 0)")
    for i in range(len(r)):
        w = f"{where}[{i}]"
        if not r[i, TIER_MAX] > r[i, TIER_MIN]:
            p.add(w, f"maxNotional {r[i, TIER_MAX]} is not above minNotional {r[i, TIER_MIN]}")
        if not (0.0 < r[i, TIER_MMR] < 1.0):
            p.add(w, f"maintenanceMarginRate {r[i, TIER_MMR]} outside (0, 1)")
        if not r[i, TIER_MAXLEV] >= 1.0:
            p.add(w, f"maxLeverage {r[i, TIER_MAXLEV]} below 1")
        elif np.isfinite(r[i, TIER_MAXLEV]) and r[i, TIER_MMR] * r[i, TIER_MAXLEV] >= 1.0:
            # at the tier's maximum leverage the initial margin N/L would not exceed the
            # maintenance margin N*mmr: a position opened there is liquidated at once
            p.add(w, f"maintenanceMarginRate {r[i, TIER_MMR]:g} is not below the initial margin rate "
                     f"1/maxLeverage = {1.0 / r[i, TIER_MAXLEV]:g} (a position at the tier's maximum "
                     "leverage would be liquidated at once); check both values (rates in percent?)")
        if i > 0:
            if r[i, TIER_MIN] != r[i - 1, TIER_MAX]:
                p.add(w, f"hole or overlap in the tier table: tier {i} starts at {r[i, TIER_MIN]} but "
                         f"tier {i - 1} ends at {r[i - 1, TIER_MAX]}; each minNotional must equal the "
                         "previous maxNotional")
            if r[i, TIER_MMR] < r[i - 1, TIER_MMR]:
                p.add(w, f"maintenanceMarginRate {r[i, TIER_MMR]} decreases from {r[i - 1, TIER_MMR]}; "
                         "rates must not fall as notional grows")
            if r[i, TIER_MAXLEV] > r[i - 1, TIER_MAXLEV]:
                p.add(w, f"maxLeverage {r[i, TIER_MAXLEV]:g} increases from {r[i - 1, TIER_MAXLEV]:g}; "
                         "the maximum leverage must not grow with the notional")
            expected = r[i - 1, TIER_CUM] + r[i, TIER_MIN] * (r[i, TIER_MMR] - r[i - 1, TIER_MMR])
            if abs(expected - r[i, TIER_CUM]) > 1e-6 * max(1.0, abs(expected)):
                p.add(w, f"maintAmt {r[i, TIER_CUM]} breaks continuity of the maintenance margin at "
                         f"{r[i, TIER_MIN]} (expected {expected:.10g}); fix the value or omit maintAmt "
                         "to derive it")


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
        """Build from ccxt-shaped rows (``minNotional``, ``maxNotional`` (null: open-ended),
        ``maintenanceMarginRate``, ``maxLeverage`` (null: no cap) and optionally ``maintAmt``
        or ``info.cum``). A missing maintenance amount is derived with Binance's recursion
        ``cum_n = cum_{n-1} + minNotional_n * (mmr_n - mmr_{n-1})``.

        Raises
        ------
        MarketSpecError
            Naming every bad row and field (``where[i].key``) and the fix.
        """
        p = _Problems("")
        table = cls._checked(tiers, where, p)
        p.raise_if_any()
        return table

    @classmethod
    def _checked(cls, tiers: Any, where: str, p: _Problems) -> "TierTable | None":
        rows = _tier_rows(tiers, where, p)
        if rows is None:
            return None
        _table_problems(rows, where, p)
        return cls(rows)

    def validate(self, where: str = "tiers") -> None:
        """Raise :class:`MarketSpecError` naming every problem of the table: the first tier
        starts at 0, tiers are contiguous, rates in (0, 1) and non-decreasing, maximum
        leverage >= 1 and non-increasing, each rate below ``1/maxLeverage``, maintenance
        amounts continuous."""
        p = _Problems("")
        _table_problems(self.rows, where, p)
        p.raise_if_any()

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
    def from_dict(cls, d: dict[str, Any], *, exchange: str = "", where: str | None = None) -> "MarketSpec":
        """Build from one market entry of a spec file (ccxt's shape, see the README's "Market
        snapshot"), checking every field: types (JSON numbers, booleans, strings, objects),
        signs and ranges, and each tier table (see :meth:`TierTable.validate`).

        Required: ``linear``/``inverse`` (booleans, exactly one true), ``settle``,
        ``contractSize`` (> 0) and ``tiers``. Optional (absent: 0, meaning none): ``taker``,
        ``maker``, ``liquidationFeeRate`` (fractions in [0, :data:`MAX_FEE_RATE`)),
        ``precision.amount`` (lot size), ``limits.cost.min`` (minimum notional); and
        ``tier_history`` (tables with increasing integer ``from`` times in ms).

        Parameters
        ----------
        d : the market entry.
        exchange : ccxt exchange id, kept in the spec.
        where : how errors name the entry (default ``<exchange>:<symbol>``); :func:`load_market`
            passes the file and the entry's key.

        Raises
        ------
        MarketSpecError
            One error naming every problem found (``where: key.path: problem; fix``).
        """
        if not isinstance(d, dict):
            raise MarketSpecError(f"{where or exchange or 'market spec'}: the market entry is a "
                                  f"{type(d).__name__}, expected a JSON object with symbol, linear, inverse, "
                                  "settle, contractSize, tiers, ...")
        sym = d.get("symbol", "?")
        if where is None:
            where = f"{exchange}:{sym}" if exchange else str(sym)
        p = _Problems(where)
        if not isinstance(sym, str) or not sym:
            p.add("symbol", f"{sym!r} must be the ccxt symbol as a non-empty string")
        flags = {}
        for key in ("linear", "inverse"):
            v = d.get(key)
            if not isinstance(v, bool):
                p.add(key, f"{v!r} must be true or false" if key in d else "missing; give true or false")
            flags[key] = v
        if all(isinstance(v, bool) for v in flags.values()) and flags["linear"] == flags["inverse"]:
            p.add("linear/inverse", "exactly one of 'linear' and 'inverse' must be true")
        settle = d.get("settle")
        if not isinstance(settle, str) or not settle:
            p.add("settle", f"{settle!r} must be the settlement currency as a string (USDT, BTC, ...)"
                  if "settle" in d else "missing; give the settlement currency (USDT, BTC, ...)")
        cs = p.number(d, "contractSize", "contractSize", required=True, lo=0.0, lo_open=True,
                      fix="base units per contract (linear) or USD per contract (inverse)")
        fee_fix = (f"a fraction of notional (0.0005 = 0.05 %) below {MAX_FEE_RATE:g}; a larger value is "
                   "probably quoted in percent")
        taker = p.number(d, "taker", "taker", default=0.0, lo=0.0, hi=MAX_FEE_RATE, fix=fee_fix)
        maker = p.number(d, "maker", "maker", default=0.0, lo=0.0, hi=MAX_FEE_RATE, fix=fee_fix)
        lfee = p.number(d, "liquidationFeeRate", "liquidationFeeRate", default=0.0, lo=0.0, hi=MAX_FEE_RATE,
                        fix=fee_fix)
        precision = p.mapping(d, "precision", "precision")
        lot = p.number(precision, "amount", "precision.amount", nullable=True, default=0.0, lo=0.0,
                       fix="the contract quantity step (null or 0: none)")
        p.number(precision, "price", "precision.price", nullable=True, lo=0.0, lo_open=True,
                 fix="the price step (null: unknown)")
        limits = p.mapping(d, "limits", "limits")
        cost = p.mapping(limits, "cost", "limits.cost")
        min_notional = p.number(cost, "min", "limits.cost.min", nullable=True, default=0.0, lo=0.0,
                                fix="the minimum order notional in quote/USD (null or 0: none)")
        amount = p.mapping(limits, "amount", "limits.amount")
        p.number(amount, "min", "limits.amount.min", nullable=True, lo=0.0, fix="the minimum order size")
        if "tiers" not in d:
            p.add("tiers", "missing; give the leverage/maintenance tier table (ccxt fetchLeverageTiers rows)")
            tiers = None
        else:
            tiers = TierTable._checked(d["tiers"], "tiers", p)
        history = []
        raw_history = d.get("tier_history")
        if raw_history is not None and not isinstance(raw_history, list):
            p.add("tier_history", f"is a {type(raw_history).__name__}, expected a list of "
                  "{from, tiers} objects")
            raw_history = None
        prev = None
        for k, h in enumerate(raw_history or []):
            w = f"tier_history[{k}]"
            if not isinstance(h, dict):
                p.add(w, f"is a {type(h).__name__}, expected an object with 'from' (ms) and 'tiers'")
                continue
            start = h.get("from")
            if not (isinstance(start, int) and not isinstance(start, bool) and start >= 0):
                p.add(f"{w}.from", f"{start!r} must be an integer time in ms UTC >= 0"
                      if "from" in h else "missing; give the table's start time in ms UTC")
                start = None
            elif prev is not None and start <= prev:
                p.add(f"{w}.from", f"{start} is not after the previous table's start {prev}; "
                      "tier_history must be sorted by 'from', one table per start")
            if "tiers" not in h:
                p.add(f"{w}.tiers", "missing; give the tier table in force from 'from'")
                table = None
            else:
                table = TierTable._checked(h["tiers"], f"{w}.tiers", p)
            if start is not None:
                prev = start
                if table is not None:
                    history.append((start, table))
        p.raise_if_any()
        return cls(
            symbol=sym, inverse=bool(flags["inverse"]), contract_size=cs, settle=settle,
            taker_fee=taker, maker_fee=maker, lot_size=lot, min_notional=min_notional,
            liquidation_fee_rate=lfee, tiers=tiers, tier_history=tuple(history), exchange=exchange)

    def validate(self) -> None:
        """Check the fields of a spec built in Python (e.g. by :meth:`replace`)."""
        p = _Problems(self.symbol)
        if not (np.isfinite(self.contract_size) and self.contract_size > 0):
            p.add("contract_size", f"{self.contract_size} must be a finite number > 0")
        for name in ("taker_fee", "maker_fee", "liquidation_fee_rate"):
            v = getattr(self, name)
            if not (np.isfinite(v) and 0 <= v < MAX_FEE_RATE):
                p.add(name, f"{v} must be a fraction in [0, {MAX_FEE_RATE:g})")
        for name in ("lot_size", "min_notional"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v >= 0):
                p.add(name, f"{v} must be a finite number >= 0")
        _table_problems(self.tiers.rows, "tiers", p)
        for k, (_, t) in enumerate(self.tier_history):
            _table_problems(t.rows, f"tier_history[{k}].tiers", p)
        starts = [s for s, _ in self.tier_history]
        if any(b <= a for a, b in zip(starts, starts[1:])):
            p.add("tier_history", f"must be sorted by 'from', one table per start (got {starts})")
        p.raise_if_any()

    def replace(self, **changes: Any) -> "MarketSpec":
        from dataclasses import replace as _replace

        out = _replace(self, **changes)
        out.validate()
        return out

    def min_order_usd(self, mark: float) -> float:
        """The smallest order the market allows, in USD at ``mark``: the minimum notional, or
        one lot (inverse: a lot of USD contracts). Over a leverage setting it is the smallest
        equity that can still trade (metrics: ``ruined``)."""
        return max(float(self.min_notional),
                   float(self.lot_size) * float(self.contract_size) * (1.0 if self.inverse else float(mark)))

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
    exists and holds the symbol, else the bundled one.

    Raises
    ------
    MarketSpecError
        The file is not UTF-8 JSON, not an object with a ``markets`` object, or the entry is
        invalid (every problem named, with the file and the key path); or no file holds the
        symbol.
    """
    candidates = []
    if data_dir is not None:
        candidates.append(Path(data_dir) / "markets" / f"{exchange}.json")
    candidates.append(BUNDLED_DIR / f"{exchange}.json")
    known: list[str] = []
    for path in candidates:
        if not path.exists():
            continue
        markets = _read_markets(path, exchange)
        if symbol in markets:
            return MarketSpec.from_dict(markets[symbol], exchange=exchange,
                                        where=f"{path}: markets[{symbol!r}]")
        known.extend(markets)
    if not known:
        raise MarketSpecError(
            f"no market spec for exchange {exchange!r}: looked in {', '.join(map(str, candidates))}; "
            f"run `backtest download --exchange {exchange} ...` to snapshot it")
    raise MarketSpecError(
        f"no market spec for {symbol!r} on {exchange!r}; known symbols: {', '.join(sorted(set(known)))}")


def _read_markets(path: Path, exchange: str) -> dict[str, Any]:
    """The ``markets`` object of a spec file, or a :class:`MarketSpecError` naming the file."""
    fix = (f"repair it, or delete it and run `backtest download --exchange {exchange} ...` "
           "to write a new snapshot")
    if path.is_dir():
        raise MarketSpecError(f"{path}: is a directory, expected a market spec JSON file; {fix}")
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise MarketSpecError(f"{path}: not UTF-8 text (byte {exc.start}); {fix}") from None
    except json.JSONDecodeError as exc:
        raise MarketSpecError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column "
                              f"{exc.colno}); {fix}") from None
    if not isinstance(doc, dict):
        raise MarketSpecError(f"{path}: the file holds a JSON {type(doc).__name__}, expected an object "
                              '{"exchange": ..., "markets": {symbol: spec, ...}}; ' + fix)
    markets = doc.get("markets")
    if not isinstance(markets, dict):
        got = "no 'markets' key" if "markets" not in doc else f"'markets' is a {type(markets).__name__}"
        raise MarketSpecError(f"{path}: {got}, expected an object symbol -> spec; {fix}")
    for key, entry in markets.items():
        if isinstance(entry, dict) and "symbol" in entry and entry["symbol"] != key:
            raise MarketSpecError(f"{path}: markets[{key!r}].symbol is {entry['symbol']!r}, not the key "
                                  f"{key!r} it is stored under; make them equal")
    return markets
