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

The lock file is never another user's, nor followed where a link stands in its place: one planted
in a shared folder is refused (nodes/shared_files.py), ``filelock`` opens it with ``O_NOFOLLOW``
(from 3.20.3 on, the least pyproject.toml allows), and one of another user's that this process
cannot write is named with its owner.

A block inside another that holds the same lock (a command that locks its output before reading
its input, around the runner that locks it too) holds it already: the enclosing blocks are
tracked in a context variable, so only code running inside the holder's block (its tasks
included) shares it. Two runs started side by side in one process still exclude each other.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path

from filelock import FileLock, Timeout

from langgraph_moa.core.files import os_reason
from langgraph_moa.nodes.errors import InUseError, LockFileError
from langgraph_moa.nodes.shared_files import (
    NOFOLLOW,
    OWN_FILES_RISK,
    check_shared,
    is_mine,
    let_you_write,
    not_yours_to_write,
)

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
    check_shared(path, f"the lock file of {what}", OWN_FILES_RISK)
    lock = FileLock(path, timeout=0, is_singleton=False)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except Timeout:
        holder = _holder(path)
        raise InUseError(f"{what} is in use by another moa process{holder}: {hint}") from None
    except OSError as exc:
        raise _cannot_lock(path, what, exc) from None
    token = _HELD.set(held | {key})
    try:
        with _the_file_itself(guarded, what, hint):
            _write_pid(path)  # for the message above
            yield
    finally:
        _HELD.reset(token)
        lock.release()


def _cannot_lock(path: Path, what: str, exc: OSError) -> Exception:
    """Why the lock file ``path`` cannot be taken: a link in its place, another user's file this
    process cannot write (named, with its owner: the folder may be writable all the same), or
    what the OS says of the folder."""
    try:
        st = os.lstat(path)
    except OSError:
        return InUseError(f"cannot lock {what} ({path}): {os_reason(exc)}")
    if stat.S_ISLNK(st.st_mode):
        return LockFileError(
            str(path),
            what,
            f"is a link (to {os.readlink(path)}), which moa does not follow",
            f"remove the link (rm {path}); it holds nothing but the lock",
        )
    if exc.errno in (errno.EACCES, errno.EPERM) and not is_mine(st):
        return LockFileError(
            str(path),
            what,
            not_yours_to_write(st),
            "it holds nothing but the lock: once no moa runs there, ask them to remove it or to "
            + let_you_write(path),
        )
    return InUseError(f"cannot lock {what} ({path}): {os_reason(exc)}")


def _write_pid(path: Path) -> None:
    """Our pid in the lock file we hold, for a second process to name; never through a link."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | NOFOLLOW)
        try:
            os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        finally:
            os.close(fd)


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
        # Never waits for a pipe's writer, never follows a link (a batch output's is resolved).
        fd = os.open(guarded, os.O_RDWR | os.O_NONBLOCK | os.O_NOFOLLOW)
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
