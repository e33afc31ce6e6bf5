"""Reading what the project stores on disk (the call cache, chat threads) never runs code.

Those files are data whoever can write them controls: a folder or a ``--cache`` shared with
colleagues, a ``MOA_DATA_DIR`` on a shared disk. LangGraph's default serializer rebuilds any
``module.callable(args)`` a stored value names, ``os.system`` included (langgraph-checkpoint
warns of it and offers strict mode, ``LANGGRAPH_STRICT_MSGPACK``). ``SAFE_SERDE`` is that strict
mode for our stores, whatever the environment says: it rebuilds only LangGraph's list of safe
types (LangChain's messages among them, all a chat thread holds) and leaves anything else as
plain data, which the reader then refuses (nodes/models/callcache.py asks such a call again).
"""

from __future__ import annotations

import logging

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

SAFE_SERDE = JsonPlusSerializer(allowed_msgpack_modules=None)


class _NoAllowAdvice(logging.Filter):
    """The strict serializer logs each type it refuses with advice to allow it. For our stores
    that advice is wrong (nothing of ours needs another type); the reader says what it did."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Blocked deserialization")


logging.getLogger("langgraph.checkpoint.serde.jsonplus").addFilter(_NoAllowAdvice())
