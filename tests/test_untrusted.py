"""What a server's client may set (nodes/untrusted.py), checked without a server: the servers'
own tests (test_langgraph_server_clients.py, test_serve_*.py) show the same rules end to end."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from conftest import fake_context
from fake_openai import FakeOpenAIServer
from langchain_core.messages import HumanMessage

import langgraph_moa.graphs.adapt as adapt_module
from langgraph_moa.graphs.moa import build_moa_graph
from langgraph_moa.nodes.errors import ClientSettingError
from langgraph_moa.nodes.untrusted import check_bind, check_models


@pytest.mark.parametrize(
    "model", ["local:.env", "local:model.GGUF", "local:~root", "local:/etc/passwd", "local:x.gguf"]
)
def test_a_client_names_only_bundled_local_models(model: str) -> None:
    # Any other name is a path local.py would look at: "not found" vs "not a GGUF file" would
    # tell the client about the server's files.
    for endpoints in (True, False):
        with pytest.raises(ClientSettingError, match=r"bundled name \('local:smollm2'\)"):
            check_models({"proposers": [model]}, endpoints=endpoints)
    check_models({"proposers": ["local:smollm2"], "aggregator": "local:smollm2"}, endpoints=True)


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
    graph = build_moa_graph(untrusted=True).compile()
    ctx = fake_context(server, ["p1", "p2"], layers=3)
    question = {"messages": [HumanMessage("hi")], "bind": {"tools": []}}
    await graph.ainvoke(question, context=ctx.model_dump(exclude_unset=True))
    assert len(server.requests) == 5  # the run went through its three layers
    (thread,) = checked
    assert thread is not threading.main_thread()


def test_a_client_names_only_the_providers_own_key_variable() -> None:
    # Any variable of the server would go to the provider as its key: GITHUB_TOKEN, say.
    for env in ("GITHUB_TOKEN", "OPENAI_API_KEY"):
        spec = {"model": "together:m", "api_key_env": env}
        with pytest.raises(ClientSettingError, match=r"provider's own key variable \(TOGETHER_API"):
            check_models({"aggregator": spec}, endpoints=True)
    with pytest.raises(ClientSettingError, match="provider's own key variable, or be left out"):
        local = {"model": "ollama:m", "api_key_env": "X_TOKEN"}  # no key of its own
        check_models({"aggregator": local}, endpoints=True)
    own = {"model": "together:m", "api_key_env": "TOGETHER_API_KEY"}
    check_models({"proposers": [own, {"model": "together:m"}]}, endpoints=True)
