"""Compile a run's book kernel in a second process while the run does its other simulations.

A first run (an empty numba cache) of a config with books and other simulations spends about
half of its time compiling the book kernel (``backtest/book/nb.py``) and the other half
compiling the perpetual, put and product kernels; numba compiles on one thread, so on a
machine with two or more cores the two halves can be compiled at the same time.
:func:`start_book_precompile` starts a child process (``python -m backtest.precompile``) that runs the
config's books as the run will (same data, targets and settings, so the kernels get the same
signatures; without their option legs when the run prices options itself: :func:`child_config`)
and throws the results away: what it leaves is the numba cache, from which the
run then loads the book kernels instead of compiling them (:meth:`BookPrecompile.ready`, called
before the first book, compiles the metrics kernels while it waits). Measured in
benchmarks/README.md ("Start-up").

Only on a cold cache (:func:`book_cache_cold`), never on a warm run; and it can only make a run
faster, not different: if the child fails, is killed or is slow, the run compiles the kernels
itself as it always did, and a kernel loaded from the cache is the same machine code the run
would have compiled.

Two processes writing numba's cache at once can corrupt it: numba's ``IndexDataCacheFile.save``
reads a function's index, picks the first free data file name for a new signature and writes
the index and then the data file, so two processes compiling *different* signatures of the same
function (helpers shared by the book and perpetual kernels) both pick ``<name>.1.nbc`` and the
index can end up pointing one signature at the other's machine code (the race of numba issue
#10128, where the maintainers suggest a file lock). While the child runs, both processes take a
lock (``fcntl.flock`` on a file in the cache folder) around every index read-modify-write and
every read (:func:`locked_cache`), so a save is atomic for the other process.

``BACKTEST_PARALLEL_COMPILE=0`` turns this off (the run compiles everything itself).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

ENV = "BACKTEST_PARALLEL_COMPILE"
LOCK_NAME = "backtest-cache.lock"  # in each numba cache folder the run writes to
WAIT_LIMIT_S = 900.0  # a child still compiling after this long is killed and the run compiles the rest itself
CHILD = [sys.executable, "-m", "backtest.precompile"]  # reads the pickled config on stdin

Log = Callable[[str], None]


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def book_cache_cold() -> bool | None:
    """Whether the book kernel has to be compiled by this process.

    Read on its column kernel ``book_col_nb`` (the bulk of the compilation, under both the
    serial and the parallel driver): True when neither this process holds a compiled version
    nor numba's cache a saved one for the current source of ``backtest/book/nb.py``; False
    otherwise; None when it cannot be told
    (caching off, or a numba whose cache objects look different): then no second process is started.
    """
    try:
        from backtest.book import nb

        disp: Any = nb.book_col_nb  # numba's Dispatcher: its cache object is not in the stubs
        if disp.overloads:
            return False
        cache_file = disp._cache._cache_file  # a NullCache (cache=False) has none: AttributeError
        return not cache_file._load_index()  # {} when missing, stale (other source) or another numba
    except Exception:  # noqa: BLE001 - any doubt means: do not start a second process
        return None


# ---------------------------------------------------------------------------------------------
# numba's cache, locked while two processes write it

@contextlib.contextmanager
def _flock(folder: str, exclusive: bool) -> Iterator[None]:
    import fcntl

    try:
        fd = os.open(os.path.join(folder, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o666)
    except FileNotFoundError:  # no cache folder yet: nothing to read, and a save creates it first
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def locked_cache() -> Iterator[None]:
    """Within the block, numba's cache index and data files are read and written under a lock
    shared with every other process inside this block (one lock file per cache folder).

    ``save`` (read the index, add the signature with a free data file name, write the index,
    write the data) holds the lock exclusively; ``load`` (read the index, read the data file it
    names) holds it shared, so it never sees an index entry whose data file is not written yet.
    Not reentrant across threads: the run compiles on one thread.
    """
    from numba.core import caching

    cls = caching.IndexDataCacheFile
    save, load = cls.save, cls.load

    def locked_save(self: Any, key: Any, data: Any) -> None:
        with _flock(self._cache_path, exclusive=True):
            save(self, key, data)

    def locked_load(self: Any, key: Any) -> Any:
        with _flock(self._cache_path, exclusive=False):
            return load(self, key)

    # numba's own methods replaced for the block (there is no hook for a lock), restored after
    setattr(cls, "save", locked_save)
    setattr(cls, "load", locked_load)
    try:
        yield
    finally:
        setattr(cls, "save", save)
        setattr(cls, "load", load)


# ---------------------------------------------------------------------------------------------
# the parent's side

class BookPrecompile:
    """A running child compiling the book kernels (:func:`start_book_precompile`); use as a context manager so that the
    child is stopped and the cache lock released whatever happens to the run."""

    def __init__(self, proc: subprocess.Popen, stderr_path: Path, lock: contextlib.ExitStack, books: list[str]):
        self.proc = proc
        self.stderr_path = stderr_path
        self._lock = lock
        self.books = books
        self.t0 = time.perf_counter()
        self.ok: bool | None = None  # None until waited for

    def wait(self, status: Log | None = None, limit: float | None = None) -> bool:
        """Wait for the child to finish (before the run's first book); True if it compiled the
        book kernels (exit 0). ``status`` says that the run is waiting, when it has to. On a
        failure or after ``limit`` seconds (default :data:`WAIT_LIMIT_S`) the child is stopped
        and False returned: the run then compiles whatever is missing itself."""
        if self.ok is not None:
            return self.ok
        if self.proc.poll() is None and status is not None:
            status(f"waiting for the book kernels, compiling in a second process for "
                   f"{time.perf_counter() - self.t0:.0f} s (first run only)")
        try:
            code = self.proc.wait(timeout=WAIT_LIMIT_S if limit is None else limit)
        except subprocess.TimeoutExpired:
            code = None
        self.close()
        self.ok = code == 0
        if status is not None and code not in (0, None):
            status(f"  the second process failed (exit {code}); compiling the book kernels here: "
                   f"{self.error_tail()}")
        return self.ok

    def ready(self, results: Mapping[str, Any], cfg: Any, status: Log | None = None) -> bool:
        """What the run calls before its first book, with its ``results`` so far: while the
        child is still compiling, this process (otherwise idle until then) compiles the metrics
        kernels by computing the report's numbers of those results (``backtest.report.collect``,
        thrown away; the run's own ``collect`` then finds the kernels compiled), then waits
        (:meth:`wait`). Whatever goes wrong in the metrics here is left for the run's own
        ``collect`` to report."""
        if self.proc.poll() is None and results:
            from backtest.report.collect import collect

            with contextlib.suppress(Exception):
                collect(dict(results), title=cfg.title, rank_by=cfg.rank_by,
                        periods=[(p.name, *p.span_ms()) for p in cfg.period])
        return self.wait(status)

    def error_tail(self, chars: int = 400) -> str:
        """The end of the child's stderr (why it failed), '' if none."""
        try:
            return self.stderr_path.read_text(errors="replace")[-chars:].strip()
        except OSError:
            return ""

    def close(self) -> None:
        """Stop the child if it still runs, release the cache lock, remove its stderr file."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._lock.close()
        if self.ok is None or self.ok:
            with contextlib.suppress(OSError):
                self.stderr_path.unlink()

    def __enter__(self) -> "BookPrecompile":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.ok is None:
            self.ok = False
        self.close()


def child_config(cfg: Any) -> Any:
    """The config the child runs: ``cfg``'s books only. Without their option legs when ``cfg``
    has a put program: the book kernel has the same signature with or without option legs
    (its option arrays keep their types when empty), and the legs' prices come from the put
    kernel, which the run compiles in its put program anyway (the same signature since the
    put simulator passes the price read-only); measured on the main job, the child's CPU
    48.0 s -> 38.0 s, and the run then compiles no book kernel function
    (benchmarks/README.md, "Start-up")."""
    books = [b.model_copy(update={"option": []}) for b in cfg.book] if cfg.puts else list(cfg.book)
    return cfg.model_copy(update={"perp": [], "puts": [], "products": [], "book": books})


def start_book_precompile(cfg: Any, status: Log | None = None) -> BookPrecompile | None:
    """Start compiling ``cfg``'s book kernels in a second process, when it helps.

    It helps when the config has books and other simulations before them (the run compiles
    those meanwhile), the book kernel's cache is cold (:func:`book_cache_cold`), the process may
    use two cores, and ``BACKTEST_PARALLEL_COMPILE`` is not ``0``; else None (nothing started).

    Parameters
    ----------
    cfg : RunConfig, validated.
    status : progress for a person at a terminal (``execute``'s ``status``): one line when a
        child is started; None says nothing.

    Returns
    -------
    BookPrecompile or None
        Call :meth:`BookPrecompile.ready` (or :meth:`BookPrecompile.wait`) before the first book; use it
        as a context manager.
    """
    if not cfg.book or not (cfg.perp or cfg.puts or cfg.products):
        return None
    if os.environ.get(ENV, "1").strip() == "0" or _cpus() < 2 or os.name != "posix":
        return None
    if book_cache_cold() is not True:
        return None
    env = dict(os.environ)
    # the child imports what this process imports (a checkout on sys.path, a user's modules)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    from numba.core import config as numba_config

    cache_dir = getattr(numba_config, "CACHE_DIR", "")
    if cache_dir:  # set in this process, maybe not through the environment
        env["NUMBA_CACHE_DIR"] = str(cache_dir)
    lock = contextlib.ExitStack()
    lock.enter_context(locked_cache())
    fd, name = tempfile.mkstemp(prefix="backtest-precompile-", suffix=".log")
    proc = None
    try:
        with os.fdopen(fd, "wb") as err:
            proc = subprocess.Popen(CHILD, stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, stderr=err, env=env)
        stdin = proc.stdin
        if stdin is None:  # Popen(stdin=PIPE) always sets it
            raise OSError("no pipe to the second process")
        with stdin:
            stdin.write(pickle.dumps(child_config(cfg)))
    except Exception:  # noqa: BLE001 - no second process: the run compiles everything itself
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        lock.close()
        with contextlib.suppress(OSError):
            os.unlink(name)
        return None
    if status is not None:
        status(f"compiling the book kernels in a second process (first run only): {', '.join(b.name for b in cfg.book)}")
    return BookPrecompile(proc, Path(name), lock, [b.name for b in cfg.book])


# ---------------------------------------------------------------------------------------------
# the child's side: python -m backtest.precompile < pickled RunConfig (books only)

def _child() -> int:
    cfg = pickle.loads(sys.stdin.buffer.read())
    from backtest.runner.run import simulate_all

    with locked_cache():
        simulate_all(cfg, None, None, log=lambda _msg: None)
    return 0


if __name__ == "__main__":
    sys.exit(_child())
