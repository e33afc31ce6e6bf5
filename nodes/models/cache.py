"""Chat models, built once per distinct ``ModelSettings`` and event loop, then reused.

Building a client costs ~130 ms (ChatTogether builds four OpenAI clients), so a model is built
on first use and kept. Per event loop, because its async HTTP client's connection pool belongs
to the loop that opened it: a second ``asyncio.run`` in one process needs its own. The entries of
closed loops are dropped when a new loop first asks.

Each model also has a non-streaming twin (``stream=False``) for calls whose tokens nobody reads
(the proposers): a copy with LangChain's ``disable_streaming`` set, sharing the model's clients.
Without it LangChain streams every call made while a ``stream_mode="messages"`` consumer is
attached, even calls tagged ``nostream`` whose chunks LangGraph then drops.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from dataclasses import replace
from typing import Any

from langchain_core.language_models import BaseChatModel

from langgraph_moa.nodes.models.catalog import LOCAL_SERVERS, TOGETHER_BASE_ENV
from langgraph_moa.nodes.models.http import forget_closed_loops, running_loop
from langgraph_moa.nodes.models.providers import build_model
from langgraph_moa.nodes.models.settings import ModelSettings

_MODELS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Any, BaseChatModel]] = (
    weakref.WeakKeyDictionary()
)
_NO_LOOP: dict[Any, BaseChatModel] = {}


def _env_fingerprint(settings: ModelSettings) -> tuple[str | None, ...]:
    # Keys and endpoints come from the environment: a change there must give a new client.
    names = [settings.api_key_env, TOGETHER_BASE_ENV, *(env for env, _ in LOCAL_SERVERS.values())]
    return tuple(os.environ.get(n) if n else None for n in names)


def chat_model(settings: ModelSettings, *, stream: bool = True) -> BaseChatModel:
    """The chat model for ``settings``, built on first use in this event loop.

    ``stream=False``: its twin that never streams, whoever listens.
    """
    key = (settings, _env_fingerprint(settings))
    loop = running_loop()
    if loop is None:
        models = _NO_LOOP
    else:
        found = _MODELS.get(loop)
        if found is None:  # a new loop: the time to drop the models of loops that are gone
            forget_closed_loops(_MODELS)
            found = _MODELS[loop] = {}
        models = found
    model = models.get(key)
    if model is None:
        model = models[key] = _other_length(models, settings, key[1]) or build_model(settings)
    if stream:
        return model
    quiet = models.get((key, "quiet"))
    if quiet is None:
        quiet = models[(key, "quiet")] = model.model_copy(update={"disable_streaming": True})
    return quiet


def _other_length(
    models: dict[Any, BaseChatModel], settings: ModelSettings, env: tuple[str | None, ...]
) -> BaseChatModel | None:
    """A model differing only in ``max_tokens`` (staircase chunks ask for several lengths), as a
    copy sharing its clients: a new client would cost ~130 ms; a copy costs microseconds."""
    family = ("any-length", replace(settings, max_tokens=1), env)
    found = models.get(family)
    if found is None:
        models[family] = build_model(settings)
        return models[family]
    if "max_tokens" not in type(found).model_fields:
        return None
    return found.model_copy(update={"max_tokens": settings.max_tokens})


def cached_loops() -> int:
    """Event loops with cached models (for tests and the memory benchmark)."""
    return len(_MODELS)
