"""What a server's client may set (nodes/untrusted.py), checked without a server: the servers'
own tests (test_langgraph_server_clients.py, test_serve_*.py) show the same rules end to end."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from conftest import fake_context
from fake_openai import FakeOpenAIServer
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

import langgraph_moa.graphs.adapt as adapt_module
import langgraph_moa.nodes.untrusted as untrusted_module
from langgraph_moa.graphs.moa import build_moa_graph
from langgraph_moa.nodes.errors import ClientSettingError, ConfigError, MoAError
from langgraph_moa.nodes.untrusted import SERVER_CHOSEN, Endpoints, check_bind, check_models

ANY = Endpoints(any=True)


@pytest.mark.parametrize(
    "model", ["local:.env", "local:model.GGUF", "local:~root", "local:/etc/passwd", "local:x.gguf"]
)
def test_a_client_names_only_bundled_local_models(model: str) -> None:
    # Any other name is a path local.py would look at: "not found" vs "not a GGUF file" would
    # tell the client about the server's files.
    for endpoints in (ANY, SERVER_CHOSEN):
        with pytest.raises(ClientSettingError, match=r"bundled name \('local:smollm2'\)"):
            check_models({"proposers": [model]}, endpoints=endpoints)
    check_models({"proposers": ["local:smollm2"], "aggregator": "local:smollm2"}, endpoints=ANY)


@pytest.mark.parametrize(
    ("bind", "said"),
    [
        ({"tools": ["x"]}, "bind.tools: must be a list of tool objects"),
        ({"tools": 5}, "bind.tools: must be a list of tool objects"),
        ({"tools": {"type": "function"}}, "bind.tools: must be a list of tool objects"),
        ({"response_format": "json"}, "bind.response_format: must be an object"),
        ({"temperature": 2}, "unknown key 'temperature'; allowed: tools, tool_choice"),
    ],
)
def test_a_bind_of_the_wrong_shape_is_one_clear_error(bind: dict[str, Any], said: str) -> None:
    with pytest.raises(ClientSettingError) as caught:
        check_bind(bind)
    assert said in str(caught.value)


def test_a_bind_of_the_right_shape_passes() -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    check_bind({"tools": [tool], "tool_choice": "f", "response_format": {"type": "json_object"}})


async def test_a_runs_bind_is_checked_once_and_off_the_event_loop(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It ran in every node and router, on the server's event loop (~0.5 s for a large schema).
    checked: list[threading.Thread] = []

    def check(bind: Any) -> None:
        checked.append(threading.current_thread())
        check_bind(bind)

    monkeypatch.setattr(adapt_module, "check_bind", check)
    monkeypatch.setenv("MOA_CLIENT_ENDPOINTS", server.base_url)
    graph = build_moa_graph(untrusted=True).compile()
    ctx = fake_context(server, ["p1", "p2"], layers=3)
    question = {"messages": [HumanMessage("hi")], "bind": {"tools": []}}
    await graph.ainvoke(question, context=ctx.model_dump(exclude_unset=True))
    assert len(server.requests) == 5  # the run went through its three layers
    (thread,) = checked
    assert thread is not threading.main_thread()


async def test_the_later_steps_know_the_checked_bind_without_a_digest_or_a_thread(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every later node and router took the bind's digest (json.dumps and sha256, ~3.6 ms for
    # 400 kB of tools) in a thread of its own, to learn it was the one the first step checked.
    digests: list[Any] = []
    hops: list[Any] = []
    digest, to_thread = untrusted_module._digest, adapt_module.asyncio.to_thread

    def counted(bind: Any) -> str | None:
        digests.append(bind)
        return digest(bind)

    async def hop(func: Any, *args: Any) -> Any:
        hops.append(func)
        return await to_thread(func, *args)

    monkeypatch.setattr(untrusted_module, "_digest", counted)
    monkeypatch.setattr(adapt_module.asyncio, "to_thread", hop)
    monkeypatch.setenv("MOA_CLIENT_ENDPOINTS", server.base_url)
    graph = build_moa_graph(untrusted=True).compile()
    ctx = fake_context(server, ["p1", "p2"], layers=3)
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    question = {"messages": [HumanMessage("hi")], "bind": {"tools": [tool]}}
    await graph.ainvoke(question, context=ctx.model_dump(exclude_unset=True))
    assert len(server.requests) == 5  # the run went through its three layers
    ours = [f.__name__ for f in hops if f.__module__.startswith("langgraph_moa")]
    assert len(digests) == 1 and ours == ["check_bind"]  # the first step's, noting it passed


@pytest.mark.parametrize("untrusted", [False, True], ids=["library", "server"])
async def test_a_command_writing_the_turns_bind_is_checked_where_it_is_read(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch, untrusted: bool
) -> None:
    # A Command goes past the first step, which checks the input's bind (test_langgraph_server_
    # clients.py: against a LangGraph server).
    monkeypatch.setenv("MOA_CLIENT_ENDPOINTS", server.base_url)
    graph = build_moa_graph(untrusted=untrusted).compile(checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "t"}}
    ctx = fake_context(server, ["p1"]).model_dump(exclude_unset=True)
    tools = [{"type": "function", "function": {"name": f"f{i}"}} for i in range(129)]
    update = {"turn_bind": {"tools": tools}, "messages": [HumanMessage("hi")]}
    with pytest.raises(ConfigError, match=r"^turn_bind\.tools: at most 128 tools, not 129") as e:
        await graph.ainvoke(Command(update=update, goto="aggregate"), config, context=ctx)
    assert isinstance(e.value, ClientSettingError) is untrusted
    assert server.requests == []


def test_a_client_names_only_the_providers_own_key_variable() -> None:
    # Any variable of the server would go to the provider as its key: GITHUB_TOKEN, say.
    for env in ("GITHUB_TOKEN", "OPENAI_API_KEY"):
        spec = {"model": "together:m", "api_key_env": env}
        with pytest.raises(ClientSettingError, match=r"provider's own key variable \(TOGETHER_API"):
            check_models({"aggregator": spec}, endpoints=ANY)
    with pytest.raises(ClientSettingError, match="provider's own key variable, or be left out"):
        local = {"model": "ollama:m", "api_key_env": "X_TOKEN"}  # no key of its own
        check_models({"aggregator": local}, endpoints=ANY)
    own = {"model": "together:m", "api_key_env": "TOGETHER_API_KEY"}
    check_models({"proposers": [own, {"model": "together:m"}]}, endpoints=ANY)


def test_a_client_names_only_the_endpoints_the_server_lists() -> None:
    # Else the server sends requests wherever a client says, into its own network too, and shows
    # the client what came back.
    listed = Endpoints.from_env(
        {"MOA_CLIENT_ENDPOINTS": "http://10.0.0.5:8000/v1, https://gw.example"}
    )
    for url in (
        "http://10.0.0.5:8000/v1",
        "http://10.0.0.5:8000/v1/",
        "http://10.0.0.5:8000/v1/deployments/a",
        "HTTP://10.0.0.5:8000/v1",
        "https://gw.example:443/openai",
    ):
        assert listed.allows(url), url
    for url in (
        "http://169.254.169.254/latest",  # the cloud's metadata service
        "http://10.0.0.5:8001/v1",  # another port
        "https://10.0.0.5:8000/v1",  # another scheme
        "http://10.0.0.5:8000/v10",  # a path that only begins the same
        "http://10.0.0.5:8000/v1/../admin",  # out of it again
        "http://10.0.0.5:8000/v1/%2e%2e/admin",
        "http://10.0.0.5:8000/",
        "http://10.0.0.5:8000@evil.example/v1",  # the listed host as a user name
        "http://user@10.0.0.5:8000/v1",
        "https://gw.example.evil.example",
        "file:///etc/passwd",
        "not a url",
    ):
        assert not listed.allows(url), url
    with pytest.raises(
        ClientSettingError, match=r"base_url 'http://169.254.169.254/' .*MOA_CLIENT_ENDPOINTS"
    ):
        check_models(
            {"proposers": [{"model": "openai:m", "base_url": "http://169.254.169.254/"}]},
            endpoints=listed,
        )
    check_models(
        {"aggregator": {"model": "openai:m", "base_url": "http://10.0.0.5:8000/v1"}},
        endpoints=listed,
    )

    unset = Endpoints.from_env({})
    assert not unset.allows("http://10.0.0.5:8000/v1")
    assert Endpoints.from_env({"MOA_CLIENT_ENDPOINTS": " * "}).allows("http://169.254.169.254/")
    for value in ("10.0.0.5:8000", "ftp://x", "http://"):
        with pytest.raises(ConfigError, match=r"MOA_CLIENT_ENDPOINTS: .* is not an http\(s\) URL"):
            Endpoints.from_env({"MOA_CLIENT_ENDPOINTS": f"http://ok, {value}"})


def test_a_base_url_holding_whitespace_or_a_control_character_is_refused() -> None:
    # urlsplit drops tabs and newlines: "http://10.0.0.5:8000\t/v1" passed for the URL listed,
    # then the HTTP client refused it (InvalidURL: "An internal error occurred", a 500).
    listed = Endpoints.from_env({"MOA_CLIENT_ENDPOINTS": "http://10.0.0.5:8000/v1"})
    for url, held in [
        ("http://10.0.0.5:8000\t/v1", r"'\\t' at 20"),
        ("http://10.0.0.5:8000/v1\n", r"'\\n' at 23"),
        (" http://10.0.0.5:8000/v1", "SPACE at 0"),
        ("http://10.0.0.5:8000/\u200bv1", "ZERO WIDTH SPACE at 21"),
    ]:
        assert not listed.allows(url)
        for endpoints in (listed, ANY):  # even where any endpoint may be named
            with pytest.raises(ClientSettingError, match=rf"aggregator: base_url .* holds {held}"):
                check_models(
                    {"aggregator": {"model": "openai:m", "base_url": url}}, endpoints=endpoints
                )
    with pytest.raises(ConfigError, match="MOA_CLIENT_ENDPOINTS: its entry 1"):
        Endpoints.from_env({"MOA_CLIENT_ENDPOINTS": "http://10.0.0.5:8000\t/v1"})


async def test_an_endpoint_the_server_does_not_list_is_refused_before_any_call(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MOA_CLIENT_ENDPOINTS", raising=False)
    graph = build_moa_graph(untrusted=True).compile()
    ctx = fake_context(server, ["p1"]).model_dump(exclude_unset=True)
    with pytest.raises(
        ClientSettingError, match=r"proposers\[0\]: base_url .* MOA_CLIENT_ENDPOINTS"
    ):
        await graph.ainvoke({"messages": [HumanMessage("hi")]}, context=ctx)
    assert server.requests == []
    monkeypatch.setenv("MOA_CLIENT_ENDPOINTS", server.base_url)
    graph = build_moa_graph(untrusted=True).compile()
    await graph.ainvoke({"messages": [HumanMessage("hi")]}, context=ctx)
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    ("model", "env", "address"),
    [
        ("vllm:m", "VLLM_HOST", "http://localhost:8000/v1"),
        ("ollama:m", "OLLAMA_HOST", "http://localhost:11434/v1"),
        ("lmstudio:m", "LMSTUDIO_HOST", "http://localhost:1234/v1"),
    ],
)
def test_a_local_servers_model_goes_only_where_the_operator_runs_one(
    model: str, env: str, address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without a base_url such a model goes to a port of the server's own machine.
    monkeypatch.delenv(env, raising=False)
    for endpoints in (Endpoints.from_env({}), SERVER_CHOSEN):
        for spec in (model, {"model": model}):
            with pytest.raises(ClientSettingError, match=rf"{address} on the server's own machine"):
                check_models({"layer_proposers": [[spec]]}, endpoints=endpoints)
    check_models({"aggregator": model}, endpoints=Endpoints((address,)))  # listed
    check_models({"aggregator": model}, endpoints=ANY)
    monkeypatch.setenv(env, "http://10.0.0.7:9000")  # the operator runs one
    check_models({"aggregator": model}, endpoints=SERVER_CHOSEN)


@pytest.fixture
def redirecting(server: FakeOpenAIServer) -> Iterator[str]:
    """A listed endpoint whose every POST is redirected to the fake provider, not listed."""

    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(307)
            self.send_header("Location", f"{server.base_url.rstrip('/')}/chat/completions")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    with ThreadingHTTPServer(("127.0.0.1", 0), Redirect) as http:
        threading.Thread(target=http.serve_forever, daemon=True).start()
        yield f"http://127.0.0.1:{http.server_port}/v1"
        http.shutdown()


async def test_a_listed_endpoint_cannot_redirect_a_run_elsewhere(
    server: FakeOpenAIServer, redirecting: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOA_CLIENT_ENDPOINTS", redirecting)
    graph = build_moa_graph(untrusted=True).compile()
    ctx = {"aggregator": {"model": "openai:agg", "base_url": redirecting}, "layers": 1}
    with pytest.raises(MoAError, match="307"):
        await graph.ainvoke({"messages": [HumanMessage("hi")]}, context=ctx)
    assert server.requests == []  # the prompt went nowhere else
