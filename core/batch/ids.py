"""The ids of a streamed dataset, on disk: where each item is, and which ids repeat.

A run needs, for every item of its input, whether its id repeats (ids must be unique), where an
id is in the input (the output is put in input order at the end), what the first reading saw at
each place (a file changed under the run) and, when it resumes an output, what each item asks
(its digest: an item edited since its answer was recorded is refused). Held in memory, that is a
string and a dict entry per item, and a 2 GB file of short prompts holds tens of millions of
items: gigabytes. So the ids go to a private temporary SQLite database (``sqlite3.connect("")``:
a few MB of page cache, spilled to a file that SQLite deletes as it opens it, so nothing is left
behind even by ``kill -9``). Rows are appended in input order in one transaction; one index,
built once at the end, finds repeats by sorting on disk.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
from collections.abc import Callable, Sequence
from typing import NamedTuple, ParamSpec, TypeVar

from langgraph_moa.nodes.errors import ScratchError

LOOKUP = 500  # ids per query (SQLite before 3.32 takes at most 999 parameters)
P = ParamSpec("P")
T = TypeVar("T")


class Repeat(NamedTuple):
    """An id seen again: at ``number``, first at ``first``."""

    number: int
    item_id: str
    first: int


def sqlite_temp_folder() -> str:
    """Where SQLite keeps the temporary database's file (its own order, in os_unix.c)."""
    named = [os.environ.get("SQLITE_TMPDIR"), os.environ.get("TMPDIR")]
    for folder in [*named, "/var/tmp", "/usr/tmp", "/tmp"]:
        if folder and os.path.isdir(folder) and os.access(folder, os.W_OK | os.X_OK):
            return folder
    return "."


def _named(method: Callable[P, T]) -> Callable[P, T]:
    """A SQLite error (the temporary folder full or read-only) as one line naming the folder."""

    @functools.wraps(method)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(*args, **kwargs)
        except sqlite3.OperationalError as exc:
            raise ScratchError(sqlite_temp_folder(), "the input's ids", str(exc)) from None

    return run


class IdIndex:
    """(number, id, digest) of every item in input order; ``number`` is the item's line (JSONL)
    or its place in a JSON list, unique and increasing; ``digest`` the item's ``input_digest``,
    or None (not asked for, or a malformed item). Items recorded as failed (malformed, or a
    repeated id) are also kept apart, with the item they repeat (0: none)."""

    @_named
    def __init__(self) -> None:
        # check_same_thread off: built where the file is read, consulted where the run iterates
        # (one thread at a time).
        self._db = sqlite3.connect("", isolation_level=None, check_same_thread=False)
        # Scratch data: no sync. The rollback journal stays on: a unique index that fails to
        # build must be undone whole (with journal_mode OFF it leaves a broken schema).
        self._db.execute("PRAGMA synchronous = OFF")
        self._db.execute(
            "CREATE TABLE ids (number INTEGER PRIMARY KEY, id TEXT NOT NULL, digest TEXT)"
        )
        self._db.execute("CREATE TABLE invalid (number INTEGER PRIMARY KEY, first INTEGER)")
        self._db.execute("BEGIN")  # one transaction for the whole first pass: no commit per batch
        self._count = 0
        self._sealed = False
        self._unique = False

    def __len__(self) -> int:
        return self._count

    @_named
    def extend(self, rows: list[tuple[int, str, str | None]]) -> None:
        """(number, id, digest) of the next items, in input order (a few thousand at a time: one
        ``executemany`` each)."""
        assert not self._sealed, "every id is added before seal()"
        self._db.executemany("INSERT INTO ids VALUES (?, ?, ?)", rows)
        self._count += len(rows)

    @_named
    def add_invalid(self, number: int) -> None:
        """The item at ``number`` (given to ``extend``) is recorded as failed."""
        self._db.execute("INSERT INTO invalid VALUES (?, 0)", (number,))

    @_named
    def seal(self) -> bool:
        """Index the ids once every item is added; True when no id repeats (then this is one
        unique index build, the common case)."""
        if not self._sealed:
            self._sealed = True
            self._db.execute("COMMIT")
            try:
                self._db.execute("CREATE UNIQUE INDEX by_id ON ids (id)")
                self._unique = True
            except sqlite3.IntegrityError:
                self._db.execute("CREATE INDEX by_id ON ids (id)")
        return self._unique

    @_named
    def first_repeat(self) -> Repeat | None:
        """The first item, in input order, whose id an earlier item has."""
        if self.seal():
            return None
        row = self._db.execute(
            "SELECT number, id, first FROM (SELECT number, id, "
            "MIN(number) OVER (PARTITION BY id) AS first FROM ids) "
            "WHERE number > first ORDER BY number LIMIT 1"
        ).fetchone()
        return Repeat(*row) if row else None

    @_named
    def mark_repeats(self, invalid_prefix: str) -> int:
        """Every repeat becomes an invalid item: its id ``invalid_prefix`` + its number, and the
        item it repeats is kept. Returns how many there were."""
        if self.seal():
            return 0
        self._db.execute("BEGIN")
        found = self._db.execute(
            "INSERT OR IGNORE INTO invalid SELECT number, first FROM (SELECT number, "
            "MIN(number) OVER (PARTITION BY id) AS first FROM ids) WHERE number > first"
        ).rowcount
        self._db.execute(
            "UPDATE ids SET id = ? || number WHERE number IN "
            "(SELECT number FROM invalid WHERE first > 0)",
            (invalid_prefix,),
        )
        self._db.execute("COMMIT")
        return found

    def at(self, number: int) -> tuple[str, int | None] | None:
        """(id, ``first``) of the item at ``number`` (``first``: None for a valid item, 0 for an
        invalid one, N for a repeat of item N); None if there is no item there."""
        row = self._db.execute(
            "SELECT id, first FROM ids LEFT JOIN invalid USING (number) WHERE number = ?",
            (number,),
        ).fetchone()
        return (row[0], row[1]) if row else None

    def number_of(self, item_id: str) -> int | None:
        """Where ``item_id`` is (its first item), or None when no item has it."""
        self.seal()
        row = self._db.execute("SELECT MIN(number) FROM ids WHERE id = ?", (item_id,)).fetchone()
        return None if row[0] is None else int(row[0])

    def digests_of(self, item_ids: Sequence[str]) -> dict[str, str]:
        """The digest of the (first) item of each of ``item_ids``, for those that have one: one
        query per ``LOOKUP`` ids (a resume looks up every finished record's id, and one query
        each cost more than the lookup)."""
        self.seal()
        found: dict[str, str | None] = {}
        for start in range(0, len(item_ids), LOOKUP):
            chunk = item_ids[start : start + LOOKUP]
            rows = self._db.execute(
                f"SELECT id, digest FROM ids WHERE id IN ({','.join('?' * len(chunk))}) "
                "ORDER BY number DESC",  # an id's first item last: its digest is kept
                chunk,
            )
            found.update(rows)
        return {item_id: digest for item_id, digest in found.items() if digest is not None}

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()


class Firsts:
    """The first (item id, line) under each key, on disk for the reason the ids are: MT-Bench's
    ``question_id`` of every item of a 2 GB input would be gigabytes as a dict."""

    @_named
    def __init__(self) -> None:
        self._db = sqlite3.connect("", isolation_level=None)
        self._db.execute("PRAGMA synchronous = OFF")  # scratch data
        self._db.execute(
            "CREATE TABLE firsts (key TEXT PRIMARY KEY, id TEXT NOT NULL, line INTEGER NOT NULL) "
            "WITHOUT ROWID"
        )
        self._db.execute("BEGIN")  # one transaction for the whole pass

    @_named
    def setdefault(self, key: str, item_id: str, line: int) -> tuple[str, int]:
        """(id, line) of the first item under ``key``: this one if it is the first."""
        added = self._db.execute(
            "INSERT OR IGNORE INTO firsts VALUES (?, ?, ?)", (key, item_id, line)
        ).rowcount
        if added:
            return item_id, line
        row = self._db.execute("SELECT id, line FROM firsts WHERE key = ?", (key,)).fetchone()
        return str(row[0]), int(row[1])

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
