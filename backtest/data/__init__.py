"""Data layer: ccxt download into a Parquet store, validation, loading and resampling."""
