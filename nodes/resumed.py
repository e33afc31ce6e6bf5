"""What a resumed superstep already has: the writes LangGraph saved for its tasks that finished.

When a task of a step fails, LangGraph keeps the writes of the step's tasks that finished (the
pending writes of the step's checkpoint), and a resume (``invoke(None, config)`` on the thread, as
a LangGraph server resumes a thread's run) runs only the tasks that did not finish, with their
original inputs. A node whose siblings' results it needs (the staircase aggregator,
nodes/staircase.py) reads them here.

LangGraph gives a node no public way to read them (``graph.get_state`` does, from outside the
graph), so this reads the checkpointer LangGraph puts in every task's config under
``__pregel_checkpointer``: the one place the project reads it; tests/test_private_apis.py fails
when it goes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.config import get_config
from langgraph.runtime import Runtime

CHECKPOINTER = "__pregel_checkpointer"
# A task's checkpoint namespace is its graph's, then ``|name:task_id`` (nothing before it in a
# root graph): the step's writes are saved under its graph's.
# LangGraph's ``NS_SEP``, read only here (nested() and saved_writes()); tests/test_private_apis.py
# fails when it changes.
NS_SEP = "|"


def nested(runtime: Runtime[Any]) -> bool:
    """The node runs inside another graph's node (a subgraph), so ``runtime.context`` is that
    graph's."""
    info = runtime.execution_info
    return info is not None and NS_SEP in info.checkpoint_ns


async def saved_writes(runtime: Runtime[Any]) -> list[tuple[str, str, Any]]:
    """The writes (task id, channel, value) saved for this node's step: none in a step's first
    run, nor without a checkpointer."""
    info = runtime.execution_info
    if info is None or info.thread_id is None:  # thread_id: only with a checkpointer
        return []
    saver = get_config().get("configurable", {}).get(CHECKPOINTER)
    if not isinstance(saver, BaseCheckpointSaver):
        return []
    config: Any = {
        "configurable": {
            "thread_id": info.thread_id,
            "checkpoint_ns": info.checkpoint_ns.rpartition(NS_SEP)[0],
            "checkpoint_id": info.checkpoint_id,
        }
    }
    try:
        saved = await saver.aget_tuple(config)
    except NotImplementedError:  # a sync-only saver (SqliteSaver), under a sync invoke
        saved = await asyncio.to_thread(saver.get_tuple, config)
    return list(saved.pending_writes or []) if saved is not None else []
