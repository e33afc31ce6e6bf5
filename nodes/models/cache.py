"""Chat models, built once per distinct ``ModelSettings`` and event loop, then reused.

Building a client costs ~130 ms (ChatTogether builds four OpenAI clients), so a model is built
on first use and kept by the process's owner of such things (nodes/models/resources.py). Per
event loop, because its async HTTP client's connection pool belongs to the loop that opened it:
a second ``asyncio.run`` in one process needs its own.

Each model also has a non-streaming twin (``stream=False``) for calls whose tokens nobody reads
(the proposers): a copy with LangChain's ``disable_streaming`` set, sharing the model's clients.
Without it LangChain streams every call made while a ``stream_mode="messages"`` consumer is
attached, even calls tagged ``nostream`` whose chunks LangGraph then drops.
"""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel

from langgraph_moa.nodes.models.resources import RESOURCES
from langgraph_moa.nodes.models.settings import ModelSettings


def chat_model(settings: ModelSettings, *, stream: bool = True) -> BaseChatModel:
    """The chat model for ``settings``, built on first use in this event loop.

    ``stream=False``: its twin that never streams, whoever listens.
    """
    return RESOURCES.chat_model(settings, stream=stream)


def cached_loops() -> int:
    """Event loops with cached models (for tests and the memory benchmark)."""
    return RESOURCES.loops()
