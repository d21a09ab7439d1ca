"""Data layer: ccxt download into a Parquet store, validation, loading and resampling.

Public API::

    from backtest.data import load_market_data, resample, MarketData, Store, DataValidationError
    from backtest.data import load_book_data, BookData   # several symbols aligned into a book
    from backtest.data.download import download   # imports ccxt; the CLI imports it lazily
"""

from backtest.data.book import BookData, load_book_data
from backtest.data.load import load_market_data
from backtest.data.marketdata import MarketData
from backtest.data.resample import ResampleError, resample
from backtest.data.store import SAMPLE_ROOT, Store, StoreError, default_root, symbol_dir
from backtest.data.validate import DataValidationError

__all__ = ["load_market_data", "load_book_data", "BookData", "MarketData", "resample", "ResampleError", "Store",
           "StoreError", "DataValidationError", "default_root", "symbol_dir", "SAMPLE_ROOT"]
