"""One writer per batch output, chat thread and compare folder: an OS file lock.

Two processes appending to one output pay for every item twice and lose records when one
rewrites the file under the other; two chats on one thread keep only one branch. So each takes an
exclusive lock first and a second process is refused at once, with the holder's pid.

The lock is ``filelock`` (flock on POSIX, LockFileEx on Windows): the operating system drops it
when its holder dies, even by ``kill -9``, so there is no stale lock to clean up. The lock file
is a hidden file next to what it guards, left in place (removing it would let two processes lock
two different files of one name).

Two names of one file share its lock: a symlink is locked by its target (the batch command
resolves it first), and a hard link, whose names are equal, by a lock on the file itself
(``flock`` on POSIX, which every name of the file reaches; Windows' hard links are locked by
name only). That lock is taken only on a file that exists: a file not there yet has one name.

A block inside another that holds the same lock (a command that locks its output before reading
its input, around the runner that locks it too) holds it already: the enclosing blocks are
tracked in a context variable, so only code running inside the holder's block (its tasks
included) shares it. Two runs started side by side in one process still exclude each other.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path

from filelock import FileLock, Timeout

from langgraph_moa.core.files import os_reason
from langgraph_moa.nodes.errors import InUseError

_HELD: ContextVar[frozenset[str]] = ContextVar("moa_locks_held", default=frozenset())


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
    held = _HELD.get()
    key = os.path.abspath(path)
    if key in held:  # an enclosing block of this context holds it
        yield
        return
    lock = FileLock(path, timeout=0, is_singleton=False)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except Timeout:
        holder = _holder(path)
        raise InUseError(f"{what} is in use by another moa process{holder}: {hint}") from None
    except OSError as exc:
        raise InUseError(f"cannot lock {what} ({path}): {os_reason(exc)}") from None
    token = _HELD.set(held | {key})
    try:
        with _the_file_itself(guarded, what, hint):
            with contextlib.suppress(OSError):
                path.write_text(f"{os.getpid()}\n", encoding="ascii")  # for the message above
            yield
    finally:
        _HELD.reset(token)
        lock.release()


@contextlib.contextmanager
def _the_file_itself(guarded: Path, what: str, hint: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``guarded`` itself (a regular file that exists) for the
    block: a run through another of its names (a hard link) holds another lock file, not this.

    Opened read-write (an NFS flock needs it) and never written; a file that cannot be opened
    is left to the name's lock (its run fails on it with its own message).
    """
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    try:
        fd = os.open(guarded, os.O_RDWR | os.O_NONBLOCK)  # never waits for a pipe's writer
    except OSError:
        yield
        return
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise InUseError(
                    f"{what} is in use by another moa process, under another name of the same "
                    f"file (a hard link): {hint}"
                ) from None
            except OSError:  # a file system without flock: the name's lock is all there is
                pass
        yield
    finally:
        os.close(fd)  # which releases the flock


def _holder(path: Path) -> str:
    with contextlib.suppress(OSError, ValueError):
        return f" (pid {int(path.read_text(encoding='ascii').strip())})"
    return ""
