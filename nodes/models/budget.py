"""Context budget: make each request fit its model's context window before it is sent.

A request must hold its prompt and the answer it asks for (``max_tokens``) within the model's
context window. Before every proposer and aggregator call the prompt is measured:

* with the model's own tokenizer when it has one in the process (a model class that implements
  ``get_num_tokens`` itself, like an embedded llama.cpp model; remote clients' tokenizers are not
  used: tiktoken may download its tables);
* otherwise estimated at ``CHARS_PER_TOKEN`` = 3.5 characters per token plus
  ``MESSAGE_OVERHEAD`` tokens per message. English prose averages about 4 characters per token
  with the usual tokenizers, so the estimate errs on the safe side.

The window is ``ModelSpec.context_window`` when set, else the one nodes/models/catalog.toml gives
for the model, else the window a local model reports (``n_ctx``), else ``DEFAULT_WINDOW`` = 8192.

A request that binds tools or a response format (the aggregator's, nodes/models/tools.py) sends
them whole beside its messages, and providers count them as prompt: ``bound_tokens`` measures
them, and they are kept free like the rest of the prompt.

When the references do not fit, every reference is cut to the same fraction of its length (the
largest that fits), at a word boundary, and ends with a visible ``[truncated]`` marker. The
user's conversation is never cut: when it does not fit even with empty references, the call
fails with kind ``"context"`` before anything is sent.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel, BaseLanguageModel
from langchain_core.messages import AnyMessage

from langgraph_moa.nodes.models.calls import CallFailedError
from langgraph_moa.nodes.models.catalog import DEFAULT_WINDOW
from langgraph_moa.nodes.models.settings import ModelSettings
from langgraph_moa.nodes.prompts import AGGREGATION_PROMPT, aggregation_system_prompt, with_system

CHARS_PER_TOKEN = 3.5
MESSAGE_OVERHEAD = 4  # role and separators of one chat message
REQUEST_OVERHEAD = 3  # the assistant turn the template opens
TRUNCATED = "[truncated]"
# What a binding sends beside the messages, whole, in every request of the model it binds.
BOUND_PARTS = ("tools", "response_format")

Counter = Callable[[str], int]


def estimate_tokens(text: str) -> int:
    """Tokens of ``text`` by the characters-per-token estimate."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def context_window(settings: ModelSettings, model: BaseChatModel | None = None) -> int:
    """The context window of ``settings``' model, in tokens."""
    if settings.window is not None:
        return settings.window
    n_ctx = getattr(model, "n_ctx", None)  # a local model knows its own
    if isinstance(n_ctx, int) and n_ctx > 0:
        return n_ctx
    return DEFAULT_WINDOW


def counter_of(model: BaseChatModel | None) -> Counter:
    """The model's own tokenizer when it runs in the process, else the estimate."""
    if model is None or not hasattr(model, "n_ctx"):
        return estimate_tokens
    if type(model).get_num_tokens is BaseLanguageModel.get_num_tokens:
        return estimate_tokens  # the generic fallback needs transformers' GPT-2 tokenizer
    return model.get_num_tokens


def request_tokens(messages: Sequence[AnyMessage], count: Counter = estimate_tokens) -> int:
    """Prompt tokens of a chat request."""
    return REQUEST_OVERHEAD + sum(count(m.text) + MESSAGE_OVERHEAD for m in messages)


def bound_tokens(
    bind: Mapping[str, Any] | None, count: Counter = estimate_tokens
) -> dict[str, int]:
    """Prompt tokens of each part a binding sends (``BOUND_PARTS`` it has), as their JSON."""
    # default=str: a graph run's bind may hold what JSON has no form for; this only measures it.
    return {
        part: count(json.dumps(bind[part], ensure_ascii=False, default=str))
        for part in BOUND_PARTS
        if bind and bind.get(part)
    }


def trim(text: str, fraction: float) -> str:
    """The first ``fraction`` of ``text`` (cut at a word boundary), marked ``[truncated]``."""
    if fraction >= 1:
        return text
    keep = int(len(text) * fraction)
    cut = text[:keep]
    space = cut.rfind(" ")
    if space > keep * 0.8:
        cut = cut[:space]
    return f"{cut.rstrip()} {TRUNCATED}".lstrip()


def fit_request(
    settings: ModelSettings,
    model: BaseChatModel | None,
    messages: Sequence[AnyMessage],
    references: Sequence[str] | None,
    template: str = AGGREGATION_PROMPT,
    added: Callable[[Counter], int] | None = None,
) -> list[AnyMessage]:
    """The request for one call, its references trimmed to fit the model's window.

    ``added``: the tokens the caller will add to the request (by the counter it is given), such
    as the answer so far of a continuation (nodes/models/continuation.py) or what a binding sends
    beside the messages (``bound_tokens``); they are kept free.
    Raises ``CallFailedError`` (kind ``"context"``, nothing sent) when even the conversation
    alone does not fit.
    """
    window = context_window(settings, model)
    answer = settings.max_tokens
    count = counter_of(model)
    extra = added(count) if added is not None else 0
    limit = window - answer - extra

    def build(refs: Sequence[str] | None) -> list[AnyMessage]:
        system = aggregation_system_prompt(template, refs) if refs else None
        return with_system(messages, system)

    request = build(references)
    needed = request_tokens(request, count)
    if needed <= limit:
        return request
    if references:
        floor = build([TRUNCATED] * len(references))
        if request_tokens(floor, count) <= limit:
            # The largest common fraction that fits (fitting grows with the fraction).
            low, high = 0.0, 1.0
            for _ in range(20):
                mid = (low + high) / 2
                if request_tokens(build([trim(r, mid) for r in references]), count) <= limit:
                    low = mid
                else:
                    high = mid
            return build([trim(r, low) for r in references])
        needed = request_tokens(floor, count)
    raise CallFailedError(
        "context",
        f"the prompt needs about {needed + extra} tokens and the answer up to {answer}, more than "
        f"{settings.model}'s context window of {window} tokens; shorten the conversation, lower "
        "max_tokens or set context_window",
        0,
        0.0,
    )
