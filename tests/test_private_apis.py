"""Every private API of another library the project uses, one test each: a library release that
renames or reshapes it fails here, by name, instead of somewhere far away or silently.

Each is used in exactly one place, with a comment there saying why:

- the OpenAI SDK's ``AsyncStream._cast_to`` (nodes/models/chunks.py): streamed chunks as dicts;
- the OpenAI SDK's ``DefaultAsyncHttpxClient.__mro__[1]`` (nodes/models/http.py): its HTTP library;
- LangGraph's ``SqliteCache._conn`` (nodes/models/callcache.py): closing the cache's file;
- LangChain's ``_BUILTIN_PROVIDERS`` (nodes/models/providers.py): naming the known providers;
- LangGraph's ``RunnableCallable`` (graphs/adapt.py): a node with a sync and an async function;
- llama-cpp-python's ``Llama._model.token_get_text`` (nodes/models/local.py): the EOS/BOS text;
- LangGraph's ``__pregel_checkpointer`` in a node's config (nodes/resumed.py): the writes a
  resumed step's finished tasks saved;
- langchain-core's ``_StreamingCallbackHandler`` (nodes/models/growing.py): a handler that makes
  a chat model stream its call, whoever else listens;
- langchain-core's ``var_child_runnable_config`` (nodes/childconfig.py): the config runnables
  called in a block inherit (staircase.py's callback, compose.py's detached steps);
- LangGraph's checkpoint namespace separator ``NS_SEP`` (nodes/resumed.py): whether a node runs
  in a subgraph, and its graph's namespace;
- langgraph-api's ``__request_start_time_ms__`` in a run's ``configurable`` (graphs/retried.py):
  when the server received the run (here: the installed server sets it; against a real server:
  tests/test_batch_server.py);
- uvicorn's ``H11Protocol`` (apps/serve/headers.py): its ``conn`` (h11) and the hooks a
  subclass overrides, for the request headers' deadline and the send deadlines (against a real
  server: tests/test_serve_slow_clients.py);
- LangServe's stream error event (``_GENERIC_ERROR``, apps/serve/langserve_routes.py): the one
  event, in one body message, its ``/stream`` sends for any failure, which ``StreamErrors``
  replaces with the run's own error;
- Starlette's ``RuntimeError`` raised ``from`` a handled error once the response has started
  (``_cause``, apps/serve/langserve_routes.py): the run's error under it (against the real
  server: tests/test_serve_langserve.py);
- the HTTP library's ``Response.stream`` (nodes/models/http.py), which a response event hook
  (public) replaces to bound what is read: the body is read from it, after the hook, with either
  transport of the SDK's async client and with its sync client (against a provider ignoring
  max_tokens: tests/test_faults.py);
- langchain-openai's ``BaseChatOpenAI._create_chat_result`` (nodes/models/tool_arguments.py): the
  conversion of a whole response, looked up on the model by ``_agenerate`` and ``_generate``,
  replaced on the instance to read tool calls' arguments by the streamed answers' rule (against
  the fake provider: tests/test_tools.py).
"""

from __future__ import annotations

import asyncio
import operator
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import openai
import pytest
from fake_openai import FakeOpenAIServer
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from langgraph_moa.nodes.models.callcache import CallCache
from langgraph_moa.nodes.models.chunks import _PlainChunks
from langgraph_moa.nodes.models.http import http_library
from langgraph_moa.nodes.models.providers import known_providers


async def test_openai_streams_hand_over_dicts_when_cast_to_is_object(
    server: FakeOpenAIServer,
) -> None:
    server.script("m", "one two three")
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
    completions = _PlainChunks(client.chat.completions)
    stream = await completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert hasattr(stream, "_cast_to"), "openai.AsyncStream has no _cast_to any more"
    chunks = [chunk async for chunk in stream]
    assert chunks and all(isinstance(c, dict) for c in chunks), type(chunks[0])
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "one two three"
    await client.close()


@pytest.mark.parametrize("aiohttp", [False, True], ids=["httpx", "aiohttp"])
async def test_a_response_hook_replaces_the_stream_the_body_is_read_from(
    server: FakeOpenAIServer, aiohttp: bool
) -> None:
    library = http_library()
    read: list[bytes] = []

    class Seen(library.AsyncByteStream):  # type: ignore[misc,name-defined]
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        async def __aiter__(self) -> Any:
            async for chunk in self.inner:
                read.append(chunk)
                yield chunk

        async def aclose(self) -> None:
            await self.inner.aclose()

    async def hook(response: Any) -> None:
        assert not response.is_closed and not hasattr(response, "_content")  # not read yet
        response.stream = Seen(response.stream)

    kind = openai.DefaultAioHttpClient if aiohttp else openai.DefaultAsyncHttpxClient
    client = kind(event_hooks={"response": [hook]})
    try:
        whole = await client.get(f"{server.base_url}/models")  # read in send(), after the hook
        assert read and b"".join(read) == whole.content
        read.clear()
        async with client.stream("GET", f"{server.base_url}/models") as streamed:
            body = b"".join([chunk async for chunk in streamed.aiter_bytes()])
        assert read and b"".join(read) == body
    finally:
        await client.aclose()


def test_a_response_hook_replaces_the_stream_the_sync_clients_body_is_read_from(
    server: FakeOpenAIServer,
) -> None:
    library = http_library()
    read: list[bytes] = []

    class Seen(library.SyncByteStream):  # type: ignore[misc,name-defined]
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __iter__(self) -> Any:
            for chunk in self.inner:
                read.append(chunk)
                yield chunk

        def close(self) -> None:
            self.inner.close()

    def hook(response: Any) -> None:
        assert not response.is_closed and not hasattr(response, "_content")  # not read yet
        response.stream = Seen(response.stream)

    with openai.DefaultHttpxClient(event_hooks={"response": [hook]}) as client:
        whole = client.get(f"{server.base_url}/models")
        assert read and b"".join(read) == whole.content


def test_the_openai_sdks_http_library_is_its_clients_direct_base() -> None:
    library = http_library()
    assert openai.DefaultAsyncHttpxClient.__mro__[1] is library.AsyncClient
    assert openai.DefaultHttpxClient.__mro__[1] is library.Client
    assert callable(library.create_ssl_context)


def test_sqlite_cache_keeps_its_connection_in_conn(tmp_path: Path) -> None:
    cache = CallCache(tmp_path / "calls.sqlite")
    connection = cache._connection()
    assert isinstance(connection, sqlite3.Connection)
    cache.close()
    with pytest.raises(sqlite3.ProgrammingError):  # closed for real: the file is released
        connection.execute("select 1")


def test_openai_chat_models_convert_a_whole_response_with_create_chat_result() -> None:
    import inspect

    from langchain_openai import ChatOpenAI
    from langchain_openai.chat_models.base import BaseChatOpenAI

    from langgraph_moa.nodes.models.tool_arguments import whole_arguments

    params = list(inspect.signature(BaseChatOpenAI._create_chat_result).parameters)
    assert params == ["self", "response", "generation_info"]
    for caller in (BaseChatOpenAI._agenerate, BaseChatOpenAI._generate):
        assert "self._create_chat_result" in inspect.getsource(caller)  # the instance's
    model = ChatOpenAI(model="m", api_key="unused")  # type: ignore[arg-type]
    whole_arguments(model)
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "[1, 2]"}}
    message = {"role": "assistant", "content": None, "tool_calls": [call]}
    response = {"choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}]}
    (generation,) = model._create_chat_result(response).generations
    (invalid,) = generation.message.invalid_tool_calls  # type: ignore[attr-defined]
    assert (invalid["name"], invalid["args"], invalid["id"]) == ("f", "[1, 2]", "c1")


def test_langchains_builtin_providers_are_a_mapping_of_names() -> None:
    from langchain.chat_models.base import _BUILTIN_PROVIDERS

    assert {"openai", "anthropic", "ollama"} <= set(_BUILTIN_PROVIDERS)
    assert {"together", "local", "openai", "anthropic"} <= set(known_providers())


class _State(TypedDict):
    seen: list[str]


def test_runnable_callable_gives_a_node_both_faces_and_its_runtime() -> None:
    from langgraph._internal._runnable import RunnableCallable

    def func(state: _State, runtime: Runtime[str]) -> dict[str, Any]:
        return {"seen": [f"sync {runtime.context}"]}

    async def afunc(state: _State, runtime: Runtime[str]) -> dict[str, Any]:
        return {"seen": [f"async {runtime.context}"]}

    builder = StateGraph(_State, context_schema=str)
    builder.add_node("node", RunnableCallable(func, afunc, name="node"))
    builder.add_edge(START, "node")
    builder.add_edge("node", END)
    app = builder.compile()
    assert app.invoke({"seen": []}, context="ctx")["seen"] == ["sync ctx"]

    import asyncio

    assert asyncio.run(app.ainvoke({"seen": []}, context="ctx"))["seen"] == ["async ctx"]


class _Seen(TypedDict):
    seen: Annotated[list[str], operator.add]


async def test_a_resumed_node_reads_its_steps_saved_writes_through_its_config() -> None:
    """In a subgraph (its steps saved under their own namespace): ``flaky`` fails beside ``ok``;
    on resume it runs alone and reads what ``ok`` saved, and nothing in the step's first run."""
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.types import Send

    from langgraph_moa.nodes.resumed import saved_writes

    read: list[list[tuple[str, Any]]] = []

    async def ok(state: _Seen) -> dict[str, Any]:
        return {"seen": ["ok"]}

    async def flaky(state: _Seen, runtime: Runtime[None]) -> dict[str, Any]:
        writes = await saved_writes(runtime)
        read.append([(channel, value) for _, channel, value in writes if channel == "seen"])
        if len(read) == 1:
            await asyncio.sleep(0.1)  # ``ok`` has ended and saved its write
            raise RuntimeError("first run")
        return {"seen": ["flaky"]}

    inner = StateGraph(_Seen)
    inner.add_node("ok", ok)
    inner.add_node("flaky", flaky)
    inner.add_conditional_edges(START, lambda s: [Send("flaky", s), Send("ok", s)], ["ok", "flaky"])
    outer = StateGraph(_Seen)
    outer.add_node("inner", inner.compile())
    outer.add_edge(START, "inner")
    app = outer.compile(checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "t"}}
    with pytest.raises(RuntimeError, match="first run"):
        await app.ainvoke({"seen": []}, config)
    assert (await app.ainvoke(None, config))["seen"] == ["flaky", "ok"]
    assert read == [[], [("seen", ["ok"])]]


def test_llama_models_have_token_get_text() -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    from llama_cpp import _internals

    assert callable(getattr(_internals.LlamaModel, "token_get_text", None))
    assert "_model" in llama_cpp.Llama.__init__.__code__.co_names


def test_a_streaming_callback_handler_makes_a_chat_model_stream() -> None:
    from langchain_core.language_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage

    from langgraph_moa.nodes.models.growing import Collector, Growing

    growing = Growing()
    model = GenericFakeChatModel(messages=iter([AIMessage("one two three")]))
    answer = model.invoke("hi", config={"callbacks": [Collector(growing)]})  # not .stream()
    assert answer.text == "one two three"
    assert growing.text() == "one two three" and growing.pieces > 1  # it came piece by piece


def test_langgraph_api_stamps_each_run_with_when_it_was_received() -> None:
    # graphs/retried.py reads it from the run's configurable; the server's own code sets it
    # (read, not imported: importing it needs a server's configuration).
    import importlib.util

    spec = importlib.util.find_spec("langgraph_api.models.run")
    assert spec is not None and spec.origin is not None
    assert '"__request_start_time_ms__"' in Path(spec.origin).read_text(encoding="utf-8")


def test_child_config_is_what_runnables_called_in_a_block_inherit() -> None:
    from langchain_core.runnables import RunnableLambda
    from langchain_core.runnables.config import ensure_config

    from langgraph_moa.nodes.childconfig import calls_with, child_config

    seen = RunnableLambda(lambda _: ensure_config().get("tags"))
    with calls_with({"tags": ["ours"]}):
        assert child_config() == {"tags": ["ours"]}
        assert seen.invoke(None) == ["ours"]
        with calls_with(None):
            assert seen.invoke(None) == []
    assert child_config() is None and seen.invoke(None) == []


def test_a_subgraphs_node_is_told_nested_by_its_checkpoint_namespace() -> None:
    from langgraph._internal._constants import NS_SEP

    from langgraph_moa.nodes import resumed

    assert resumed.NS_SEP == NS_SEP
    seen: list[bool] = []

    def node(state: _Seen, runtime: Runtime[None]) -> dict[str, Any]:
        seen.append(resumed.nested(runtime))
        return {}

    def graph() -> StateGraph[_Seen, None, _Seen, _Seen]:
        builder = StateGraph(_Seen)
        builder.add_node("node", node)
        builder.add_edge(START, "node")
        return builder

    graph().compile().invoke({"seen": []})
    outer = StateGraph(_Seen)
    outer.add_node("inner", graph().compile())
    outer.add_edge(START, "inner")
    outer.compile().invoke({"seen": []})
    assert seen == [False, True]


def test_uvicorns_h11_protocol_keeps_its_h11_connection_in_conn() -> None:
    import h11
    import uvicorn
    from uvicorn.protocols.http.h11_impl import H11Protocol
    from uvicorn.server import ServerState

    async def main() -> None:
        config = uvicorn.Config(app=lambda *_: None, http="h11")
        config.load()
        protocol = H11Protocol(config, ServerState(), app_state={})
        assert isinstance(protocol.conn, h11.Connection)
        protocol.conn.receive_data(b"GET / HTTP/1.1\r\nHo")
        assert protocol.conn.next_event() is h11.NEED_DATA
        assert protocol.conn.their_state is h11.IDLE and protocol.conn.trailing_data[0]

    asyncio.run(main())
    # uvicorn's own, each: asyncio.Protocol defines most of them too (as no-ops), so a subclass
    # calling super() would go on working, silently without uvicorn's flow control or parsing.
    hooks = ("connection_made", "data_received", "on_response_complete", "connection_lost")
    for hook in (*hooks, "pause_writing", "resume_writing"):  # the send deadline's too
        assert hook in H11Protocol.__dict__, hook


class _Boom(Exception):
    pass


async def _asgi(app: Any, path: str, body: bytes = b"") -> tuple[list[bytes], BaseException]:
    """POST ``body`` to ``path`` of ``app``: the body messages it sent, and what it raised."""
    sent: list[bytes] = []
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1),
        "root_path": "",
    }
    received = False

    async def receive() -> dict[str, Any]:
        nonlocal received
        if received:
            await asyncio.Event().wait()  # the client stays
        received = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            sent.append(message["body"])

    with pytest.raises(Exception) as raised:
        await app(scope, receive, send)
    return sent, raised.value


async def test_langserves_stream_sends_one_generic_error_event_for_any_failure() -> None:
    from fastapi import FastAPI
    from langchain_core.runnables import RunnableLambda
    from langserve import add_routes

    from langgraph_moa.apps.serve.langserve_routes import _is_generic_error

    def fail(_: str) -> str:
        raise _Boom("secret detail")

    app = FastAPI()
    add_routes(app, RunnableLambda(fail), path="/r", enabled_endpoints=("stream",))
    sent, raised = await _asgi(app, "/r/stream", b'{"input": "x"}')
    assert isinstance(raised, _Boom)  # raised again, after the event
    assert [_is_generic_error(chunk) for chunk in sent] == [False] * (len(sent) - 1) + [True]


async def test_starlette_raises_a_handled_error_after_the_start_under_a_runtime_error() -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response, StreamingResponse
    from starlette.routing import Route

    from langgraph_moa.apps.serve.langserve_routes import _cause

    async def body() -> AsyncIterator[bytes]:
        yield b"started"
        raise _Boom("the run's error")

    async def endpoint(request: Request) -> Response:
        return StreamingResponse(body())

    async def handled(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("never sent", status_code=500)

    app = Starlette(routes=[Route("/", endpoint, methods=["POST"])])
    app.add_exception_handler(_Boom, handled)
    sent, raised = await _asgi(app, "/")
    assert sent == [b"started"]
    assert type(raised) is RuntimeError and isinstance(raised.__cause__, _Boom)
    assert _cause(raised) is raised.__cause__
