"""One writer per batch output, chat thread and compare folder: an OS file lock.

Two processes appending to one output pay for every item twice and lose records when one
rewrites the file under the other; two chats on one thread keep only one branch. So each takes an
exclusive lock first and a second process is refused at once, with the holder's pid.

The lock is ``filelock`` (flock on POSIX, LockFileEx on Windows): the operating system drops it
when its holder dies, even by ``kill -9``, so there is no stale lock to clean up. The lock file
is a hidden file next to what it guards, left in place (removing it would let two processes lock
two different files of one name).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from langgraph_moa.nodes.errors import InUseError


def lock_path(guarded: Path) -> Path:
    """The lock file of ``guarded`` (a file or a folder)."""
    if guarded.is_dir():
        return guarded / ".moa.lock"
    return guarded.with_name(f".{guarded.name}.lock")


@contextlib.contextmanager
def one_writer(guarded: Path, what: str, hint: str) -> Iterator[None]:
    """Hold the lock of ``guarded`` for the block, or raise ``InUseError`` naming the holder.

    ``what``: how the user calls it ("output out.jsonl"); ``hint``: what to do instead.
    """
    path = lock_path(guarded)
    lock = FileLock(path, timeout=0, is_singleton=False)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except Timeout:
        holder = _holder(path)
        raise InUseError(f"{what} is in use by another moa process{holder}: {hint}") from None
    except OSError as exc:
        raise InUseError(f"cannot lock {what} ({path}): {exc.strerror or exc}") from None
    try:
        with contextlib.suppress(OSError):
            path.write_text(f"{os.getpid()}\n", encoding="ascii")  # for the message above
        yield
    finally:
        lock.release()


def _holder(path: Path) -> str:
    with contextlib.suppress(OSError, ValueError):
        return f" (pid {int(path.read_text(encoding='ascii').strip())})"
    return ""
