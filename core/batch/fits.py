"""Items no model call of the run can hold, refused as the input is read.

Before each call the request is fitted to its model's context window (nodes/models/budget.py):
references are cut, the user's conversation never is, and a conversation that does not fit with
the answer's ``max_tokens`` fails the call (kind ``context``) before anything is sent. An item
whose conversation is that long fails in the run, after whatever its other calls paid, and the
dry run priced it (an item of about 3 million tokens at $41.95, for a run that made no call).
``ContextCheck`` asks the same question of every item as it is read, with the same functions
and the same window (a model's ``context_window``, else the catalog's, else ``DEFAULT_WINDOW``), so
the dry run and the run refuse the same items, naming their line.

An item is refused only where it cannot succeed: its last turn (the longest conversation, the
earlier answers counted as empty) does not fit enough proposers of a layer (``min_proposals``)
or neither the aggregator nor its fallback, references cut to their marker. A model run in this
process (``local:``) counts with its own tokenizer and window, known once it is loaded: it is
not checked here.

``moa compare`` asks it of each of its systems and of its judge (apps/compare/fits.py): a judge
reads the prompt with two answers that do not exist yet, so their length, known only by its
limit, is kept free (``added``).
"""

from __future__ import annotations

import math

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, SystemMessage

from langgraph_moa.core.batch.inputs import Item
from langgraph_moa.nodes.context import Context, ModelSpec
from langgraph_moa.nodes.errors import CallFailedError
from langgraph_moa.nodes.models import settings_for
from langgraph_moa.nodes.models.budget import (
    CHARS_PER_TOKEN,
    MESSAGE_OVERHEAD,
    REQUEST_OVERHEAD,
    TRUNCATED,
    context_window,
    fit_request,
)
from langgraph_moa.nodes.models.settings import ModelSettings
from langgraph_moa.nodes.models.tools import model_messages
from langgraph_moa.nodes.prompts import aggregation_system_prompt

MESSAGES = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}


class ContextCheck:
    """Called on each item (``Dataset``'s ``validate``): ``ValueError`` when no call can hold it.

    ``added``: tokens every call adds to the item's conversation (the answers a judge reads,
    counted at their ``max_tokens``), kept free like the answer's own.
    """

    def __init__(self, ctx: Context, added: int = 0) -> None:
        self._ctx = ctx
        self._added = added
        # (the models a step may call, how many must fit, references each is sent)
        self._steps: list[tuple[list[ModelSettings], int, int]] = []
        references = 0
        for layer in range(1, ctx.layers):
            specs = ctx.proposers_of(layer)
            need = min(ctx.min_proposals, len(specs))
            self._steps.append((self._checked(specs), need, references))
            references = need  # the fewest a layer goes on with: the smallest request after it
        fallback = [ctx.fallback_aggregator] if ctx.fallback_aggregator else []
        self._steps.append((self._checked([ctx.aggregator, *fallback]), 1, references))
        # A step that holds no item at all (max_tokens alone past a window) is the settings'
        # problem, not an item's: every item would be named for it. Left to the run (a server's
        # caps, or the calls' own "context" failures), it is not checked here.
        self._steps = [
            step
            for step in self._steps
            if len(step[0]) >= step[1] and all(self._holds_anything(s, step[2]) for s in step[0])
        ]
        # Requests at most this long fit every model checked: most items need no exact count.
        most = max((step[2] for step in self._steps), default=0)
        frame = aggregation_system_prompt(ctx.aggregation_prompt, [TRUNCATED] * most)
        self._frame = math.ceil(len(frame) / CHARS_PER_TOKEN) + MESSAGE_OVERHEAD + 1
        self._room = min(
            (context_window(s) - s.max_tokens - added for step in self._steps for s in step[0]),
            default=None,
        )

    def _checked(self, specs: list[ModelSpec]) -> list[ModelSettings]:
        """The settings of ``specs``, or none when a model of them is not checked (local):
        that one may hold what the others cannot."""
        if any(s.provider == "local" for s in specs):
            return []
        return [settings_for(s, self._ctx) for s in specs]

    def _holds_anything(self, settings: ModelSettings, references: int) -> bool:
        shortest: list[AnyMessage] = [HumanMessage("?")]
        return self._problem(settings, shortest, [TRUNCATED] * references or None) is None

    def __call__(self, item: Item) -> None:
        if (problem := self.problem(item)) is not None:
            raise ValueError(f"no call of the run can hold it: {problem}")

    def problem(self, item: Item) -> str | None:
        """Why no call of a step can hold ``item`` (a call's own words), or None when it fits."""
        if self._room is None:
            return None
        texts = [m["content"] for m in item.history] + item.turns
        messages = len(texts) + len(item.turns) - 1  # and an empty answer before each later turn
        longest = REQUEST_OVERHEAD + messages * MESSAGE_OVERHEAD + self._frame
        longest += sum(math.ceil(len(t) / CHARS_PER_TOKEN) for t in texts)
        if longest <= self._room:
            return None
        conversation = self._conversation(item)
        for models, need, references in self._steps:
            refs = [TRUNCATED] * references or None
            problems = [self._problem(s, conversation, refs) for s in models]
            if sum(p is None for p in problems) < need:
                return next(p for p in problems if p is not None)
        return None

    def _conversation(self, item: Item) -> list[AnyMessage]:
        messages: list[AnyMessage] = [MESSAGES[m["role"]](m["content"]) for m in item.history]
        for n, text in enumerate(item.turns):
            if n:
                messages.append(AIMessage(""))  # the earlier answer, at its shortest
            messages.append(HumanMessage(text))
        return model_messages(messages, self._ctx.tool_history, None)

    def _problem(
        self, settings: ModelSettings, conversation: list[AnyMessage], refs: list[str] | None
    ) -> str | None:
        added = (lambda _count: self._added) if self._added else None
        try:
            fit_request(settings, None, conversation, refs, self._ctx.aggregation_prompt, added)
        except CallFailedError as exc:
            return exc.message
        return None
