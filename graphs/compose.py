"""MoA inside your own agent, the ways LangGraph users compose: a node, a tool, a chat model.

(As a subgraph needs nothing more: ``parent.add_node("moa", build_moa_graph(...).compile())``.)

- ``moa_node(question=..., answer=...)``: a node over your own state: reads the question from a
  key you name, writes the answer (and optionally the per-layer records) to keys you name;
- ``moa_tool()``: a tool a tool-calling agent may decide to use for a hard question;
- ``ChatMoA()``: a ``BaseChatModel`` that runs the mixture, wherever a chat model goes; with
  ``bind_tools`` the model of a tool-calling agent, with ``with_structured_output`` a source of
  validated objects (the aggregator is bound, the proposers advise: nodes/models/tools.py).

Each runs its own compiled MoA graph built with the settings given here (a ``Context``, a preset
name, or None for the default preset); a run inside a parent graph may still override them
through a ``moa`` field of the parent's context (``resolve_context``). All work sync and async.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from operator import itemgetter
from typing import Any, Literal, TypeVar, cast

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import ToolCallChunk
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import (
    Runnable,
    RunnableConfig,
    RunnableLambda,
    RunnableMap,
    RunnablePassthrough,
)
from langchain_core.tools import BaseTool, StructuredTool
from langchain_core.utils.function_calling import (
    convert_to_openai_function,
    convert_to_openai_tool,
)
from langchain_core.utils.pydantic import is_basemodel_subclass
from langgraph.graph.state import CompiledStateGraph
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from langgraph_moa.graphs.adapt import cancel_on_interrupt, cancellable
from langgraph_moa.graphs.moa import build_moa_graph
from langgraph_moa.nodes.aggregate import answer_text
from langgraph_moa.nodes.childconfig import calls_with, child_config
from langgraph_moa.nodes.context import Context, load_preset
from langgraph_moa.nodes.errors import ConfigError, InputError
from langgraph_moa.nodes.models.tools import FORMATS, Bind, binding, holds_text
from langgraph_moa.nodes.records import total_usage
from langgraph_moa.nodes.stops import StopAt

Settings = Context | str | None
STREAM_MODES: list[Any] = ["messages", "custom", "values"]  # custom: answer_retry events
# What the mixture's run in a node, tool or chat model call does not take from its caller's config
# (a graph node's), which LangGraph would merge into it. The caller's step budget and parallelism
# bound the caller's graph, not the mixture (recursion_limit=3 would fail a 3-layer run,
# max_concurrency=1 ask the proposers one after another).
LIMITS = ("recursion_limit", "max_concurrency")
# To its caller a ChatMoA is one chat model: its own run streams the answer and reports the usage
# of every call, so the mixture's calls report to none of the caller's callbacks either (a usage
# handler would count them twice, astream_events and a subgraphs=True stream show the answer
# twice). Each run stays in the caller's graph otherwise: under a checkpointer a failed step run
# again asks no finished proposer again, and a moa field of the caller's context still applies.
CHAT_MODEL_DROPPED = ("callbacks", *LIMITS)
# What a chat model such as ChatOpenAI takes per call (``invoke(..., temperature=0)``,
# ``bind(tools=...)``, ``top_p``...) and ChatMoA would ignore: its models take their settings from
# its Context, its tools from bind_tools. Everything but what ChatMoA reads (PER_CALL_TAKEN, and
# LangChain's own ``ls_*`` tracing fields) is refused, saying where the common ones go: an answer
# made otherwise than asked (not deterministic, no tool ever called) would come back as if it
# had been used.
PER_CALL_TAKEN = ("moa_bind", "response_format")
PER_CALL_HOMES = {
    **{
        name: f"set it in the mixture's Context (Context({name}=...)), or on one of its models"
        for name in ("temperature", "max_tokens", "seed")
    },
    "max_completion_tokens": "set max_tokens in the mixture's Context (Context(max_tokens=...))",
    **{
        name: "use bind_tools(tools, tool_choice=..., parallel_tool_calls=...)"
        for name in ("tools", "tool_choice", "parallel_tool_calls", "functions", "function_call")
    },
    "n": "it writes one answer per call: call it again for another",
}
Graph = CompiledStateGraph[Any, Any, Any, Any]
T = TypeVar("T")
_END = object()


def _compiled(context: Settings, name: str) -> Graph:
    return build_moa_graph(context).compile(name=name)


def _answer(final: Mapping[str, Any]) -> str:
    return str(final["messages"][-1].text)


def _usage(final: Mapping[str, Any]) -> UsageMetadata:
    usage = total_usage(final.get("layers", []), final.get("answer"))
    return UsageMetadata(
        input_tokens=usage["input_tokens"],
        output_tokens=usage["output_tokens"],
        total_tokens=usage["total_tokens"],
    )


# --- the mixture's run, detached from its caller's limits ----------------------------------------


@contextmanager
def _detached(dropped: Sequence[str] = CHAT_MODEL_DROPPED) -> Iterator[None]:
    """Runs the mixture's steps in here: the caller's config without ``dropped``."""
    config = child_config()
    own = None if config is None else {k: v for k, v in config.items() if k not in dropped}
    with calls_with(cast(RunnableConfig | None, own)):
        yield


def _detached_steps(items: Iterator[T]) -> Iterator[T]:
    """``items`` stepped in ``_detached()``, which never spans the caller's code between items."""
    try:
        while True:
            with _detached():
                item = next(items, _END)
            if item is _END:
                return
            yield cast(T, item)
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()


async def _adetached_steps(items: AsyncIterator[T]) -> AsyncIterator[T]:
    """``_detached_steps`` of an async stream."""
    try:
        while True:
            with _detached():
                item = await anext(items, _END)
            if item is _END:
                return
            yield cast(T, item)
    finally:
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()


# --- a node over your own state ---------------------------------------------------------------


def _read(state: Any, key: str) -> Any:
    """``state[key]`` (or its attribute); ``InputError`` naming the key and the state's own when
    it has none: a misspelt ``question=``, or a step before that did not write it."""
    if isinstance(state, Mapping):
        if key in state:
            return state[key]
        keys = ", ".join(map(repr, state)) or "none"
        raise InputError(
            f"the state has no {key!r} for moa_node(question={key!r}) to read (its keys: {keys})"
        )
    try:
        return getattr(state, key)
    except AttributeError:
        raise InputError(
            f"the state has no {key!r} for moa_node(question={key!r}) to read"
        ) from None


def moa_node(
    *,
    question: str = "question",
    answer: str = "answer",
    layers: str | None = None,
    context: Settings = None,
) -> Runnable[Any, dict[str, Any]]:
    """A node that asks MoA ``state[question]`` and writes ``state[answer]``.

    ``state[question]`` is a string or a list of messages (a conversation). ``layers``, if set,
    names the key that receives the per-layer proposal records (nodes/records.py).
    """
    graph = _compiled(context, "moa")

    def inputs(state: Any) -> dict[str, Any]:
        value = _read(state, question)
        if isinstance(value, str):
            return {"messages": [HumanMessage(value)]}
        # None, a number, bytes (a sequence of ints)...: LangGraph's own error is cryptic.
        if not isinstance(value, Sequence) or isinstance(value, bytes | bytearray):
            raise InputError(
                f"state[{question!r}] is {type(value).__name__}: moa_node asks MoA a string or a "
                "list of messages"
            )
        return {"messages": list(value)}

    def outputs(final: Mapping[str, Any]) -> dict[str, Any]:
        update: dict[str, Any] = {answer: _answer(final)}
        if layers is not None:
            update[layers] = final.get("layers", [])
        return update

    async def amoa(state: Any) -> dict[str, Any]:
        with _detached(LIMITS):
            return outputs(await graph.ainvoke(inputs(state)))

    def moa(state: Any) -> dict[str, Any]:
        with _detached(LIMITS):
            return outputs(graph.invoke(inputs(state)))

    return RunnableLambda(moa, afunc=amoa, name="moa")


# --- a tool ------------------------------------------------------------------------------------

TOOL_DESCRIPTION = (
    "Consult a mixture of several language models on a hard question: they each answer, then "
    "one synthesizes their answers into a better one. Slower and costlier than answering "
    "yourself; use it for questions where quality matters. Pass the full, self-contained "
    "question: the models see nothing else of the conversation."
)


class _ToolArgs(BaseModel):
    question: str = Field(description="The complete, self-contained question to answer.")


def moa_tool(
    context: Settings = None,
    *,
    name: str = "ask_mixture_of_models",
    description: str = TOOL_DESCRIPTION,
) -> BaseTool:
    """MoA as a tool: takes ``question``, returns the mixture's answer as text."""
    graph = _compiled(context, name)

    async def ask(question: str) -> str:
        with _detached(LIMITS):
            return _answer(await graph.ainvoke({"messages": [HumanMessage(question)]}))

    def ask_sync(question: str) -> str:
        with _detached(LIMITS):
            return _answer(graph.invoke({"messages": [HumanMessage(question)]}))

    return StructuredTool.from_function(
        func=ask_sync, coroutine=ask, name=name, description=description, args_schema=_ToolArgs
    )


# --- a chat model ------------------------------------------------------------------------------


def _json_schema_format(schema: Mapping[str, Any] | type, strict: bool | None) -> dict[str, Any]:
    """OpenAI's ``json_schema`` response format for a pydantic model, TypedDict or JSON schema."""
    function = convert_to_openai_function(schema, strict=strict)
    return {
        "type": "json_schema",
        "json_schema": {
            "name": function["name"],
            "schema": function.get("parameters") or {},
            **({"strict": strict} if strict is not None else {}),
            **({"description": d} if (d := function.get("description")) else {}),
        },
    }


class ChatMoA(BaseChatModel):
    """A chat model whose every answer is a Mixture-of-Agents run.

    Streams the aggregator's tokens; ``usage_metadata`` adds up every call of the run;
    ``response_metadata`` names the model that wrote the answer and carries the run's
    per-layer records (``moa_layers``). ``stop`` sequences go with the aggregator's requests
    (not the proposers') and end the answer's text before the first of them (nodes/stops.py);
    the usage counts what the aggregator wrote.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    context: Settings = Field(
        default=None, description="A Context, a preset name, or None for the default preset."
    )
    _graph: Graph | None = PrivateAttr(default=None)

    def __init__(self, **kwargs: Any) -> None:
        # A misspelt preset (or a config that does not load) fails here, as the ConfigError a
        # caller catches, not at the first call deep in an agent's run. Before pydantic's
        # validation, which wraps a validator's ValueError (ConfigError is one) in its own.
        if isinstance(context := kwargs.get("context"), str):
            load_preset(context)
        super().__init__(**kwargs)

    @property
    def _llm_type(self) -> str:
        return "mixture-of-agents"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        context = self.context
        return {"context": context.model_dump() if isinstance(context, Context) else context}

    def _moa(self) -> Graph:
        if self._graph is None:
            self._graph = _compiled(self.context, "chat-moa")
        return self._graph

    def bind_tools(
        self,
        tools: Sequence[Any],
        *,
        tool_choice: Any = None,
        parallel_tool_calls: bool | None = None,
        strict: bool | None = None,
        response_format: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Runnable[Any, AIMessage]:
        """The mixture with its aggregator bound to ``tools`` (LangChain tools, functions,
        pydantic models or OpenAI tool schemas): each answer is text or ``tool_calls``.

        ``tool_choice``: "auto" (default), "any"/"required", a tool's name, or "none".
        ``parallel_tool_calls``: False allows one call per answer. The proposers are told the
        tools and advise (``Context.tool_proposers``). Raises ``ConfigError`` for a tool choice
        that names no given tool; a run whose aggregator cannot call tools fails with a
        ``CapabilityError`` naming it.
        """
        if response_format and strict is not False:
            strict = True  # as OpenAI requires of tools beside a response format (langchain-openai)
        bind = binding(
            tools=[convert_to_openai_tool(t, strict=strict) for t in tools],
            tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls,
            response_format=response_format,
        )
        return self.bind(moa_bind=bind, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        include_raw: bool = False,
        method: Literal["function_calling", "json_schema", "json_mode"] = "function_calling",
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[Any, dict[str, Any] | BaseModel]:
        """Answers as ``schema`` (a pydantic model, a TypedDict or a JSON schema): the proposers
        answer in prose, the aggregator returns the structure, by ``method``:

        - "function_calling": the aggregator must call one tool whose arguments are the object;
        - "json_schema": the aggregator's provider is asked for JSON matching the schema
          (OpenAI-compatible providers: ``response_format`` json_schema);
        - "json_mode": the provider is asked for a JSON object (describe it in your prompt).

        A pydantic schema gives validated instances, others dicts. ``include_raw``: a dict with
        ``raw`` (the message), ``parsed`` and ``parsing_error`` instead of raising.
        """
        if kwargs:
            raise ValueError(f"unsupported arguments for with_structured_output: {kwargs}")
        if method == "function_calling":
            return super().with_structured_output(schema, include_raw=include_raw, strict=strict)
        pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
        if method == "json_schema":
            response_format = _json_schema_format(schema, strict)
        elif method == "json_mode":
            response_format = {"type": "json_object"}
        else:
            raise ValueError(
                f"method {method!r} is not supported: use 'function_calling', 'json_schema' or "
                "'json_mode'"
            )
        llm = self.bind(
            moa_bind=binding(response_format=response_format),
            ls_structured_output_format={"kwargs": {"method": method}, "schema": schema},
        )
        parser: Runnable[Any, Any] = (
            PydanticOutputParser(pydantic_object=schema) if pydantic else JsonOutputParser()
        )
        if not include_raw:
            return llm | parser
        parse: Callable[[Any], Any] = itemgetter("raw") | parser  # type: ignore[assignment]
        with_error = RunnablePassthrough.assign(parsed=parse, parsing_error=lambda _: None)
        without = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | with_error.with_fallbacks(
            [without], exception_key="parsing_error"
        )

    @staticmethod
    def _inputs(
        messages: list[BaseMessage], stop: list[str] | None, kwargs: Mapping[str, Any]
    ) -> dict[str, Any]:
        for name in kwargs:
            if name not in PER_CALL_TAKEN and not name.startswith("ls_"):
                home = PER_CALL_HOMES.get(
                    name, "set the mixture's settings in its Context (ChatMoA(context=...))"
                )
                raise ConfigError(
                    f"ChatMoA takes no per-call {name!r} (it would be ignored): {home}"
                )
        bind: Bind | None = kwargs.get("moa_bind")
        # chat.bind(response_format=...) as ChatOpenAI takes it: OpenAI's dict, or a schema
        # (a pydantic model, a TypedDict, a JSON schema), as create_agent's ProviderStrategy
        # and OpenAI users pass it.
        response_format = kwargs.get("response_format")
        if response_format is not None:
            openai_form = isinstance(response_format, Mapping) and (
                response_format.get("type") in FORMATS
            )
            if not openai_form:
                response_format = _json_schema_format(response_format, None)
            bind = {**(bind or {}), **(binding(response_format=response_format) or {})}
        return {"messages": messages, "bind": bind, "stop": stop or None}

    @staticmethod
    def _message(final: Mapping[str, Any]) -> AIMessage:
        # The graph's answer, already cut before the first stop sequence (nodes/stops.py).
        return AIMessage(
            content=_answer(final),
            tool_calls=final["messages"][-1].tool_calls,
            usage_metadata=_usage(final),
            response_metadata={
                "model_name": final["answer"]["model"],
                "moa_layers": final.get("layers", []),
            },
        )

    @staticmethod
    def _last_chunk(final: Mapping[str, Any], held: bool, stop: StopAt) -> ChatGenerationChunk:
        """Ends a stream: the tool calls (whole, once the aggregator's answer is checked), the
        answer's text if it was ``held`` (else what ``stop`` held back), the run's usage and
        metadata."""
        message = ChatMoA._message(final)
        calls = [
            ToolCallChunk(
                name=c["name"],
                args=json.dumps(c["args"]),
                id=c["id"],
                index=i,
                type="tool_call_chunk",
            )
            for i, c in enumerate(message.tool_calls)
        ]
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content=message.content if held else stop.flush(),
                tool_call_chunks=calls,
                usage_metadata=message.usage_metadata,
                response_metadata=message.response_metadata,
                chunk_position="last",
            )
        )

    @staticmethod
    def _text(mode: str, payload: Any, streamed: bool) -> str | None:
        """What a stream shows of one item of the run's stream: the answer's tokens, and a blank
        line when an answer after streamed text starts over (its text cannot be taken back;
        ``moa serve`` shows it the same way)."""
        if mode == "messages":
            return answer_text(*payload) or None
        restart = payload.get("event") in ("answer_retry", "answer_fallback")
        return "\n\n" if restart and streamed and not payload.get("continues") else None

    def batch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[AIMessage]:
        # langchain-core runs each input in a thread of its own, which Ctrl-C would wait for.
        with cancel_on_interrupt():
            return super().batch(inputs, config, return_exceptions=return_exceptions, **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        with _detached():
            final = self._moa().invoke(self._inputs(messages, stop, kwargs))
        return ChatResult(generations=[ChatGeneration(message=self._message(final))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        with _detached():
            final = await self._moa().ainvoke(self._inputs(messages, stop, kwargs))
        return ChatResult(generations=[ChatGeneration(message=self._message(final))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        final: Mapping[str, Any] = {}
        mode: str
        payload: Any
        inputs = self._inputs(messages, stop, kwargs)
        held, streamed = holds_text(inputs["bind"]), False
        cut = StopAt(stop or ())
        # In a scope of its own: LangGraph runs every node of a "messages" stream in its worker
        # threads, which Ctrl-C would otherwise wait for (graphs/adapt.py).
        steps = _detached_steps(self._moa().stream(inputs, stream_mode=STREAM_MODES))
        for mode, payload in cancellable(steps):
            if mode == "values":
                final = payload
            elif not held and (text := self._text(mode, payload, streamed)):
                if mode != "messages":  # a restart: the new answer is cut afresh
                    cut = StopAt(cut.stops)
                streamed = mode == "messages"  # not after the blank line of a restart
                if not (text := cut.feed(text)):
                    continue
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
                if run_manager is not None:
                    run_manager.on_llm_new_token(text, chunk=chunk)
                yield chunk
        yield self._last_chunk(final, held, cut)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        final: Mapping[str, Any] = {}
        mode: str
        payload: Any
        inputs = self._inputs(messages, stop, kwargs)
        held, streamed = holds_text(inputs["bind"]), False
        cut = StopAt(stop or ())
        steps = _adetached_steps(self._moa().astream(inputs, stream_mode=STREAM_MODES))
        async for mode, payload in steps:
            if mode == "values":
                final = payload
            elif not held and (text := self._text(mode, payload, streamed)):
                if mode != "messages":  # a restart: the new answer is cut afresh
                    cut = StopAt(cut.stops)
                streamed = mode == "messages"  # not after the blank line of a restart
                if not (text := cut.feed(text)):
                    continue
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
                if run_manager is not None:
                    await run_manager.on_llm_new_token(text, chunk=chunk)
                yield chunk
        yield self._last_chunk(final, held, cut)


__all__ = ["ChatMoA", "moa_node", "moa_tool"]
