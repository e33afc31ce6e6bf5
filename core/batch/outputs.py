"""The run file: one JSON record per finished item, appended and flushed as each item finishes.

It is both the output (``--format jsonl``) and the journal a rerun resumes from:

- ``open`` reads what is there: the ids already finished (ok or failed). Every line must be a
  batch record, else the file is refused untouched (it is not ours). A last line cut short by a
  crash or a full disk (no newline at its end: a record is one ``write`` that ends with one) is
  cut off, and said so, once the rest is known to be ours and it reads as the start of a record;
  that item is simply run again.
- ``append`` writes one record as one line and flushes it to the operating system (a ``kill -9``
  loses nothing written); ``fsync`` follows at most every ``SYNC_EVERY_S`` seconds and at the end.
- ``finish`` rewrites the file in input order once every item is in (items finish in any order),
  through a temporary file and an atomic rename (``atomic_writer``), so a crash during it leaves
  the old file whole.
  A record written twice for one id (a failed item retried) keeps its last version.

Where each id's last record is, and its status, is kept as the file is read (``open``) and
written (``append``, the rewrites): the end of a run knows its statuses and whether the file is
in order without reading it, and reads it once to put it in order (``finished`` hands out the
records of that same read, for a -f output). A file of another size than the one written is
read again instead.

It is never written through a link (``O_NOFOLLOW``: a batch output that is the user's own link
to a file is resolved first, ``output_path``), nor read or written where another user could have
put it (nodes/shared_files.py): a planted journal would be resumed from, a planted link written
into.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from langgraph_moa.core.files import file_in_the_way, not_a_folder, os_reason
from langgraph_moa.nodes.errors import CallCacheError, MoAError, RefusedError
from langgraph_moa.nodes.models.callcache import FOLDER_HINT
from langgraph_moa.nodes.models.calls import LONE_SURROGATE  # written as U+FFFD
from langgraph_moa.nodes.shared_files import NOFOLLOW, OWN_FILES_RISK, check_shared, may_inherit

SYNC_EVERY_S = 1.0
RECORD_START = b'{"id":'  # how every record line starts (build_record puts the id first)
# The process's umask, read once at import (reading it means setting it): temporary files are
# created private (0600) and given the mode a plain open() would have given the file.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
ANOTHER_O = ", or give another -o"
_BYTES = NOFOLLOW | getattr(os, "O_BINARY", 0)  # never through a link; as bytes (Windows)


class OutputError(RefusedError):
    """The output cannot be used, checked before any call: it is not a batch run file, a folder,
    the input, another format's output, a file that cannot be written."""


class OutputWriteError(MoAError):
    """Writing the output failed once the run had started (a full disk): what was paid is kept."""


# Where an id's last record is in the run file, and its status: (offset, length, status).
Place = tuple[int, int, str]


class RunFile:
    """A batch run's records, one JSON line per item."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.repaired = 0  # bytes of a torn last line cut off by open()
        self._file: IO[bytes] | None = None
        self._synced = time.monotonic()
        # Each id's last record, in the order of their first records; None: not read yet.
        self._places: dict[str, Place] | None = None
        self._size = 0  # the file's bytes, as the places were taken

    # ------------------------------------------------------------------ reading
    def open(self, each: Callable[[dict[str, Any]], None] | None = None) -> dict[str, str]:
        """Repair a torn last line, then the status ("ok"/"failed") of each finished id.
        ``each``: given every record as it is read (a resume checks them in the same read)."""
        if self.path.is_dir():
            raise OutputError(f"output {str(self.path)!r} is a folder; give a file name")
        check_shared(self.path, str(self.path), OWN_FILES_RISK, ANOTHER_O)  # before it is read
        status = {}
        places: dict[str, Place] = {}
        for offset, length, record in self._read():
            status[record["id"]] = record["status"]
            places[str(record["id"])] = (offset, length, record["status"])
            if each is not None:
                each(record)
        if self.path.exists():
            try:
                self._repair()  # only now: every whole line is a record, the file is ours
            except OSError as exc:  # read-only (chmod 444, chattr +i), or someone else's
                raise OutputError(f"cannot write {self.path}: {os_reason(exc)}") from None
        self._places, self._size = places, self._size_now()
        return status

    def _size_now(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def _repair(self) -> None:
        size = self.path.stat().st_size
        if size == 0:
            return
        with os.fdopen(os.open(self.path, os.O_RDWR | _BYTES), "rb+") as f:
            # Find the last newline, reading back from the end in blocks.
            end, block = size, 1 << 16
            cut = 0
            while end > 0:
                start = max(0, end - block)
                f.seek(start)
                chunk = f.read(end - start)
                nl = chunk.rfind(b"\n")
                if nl >= 0:
                    cut = start + nl + 1
                    break
                end = start
            if cut < size:
                f.seek(cut)
                if not f.read(len(RECORD_START)).startswith(RECORD_START[: size - cut]):
                    raise OutputError(
                        f"{self.path}: the last line is not a batch record; this file is not the "
                        "output of moa batch (or was edited): give another -o, or fix the line"
                    )
                f.truncate(cut)
                self.repaired = size - cut

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record, in file order."""
        for _offset, _length, record in self._read():
            yield record

    def _read(self) -> Iterator[tuple[int, int, dict[str, Any]]]:
        """Every record, in file order, with where its line is: (offset, length, record)."""
        if not self.path.exists():
            return
        try:
            f = self.path.open("rb")
        except OSError as exc:
            raise OutputError(f"cannot read {self.path}: {os_reason(exc)}") from None
        offset = 0
        with f:
            for number, line in enumerate(f, 1):
                offset += len(line)
                if not line.strip() or not line.endswith(b"\n"):
                    continue  # a torn last line (open() cuts it off before a run) is not a record
                try:
                    record = json.loads(line)
                except ValueError:  # not JSON, or bytes json.loads reads as UTF-16/32 and fails
                    record = None
                if not isinstance(record, dict) or "id" not in record or "status" not in record:
                    raise OutputError(
                        f"{self.path}: line {number} is not a batch record; this file is not the "
                        "output of moa batch (or was edited): give another -o, or fix the line"
                    )
                yield offset - len(line), len(line), record

    # ------------------------------------------------------------------ writing
    def __enter__(self) -> Self:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Unbuffered: each record is one write() of its own, undone whole if it fails.
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | _BYTES
            self._file = os.fdopen(os.open(self.path, flags, 0o666), "ab", buffering=0)
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {os_reason(exc)}") from None
        try:  # as it is now: a stranger's file made there since open() looked is not written
            check_shared(self.path, str(self.path), OWN_FILES_RISK, ANOTHER_O)
        except BaseException:
            self._file.close()
            self._file = None
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                os.fsync(self._file.fileno())
            self._file.close()
            self._file = None

    def append(self, record: dict[str, Any]) -> None:
        """Write ``record`` as one line; a write that fails (a full disk) leaves no half record."""
        assert self._file is not None, "use RunFile as a context manager to write"
        text = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        try:
            data = text.encode()
        except UnicodeEncodeError:  # a lone surrogate (a provider's answer): what was paid is kept
            data = LONE_SURROGATE.sub("\ufffd", text).encode()
        fd = self._file.fileno()
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if time.monotonic() - self._synced >= SYNC_EVERY_S:
                os.fsync(fd)
                self._synced = time.monotonic()
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise OutputWriteError(
                f"cannot write {self.path}: {os_reason(exc)} (the finished items are kept)"
            ) from None
        if self._places is not None and start == self._size:
            self._places[str(record["id"])] = (start, len(data), record["status"])
            self._size += len(data)
        else:  # not opened, or written by someone else too: read again where it is needed
            self._places = None

    def statuses(self) -> dict[str, str]:
        """The status of each id's last record."""
        return {i: status for i, (_, _, status) in self._known().items()}

    def _known(self) -> dict[str, Place]:
        """Each id's last record: as kept, or read when the file is not the one it was kept of."""
        if self._places is None or self._size_now() != self._size:
            places: dict[str, Place] = {}
            for offset, length, record in self._read():
                places[str(record["id"])] = (offset, length, record["status"])
            self._places, self._size = places, self._size_now()
        return self._places

    def drop(self, ids: set[str]) -> None:
        """Remove the records of ``ids`` (failed items about to run again), before any call:
        a file that cannot be rewritten is refused (``OutputError``), not a failed run."""
        try:
            for _ in self._rewrite(lambda order: [i for i in order if i not in ids], read=False):
                pass
        except OutputWriteError as exc:
            raise OutputError(str(exc)) from None

    def finish(self, position: Callable[[str], int | None]) -> None:
        """Rewrite the file in input order (``position``: where an id is in the input; ids it
        does not know go last), when it is not in that order yet."""
        for _ in self._rewrite(_in_order(position), read=False):
            pass

    def finished(
        self, position: Callable[[str], int | None]
    ) -> Generator[dict[str, Any], None, None]:
        """``finish``, handing out each record in that order as it goes: the records a -f
        output is made of come from the read that rewrites the file. The new file replaces the
        old one when the iteration ends; stopped before (an error), the old one stays whole."""
        for line in self._rewrite(_in_order(position), read=True):
            yield json.loads(line)

    def _rewrite(self, arrange: Callable[[list[str]], list[str]], *, read: bool) -> Iterator[bytes]:
        """Rewrite the file with the ids ``arrange`` keeps, in its order (their last records),
        unless it is so already; ``read``: yield each record's line of the new file."""
        if not self.path.exists():
            return
        places = self._known()
        current = list(places)
        ids = arrange(current)
        if ids == current and self._size == sum(length for _, length, _ in places.values()):
            # Already in that order, one record per id, nothing else: read only when asked.
            if read:
                with self.path.open("rb") as f:
                    yield from f
            return
        rewritten: dict[str, Place] = {}
        offset = 0
        with self.path.open("rb") as src, atomic_writer(self.path) as dst:
            for record_id in ids:
                start, length, status = places[record_id]
                src.seek(start)
                line = src.read(length)
                dst.write(line)
                rewritten[record_id] = (offset, length, status)
                offset += length
                if read:
                    yield line
        self._places, self._size = rewritten, offset


def _in_order(position: Callable[[str], int | None]) -> Callable[[list[str]], list[str]]:
    """Ids sorted by ``position`` (where each is in the input), the ids it does not know last."""

    def where(item_id: str) -> tuple[bool, int]:
        found = position(item_id)
        return found is None, found or 0

    return lambda ids: sorted(ids, key=where)


@contextlib.contextmanager
def atomic_writer(path: Path) -> Iterator[IO[bytes]]:
    """A new file that replaces ``path`` whole when the block ends, or never appears.

    The temporary file gets a fresh random name in ``path``'s folder, created exclusively
    (``mkstemp``: O_EXCL, so a planted file or symlink is never opened or followed); it is synced,
    renamed over ``path`` and the folder is synced, so after a crash ``path`` is the old file or
    the new one. A write error (a full disk, a read-only folder) names the file. The new file
    keeps the mode, group and (where this process may give it) owner of the file it replaces,
    when that file is one the user can trust; a new name gets the mode a plain open() would give
    it (``_like``).
    """
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            _like(f.fileno(), path)
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        _sync_folder(path.parent)
    except OSError as exc:
        raise OutputWriteError(f"cannot write {path}: {os_reason(exc)}") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _like(fd: int, path: Path) -> None:
    """Give the new file ``fd`` what the file at ``path`` has: its owner where this process may
    (root), its group where it may (one of ours), then its mode (a 0600 output stays private, a
    team's 0664 stays the team's); 0o666 less the umask for a new name (or a link in its place,
    which the rename replaces), or in place of a file of another user that nodes/shared_files.py
    does not trust (``may_inherit``). Not every file system has modes (FAT, SMB): then as it
    comes."""
    try:
        st = os.lstat(path)
    except OSError:
        st = None
    if st is None or not stat.S_ISREG(st.st_mode) or not may_inherit(path, st):
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o666 & ~_UMASK)
        return
    for uid in (st.st_uid, -1) if hasattr(os, "fchown") else ():  # owner and group, or the group
        try:
            os.fchown(fd, uid, st.st_gid)
            break
        except OSError:
            continue
    with contextlib.suppress(OSError):
        os.fchmod(fd, stat.S_IMODE(st.st_mode))  # after fchown, which may clear set-id bits


def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` survive a power cut (POSIX; Windows cannot open a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (``atomic_writer``)."""
    with atomic_writer(path) as f:
        f.write(text.encode())


def output_path(given: str | Path) -> Path:
    """The file a run writes when ``-o`` names it: a symlink's target.

    Its lock (core/locks.py), journal, cache and final rename all go by this path, so two names
    of one file (``-o out.jsonl`` and ``-o link.jsonl``) are one output with one writer, not two
    runs paying for every item twice; and the link stays a link to the file it names.

    Only a link the user could have made, to a file that is there: one another user could have
    planted (nodes/shared_files.py) would have the run write wherever it points, and one to a
    name not there yet would have it create that file, its work folder and its lock anywhere.
    """
    path = Path(given)
    if not path.is_symlink():
        return path
    check_shared(path, f"-o {given}", OWN_FILES_RISK, ANOTHER_O)
    target = path.resolve()
    if not target.exists():
        raise OutputError(
            f"-o {given}: a link to {os.readlink(path)}, which does not exist: moa writes through "
            "a link only to a file that is there; give the file's own path, or another -o"
        )
    return target


def check_renames(folder: Path, output: Path) -> None:
    """Refuse, before any call, an output whose ``folder`` cannot take a new file and a rename:
    the run file is put in input order (and a -f output written) through a temporary file there
    once the run is complete, and would fail only after every item was paid, at every rerun."""
    if not folder.is_dir() or os.name != "posix":
        return
    if os.access(folder, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids):
        return
    raise OutputError(
        f"-o {output}: its folder {folder} cannot take new files (moa writes {output} whole "
        "through a new file and a rename there once every item is in, and would fail then, "
        f"after paying for them): make the folder writable (chmod u+w {folder}), or give "
        "another -o"
    )


def check_output(
    output: Path, run_file: Path, sources: Sequence[str], journal: Path | None = None
) -> None:
    """Refuse, before anything is read or written, an output that would destroy data or cannot
    hold a run: a folder, a pipe or a device, a path through a file (``out.txt/answers.jsonl``),
    an input (``sources``: the dataset, a replayed run), or a formatted output that exists with
    no run file (it was not written by an earlier run of this command). An output an earlier
    run wrote in another format (``journal``: where a -f run keeps its records) is named so."""
    if output.is_dir():
        raise OutputError(f"-o {output}: that is a folder; give a file name")
    for path in dict.fromkeys((output, run_file)):
        if (blocker := file_in_the_way(path)) is not None:
            raise OutputError(f"-o {output}: {not_a_folder(blocker)}; give another -o")
        check_shared(path, f"-o {output}", OWN_FILES_RISK, ANOTHER_O)
    if output.exists() and not output.is_file():
        # A pipe blocks the resume's read forever; /dev/null keeps nothing of what was paid.
        raise OutputError(
            f"-o {output}: that is not a regular file (a pipe or a device): the output is read "
            "back to resume a run; give a file name"
        )
    for path in dict.fromkeys((output, run_file)):
        for source in sources:
            if source == "-" or not path.exists() or not Path(source).exists():
                continue
            if os.path.samefile(path, source):
                raise OutputError(f"-o {output}: that is the input file {source}; give another -o")
    written = output.is_file() and output.stat().st_size > 0
    if output == run_file and written and journal is not None and journal.is_file():
        raise OutputError(
            f"-o {output}: the -f output of an earlier moa batch run (its records are in "
            f"{journal}); run it again with the same -f to resume it, or give another -o"
        )
    if output != run_file and written and not run_file.exists():
        if _starts_with_a_record(output):
            raise OutputError(
                f"-o {output}: the output of a moa batch run written without -f (its records, "
                "one per line); run it again without -f to resume it, or give another -o"
            )
        raise OutputError(
            f"-o {output}: the file exists and is not the output of an earlier moa batch run "
            f"(no {run_file}); give another -o, or remove it"
        )


def _starts_with_a_record(path: Path) -> bool:
    with contextlib.suppress(OSError), path.open("rb") as f:
        return f.read(len(RECORD_START)) == RECORD_START
    return False


def check_cache(cache: Path, files: dict[str, str | Path | None]) -> None:
    """Refuse a call cache whose path goes through a file, or that is one of the run's other
    ``files`` (by role: "output", "input"...): SQLite would write its pages into the run's
    records, or fail on the input, and the cache's own hint (delete it) would then name the
    user's file."""
    if (blocker := file_in_the_way(cache)) is not None:
        raise CallCacheError(str(cache), not_a_folder(blocker), FOLDER_HINT)
    for role, given in files.items():
        if given is None or given == "-":
            continue
        other = Path(given)
        same = other.resolve() == cache.resolve()
        if not same and other.exists() and cache.exists():
            same = os.path.samefile(other, cache)
        if same:
            raise OutputError(f"--cache {cache}: that is the {role} file; give the cache its own")
