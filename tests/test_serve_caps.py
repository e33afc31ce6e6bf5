"""What one request may cost: the server's caps refuse a run past them with a 400 naming the cap,
before any provider call (counted at the fake provider)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from conftest import fake_context, run_cli
from fake_openai import FakeOpenAIServer
from serving import app_for, running

from langgraph_moa.apps.serve.caps import check
from langgraph_moa.nodes.caps import Caps, calls_of, chunk_requests
from langgraph_moa.nodes.context import load_preset
from langgraph_moa.nodes.presets import preset_names

QUESTION = {"type": "human", "content": "What is MoA?"}


@pytest.fixture
def base(server: FakeOpenAIServer) -> Iterator[str]:
    with running(app_for(fake_context(server, ["p1", "p2"], max_attempts=1))) as url:
        yield url


def test_500_proposers_by_10_layers_is_400_at_once_and_calls_nothing(
    server: FakeOpenAIServer, base: str
) -> None:
    settings = {"proposers": [f"together:p{i}" for i in range(500)], "layers": 10}
    started = time.monotonic()
    response = httpx.post(
        f"{base}/moa/invoke",
        json={"input": {"messages": [QUESTION], "settings": settings}},
        timeout=30,
    )
    assert time.monotonic() - started < 5  # generous: the bound is 1 s on an idle machine
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "cost_cap_exceeded"
    assert "proposers per layer is 500" in error["message"]
    assert "--max-proposers" in error["message"]
    assert server.requests == []


@pytest.mark.parametrize(
    ("settings", "what"),
    [
        ({"layers": 5}, "layers is 5"),
        ({"max_attempts": 5}, "max_attempts is 5"),
        ({"timeout": 600}, "timeout (s) is 600"),
        ({"max_tokens": 100000}, "max_tokens is 100000"),
        (
            {"proposers": [f"together:p{i}" for i in range(8)], "layers": 4},
            "model calls per run is 25",
        ),
        # 1-token chunks: an answer in up to 4096 requests, each re-sending the prompt
        (
            {"staircase": True, "staircase_chunks": [1], "max_tokens": 4096},
            "staircase chunk requests per answer is 4096",
        ),
    ],
)
def test_every_cap_on_every_langserve_route(
    server: FakeOpenAIServer, base: str, settings: dict[str, object], what: str
) -> None:
    one = {"messages": [QUESTION], "settings": settings}
    for route, body in (
        ("invoke", {"input": one}),
        ("stream", {"input": one}),
        ("stream_log", {"input": one}),
        ("batch", {"inputs": [one]}),
    ):
        response = httpx.post(f"{base}/moa/{route}", json=body, timeout=30)
        assert response.status_code == 400, (route, response.text)
        assert what in response.json()["error"]["message"], route
    assert server.requests == []


def test_openai_route_names_max_tokens(server: FakeOpenAIServer, base: str) -> None:
    for field, value in (("max_tokens", 10**12), ("max_completion_tokens", 5000)):
        response = httpx.post(
            f"{base}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}], field: value},
            timeout=30,
        )
        assert response.status_code == 400
        assert response.json()["error"]["param"] == field
        assert response.json()["error"]["code"] == "cost_cap_exceeded"
    assert server.requests == []


def test_a_lower_cap_refuses_a_model_that_exceeds_it(server: FakeOpenAIServer) -> None:
    app = app_for(fake_context(server, ["p1", "p2", "p3"]), caps=Caps(proposers=2))
    with running(app) as url:
        response = httpx.post(
            f"{url}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "model"
    assert server.requests == []


def test_every_preset_fits_the_default_caps() -> None:
    for name in preset_names():
        check(load_preset(name), Caps(), "model")  # raises past a cap
        staircase = load_preset(name).model_copy(update={"staircase": True, "max_tokens": 4096})
        check(staircase, Caps(), "model")  # the -staircase models, at the largest max_tokens
    assert max(calls_of(load_preset(n)) for n in preset_names()) == 13  # moa: 6 + 6 + 1


def test_a_default_model_past_a_cap_stops_the_server_saying_what_to_do() -> None:
    done = run_cli(
        "serve",
        "--preset",
        "moa",
        "--max-calls",
        "10",
        "--port",
        "0",
        env={"TOGETHER_API_KEY": "k"},
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "moa: error: the default model 'moa': model calls per run is 13, above this server's cap "
        "of 10 per request (moa serve --max-calls); raise the cap or serve another default model "
        "(--preset, --config)"
    )


def test_chunk_requests_follow_the_staircase_writer() -> None:
    """Each chunk but the last is its schedule's size, the last size repeating."""
    assert chunk_requests([16, 32, 64, 128], 512) == 7  # 16+32+64+128+128+128+128 >= 512
    assert chunk_requests([16, 32, 64, 128], 4096) == 35
    assert chunk_requests([100], 100) == 1 and chunk_requests([100], 101) == 2
