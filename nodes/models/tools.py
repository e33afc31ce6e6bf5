"""Tools and response formats bound to a run: what the models of a tool-calling step are asked.

A run may carry a *binding* (``Bind``), plain JSON kept in graph state (``MoAInput.bind``):

- ``tools``: OpenAI function-tool schemas (``{"type": "function", "function": {...}}``);
- ``tool_choice``: ``"auto"``, ``"none"``, ``"required"`` (``"any"`` is read as it) or a tool's
  name (``{"type": "function", "function": {"name": ...}}`` is read as the name);
- ``parallel_tool_calls``: whether the model may call several tools in one answer;
- ``response_format``: OpenAI's ``{"type": "json_object"}`` or ``{"type": "json_schema", ...}``.

Only the aggregator is bound (``bound_kwargs``): it decides, and answers with text or with
LangChain's standard ``AIMessage.tool_calls``. It sees the conversation as it is (tool calls and
tool results in the provider's own form, ``model_messages``), since a tool-calling model needs
them paired by id. Proposers are not bound: they see the conversation as text (nodes/history.py)
and the tools described in their system prompt (``proposer_note``), and advise what to do.

The aggregator's tool calls are checked (``tool_call_problem``): a call of a tool that does not
exist, arguments that are not a JSON object (read by one rule, streamed or not:
nodes/models/tool_arguments.py) or do not match the tool's schema, text where the tool
choice required a call, or a call where it allows none (``"none"``, or no binding at all). The
aggregator node asks again with the problem stated, and fails with kind ``tool_call`` when every
attempt had one (nodes/aggregate.py). A proposer's call, bound to nothing, is no proposal
(nodes/models/ask.py).
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, ToolMessage
from langchain_core.runnables import RunnableBinding

from langgraph_moa.nodes.context import Context, ToolProposers
from langgraph_moa.nodes.errors import CapabilityError, ConfigError, UnpairedToolCallError
from langgraph_moa.nodes.history import ToolHistory, model_view, with_text_parts
from langgraph_moa.nodes.models.cache import chat_model
from langgraph_moa.nodes.models.settings import settings_for

Bind = dict[str, Any]
CHOICES = ("auto", "none", "required")
# What a tool_choice string means, as OpenAI reads it ("any": LangChain's "required"): no tool
# may have one of these names, or its choice by name would read as the mode.
MODES = (*CHOICES, "any")
FORMATS = ("text", "json_object", "json_schema")  # OpenAI's response_format types


def tool_names(bind: Mapping[str, Any] | None) -> list[str]:
    return [t["function"]["name"] for t in (bind or {}).get("tools") or []]


def bind_problem(bind: Any) -> tuple[str, str] | None:
    """(where, what) is wrong with the shape of a run's input ``bind`` (binding's arguments, as
    plain JSON), or None; the schemas in it are checked by ``binding``."""
    if bind is None:
        return None
    if not isinstance(bind, Mapping):
        return "bind", "must be an object of tools, tool_choice, ..."
    allowed = inspect.signature(binding).parameters
    unknown = [key for key in bind if key not in allowed]
    if unknown:
        return "bind", f"unknown key {unknown[0]!r}; allowed: {', '.join(allowed)}"
    tools, response_format = bind.get("tools"), bind.get("response_format")
    if tools is not None and not (
        isinstance(tools, list) and all(isinstance(tool, Mapping) for tool in tools)
    ):
        return "bind.tools", "must be a list of tool objects"
    if tools is not None and (too_many := _too_many(tools)) is not None:
        return "bind.tools", too_many
    if response_format is not None and not isinstance(response_format, Mapping):
        return "bind.response_format", "must be an object"
    return None


def binding(
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    tool_choice: Any = None,
    parallel_tool_calls: bool | None = None,
    response_format: Mapping[str, Any] | None = None,
) -> Bind | None:
    """A checked, normalised binding (None when nothing is bound); ``ConfigError`` names what is
    wrong."""
    bind: Bind = {}
    if tools:
        if (too_many := _too_many(tools)) is not None:  # first: before any schema is checked
            raise ConfigError(f"tools: {too_many}")
        seen: set[str] = set()
        for i, tool in enumerate(tools):
            function = tool.get("function") if tool.get("type") == "function" else None
            if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
                raise ConfigError(
                    f"tools[{i}] is not a function tool: expected "
                    '{"type": "function", "function": {"name": ..., "parameters": {...}}}'
                )
            name = function["name"]
            if not NAME.fullmatch(name):
                raise ConfigError(f"tools[{i}].function.name {_quoted(name)} {NAME_RULE}")
            if name in MODES:
                raise ConfigError(
                    f"tools[{i}].function.name {name!r} is a tool_choice mode ({_modes()}): a "
                    "choice of the tool by its name would read as the mode; name it otherwise"
                )
            if name in seen:
                raise ConfigError(f"tools[{i}].function.name {name!r} names two tools")
            seen.add(name)
            if "parameters" in function:
                where = f"tools[{i}].function.parameters"
                _check_schema(function["parameters"], where)
                _check_object(function["parameters"], where)
        bind["tools"] = [dict(t) for t in tools]
    choice = _choice(tool_choice)
    if choice is not None:
        names = tool_names(bind)
        if choice != "none" and not names:
            raise ConfigError(f"tool_choice {choice!r} needs tools, and none were given")
        if choice not in CHOICES and choice not in names:
            raise ConfigError(
                f"tool_choice names the tool {choice!r}, which is not among the tools "
                f"({', '.join(names)})"
            )
        bind["tool_choice"] = choice
    if parallel_tool_calls is not None and bind.get("tools"):
        bind["parallel_tool_calls"] = bool(parallel_tool_calls)
    if response_format is not None and response_format.get("type") != "text":
        kind = response_format.get("type")
        if kind not in ("json_object", "json_schema"):
            raise ConfigError(
                f"response_format type {_quoted(kind)} is not supported: use 'text', "
                "'json_object' or 'json_schema'"
            )
        if kind == "json_schema":
            _check_json_schema_format(response_format.get("json_schema"))
        bind["response_format"] = dict(response_format)
    for part in ("tools", "response_format"):
        if part in bind:
            _check_json(bind[part], part)
    return bind or None


def _check_json(value: Any, part: str) -> None:
    # Sent whole in every aggregator request: what JSON cannot carry (NaN, Infinity: Python's
    # json reads them from a request body) failed only there, after the proposers were paid.
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        raise ConfigError(
            f"{part} holds NaN or Infinity, which JSON cannot carry: give finite numbers"
        ) from None
    except TypeError as exc:
        raise ConfigError(f"{part} holds a value JSON cannot carry ({exc})") from None


# OpenAI takes up to 128 tools: every binding is held to it (ChatMoA.bind_tools, moa serve's /v1,
# a graph run's bind input, a LangGraph server's check_bind), before any proposer is paid or any
# schema checked.
MAX_TOOLS = 128


def _too_many(tools: Sequence[Any]) -> str | None:
    """What is wrong with binding ``tools`` as many as they are, or None."""
    if len(tools) <= MAX_TOOLS:
        return None
    return (
        f"at most {MAX_TOOLS} tools, not {len(tools)} (OpenAI's limit, which moa serve holds its "
        "clients to): bind only the tools the step needs"
    )


# OpenAI's rule for function and response-format names: a client written for it sends no other,
# and a provider refuses them (a run would fail after its proposers were paid).
NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
NAME_RULE = "must be 1 to 64 letters, digits, underscores or dashes"


def _quoted(value: Any) -> str:
    return repr(value) if len(repr(value)) <= 80 else f"{repr(value)[:77]}..."


def _check_json_schema_format(spec: Any) -> None:
    if not isinstance(spec, Mapping) or not isinstance(spec.get("schema"), Mapping):
        raise ConfigError("response_format json_schema needs json_schema.schema (an object)")
    name = spec.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConfigError(f"response_format json_schema.name {_quoted(name)} {NAME_RULE}")
    where = "response_format json_schema.schema"
    _check_schema(spec["schema"], where)
    _check_object_root(spec["schema"], where)


def _check_schema(schema: Any, where: str) -> None:
    """``ConfigError`` unless ``schema`` is a JSON schema object (by its ``$schema``, else draft
    2020-12, as OpenAI reads it): the aggregator's provider would refuse it, and the answer's
    check (``schema_problem`` in nodes/models/schemas.py) reads it."""
    if not isinstance(schema, Mapping):
        raise ConfigError(f"{where} must be a JSON schema object, not {type(schema).__name__}")
    from langgraph_moa.nodes.models.schemas import schema_error  # jsonschema: only when bound

    problem = schema_error(json.dumps(schema, sort_keys=True))
    if problem is not None:
        raise ConfigError(f"{where} is not a valid JSON schema: {problem}")


def _check_object(schema: Mapping[str, Any], where: str) -> None:
    """``ConfigError`` for parameters typed other than an object: a tool call's arguments are a
    JSON object, so no answer could match them and every one would be paid for, then refused
    (OpenAI refuses such a tool too). A schema without a ``type`` is left to the check above."""
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    if kind is not None and "object" not in kinds:
        raise ConfigError(f"{where} must describe an object (its arguments), not {_quoted(kind)}")


def _check_object_root(schema: Mapping[str, Any], where: str) -> None:
    """``ConfigError`` unless a response format's schema says ``"type": "object"`` at its root
    (or where a root ``$ref`` points, pydantic's form of a recursive model): an answer must be
    one JSON object (``format_problem``), so with a schema of anything else (a string, an array,
    an ``enum``, an ``anyOf`` or a ``not``) every answer would be paid for, then refused. OpenAI
    refuses such a format too. After ``_check_schema``: its references resolve."""
    from langgraph_moa.nodes.models.schemas import root_schema

    kind = root_schema(schema).get("type")
    if kind != "object":
        found = f", not {_quoted(kind)}" if kind is not None else '; it has no "type" there'
        raise ConfigError(
            f'{where} must have "type": "object" at its root (the answer is one JSON object, '
            f"as OpenAI requires){found}"
        )


def _modes() -> str:
    return ", ".join(repr(m) for m in MODES)


def _choice(value: Any) -> str | None:
    """A tool choice as the binding keeps it: a mode (``CHOICES``) or a tool's name, which is
    never one of them (``MODES`` are no tool's name)."""
    if value is None:
        return None
    if value is True or value == "any":
        return "required"
    if isinstance(value, Mapping):  # OpenAI's form names a tool
        function = value.get("function")
        name = function.get("name") if isinstance(function, Mapping) else value.get("name")
        if isinstance(name, str) and name in MODES:
            raise ConfigError(
                f"tool_choice names a tool {name!r}, which no tool may be named (a tool_choice "
                f"mode: {_modes()}): give the mode as a string, or name another tool"
            )
        if isinstance(name, str):
            return name
        raise ConfigError(f"tool_choice {value!r} names no function")
    if isinstance(value, str):
        return value
    raise ConfigError(f"tool_choice {value!r}: expected 'auto', 'none', 'required' or a name")


def calls_tools(bind: Mapping[str, Any] | None) -> bool:
    """Whether the aggregator may call tools in this run."""
    return bool(tool_names(bind)) and (bind or {}).get("tool_choice") != "none"


def forces_call(bind: Mapping[str, Any] | None) -> bool:
    """Whether the aggregator must answer with a tool call (``required`` or a named tool)."""
    return calls_tools(bind) and (bind or {}).get("tool_choice", "auto") != "auto"


def holds_text(bind: Mapping[str, Any] | None) -> bool:
    """Whether a stream holds the answer's text until it is checked (then sends it whole): with
    a response format, where an answer asked again would leave its rejected JSON before the new
    one in what the client adds up, and its parse would fail."""
    return bool((bind or {}).get("response_format"))


def skips_proposers(policy: ToolProposers, bind: Mapping[str, Any] | None) -> bool:
    """Whether ``Context.tool_proposers`` leaves this step to the aggregator alone."""
    if policy == "skip":
        return calls_tools(bind)
    return policy == "skip_forced" and forces_call(bind)


def bound_kwargs(model: BaseChatModel, bind: Mapping[str, Any] | None, name: str) -> dict[str, Any]:
    """What the call passes ``model.ainvoke`` for ``bind``, as the model's own ``bind_tools``
    writes it (each provider its own request format); ``CapabilityError`` names a model that
    cannot do what the binding asks."""
    if not bind:
        return {}
    kwargs: dict[str, Any] = {}
    if bind.get("tools"):
        extra: dict[str, Any] = {}
        if "tool_choice" in bind:
            extra["tool_choice"] = bind["tool_choice"]
        if "parallel_tool_calls" in bind:
            extra["parallel_tool_calls"] = bind["parallel_tool_calls"]
        try:
            bound = model.bind_tools(bind["tools"], **extra)
        except NotImplementedError:
            raise CapabilityError(
                f"{name} cannot call tools ({type(model).__name__} has no tool calling): choose "
                "an aggregator whose provider supports tools (OpenAI-compatible, Together...)"
            ) from None
        # bind_tools returns the model with its request arguments bound; the call loop needs
        # the model itself (to time, stream and retry it) and those arguments.
        if isinstance(bound, RunnableBinding):
            kwargs.update(bound.kwargs)
    if bind.get("response_format"):
        from langchain_openai.chat_models.base import BaseChatOpenAI

        if not isinstance(model, BaseChatOpenAI):
            raise CapabilityError(
                f"{name} cannot follow a response_format ({type(model).__name__} is not an "
                "OpenAI-compatible client): use structured output by function calling instead"
            )
        kwargs["response_format"] = bind["response_format"]
    return kwargs


def check_capable(ctx: Context, bind: Mapping[str, Any] | None) -> None:
    """Raise ``CapabilityError`` now, before any proposer is paid, when the aggregator (or its
    fallback) cannot do what ``bind`` asks. Models are built once and cached: this costs little."""
    if not bind:
        return
    for spec in filter(None, (ctx.aggregator, ctx.fallback_aggregator)):
        bound_kwargs(chat_model(settings_for(spec, ctx)), bind, spec.model)


def model_messages(
    messages: Sequence[AnyMessage], policy: ToolHistory, bind: Mapping[str, Any] | None
) -> list[AnyMessage]:
    """The conversation a model is sent: as it is for a model that calls tools (tool calls and
    results stay paired by id), else its text turns (nodes/history.py)."""
    if not calls_tools(bind):
        return model_view(messages, policy)
    messages = [with_text_parts(m) for m in messages]  # input_text parts and the like
    systems = [m for m in messages if m.type == "system"]
    rest = [m for m in messages if m.type != "system"]
    if len(systems) <= 1:
        return [*systems, *rest]
    # Several providers take one system message, first.
    merged = model_view(systems)
    return [*merged, *rest]


def check_pairs(messages: Sequence[AnyMessage]) -> None:
    """``UnpairedToolCallError`` unless every tool call of an assistant message is answered by a
    tool message right after it, and every tool message answers one, as providers require of
    the conversation ``model_messages`` sends a model that calls tools (a call a human in the
    loop turned down is the usual way to break it). OpenAI's rule, which moa serve's /v1
    applies with this function: no message comes between a call and its result, a system one
    included (``model_messages`` would move it first, but what OpenAI refuses is refused alike
    by the graph and by /v1)."""
    unanswered: dict[str, None] = {}  # the last assistant message's calls without a result
    caller = 0
    for i, message in enumerate(messages):
        if isinstance(message, ToolMessage):
            if message.tool_call_id not in unanswered:
                raise UnpairedToolCallError(i, [message.tool_call_id], result=True)
            del unanswered[message.tool_call_id]
            continue
        if unanswered:
            later = any(
                isinstance(m, ToolMessage) and m.tool_call_id in unanswered for m in messages[i:]
            )  # the results come, after this message: it is the one out of place
            raise UnpairedToolCallError(caller, list(unanswered), between=i if later else None)
        if isinstance(message, AIMessage):
            # Calls whose arguments were not JSON are sent as calls too (langchain-openai).
            calls = [*message.tool_calls, *message.invalid_tool_calls]
            unanswered, caller = dict.fromkeys(c["id"] or "" for c in calls), i
    if unanswered:
        raise UnpairedToolCallError(caller, list(unanswered))


def _describe(tool: Mapping[str, Any]) -> str:
    function = tool["function"]
    params = json.dumps(function.get("parameters") or {}, ensure_ascii=False, sort_keys=True)
    about = f": {function['description']}" if function.get("description") else ""
    return f"- {function['name']}{about}\n  arguments (JSON schema): {params}"


def proposer_note(bind: Mapping[str, Any] | None) -> str | None:
    """What a proposer is told of the tools (None when the aggregator may call none)."""
    if not calls_tools(bind):
        return None
    assert bind is not None
    choice = bind.get("tool_choice", "auto")
    if choice == "auto":
        task = (
            "If a tool would help, say which tool(s) to call next, with which arguments and why; "
            "otherwise answer the user's latest message yourself."
        )
    elif choice == "required":
        task = "A tool must be called now: say which one(s), with which arguments and why."
    else:
        task = f"The tool {choice} must be called now: say with which arguments and why."
    tools = "\n".join(_describe(t) for t in bind["tools"])
    return (
        "You are advising an assistant that can call the tools below (it decides and calls "
        "them; you cannot). Tool calls and results so far appear in the conversation as text.\n"
        f"{task}\n\nTools:\n{tools}"
    )


TOOLS_NOTE = (
    "You can call the tools you are given. The references are other assistants' advice on what "
    "to do next: call the tools that are needed (with arguments matching their schemas), or "
    "answer the user if no tool is needed."
)
JSON_NOTE = "Reply with one JSON object only, no other text."
SCHEMA_NOTE = "Reply with one JSON object only, no other text, matching this JSON schema: {schema}"


def aggregator_note(bind: Mapping[str, Any] | None) -> str | None:
    """What the aggregator is told of its binding, besides the binding itself (a provider that
    does not enforce a response format still gets it asked; OpenAI's JSON mode requires the word
    JSON in the prompt)."""
    notes = [TOOLS_NOTE] if calls_tools(bind) else []
    response_format = (bind or {}).get("response_format") or {}
    if response_format.get("type") == "json_object":
        notes.append(JSON_NOTE)
    elif response_format.get("type") == "json_schema":
        schema = json.dumps(response_format["json_schema"]["schema"], ensure_ascii=False)
        notes.append(SCHEMA_NOTE.format(schema=schema))
    return "\n\n".join(notes) or None


# --- checking the aggregator's tool calls ---------------------------------------------------


def answer_problem(message: AIMessage, bind: Mapping[str, Any] | None) -> str | None:
    """What is wrong with the aggregator's answer for its binding (tool calls, response
    format), or None. A tool call where none was given is one: it is no answer (a client that
    sent no tools would be handed a call of a tool it never heard of)."""
    if message.tool_calls or message.invalid_tool_calls or forces_call(bind):
        return tool_call_problem(message, bind or {})
    return format_problem(str(message.text), bind) if bind else None


def format_problem(text: str, bind: Mapping[str, Any]) -> str | None:
    """What is wrong with a JSON answer for the response format, or None."""
    response_format = bind.get("response_format") or {}
    if response_format.get("type") not in ("json_object", "json_schema"):
        return None
    try:
        value = json.loads(_unfenced(text))
    except ValueError:
        return "its answer is not a JSON object"
    except RecursionError:  # valid JSON perhaps, but deeper than anyone reading it can parse
        return "its answer is JSON nested too deeply"
    if not isinstance(value, dict):
        return "its answer is JSON but not an object"
    if response_format["type"] == "json_schema":
        from langgraph_moa.nodes.models.schemas import schema_problem

        return schema_problem(value, response_format["json_schema"]["schema"], "the answer")
    return None


def _json(text: Any) -> bool:
    """Whether ``text`` is JSON (of any kind)."""
    try:
        json.loads(text, strict=False)
    except (TypeError, ValueError, RecursionError):
        return False
    return True


def _unfenced(text: str) -> str:
    """JSON inside a markdown code fence, as models often write it (parsers accept it too)."""
    inner = text.strip()
    if inner.startswith("```"):
        inner = inner.split("\n", 1)[-1].rsplit("```", 1)[0]
    return inner


def tool_call_problem(message: AIMessage, bind: Mapping[str, Any]) -> str | None:
    """What is wrong with the tool calls of the aggregator's answer, or None."""
    if not calls_tools(bind):  # no tools, or tool_choice "none"
        if not (message.tool_calls or message.invalid_tool_calls):
            return None
        if tool_names(bind):
            return "it called a tool where the tool choice is 'none' (answer in text)"
        return "it called a tool where none was given"
    tools = {t["function"]["name"]: t["function"] for t in bind["tools"]}
    for bad in message.invalid_tool_calls:
        what = "not a JSON object" if _json(bad.get("args")) else "not valid JSON"
        return f"its call of {bad.get('name') or 'a tool'} has arguments that are {what}"
    for call in message.tool_calls:
        name = call["name"]
        if name not in tools:
            return f"it called the tool {name!r}, which does not exist (tools: {', '.join(tools)})"
        schema = tools[name].get("parameters") or {}
        from langgraph_moa.nodes.models.schemas import schema_problem

        if problem := schema_problem(call["args"], schema):
            return f"its call of {name} is invalid: {problem}"
    choice = bind.get("tool_choice", "auto")
    if choice not in ("auto", "required") and any(c["name"] != choice for c in message.tool_calls):
        return f"it called another tool than {choice}, which the tool choice requires"
    if forces_call(bind) and not message.tool_calls:
        return "it answered in text where the tool choice requires a tool call"
    if len(message.tool_calls) > 1 and bind.get("parallel_tool_calls") is False:
        return "it called several tools at once where parallel tool calls are off"
    return None


CORRECTION = (
    "Your previous reply could not be used: {problem}. Reply again without that mistake: call "
    "only the tools you are given, with arguments matching their schemas, or answer in the "
    "form asked for."
)
NO_CALL_CORRECTION = (
    "Your previous reply could not be used: {problem}. Reply again without that mistake: call "
    "no tool; answer in the form asked for."
)


def correction(problem: str, bind: Mapping[str, Any] | None) -> str:
    """What the aggregator is told when its answer is asked again."""
    return (CORRECTION if calls_tools(bind) else NO_CALL_CORRECTION).format(problem=problem)
