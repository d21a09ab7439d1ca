"""Int enums, series order and record dtypes of the leveraged-product simulator."""

from __future__ import annotations

import numpy as np


class Reset:
    DAILY = 0  # daily reset at the rebalance hour (+ intraday triggers)
    BAR = 1    # constant leverage: rebalanced at every bar close (no daily reset needed)
    names = {"daily": 0, "bar": 1}


class RebalanceReason:
    DAILY = 0       # scheduled daily reset
    TRIGGER = 1     # |effective leverage| reached trigger x |L|
    TERMINATED = 2  # NAV reached 0: the product is closed
    names = ("daily", "trigger", "terminated")


SERIES = (
    "equity", "equity_usd", "position", "notional", "leverage", "cum_funding", "cum_fees",
    "capital_added", "nav", "nav_gross", "ideal_nav", "effective_leverage", "perp_position",
    "log_decay", "log_decay_estimate", "cum_mgmt_fees", "cum_trade_costs",
)
(EQUITY, EQUITY_USD, POSITION, NOTIONAL, LEVERAGE, CUM_FUNDING, CUM_FEES, CAPITAL_ADDED, NAV,
 NAV_GROSS, IDEAL_NAV, EFF_LEVERAGE, PERP_POSITION, LOG_DECAY, LOG_DECAY_EST, CUM_MGMT,
 CUM_COSTS) = range(17)

rebalance_dt = np.dtype([
    ("bar", np.int64), ("col", np.int64),
    ("reason", np.int64),            # RebalanceReason
    ("price", np.float64),           # underlying price of the rebalance (USD)
    ("leverage_before", np.float64),  # signed effective leverage just before it
    ("nav", np.float64),             # NAV per product unit after it
    ("traded", np.float64),          # perp contracts (coins) traded, signed, for the whole holding
], align=True)

REB_INT = ("bar", "col", "reason")
REB_FLOAT = ("price", "leverage_before", "nav", "traded")
