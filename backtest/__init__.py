"""Backtesting framework for leveraged bearish crypto strategies.

Short perpetuals (USDT- and coin-margined), long puts and inverse leveraged products, each
under a dynamic leverage policy, simulated with funding, tiered maintenance margin, margin
calls and mark-price liquidation in a vectorized numba engine.
"""

__version__ = "0.1.0"
