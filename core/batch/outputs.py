"""The run file: one JSON record per finished item, appended and flushed as each item finishes.

It is both the output (``--format jsonl``) and the journal a rerun resumes from:

- ``open`` reads what is there: the ids already finished (ok or failed). A last line cut short by
  a crash (no newline at its end: a record is one ``write`` that ends with one) is cut off, and
  said so; that item is simply run again.
- ``append`` writes one record as one line and flushes it to the operating system (a ``kill -9``
  loses nothing written); ``fsync`` follows at most every ``SYNC_EVERY_S`` seconds and at the end.
- ``finish`` rewrites the file in input order once every item is in (items finish in any order),
  through a temporary file and an atomic rename, so a crash during it leaves the old file whole.
  A record written twice for one id (a failed item retried) keeps its last version.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from langgraph_moa.nodes.errors import MoAError

SYNC_EVERY_S = 1.0


class OutputError(MoAError):
    """The output cannot be written, or an existing output is not a batch run file."""


class RunFile:
    """A batch run's records, one JSON line per item."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.repaired = 0  # bytes of a torn last line cut off by open()
        self._file: IO[bytes] | None = None
        self._synced = time.monotonic()

    # ------------------------------------------------------------------ reading
    def open(self) -> dict[str, str]:
        """Repair a torn last line, then the status ("ok"/"failed") of each finished id."""
        if self.path.is_dir():
            raise OutputError(f"output {str(self.path)!r} is a folder; give a file name")
        if self.path.exists():
            self._repair()
        return {record["id"]: record["status"] for record in self.records()}

    def _repair(self) -> None:
        size = self.path.stat().st_size
        if size == 0:
            return
        with self.path.open("rb+") as f:
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
                f.truncate(cut)
                self.repaired = size - cut

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record, in file order."""
        if not self.path.exists():
            return
        with self.path.open("rb") as f:
            for number, line in enumerate(f, 1):
                if not line.strip() or not line.endswith(b"\n"):
                    continue  # a torn last line (open() cuts it off before a run) is not a record
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    record = None
                if not isinstance(record, dict) or "id" not in record or "status" not in record:
                    raise OutputError(
                        f"{self.path}: line {number} is not a batch record; this file is not the "
                        "output of moa batch (or was edited): give another -o, or fix the line"
                    )
                yield record

    # ------------------------------------------------------------------ writing
    def __enter__(self) -> Self:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("ab")
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc}") from None
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None

    def append(self, record: dict[str, Any]) -> None:
        """Write ``record`` as one line, flushed (one write: a crash leaves no half record)."""
        assert self._file is not None, "use RunFile as a context manager to write"
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        self._file.write(line.encode())
        self._file.flush()
        if time.monotonic() - self._synced >= SYNC_EVERY_S:
            os.fsync(self._file.fileno())
            self._synced = time.monotonic()

    def drop(self, ids: set[str]) -> None:
        """Remove the records of ``ids`` (failed items about to run again)."""
        self._rewrite(lambda order: [i for i in order if i not in ids])

    def finish(self, order: Sequence[str]) -> None:
        """Rewrite the file in input order (``order``: ids), when it is not in that order yet."""
        wanted = {i: n for n, i in enumerate(order)}
        self._rewrite(lambda found: sorted(found, key=lambda i: wanted.get(i, len(wanted))))

    def _rewrite(self, arrange: Callable[[list[str]], list[str]]) -> None:
        if not self.path.exists():
            return
        # Where each id's last record is: (offset, length); records are read back one by one.
        where: dict[str, tuple[int, int]] = {}
        current: list[str] = []
        offset = 0
        with self.path.open("rb") as f:
            for line in f:
                if line.strip():
                    record_id = str(json.loads(line)["id"])
                    if record_id not in where:
                        current.append(record_id)
                    where[record_id] = (offset, len(line))
                offset += len(line)
        ids = arrange(list(current))
        if ids == current and offset == sum(n for _, n in where.values()):
            return  # already in that order, one record per id, nothing else
        tmp = self.path.with_name(self.path.name + ".tmp")
        with self.path.open("rb") as src, tmp.open("wb") as dst:
            for record_id in ids:
                start, length = where[record_id]
                src.seek(start)
                dst.write(src.read(length))
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, self.path)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc}") from None
