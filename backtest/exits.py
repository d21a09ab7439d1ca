"""How every command ends: exit codes, the operating-system errors that are the environment's,
and SIGTERM turned into an exception so that clean-up runs (``docs/reliability.md``).

Exit codes: 0 success; 2 the input or the environment must be fixed (one ``error:`` line naming
the file, key or value and the fix); 1 a bug or a failure outside the user's hands (the exchange
after its retries); 130 Ctrl-C; 143 SIGTERM.
"""

from __future__ import annotations

import contextlib
import errno
import signal
from typing import Iterator

EXIT_INPUT = 2
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 128 + signal.SIGINT    # 130, what shells report for Ctrl-C
EXIT_TERMINATED = 128 + signal.SIGTERM    # 143, what shells report for SIGTERM

# OS errors that are the environment's, not a bug: exit 2 with the path and the fix (the same
# command then works; a download resumes after its last stored page)

ENV_ERRNOS: dict[int, str] = {
    errno.ENOSPC: "free some space",
    errno.EDQUOT: "free some space (or raise the disk quota)",
    errno.EFBIG: "free some space (or raise the file size limit)",
    errno.EROFS: "choose a writable folder",
    errno.EACCES: "fix its permissions",
    errno.EPERM: "fix its permissions",
}
"""errno -> the fix, for the OS errors that exit 2."""

DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class Terminated(BaseException):
    """SIGTERM arrived (``timeout``, CI cancellation, ``kill``). A BaseException, like
    KeyboardInterrupt, so every ``finally`` and ``except BaseException`` clean-up runs on the way out."""


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Turn the first SIGTERM into :class:`Terminated`; ignore repeats so clean-up can finish.
    A numba kernel does not see signals: they take effect when it returns."""
    def on_term(signum, frame):  # noqa: ARG001
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated()

    try:
        old = signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread (embedded use): leave signals alone
        old = None
    try:
        yield
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
