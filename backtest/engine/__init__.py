"""The perpetual-futures engine (numba kernel in ``nb.py``, pandas-facing wrapper in ``core.py``)."""
