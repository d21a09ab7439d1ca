"""Operating-system errors that are the environment's, not a bug: every command reports them on
one line naming the path and the fix, with exit code 2 (the machine must be fixed, the same
command then works; a download resumes after its last stored page)."""

from __future__ import annotations

import errno

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
