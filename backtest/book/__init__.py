"""Books: several positions in one margin account (issue: books of perpetuals and puts under
shared cross margin). Inputs (:class:`BookBars`) and the slow reference simulator live here; the
numba kernel follows the single-instrument engine's layout."""

from backtest.book.bars import BookBars

__all__ = ["BookBars"]
