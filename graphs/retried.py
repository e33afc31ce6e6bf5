"""Batch runs a LangGraph server starts again are refused before any model is paid.

``moa batch --server`` submits each turn as a stateless run and waits for it. When the server
dies, that wait ends: the client stops (or, when the server is back at once, submits the turn
again), and a rerun of the command submits every unfinished item anew. The server, meanwhile,
may run the old runs again on its own: ``langgraph dev`` restores the runs its last flush saw
(it saves its store every 10 s) and queues them again, LangGraph Platform retries a run whose
worker died. Nobody waits for those; an item that had finished since would be paid twice, and
one in flight three times. So a batch run (its metadata names ``moa_batch_item``) that is a
retry (``run_attempt`` above 1), or, on ``langgraph dev``'s in-memory runtime, was submitted
before this process loaded the graph, stops at its first node with ``RetriedRunError``; the
client that sees it submits the turn again. (On LangGraph Platform the queue is durable, not a
snapshot, and its workers start after runs are queued, so only the attempt is checked there.)

``__request_start_time_ms__`` (the server's clock when the run was submitted, in the run's
``configurable``) is langgraph-api's; this is the one place it is read, and
tests/test_batch_server.py (``test_the_server_stamps_each_run_with_its_request_time``) fails if
it goes.
"""

from __future__ import annotations

import os
import time

from langgraph.config import get_config

from langgraph_moa.nodes.errors import RetriedRunError

BATCH_ITEM = "moa_batch_item"  # the run metadata moa batch --server sets (core/batch/server.py)
LOADED_MS = time.time() * 1000  # when this process loaded the graph (a server: when it started)


def refuse_retried_batch_run() -> None:
    """Raise ``RetriedRunError`` for a batch run this server did not receive itself, once."""
    try:
        config = get_config()
    except RuntimeError:  # not inside a run (a direct call)
        return
    metadata = config.get("metadata") or {}
    if BATCH_ITEM not in metadata:
        return
    attempt = metadata.get("run_attempt", 1)
    submitted = (config.get("configurable") or {}).get("__request_start_time_ms__")
    in_memory = os.environ.get("LANGGRAPH_RUNTIME_EDITION") == "inmem"  # set by langgraph dev
    stale = in_memory and isinstance(submitted, int | float) and submitted < LOADED_MS
    if (isinstance(attempt, int) and attempt > 1) or stale:
        raise RetriedRunError(str(metadata[BATCH_ITEM]), attempt if isinstance(attempt, int) else 1)
