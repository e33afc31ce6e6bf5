"""Saved conversations of ``moa chat --thread NAME``: a SQLite checkpointer in the user's data dir.

The conversation is the graph's own state, kept by LangGraph's ``AsyncSqliteSaver`` under the
thread id NAME, so a later process resumes it. A turn that fails leaves checkpoints of its partial
run behind (LangGraph saves every finished step); the thread's *good* state is therefore its
latest checkpoint of a completed run (nothing left to execute), and each turn starts from there
(a fork), whether the failure happened in this process or in one that died.

The conversations are the user's alone: the data folder is made 0700 (moa's own folder under the
platform's data directory is made so if an earlier version left it open), the store and SQLite's
files beside it 0600, and a store another user could have put there or could change is refused
(nodes/shared_files.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import stat
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph.state import CompiledStateGraph

from langgraph_moa.core.files import file_in_the_way, not_a_folder
from langgraph_moa.nodes.errors import ConfigError, StoredValueError
from langgraph_moa.nodes.serde import SAFE_SERDE
from langgraph_moa.nodes.shared_files import (
    check_folder,
    check_shared,
    create_new,
    is_mine,
    sqlite_files,
)

DATA_DIR_ENV = "MOA_DATA_DIR"
DB_NAME = "chat-threads.sqlite"
LOCKS = "thread-locks"  # one lock file per thread (thread_lock)
PRIVATE_FOLDER, PRIVATE_FILE = 0o700, 0o600


def data_dir() -> Path:
    """``$MOA_DATA_DIR``, else the platform's user data directory for langgraph-moa."""
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        return Path(override).expanduser()
    return _default_dir()


def _default_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("langgraph-moa", appauthor=False))


def _make_private(path: Path) -> None:
    """The data folder (0700) and the store (0600), made so or, when ours, made so again: a
    folder of ours an earlier version made 0755 (the default folder only: one named by
    MOA_DATA_DIR keeps its mode, the user's to choose), a store 0644."""
    folder = path.parent
    folder.mkdir(mode=PRIVATE_FOLDER, parents=True, exist_ok=True)
    (folder / LOCKS).mkdir(mode=PRIVATE_FOLDER, exist_ok=True)
    if not os.environ.get(DATA_DIR_ENV) and folder == _default_dir():
        _chmod_ours(folder, PRIVATE_FOLDER)
    _chmod_ours(folder / LOCKS, PRIVATE_FOLDER)
    create_new(path, PRIVATE_FILE)  # SQLite would make it 0644 (and its -wal and -shm after it)
    for name in sqlite_files(path):
        _chmod_ours(name, PRIVATE_FILE)


def _chmod_ours(path: Path, mode: int) -> None:
    with contextlib.suppress(OSError):
        st = os.lstat(path)
        ours = is_mine(st) and not stat.S_ISLNK(st.st_mode)
        if ours and stat.S_IMODE(st.st_mode) & ~mode:
            os.chmod(path, stat.S_IMODE(st.st_mode) & mode)


@asynccontextmanager
async def open_saver() -> AsyncIterator[AsyncSqliteSaver]:
    """The thread store, created on first use; a folder that cannot be used is one error line."""
    path = data_dir() / DB_NAME
    what, risk = f"the chat thread store {path}", "rewrite your conversations"
    for name in sqlite_files(path):
        check_shared(name, what, risk)
    check_folder(path.parent / LOCKS, what, risk)
    async with AsyncExitStack() as stack:
        try:
            _make_private(path)
            conn = await stack.enter_async_context(aiosqlite.connect(str(path)))
            saver = AsyncSqliteSaver(conn, serde=SAFE_SERDE)  # what from_conn_string does, safely
            await saver.setup()
            for name in sqlite_files(path):  # SQLite's new files: as the store, whatever came
                _chmod_ours(name, PRIVATE_FILE)
        except (OSError, sqlite3.Error) as exc:
            blocker = file_in_the_way(path)
            problem = not_a_folder(blocker) if blocker else str(exc)
            raise ConfigError(
                f"cannot open the chat thread store {path}: {problem} "
                f"(set {DATA_DIR_ENV} to another folder)"
            ) from None
        yield saver


def thread_lock(name: str) -> Path:
    """The file whose lock one chat of thread ``name`` holds (core/locks.py): any name, hashed."""
    digest = hashlib.sha256(name.encode()).hexdigest()[:32]
    return data_dir() / LOCKS / digest


def thread_config(name: str) -> RunnableConfig:
    return {"configurable": {"thread_id": name}}


async def good_checkpoint(
    graph: CompiledStateGraph[Any, Any, Any, Any], name: str
) -> RunnableConfig | None:
    """The checkpoint of thread ``name``'s last completed run, None when it has none."""
    try:
        async for snapshot in graph.aget_state_history(thread_config(name)):
            if not snapshot.next:
                return snapshot.config
    except (StoredValueError, TypeError, KeyError, AttributeError, ValueError):
        # A checkpoint that does not deserialise (StoredValueError, nodes/serde.py), or one of
        # another shape: written by something else than LangGraph (the store is read as plain
        # data), so LangGraph trips over it.
        raise ConfigError(
            f"chat thread {name!r} in {data_dir() / DB_NAME} cannot be read: it was changed "
            "outside moa; continue under another --thread name"
        ) from None
    return None


async def resume_point(graph: CompiledStateGraph[Any, Any, Any, Any], name: str) -> RunnableConfig:
    """Where the next turn of thread ``name`` starts: its last completed run (a fork from there,
    so a failed turn is forgotten). A thread with no completed run is deleted: it starts empty."""
    found = await good_checkpoint(graph, name)
    if found is not None:
        return found
    saver = graph.checkpointer
    if isinstance(saver, BaseCheckpointSaver):
        await saver.adelete_thread(name)
    return thread_config(name)


async def count_turns(graph: CompiledStateGraph[Any, Any, Any, Any], config: RunnableConfig) -> int:
    """User messages in the conversation at ``config``."""
    values = (await graph.aget_state(config)).values
    return sum(isinstance(m, HumanMessage) for m in values.get("messages", []))


@dataclass(frozen=True)
class ThreadInfo:
    name: str
    turns: int
    updated: str  # ISO time of the last completed turn
    first: str  # the first user message, shortened


async def list_threads(
    graph: CompiledStateGraph[Any, Any, Any, Any], saver: AsyncSqliteSaver
) -> list[ThreadInfo]:
    """Every saved thread with at least one completed turn, most recently used first."""
    # The checkpointer has no "list threads" call (alist reads every checkpoint of every thread);
    # its table keeps one row per checkpoint with the thread id.
    rows = await saver.conn.execute_fetchall("SELECT DISTINCT thread_id FROM checkpoints")
    found: list[ThreadInfo] = []
    for (name,) in rows:
        try:
            config = await good_checkpoint(graph, str(name))
        except ConfigError:  # one damaged thread: the others are still listed
            found.append(ThreadInfo(str(name), 0, "", "(cannot be read: changed outside moa)"))
            continue
        if config is None:  # no completed turn (yet, or it failed): nothing to resume
            continue
        snapshot = await graph.aget_state(config)
        messages = snapshot.values.get("messages", [])
        questions = [m for m in messages if isinstance(m, HumanMessage)]
        first = " ".join(questions[0].text.split()) if questions else ""
        found.append(
            ThreadInfo(
                name=str(name),
                turns=len(questions),
                updated=snapshot.created_at or "",
                first=first if len(first) <= 60 else first[:59] + "…",
            )
        )
    return sorted(found, key=lambda t: t.updated, reverse=True)
