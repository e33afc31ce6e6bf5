"""What the models see of the conversation: its text turns, whatever the caller's history holds.

A parent agent's history (a ReAct loop, say) holds more than text turns: assistant messages that
call tools, the tools' results, and often a trailing assistant draft. Proposers and the
aggregator are asked to answer the user's latest message in plain text, so before every call the
history goes through ``model_view``, by ``Context.tool_history``:

- ``"as_text"`` (default): a tool call becomes a line of the assistant's text
  (``[called tool search with {"q": "..."}]``) and a tool result becomes a user turn
  (``[tool search returned]`` and the result), so what the tools found still informs the answer;
- ``"drop"``: tool calls and tool results are left out.

Either way, consecutive turns of one role are merged into one (several providers insist that
roles alternate), assistant turns with no text are dropped, and assistant turns after the last
user turn (a draft the parent wrote before asking MoA) are dropped: the conversation the models
see ends with a user turn. System messages are merged into one at the start.

Only text is sent: a run whose user, system or tool messages hold another content part (an
image, audio, a file) is refused (``answerable``), not answered as if the models had seen it.
Text parts under the OpenAI Responses API's names (``TEXT_ALIASES``) are text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from langchain_core.messages import (
    AIMessage,
    AnyMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from langgraph_moa.nodes.errors import EmptyConversationError, UnsupportedContentError

ToolHistory = Literal["as_text", "drop"]

# Text parts as the OpenAI Responses API names them, which some clients keep in a chat history:
# input_text (what a user, system or tool said), output_text (an assistant's answer).
# langchain-openai reads both as "text"; langchain-core's ``message.text`` leaves them out.
TEXT_ALIASES = ("input_text", "output_text")
TEXT_PARTS = ("text", *TEXT_ALIASES)


def _is_text(part: str | dict[str, Any]) -> bool:
    return isinstance(part, str) or (
        part.get("type") in TEXT_PARTS and isinstance(part.get("text"), str)
    )


def text_of(message: BaseMessage) -> str:
    """``message.text``, its ``TEXT_ALIASES`` parts read as text too."""
    if isinstance(message.content, str):
        return message.content
    return "".join(p if isinstance(p, str) else p["text"] for p in message.content if _is_text(p))


def with_text_parts(message: AnyMessage) -> AnyMessage:
    """``message`` with its ``TEXT_ALIASES`` parts as "text" parts, the kind every provider's
    chat API takes (for a conversation sent as it is: ``model_messages``)."""
    if isinstance(message.content, str):
        return message
    content = [
        {"type": "text", "text": p["text"]}
        if isinstance(p, dict) and p.get("type") in TEXT_ALIASES and _is_text(p)
        else p
        for p in message.content
    ]
    if content == message.content:
        return message
    return message.model_copy(update={"content": content})


def _tool_call_line(call: dict[str, object]) -> str:
    args = json.dumps(call.get("args", {}), ensure_ascii=False, sort_keys=True)
    return f"[called tool {call.get('name', '?')} with {args}]"


def _turn(message: BaseMessage, policy: ToolHistory) -> tuple[str, str] | None:
    """(role, text) of one message as the models see it; None leaves it out."""
    if isinstance(message, SystemMessage):
        return "system", text_of(message)
    if isinstance(message, ToolMessage):
        if policy == "drop":
            return None
        return "user", f"[tool {message.name or 'result'} returned]\n{_result_text(message)}"
    if isinstance(message, AIMessage):
        text = text_of(message)
        lines: list[str] = [text] if text.strip() else []
        if policy == "as_text":
            lines += [_tool_call_line(dict(call)) for call in message.tool_calls]
        return ("assistant", "\n".join(lines)) if lines else None
    if message.type == "human" or isinstance(message, HumanMessage):
        return "user", text_of(message)
    return None  # function messages and other kinds carry nothing for these models


def model_view(messages: Sequence[AnyMessage], policy: ToolHistory = "as_text") -> list[AnyMessage]:
    """The conversation as proposers and the aggregator see it (see the module's docstring)."""
    # Each turn's texts are joined once, at the end: joined as they came, a history of many
    # short messages of one role took time in the square of its size (1.2 s for 16,500).
    system: list[str] = []
    turns: list[tuple[str, list[str]]] = []
    for message in messages:
        turn = _turn(message, policy)
        if turn is None:
            continue
        role, text = turn
        if role == "system":
            system.append(text)
        elif turns and turns[-1][0] == role:
            turns[-1][1].append(text)
        else:
            turns.append((role, [text]))
    while turns and turns[-1][0] == "assistant":
        turns.pop()
    kinds = {"user": HumanMessage, "assistant": AIMessage}
    view: list[AnyMessage] = [SystemMessage(content="\n\n".join(system))] if system else []
    return view + [kinds[role](content="\n\n".join(texts)) for role, texts in turns]


def _result_text(message: ToolMessage) -> str:
    """A tool result's text, its JSON parts included as JSON (LangGraph's ToolNode keeps a tool's
    list of ``{"type": "json", "json": ...}`` blocks as the result)."""
    if isinstance(message.content, str):
        return message.content
    parts = [
        json.dumps(part.get("json"), ensure_ascii=False)
        if isinstance(part, dict) and part.get("type") == "json"
        else part
        if isinstance(part, str)
        else str(part.get("text", ""))
        for part in message.content
    ]
    return "".join(parts)


def _unseen_part(message: BaseMessage, policy: ToolHistory) -> tuple[int, str] | None:
    """(index, type) of the first part of ``message``'s content that its text leaves out (an
    image, audio, a file...), if the models would be sent the rest of it. An assistant's own
    parts (reasoning, tool-use blocks) are its workings, not what it was shown."""
    if isinstance(message, AIMessage) or isinstance(message.content, str):
        return None
    if isinstance(message, ToolMessage) and policy == "drop":
        return None
    readable = (*TEXT_PARTS, "json") if isinstance(message, ToolMessage) else TEXT_PARTS
    for i, part in enumerate(message.content):
        kind = part.get("type") if isinstance(part, dict) else "text"
        if kind not in readable:
            return i, str(kind)
    return None


def answerable(messages: Sequence[AnyMessage], policy: ToolHistory) -> list[AnyMessage]:
    """``model_view(messages, policy)``; ``EmptyConversationError`` when it leaves the models
    nothing to answer, ``UnsupportedContentError`` when it would leave out a part they were meant
    to see (checked before any model is paid: by the graph's first node, and by the servers
    before a response starts)."""
    for i, message in enumerate(messages):
        if (unseen := _unseen_part(message, policy)) is not None:
            raise UnsupportedContentError(i, *unseen)
    view = model_view(messages, policy)
    if not view:
        results = sum(isinstance(m, ToolMessage) for m in messages) if policy == "drop" else 0
        raise EmptyConversationError(len(messages), policy, results)
    return view
