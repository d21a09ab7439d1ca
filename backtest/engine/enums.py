"""Int enums and record dtypes of the perpetual engine (readable by numba)."""

from __future__ import annotations

import numpy as np


class FillStatus:
    FILLED = 0
    CLIPPED = 1
    REJECTED = 2
    names = ("filled", "clipped", "rejected")


class FillReason:
    TARGET = 0
    MARGIN_CALL = 1
    ROLL = 2           # an option leg's roll: the early sale of the old contract, the re-purchase
    SETTLEMENT = 3     # an option leg's expiry: settled at its payoff (books)
    LIQUIDATION = 4    # options sold into a cross liquidation when they count as collateral (books)
    names = ("target", "margin_call", "roll", "settlement", "liquidation")


# Series written per bar and column, in this order (float64, valued at the bar's close).
SERIES = (
    "equity", "equity_usd", "position", "notional", "leverage", "margin_ratio", "liq_price",
    "cum_funding", "cum_fees", "capital_added",
)

fill_dt = np.dtype([
    ("bar", np.int64), ("col", np.int64),
    ("price", np.float64),     # fill price incl. slippage
    ("size", np.float64),      # signed contracts traded (requested size when rejected)
    ("notional", np.float64),  # abs(size) * v(price), settlement currency
    ("fee", np.float64),       # settlement currency
    ("status", np.int64),      # FillStatus
    ("reason", np.int64),      # FillReason
], align=True)

funding_dt = np.dtype([
    ("bar", np.int64), ("col", np.int64),
    ("time", np.int64),        # funding instant, ms UTC (rounded to the second)
    ("rate", np.float64),
    ("mark", np.float64),
    ("position", np.float64),  # contracts that paid/received
    ("amount", np.float64),    # cash flow to the account (+ received), settlement currency
], align=True)

margin_call_dt = np.dtype([
    ("bar", np.int64), ("col", np.int64),
    ("price", np.float64),         # mark price at which the ratio reached the threshold
    ("margin_ratio", np.float64),  # ratio at that price (before the response)
    ("response", np.int64),        # settings.CallResponse
    ("amount", np.float64),        # contracts cut (reduce) or capital added (top_up); 0 for none
], align=True)

liquidation_dt = np.dtype([
    ("bar", np.int64), ("col", np.int64),
    ("trigger_price", np.float64),  # liquidation price LP (tier re-chosen at LP)
    ("price", np.float64),          # execution price: LP, or the mark open on a gap
    ("size", np.float64),           # signed position closed (contracts)
    ("clearance_fee", np.float64),  # charged, settlement currency
    ("equity_start", np.float64),   # equity just before the adverse move: the state before the
                                    # liquidation valued at the bar's mark open (at the previous
                                    # bar's mark close for a gap at the open), settlement currency
    ("equity_before", np.float64),  # equity at the execution price before closing
    ("equity_after", np.float64),
    ("deficit", np.float64),        # shortfall absorbed by the insurance fund (>= 0)
    ("gap", np.int64),              # 1 if executed at the mark open (gap), else 0
], align=True)

# What the kernel writes per fill (32 bytes instead of 64): the column follows from the record's
# place (each column's records are contiguous, in column order) and the notional from the size
# and the price (``abs(size) * v(price)``, the kernel's expression); ``core`` builds ``fill_dt``.
fill_nb_dt = np.dtype([
    ("bar", np.int32),
    ("status", np.int8),
    ("reason", np.int8),
    ("price", np.float64),
    ("size", np.float64),
    ("fee", np.float64),
], align=True)

# The sparse specialisation's position series, as changes: at each bar whose closing position
# differs from the previous bar's (before bar 0: flat), the bar and that position.
position_change_dt = np.dtype([("bar", np.int64), ("position", np.float64)], align=True)

RECORD_DTYPES = {
    "fills": fill_dt,
    "funding": funding_dt,
    "margin_calls": margin_call_dt,
    "liquidations": liquidation_dt,
}
