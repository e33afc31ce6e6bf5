"""What went wrong with a file, said so that the user knows what to do (one phrase per errno)."""

from __future__ import annotations

import errno

_HINTS = {
    errno.ENOSPC: "the disk is full: free some space, then run the same command again",
    errno.EDQUOT: "the disk quota is used up: free some space, then run the same command again",
    errno.EFBIG: "the file is larger than this process may write (ulimit -f): raise the limit, "
    "then run the same command again",
    errno.EROFS: "the file system is read-only: choose a writable folder",
    errno.EACCES: "permission denied: choose a folder you can write to",
    errno.EPERM: "permission denied: choose a folder you can write to",
}


def os_reason(exc: OSError) -> str:
    """What went wrong with a file, and what to do about it, in one phrase."""
    return _HINTS.get(exc.errno or 0, exc.strerror or str(exc))
