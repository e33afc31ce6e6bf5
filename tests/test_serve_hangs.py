"""No silent waits and no multiplied runs: a stream starts at once and stays alive with SSE
comments; providers that hang end in a clear error within the server's deadline; a 5xx tells
OpenAI clients not to retry, so the real ``openai`` SDK with its default settings (2 retries)
runs the mixture once. Calls are counted at the fake provider."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest
from conftest import fake_context
from fake_openai import Failure, FakeOpenAIServer
from serving import app_for, running

from langgraph_moa.apps.serve.settings import DEFAULT_MAX_RUN_S, ServeSettings

QUESTION = [{"role": "user", "content": "Explain MoA."}]


def test_the_default_deadline_is_at_most_3_minutes() -> None:
    assert ServeSettings().max_run_s == DEFAULT_MAX_RUN_S <= 180


def test_a_stream_whose_providers_hang_starts_at_once_keeps_alive_and_ends_in_an_error(
    server: FakeOpenAIServer,
) -> None:
    for name in ("p1", "p2"):
        server.script(name, "never", failures=[Failure(hang=60)])
    app = app_for(fake_context(server, ["p1", "p2"]), max_run_s=3, keepalive_s=0.5)
    with running(app) as base:
        started = time.monotonic()
        lines: list[tuple[float, str]] = []
        with httpx.stream(
            "POST",
            f"{base}/v1/chat/completions",
            json={"model": "fake", "messages": QUESTION, "stream": True},
            timeout=30,
        ) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line:
                    lines.append((time.monotonic() - started, line))
    assert lines[0][0] < 2  # the bound is 1 s; generous on a shared machine
    assert lines[0][1].startswith(":")  # a comment before anything else
    pings = [t for t, line in lines if line.startswith(": ping")]
    assert len(pings) >= 3  # alive while the providers hang
    last = json.loads(lines[-1][1].removeprefix("data: "))
    assert last["error"]["code"] == "run_timeout"
    assert "--max-run-time" in last["error"]["message"]
    assert 2.5 < lines[-1][0] < 15
    assert server.wait_idle(5)  # the hung provider requests were closed
    assert all(r.disconnected for r in server.requests)
    assert server.requests_for("agg") == []


@pytest.mark.parametrize("stream", [False, True], ids=["not-streamed", "streamed"])
def test_the_openai_sdk_with_default_retries_runs_the_mixture_once(
    server: FakeOpenAIServer, stream: bool
) -> None:
    server.script("agg", "x", failures=[Failure(status=500)] * 20)
    app = app_for(fake_context(server, ["p1", "p2"], max_attempts=2, retry_base_s=0.05))
    with running(app) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused")  # max_retries: default 2
        with pytest.raises(openai.APIError) as raised:
            if stream:
                for _ in client.chat.completions.create(
                    model="fake", messages=QUESTION, stream=True
                ):
                    pass
            else:
                client.chat.completions.create(model="fake", messages=QUESTION)
    if not stream:
        assert isinstance(raised.value, openai.APIStatusError)
        assert raised.value.status_code == 502
        assert raised.value.response.headers["x-should-retry"] == "false"
    assert "aggregator" in str(raised.value.message)
    # One run: each proposer once, the aggregator its server-side max_attempts (2), no more.
    assert len(server.requests_for("p1")) == len(server.requests_for("p2")) == 1
    assert len(server.requests_for("agg")) == 2
