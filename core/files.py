"""What went wrong with a file, said so that the user knows what to do (one phrase per errno)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

_HINTS = {
    errno.ENOSPC: "the disk is full: free some space, then run the same command again",
    errno.EDQUOT: "the disk quota is used up: free some space, then run the same command again",
    errno.EFBIG: "the file is larger than this process may write (ulimit -f): raise the limit, "
    "then run the same command again",
    errno.EROFS: "the file system is read-only: choose a writable folder",
    errno.EACCES: "permission denied: choose a folder you can write to",
    errno.EPERM: "permission denied: choose a folder you can write to",
    # Opened with O_NOFOLLOW: a file moa keeps for itself is never written through a link.
    errno.ELOOP: "it is a link, which moa does not follow there: give the file's own path, or "
    "remove the link",
}


def os_reason(exc: OSError) -> str:
    """What went wrong with a file, and what to do about it, in one phrase."""
    if exc.errno in (errno.ENOTDIR, errno.EEXIST) and exc.filename is not None:
        # A path through a file (ENOTDIR), or mkdir(exist_ok=True) on a file (EEXIST, the file
        # in ``filename``): the OS's "File exists" does not say which file is in the way.
        blocker = file_in_the_way(Path(os.fsdecode(exc.filename), "x"))
        if blocker is not None:
            return f"{not_a_folder(blocker)}: choose another path"
    return _HINTS.get(exc.errno or 0, exc.strerror or str(exc))


def file_in_the_way(path: str | Path) -> Path | None:
    """The file (or pipe, device...) where one of ``path``'s folders must be: the nearest of its
    folders that exists and is not a folder. None if every one that exists is a folder."""
    for folder in Path(path).parents:
        try:
            mode = folder.stat().st_mode
        except (FileNotFoundError, NotADirectoryError):  # not there: the one above may be
            continue
        except OSError:  # cannot be looked at (permission denied): the OS error will say so
            return None
        return None if stat.S_ISDIR(mode) else folder
    return None


def not_a_folder(blocker: Path) -> str:
    """``file_in_the_way``'s answer, in words."""
    return f"{blocker} is a file, not a folder"
