"""A tool call's arguments, read whole from their text by one rule, streamed or not.

The rule (``arguments``): a JSON object is the call's arguments, and no text at all is ``{}``
(a tool without parameters); anything else (not JSON, or JSON of another kind: ``[1, 2]``,
``3``, ``"x"``, ``null``) makes the call an invalid tool call, which the aggregator's check
refuses and asks again (``tool_call_problem``, nodes/models/tools.py).

LangChain reads them otherwise, and differently on each path of an OpenAI-style model:

- streamed, as partial JSON, completing what it can (``{not json`` became ``{}``, a cut
  ``{"city": "Par`` ``{"city": "Par"}``): the call loop keeps each streamed call's argument text
  and reads it here (``read_whole``, nodes/models/calls.py);
- not streamed, with ``json.loads``, then into an ``AIMessage``, whose validation refuses
  arguments that are JSON but no object: the call failed with pydantic's error instead of being
  asked again (and ``null`` or ``[]`` became ``{}``). So the model's conversion of a whole
  response is wrapped (``whole_arguments``): calls whose arguments are no object reach LangChain
  as ``{}``, and are then read here from their text.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.messages.tool import invalid_tool_call, tool_call
from langchain_core.outputs import ChatResult

NOT_AN_OBJECT = "the arguments are not a JSON object"


def arguments(text: str) -> dict[str, Any] | None:
    """The arguments ``text`` holds, or None when it is no JSON object (the rule above)."""
    if not text:
        return {}
    try:
        value = json.loads(text, strict=False)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def read_whole(message: AIMessage, calls: Mapping[Any, Sequence[str]]) -> AIMessage:
    """``message`` with its tool calls read from ``calls`` (by index: id, name and argument
    text). Unchanged when every call's arguments are a JSON object, or when the calls have no
    index (LangChain then reads each streamed chunk as a call of its own)."""
    if None in calls:
        return message
    parsed = [(call_id, name, text, arguments(text)) for call_id, name, text in calls.values()]
    if all(value is not None for *_, value in parsed):
        return message
    good = [
        tool_call(name=name, args=value, id=call_id or None)
        for call_id, name, _, value in parsed
        if value is not None
    ]
    bad = [
        invalid_tool_call(name=name, args=text, id=call_id or None, error=NOT_AN_OBJECT)
        for call_id, name, text, value in parsed
        if value is None
    ]
    return message.model_copy(update={"tool_calls": good, "invalid_tool_calls": bad})


def whole_arguments(model: BaseChatModel) -> None:
    """Read the tool calls of an OpenAI-style model's whole (non-streamed) responses by the rule.

    Its conversion of a response, ``_create_chat_result`` (what ``_agenerate`` and ``_generate``
    call on the model; tests/test_private_apis.py fails if that changes), is replaced on this
    instance. A copy of the model (its non-streaming twin, nodes/models/resources.py) converts
    with the model it was copied from, whose conversion reads nothing the copy changed.
    """
    from langchain_openai.chat_models.base import BaseChatOpenAI

    if not isinstance(model, BaseChatOpenAI):
        return
    convert = type(model)._create_chat_result

    def create_chat_result(response: Any, generation_info: dict[str, Any] | None = None) -> Any:
        raw = _raw_calls(response)
        if all(arguments(text) is not None for calls in raw for *_, text in calls.values()):
            return convert(model, response, generation_info)
        result: ChatResult = convert(model, _as_objects(response), generation_info)
        for generation, calls in zip(result.generations, raw, strict=False):
            if isinstance(generation.message, AIMessage) and calls:
                generation.message = read_whole(generation.message, calls)
        return result

    # An attribute of the instance: the class, shared by every model, stays as it is.
    object.__setattr__(model, "_create_chat_result", create_chat_result)


def _field(value: Any, key: str) -> Any:
    """``value[key]`` of a response as JSON, or its attribute ``key`` as the SDK's object."""
    return value.get(key) if isinstance(value, Mapping) else getattr(value, key, None)


def _function_calls(response: Any) -> list[list[Any]]:
    """Each choice's function tool calls (a custom tool's call has no ``function``)."""
    found = []
    for choice in _field(response, "choices") or []:
        message = _field(choice, "message")
        calls = (_field(message, "tool_calls") or []) if message is not None else []
        found.append([c for c in calls if _field(c, "function") is not None])
    return found


def _raw_calls(response: Any) -> list[dict[int, list[str]]]:
    """Per choice, its function calls by index: id, name and argument text."""
    return [
        {
            i: [
                _field(call, "id") or "",
                _field(_field(call, "function"), "name") or "",
                _field(_field(call, "function"), "arguments") or "",
            ]
            for i, call in enumerate(calls)
        }
        for calls in _function_calls(response)
    ]


def _as_objects(response: Any) -> Any:
    """A copy of ``response`` where the arguments that are no JSON object are ``{}``, which
    LangChain's conversion takes."""
    copied = (
        copy.deepcopy(response) if isinstance(response, Mapping) else response.model_copy(deep=True)
    )
    for calls in _function_calls(copied):
        for call in calls:
            function = _field(call, "function")
            if arguments(_field(function, "arguments") or "") is None:
                if isinstance(function, dict):
                    function["arguments"] = "{}"
                else:
                    function.arguments = "{}"
    return copied
