"""Continuing an answer already begun: provider continuation where the provider has it, else a
prompt that asks for the rest.

Staircase streaming (nodes/staircase.py) writes an answer in chunks; each request after the first
continues the text the earlier ones wrote (``ask_model(..., prefill=...)``). What each provider
offers (docs/performance.md, "Continuing an answer"):

- ``vllm``: the chat API continues a final assistant message when asked with
  ``continue_final_message=true`` and ``add_generation_prompt=false`` (sent in the body).
- ``local`` (the embedded llama.cpp model): the prompt is formatted by the model's chat template up
  to the opened assistant turn, and the answer so far is appended to it as raw text
  (nodes/models/local.py).
- every other provider (``together``, ``openai``, ``ollama``, ``lmstudio`` and the ones LangChain
  builds): no documented way to continue a partial assistant turn in the chat API (Together's
  chat completions document no prefill; its raw ``/completions`` needs each model's chat template
  client-side; OpenAI's chat API answers a trailing assistant message with a new turn). They get
  the fallback: the answer so far in the system prompt, fenced, with an instruction to output only
  what comes next. The text already shown is never sent back as the model's own: whatever the
  model writes is appended, so nothing is cut or repeated by us at a seam; a model that repeats
  the end of the answer so far repeats it visibly (the instruction asks it not to).

The same continuation mends a streamed answer that broke off (``resumer``): text a reader was
shown cannot be taken back, so the retry continues it rather than writing the answer again
beside it. ``ask_model`` asks for this on every streamed call whose tokens may be shown (not
tagged ``nostream``) and that binds no tools or response format: a tool call or a JSON object
cut in the middle has no continuation in any provider's API, so such an answer starts over.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage

from langgraph_moa.nodes.models.budget import MESSAGE_OVERHEAD, fit_request
from langgraph_moa.nodes.models.calls import Resume
from langgraph_moa.nodes.models.settings import ModelSettings
from langgraph_moa.nodes.prompts import defuse, with_system

Continuation = Literal["prefill", "instruct"]

# Providers whose chat API continues a final assistant message, and the body fields that ask it.
PREFILL_BODY: dict[str, dict[str, bool]] = {
    "vllm": {"continue_final_message": True, "add_generation_prompt": False},
    "local": {},  # the embedded model continues a final assistant message itself
}

CONTINUE_PROMPT = """\
You have already written the beginning of your response; it is given below between \
<answer_so_far> tags. Continue it from exactly where it stops: output only the text that comes \
next (mid-word or mid-sentence if it stops there), never repeat any of it, and do not comment on \
it.

<answer_so_far>
{answer}</answer_so_far>"""

_ANSWER_TAG = re.compile(r"<(\s*/?\s*answer_so_far)\b", re.IGNORECASE)


def continuation_of(settings: ModelSettings) -> Continuation:
    """How ``settings``' provider continues an answer: "prefill" or the "instruct" fallback."""
    return "prefill" if settings.provider in PREFILL_BODY else "instruct"


def continue_request(
    settings: ModelSettings,
    model: BaseChatModel,
    request: Sequence[AnyMessage],
    prefill: str,
) -> tuple[BaseChatModel, list[AnyMessage]]:
    """The model and request that continue ``prefill``, the answer written so far."""
    if continuation_of(settings) == "prefill":
        body = PREFILL_BODY[settings.provider]
        if body:
            # A copy (sharing the clients), not .bind(): the call loop reads the model's class.
            model = model.model_copy(update={"extra_body": {**(_extra(model)), **body}})
        return model, [*request, AIMessage(prefill)]
    # Appended to the system prompt (with_system keeps one system message).
    return model, with_system(
        request, CONTINUE_PROMPT.replace("{answer}", defuse(prefill, _ANSWER_TAG))
    )


def continuation_tokens(settings: ModelSettings, prefill: str, count: Callable[[str], int]) -> int:
    """Tokens ``continue_request`` adds to a request for ``prefill``, by the counter ``count``:
    the answer so far as an assistant message, or the fallback's block in the system prompt."""
    if continuation_of(settings) == "prefill":
        return count(prefill) + MESSAGE_OVERHEAD
    return count(CONTINUE_PROMPT.replace("{answer}", defuse(prefill, _ANSWER_TAG)))


def _extra(model: BaseChatModel) -> dict[str, object]:
    extra = getattr(model, "extra_body", None)
    return dict(extra) if isinstance(extra, dict) else {}


def resumer(
    settings: ModelSettings,
    model: BaseChatModel,
    conversation: Sequence[AnyMessage],
    references: Sequence[str] | None,
    template: str,
    prefill: str | None,
) -> Resume:
    """The call loop's ``resume`` for one call (nodes/models/calls.py): the model and request
    that continue its answer after ``shown`` (``pieces`` tokens) was streamed, following
    ``prefill`` when the call itself continued one. The rest may be ``max_tokens`` minus what
    was written (at least 1), so the whole answer stays within ``max_tokens``."""

    def resume(shown: str, pieces: int) -> tuple[BaseChatModel, list[AnyMessage]]:
        rest = replace(settings, max_tokens=max(1, settings.max_tokens - pieces))
        # A copy sharing the clients (rare: only after a break, so not kept in the model cache).
        shorter = model
        if "max_tokens" in type(model).model_fields:
            shorter = model.model_copy(update={"max_tokens": rest.max_tokens})
        so_far = (prefill or "") + shown
        request = fit_request(
            rest,
            shorter,
            conversation,
            references,
            template,
            added=lambda count: continuation_tokens(rest, so_far, count),
        )
        return continue_request(rest, shorter, request, so_far)

    return resume
