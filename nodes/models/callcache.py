"""The model-call cache: a call that finished is answered again from disk instead of paid again.

Used by ``moa batch`` (apps/batch): a resumed item, or a rerun with another aggregator, gets its
proposers' answers back without a request. ``ask_model`` consults it when one is active in the
current context (``use_call_cache``; LangGraph's tasks inherit the caller's context variables).

The key is the whole request: the model and every setting that shapes its answer (temperature,
max_tokens, seed, endpoint), the exact messages sent (after fitting to the context window, so the
references of later layers are in it), plus

- ``sample``: which of several identical proposers of a layer this is (Self-MoA samples one model
  several times: each sample keeps its own answer instead of all getting the first one's), and
- ``scope``: the batch item, so two items with the same prompt stay two samples.

Only successful, non-empty answers are stored: a failed call is asked again.

Why not LangGraph's node cache or LangChain's LLM cache (both were considered):
- The node cache (``CachePolicy`` on ``add_node``) stores a node's writes. The proposer node
  records a failed call instead of raising, so failures would be replayed forever; and its key
  function sees only the node's input, not the run's models.
- LangChain's LLM cache (``cache=``/``set_llm_cache``) is consulted only on the non-streaming path
  (``astream`` bypasses it in langchain-core 1.7), keys on (messages, model parameters) so
  identical proposers and repeated prompts collapse into one sample, and its hits look exactly
  like paid calls (no flag), so cost reports would count them; its SQLite backend also lives in
  langchain-community.
So the key is ours and the store is LangGraph's ``SqliteCache`` (langgraph-checkpoint-sqlite):
a maintained SQLite table with WAL, expiry and serialization.

Whoever can write the file controls what it holds: it is read with a serializer that runs no
code (nodes/serde.py), an entry that is not a call's shape is a miss (asked again, and counted in
``rejected``), and a file that holds other tables is someone else's database: refused untouched.
A file another user could have planted, or could change, is refused before it is opened
(nodes/shared_files.py); a new one is created as the user's files are (``0o666`` less the
umask, so a team folder's teammates can resume; SQLite gives its -wal and -shm files the same
mode); one the user cannot write is refused before any call, naming whose it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypeVar

from langchain_core.messages import AIMessage, AIMessageChunk, AnyMessage
from langgraph.cache.sqlite import SqliteCache
from pydantic import ValidationError

from langgraph_moa.nodes.errors import CallCacheError, StoredValueError
from langgraph_moa.nodes.models.calls import CallResult
from langgraph_moa.nodes.models.settings import ModelSettings
from langgraph_moa.nodes.serde import SAFE_SERDE
from langgraph_moa.nodes.shared_files import (
    check_shared,
    create_new,
    is_mine,
    let_you_write,
    not_yours_to_write,
    sqlite_files,
)

NAMESPACE = ("moa-calls", "v1")  # bump the version when the key or the value changes
TABLE = ("cache", ["ns", "key", "expiry", "encoding", "val"])  # SqliteCache's one table
SQLITE_HEADER = b"SQLite format 3\x00"  # how every SQLite database file starts

T = TypeVar("T")

# What to do with a cache SQLite calls damaged: its calls are lost either way, and the finished
# items keep their answers.
DAMAGED_HINT = (
    "move it away or delete it (finished items keep their answers; only calls of unfinished "
    "items are asked again), or pass --no-cache"
)


FOLDER_HINT = "choose a folder you can use for it (--cache), or pass --no-cache"
BUSY_WAIT_S = 5.0  # how long a store waits for another writer's lock (sqlite3.connect's default)


def cache_error(path: Path, exc: sqlite3.Error) -> CallCacheError:
    """What went wrong with the cache file, and what to do, in one line (not a bare
    "DatabaseError"): SQLite says "file is not a database", "database disk image is malformed",
    "attempt to write a readonly database", "database or disk is full"."""
    # Anything but an operational error: corrupt, and known to be ours (only our table in it).
    hint = unstored_hint(path, exc) if isinstance(exc, sqlite3.OperationalError) else DAMAGED_HINT
    return CallCacheError(str(path), str(exc), hint)


def _code(exc: sqlite3.Error) -> int:
    """SQLite's primary result code of ``exc`` (SQLITE_READONLY for SQLITE_READONLY_DIRECTORY);
    0 for one raised without a code (by Python code, not SQLite)."""
    code: int = getattr(exc, "sqlite_errorcode", 0)
    return code & 0xFF


def _locked(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` says another connection holds the write lock now (a writer of another
    process, a sqlite3 shell with a transaction open), not that this one cannot write."""
    return _code(exc) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def unstored_hint(path: Path, exc: sqlite3.Error) -> str:
    """What to do when the cache cannot store (``exc``, SQLite's error): a read-only file is said
    to be one, with whose it is; a lock held past the wait, a full disk and anything else (a
    folder SQLite cannot make its files in, an I/O error) each have their own advice."""
    code = _code(exc)
    if code == sqlite3.SQLITE_READONLY:
        return f"{read_only(path)}, or choose another --cache, or pass --no-cache"
    if _locked(exc):
        return (
            f"another program kept it locked for over {BUSY_WAIT_S:g} s (a sqlite3 shell or a "
            "tool with a transaction open on it): close that, or choose another --cache"
        )
    if code == sqlite3.SQLITE_FULL:
        return "free some space on its disk, or choose another --cache, or pass --no-cache"
    return "free some space or choose a writable folder for it (--cache), or pass --no-cache"


def read_only(path: Path) -> str:
    """Whose the cache (or the file of its beside it that SQLite could not write) is, and how to
    make it writable, for a cache the user cannot write."""
    for name in sqlite_files(path):
        try:
            st = name.stat()
        except OSError:
            continue
        if os.access(name, os.W_OK):
            continue
        if is_mine(st):
            mode = stat.S_IMODE(st.st_mode)
            return f"{name} is read-only (mode {mode:04o}): make it writable (chmod u+w {name})"
        return f"{name} {not_yours_to_write(st)}: ask them to {let_you_write(name)}"
    return f"{path.parent} cannot take SQLite's files beside {path.name}: make it writable"


def _check_ours(path: Path) -> None:
    """Refuse a SQLite file that holds anything but SqliteCache's table: another program's
    database, which opening it as a cache would add a table to (or fail on at every call). (A
    file another user could have changed is refused before it is read: ``check_not_shared``.)"""
    if not path.exists():
        return
    if not path.is_file():  # a folder, a pipe, a device
        raise CallCacheError(
            str(path), "not a call cache: not a regular file", "give --cache a file of its own"
        )
    st = path.stat()
    if st.st_size == 0:
        return
    with path.open("rb") as f:
        if f.read(len(SQLITE_HEADER)) != SQLITE_HEADER:  # a text file, an archive: not ours
            raise CallCacheError(
                str(path), "not a call cache: not a SQLite file", "give --cache a file of its own"
            )
    conn = sqlite3.connect(path)
    try:
        tables = [
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        columns = [row[1] for row in conn.execute(f"PRAGMA table_info({TABLE[0]})")]
    except sqlite3.DatabaseError as exc:
        if isinstance(exc, sqlite3.OperationalError):  # locked, unreadable: not its contents
            raise
        # Damaged before its tables could be read: whose it was cannot be told, so both cases.
        raise CallCacheError(
            str(path),
            str(exc),
            f"if it was moa's call cache, {DAMAGED_HINT}; if another program's, give --cache a "
            "file of its own",
        ) from None
    finally:
        conn.close()
    if tables and (tables != [TABLE[0]] or columns != TABLE[1]):
        raise CallCacheError(
            str(path),
            f"not a call cache: a SQLite database of something else (tables: {', '.join(tables)})",
            "give --cache a file of its own, or pass --no-cache",
        )


def check_not_shared(path: Path) -> None:
    """Refuse a cache (or a file of SQLite's beside it) another user could have planted or could
    change (nodes/shared_files.py): its answers would be theirs."""
    for name in sqlite_files(path):
        check_shared(
            name,
            f"the call cache {path}",
            "change the answers it gives",
            ", or pass another --cache",
        )


@dataclass(frozen=True)
class Unstored:
    """Answers a cache could not store: how many, the last reason (SQLite's words) and what to
    do about it (``unstored_hint``, as things stood then)."""

    count: int = 0
    why: str = ""
    hint: str = ""


class CallCache:
    """Finished model calls in one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            check_not_shared(self.path)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # As the user's other files are (0o666 less the umask: SQLite would make it 0644,
            # which a teammate resuming a run in a team folder cannot write); SQLite's -wal and
            # -shm files take its mode.
            if not self.path.exists():
                create_new(self.path, 0o666)
            check_not_shared(self.path)  # as it is now, made by us or not
            _check_ours(self.path)
            self._store: SqliteCache[dict[str, Any]] = SqliteCache(
                path=str(self.path), serde=SAFE_SERDE
            )
            # WAL without an fsync per commit: a killed process loses no committed entry (only a
            # power cut can, and then those calls are paid again), and a lookup or store costs
            # tens of microseconds, so both run inline: SqliteCache's aget/aset hop to a thread
            # and back per call, which cost more CPU than the query (~3 ms per item of 4 calls).
            self._connection().execute("PRAGMA synchronous=NORMAL")
            self._check_writable()
        except sqlite3.Error as exc:
            raise cache_error(self.path, exc) from None
        except OSError as exc:  # its folder cannot be made, the file opened (another user's)
            raise CallCacheError(str(self.path), exc.strerror or str(exc), FOLDER_HINT) from None
        self.hits = 0  # calls answered from the cache in this process
        self.rejected = 0  # entries found that were not a call's (edited, planted): asked again
        self.unstored = Unstored()
        self.stored = 0

    def _check_writable(self) -> None:
        """Refuse, before any call, a cache this process can read but not write (another user's
        file, read-only to us; a folder SQLite cannot make its files in): SQLite opens it
        read-only without a word, and every answer of the run would then fail to be stored.

        The probe is a write that changes nothing, asked without waiting: another run sharing
        the cache may hold the write lock this instant, which says the file is in use, not that
        this process cannot write it (SQLite reports a read-only file before it looks at locks).
        """
        conn = self._connection()
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            conn.execute(f"DELETE FROM {TABLE[0]} WHERE 0")
        except sqlite3.OperationalError as exc:
            if _locked(exc):
                return
            with contextlib.suppress(sqlite3.Error):
                self.close()
            if _code(exc) != sqlite3.SQLITE_READONLY:
                raise
            raise CallCacheError(
                str(self.path), "it cannot be written", unstored_hint(self.path, exc)
            ) from None
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.rollback()
            with contextlib.suppress(sqlite3.Error):  # stores wait for a writer as before
                conn.execute(f"PRAGMA busy_timeout = {int(BUSY_WAIT_S * 1000)}")

    async def lookup(self, key: str) -> CallResult | None:
        try:
            found = self._named(self._store.get, [(NAMESPACE, key)]).get((NAMESPACE, key))
        except StoredValueError:  # does not deserialise (a pickle row, broken bytes): as below
            self.rejected += 1
            return None
        if found is None:
            return None
        if not isinstance(found, dict) or not isinstance(found.get("text"), str):
            self.rejected += 1  # not what store() writes (edited, planted): asked again
            return None
        fields = {
            "content": found["text"],
            "usage_metadata": found.get("usage"),
            "response_metadata": found.get("metadata") or {},
        }
        calls = found.get("tool_calls")
        try:
            message = AIMessage(**fields, tool_calls=calls) if calls else AIMessageChunk(**fields)
        except (ValidationError, TypeError):
            self.rejected += 1  # a field of another shape: as above
            return None
        self.hits += 1
        # attempts=0: no request was made (records show it; cost reports leave it out).
        return CallResult(
            text=found["text"], message=message, attempts=0, latency_s=0.0, ttft_s=None
        )

    async def store(self, key: str, result: CallResult) -> None:
        meta = result.message.response_metadata or {}
        value = {
            "text": result.text,
            "usage": dict(result.message.usage_metadata or {}) or None,
            "metadata": {k: meta[k] for k in ("finish_reason", "model_name") if k in meta},
            **({"tool_calls": result.message.tool_calls} if result.message.tool_calls else {}),
        }
        try:
            self._store.set({(NAMESPACE, key): (value, None)})
        except sqlite3.Error as exc:
            # A full disk, a file made read-only mid-run, a writer holding it too long: the
            # answer was paid and is good, so the call keeps it (failing the item would throw it
            # away, and a rerun pay again); only its reuse is lost, which the run reports.
            self.unstored = Unstored(
                self.unstored.count + 1, str(exc), unstored_hint(self.path, exc)
            )
            return
        self.stored += 1

    def _named(self, op: Callable[[Any], T], arg: Any) -> T:
        """``op(arg)``, with a failure of the file named (``cache_error``)."""
        try:
            return op(arg)
        except sqlite3.Error as exc:
            raise cache_error(self.path, exc) from None

    def _connection(self) -> sqlite3.Connection:
        # SqliteCache exposes neither its connection (private ``_conn``) nor a close(); we need it
        # to tune it (the PRAGMA above), probe it, and end it (the file stays open otherwise).
        # The one use of ``_conn``: tests/test_private_apis.py fails if it changes.
        conn: sqlite3.Connection = self._store._conn
        return conn

    def close(self) -> None:
        self._connection().close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_ACTIVE: ContextVar[tuple[CallCache, str] | None] = ContextVar("moa_call_cache", default=None)


@contextmanager
def use_call_cache(cache: CallCache | None, scope: str) -> Iterator[None]:
    """Calls made in this block (and in the tasks it starts) use ``cache``, keyed in ``scope``."""
    token = _ACTIVE.set((cache, scope) if cache is not None else None)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def active_call_cache() -> tuple[CallCache, str] | None:
    return _ACTIVE.get()


def request_key(
    settings: ModelSettings,
    request: Sequence[AnyMessage],
    *,
    sample: int,
    scope: str,
    bind: Mapping[str, Any] | None = None,
    stop: Sequence[str] = (),
) -> str:
    """The cache key of one request: everything that shapes the answer (an answer asked with
    stop sequences ends at them; one asked without runs on)."""
    shape = {
        "model": settings.model,
        "base_url": settings.base_url,
        "temperature": settings.temperature,
        "max_tokens": settings.max_tokens,
        "seed": settings.seed,
        # Tool calls, a binding and stop sequences only when present: keys of plain calls stay
        # as they were.
        "messages": [
            [
                m.type,
                m.content,
                *([m.tool_calls] if isinstance(m, AIMessage) and m.tool_calls else []),
            ]
            for m in request
        ],
        "sample": sample,
        "scope": scope,
        **({"bind": bind} if bind else {}),
        **({"stop": list(stop)} if stop else {}),
    }
    text = json.dumps(shape, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()
