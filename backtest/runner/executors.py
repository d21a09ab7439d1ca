"""Where a sweep's chunks run: one small interface, three implementations.

An :class:`Executor` applies ``fn(shared, item)`` to every item and yields ``(position, result)``
as each finishes, in any order. ``shared`` (the sweep's data, market and grid) is sent to each
worker once, not with every item. The sweep does the rest (storing each result as it arrives,
the progress bar), so another engine (Ray, a batch queue) is one more class with ``map`` and
``close``, and the sweep does not change.

- :class:`InProcess`: in this process, in order (the default).
- :class:`Processes`: ``--workers N`` local processes (``concurrent.futures``, spawned, so no
  worker inherits a half-initialised numba or thread state).
- :class:`DaskExecutor`: an existing Dask distributed cluster (``--scheduler tcp://host:8786``),
  or a ``LocalCluster``; ``shared`` is scattered to every worker once and a chunk whose worker
  dies is computed again on another (``retries``, and the scheduler's own rescheduling).
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Callable, Iterator, Protocol, Sequence

Task = Callable[[Any, Any], Any]


class Executor(Protocol):
    """Runs ``fn(shared, item)`` for every item; see the module docstring."""

    name: str

    def map(self, fn: Task, shared: Any, items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        """Yield ``(i, fn(shared, items[i]))`` for every ``i`` as each finishes (any order). An
        exception of ``fn`` is raised here (after the results that finished before it)."""
        ...

    def close(self) -> None:
        """Release the workers (idempotent)."""
        ...


class InProcess:
    """Every item in this process, in order."""

    name = "in-process"

    def map(self, fn: Task, shared: Any, items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        for i, item in enumerate(items):
            yield i, fn(shared, item)

    def close(self) -> None:
        """Free the engine's idle output buffers: the chunks ran here, and the memory the engine
        kept to lend from chunk to chunk (0.7 GB on 26,280 bars x 297 columns) is not needed by
        what follows (ranking, the report), which would otherwise add its peak to it (100,000
        columns: 2.03 GB peak RSS with it kept, benchmarks/README.md "Sweeps")."""
        from backtest.engine.buffers import release

        release()


_SHARED: Any = None  # a worker process's copy of ``shared`` (set once by the pool's initializer)


def _set_shared(shared: Any) -> None:
    global _SHARED
    _SHARED = shared


def _call(fn: Task, item: Any) -> Any:
    return fn(_SHARED, item)


class Processes:
    """``workers`` local processes; ``shared`` is pickled once per process (its initializer)."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers={workers} must be at least 1")
        self.workers = workers
        self.name = f"{workers} local processes"
        self._pool: ProcessPoolExecutor | None = None

    def map(self, fn: Task, shared: Any, items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        import multiprocessing

        self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_set_shared, initargs=(shared,))
        pending = {self._pool.submit(_call, fn, item): i for i, item in enumerate(items)}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    i = pending.pop(fut)
                    yield i, fut.result()
        finally:
            for fut in pending:
                fut.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class DaskExecutor:
    """Chunks on a Dask distributed cluster.

    Parameters
    ----------
    address : the scheduler (``tcp://host:8786``), or a ``distributed.Client`` / ``LocalCluster``
        to use as is (tests, ``--workers`` through Dask).
    retries : times a chunk is run again after its task failed (a worker lost mid-chunk is
        also rescheduled by the scheduler itself, up to its ``allowed-failures``).
    """

    def __init__(self, address: Any, retries: int = 3) -> None:
        try:
            from distributed import Client
        except ImportError:  # pragma: no cover - dask is a dependency
            raise ValueError("--scheduler needs the dask distributed package: pip install 'dask[distributed]'") \
                from None
        self.retries = retries
        self._own = not isinstance(address, Client)
        if isinstance(address, Client):
            self.client = address
        else:
            try:
                self.client = Client(address, timeout="20s")
            except (OSError, TimeoutError) as exc:
                raise ValueError(f"scheduler {address!r}: cannot connect ({exc}); start it (dask scheduler) or "
                                 "check the address, e.g. --scheduler tcp://host:8786") from None
        self.name = f"Dask scheduler {self.client.scheduler.address}"

    def map(self, fn: Task, shared: Any, items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        from distributed import as_completed

        # every worker gets the data once; tasks refer to it by its key
        data = self.client.scatter(shared, broadcast=True, hash=False)
        futures = [self.client.submit(fn, data, item, retries=self.retries, pure=False) for item in items]
        position = {f.key: i for i, f in enumerate(futures)}
        try:
            for fut, result in as_completed(futures, with_results=True):
                yield position[fut.key], result
        finally:
            self.client.cancel(futures)

    def close(self) -> None:
        if self._own:
            self.client.close()


def executor_for(workers: int | None, scheduler: str | None) -> Executor:
    """``--scheduler`` (Dask), else ``--workers N > 1`` (local processes), else in-process."""
    if scheduler:
        return DaskExecutor(scheduler)
    if workers is not None and workers > 1:
        return Processes(workers)
    return InProcess()


class ChunkProgress:
    """A progress bar over chunks on stderr: a live bar on a terminal, a line per chunk otherwise
    (batch logs), nothing when quiet."""

    def __init__(self, total: int, done: int, quiet: bool = False) -> None:
        self.total, self.done, self.quiet = total, done, quiet
        self.t0 = time.perf_counter()
        self._bar = None
        if not quiet and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import Progress

            self._bar = Progress(console=Console(stderr=True))
            self._bar.start()
            self._task = self._bar.add_task("chunks", total=total, completed=done)

    def advance(self, label: str) -> None:
        self.done += 1
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
            return
        width = 30
        fill = int(width * self.done / max(1, self.total))
        print(f"  [{'#' * fill}{'.' * (width - fill)}] {self.done}/{self.total} chunks ({label}, "
              f"{time.perf_counter() - self.t0:.1f} s)", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
