"""Output memory for engine runs, taken back when their results are dropped.

Writing memory for the first time is a large part of a sweep's cost: the operating system zeroes
every fresh page before the kernel writes it, and on a virtual machine that returns freed memory
to its host, the host faults it in again as well (benchmarks/README.md: W2 in 40 ms instead of
46-48 ms rebalanced every 8 hours, 140 ms instead of 420-600 ms rebalanced every bar). A batch
job runs the engine many times on same-sized work and drops each result after reading what it
needs, so the engine lends its large output buffers from a pool: a buffer goes back to the pool
when nothing references it any more (the result that viewed it, and every array taken from that
result, are gone), and the next run that needs that much memory writes into it instead of into
fresh pages.

A buffer is lent only when nothing outside the pool holds it, checked with its reference count
(any view, record array, DataFrame or buffer-protocol export of a result keeps its buffer
referenced), so a result that is still alive is never written by a later run. The pool holds at
most :attr:`BufferPool.max_bytes` in all, lent or idle (beyond that, runs get fresh memory it
does not keep); ``release()`` frees the idle buffers.
"""

from __future__ import annotations

import sys
import threading
from math import prod

import numpy as np

MIN_BYTES = 1 << 20  # smaller buffers are cheap to allocate fresh: not pooled


class BufferPool:
    """Large byte buffers lent as typed arrays, reused once nothing else references them.

    Parameters
    ----------
    max_bytes : most bytes the pool holds, in buffers lent and idle (0 disables the pool: every
        request is a fresh ``np.empty``).
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._bufs: list[np.ndarray] = []  # uint8 buffers, the least recently lent first
        self._lock = threading.Lock()

    def _free(self, k: int) -> bool:
        # referenced by the list and by getrefcount's argument only: no view of it is alive
        return sys.getrefcount(self._bufs[k]) == 2

    def empty(self, shape: int | tuple[int, ...], dtype=np.float64, zero: bool = False) -> np.ndarray:
        """An array like ``np.empty(shape, dtype)`` (``np.zeros`` with ``zero``), C-ordered, in
        a pooled buffer of at most twice its size when one is free, else in a new one."""
        shape = (shape,) if isinstance(shape, int) else tuple(int(s) for s in shape)
        dtype = np.dtype(dtype)
        nbytes = prod(shape) * dtype.itemsize
        if nbytes < MIN_BYTES or self.max_bytes <= 0:
            return np.zeros(shape, dtype) if zero else np.empty(shape, dtype)
        with self._lock:
            buf = None
            for k in range(len(self._bufs)):
                size = self._bufs[k].nbytes
                if nbytes <= size <= 2 * nbytes and self._free(k):
                    buf = self._bufs.pop(k)
                    break
            if buf is None:
                self._trim(self.max_bytes - nbytes)
                buf = np.empty(nbytes, dtype=np.uint8)
                if sum(b.nbytes for b in self._bufs) + nbytes > self.max_bytes:
                    return self._typed(buf, nbytes, shape, dtype, zero)  # over the limit: not kept
            self._bufs.append(buf)  # the most recently lent last
        return self._typed(buf, nbytes, shape, dtype, zero)

    @staticmethod
    def _typed(buf: np.ndarray, nbytes: int, shape: tuple[int, ...], dtype: np.dtype, zero: bool) -> np.ndarray:
        arr = buf[:nbytes].view(dtype).reshape(shape)
        if zero:
            arr.fill(0)
        return arr

    def _trim(self, budget: int) -> None:
        """Drop the least recently lent idle buffers until all those held (lent and idle) fit in
        ``budget`` bytes, or no idle one is left."""
        held = sum(b.nbytes for b in self._bufs)
        k = 0
        while held > max(budget, 0) and k < len(self._bufs):
            if self._free(k):
                held -= self._bufs.pop(k).nbytes
            else:
                k += 1

    def release(self) -> int:
        """Free every buffer not lent (lent ones are freed with their results); returns the
        bytes dropped."""
        with self._lock:
            before = sum(b.nbytes for b in self._bufs)
            self._trim(0)
            return before - sum(b.nbytes for b in self._bufs)

    def stats(self) -> dict[str, int]:
        """Buffers and bytes held, and how many of them are lent right now."""
        with self._lock:
            lent = [not self._free(k) for k in range(len(self._bufs))]
            return {"buffers": len(self._bufs), "bytes": sum(b.nbytes for b in self._bufs),
                    "lent": sum(lent), "lent_bytes": sum(b.nbytes for b, x in zip(self._bufs, lent) if x)}


# The engine's pool: 1 GiB of idle buffers at most (a W2 sweep, 8,760 bars x 1,000 columns,
# lends about 130 MB a run).
POOL = BufferPool(1 << 30)


def release() -> int:
    """Free the engine's idle output buffers (``POOL.release()``)."""
    return POOL.release()
