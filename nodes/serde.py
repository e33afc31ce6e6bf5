"""Reading what the project stores on disk (the call cache, chat threads) never runs code.

Those files are data whoever can write them controls: a folder or a ``--cache`` shared with
colleagues, a ``MOA_DATA_DIR`` on a shared disk. LangGraph's default serializer rebuilds any
``module.callable(args)`` a stored value names, ``os.system`` included (langgraph-checkpoint
warns of it and offers strict mode, ``LANGGRAPH_STRICT_MSGPACK``). ``SAFE_SERDE`` is that strict
mode for our stores, whatever the environment says: it rebuilds only LangGraph's list of safe
types (LangChain's messages among them, all a chat thread holds) and leaves anything else as
plain data, which the reader then refuses (nodes/models/callcache.py asks such a call again).

A value that does not deserialise at all (a ``pickle`` row, malformed msgpack or JSON, a JSON
constructor LangChain refuses) raises ``StoredValueError``, one kind each reader handles.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from langgraph_moa.nodes.errors import StoredValueError

_LOGGER = "langgraph.checkpoint.serde.jsonplus"
_READING: ContextVar[bool] = ContextVar("moa_reading_own_store", default=False)


class _SafeSerializer(JsonPlusSerializer):
    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        try:
            with _reading():
                return super().loads_typed(data)
        # What langgraph-checkpoint 4.3 raises for bytes it cannot read: NotImplementedError for
        # an encoding it does not read (``pickle`` in strict mode), ValueError for malformed
        # msgpack or JSON and for a JSON constructor LangChain refuses, TypeError, AttributeError
        # or a LookupError when LangChain's reviver walks JSON of another shape. Only the
        # libraries' code runs in this call, so none of these is a bug of ours hidden.
        except (NotImplementedError, ValueError, TypeError, AttributeError, LookupError) as exc:
            raise StoredValueError(str(data[0])[:40], str(exc).split("\n")[0][:200]) from None


@contextmanager
def _reading() -> Iterator[None]:
    token = _READING.set(True)
    try:
        yield
    finally:
        _READING.reset(token)


class _QuietWhileWeRead(logging.Filter):
    """The strict serializer logs each type it refuses with advice to allow it. For our stores that
    advice is wrong (nothing of ours needs another type) and the reader says what it did, so a
    record logged while one of our reads runs (in this thread or task) is dropped; any other
    reader's, a user's own strict checkpointer's, passes untouched (a filter that matched the
    text instead hid theirs too). LangGraph warns once per type and process, so a type first
    refused in our store is not warned of again for theirs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _READING.get()


SAFE_SERDE = _SafeSerializer(allowed_msgpack_modules=None)
logging.getLogger(_LOGGER).addFilter(_QuietWhileWeRead())
