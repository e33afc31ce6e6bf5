"""What chat UIs and the ``openai`` SDK need of the server, as they behave: the SDK's
``models.retrieve``, strict booleans, Open WebUI's background tasks at one call, and a config
file that cannot silently replace a preset."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from conftest import fake_context
from fake_openai import FakeOpenAIServer
from serving import app_for, running

from langgraph_moa.apps.serve.registry import ModelRegistry
from langgraph_moa.nodes.errors import ConfigError

QUESTION = [{"role": "user", "content": "hi"}]


@pytest.fixture
def base(server: FakeOpenAIServer) -> Iterator[str]:
    with running(app_for(fake_context(server, ["p1"], max_attempts=1))) as url:
        yield url


def test_models_retrieve(base: str) -> None:
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
    assert client.models.retrieve("fake").id == "fake"
    assert client.models.retrieve("moa-lite").id == "moa-lite"
    with pytest.raises(openai.NotFoundError) as raised:
        client.models.retrieve("gpt-4o")
    assert raised.value.code == "model_not_found"


def test_stream_must_be_a_boolean(server: FakeOpenAIServer, base: str) -> None:
    body = {"model": "fake", "messages": QUESTION, "stream": "yes"}
    response = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "stream"
    assert server.requests == []


def test_a_config_named_like_a_preset_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "seed.toml"
    path.write_text('proposers = ["together:x"]\naggregator = "together:y"\n')
    with pytest.raises(ConfigError, match="named like the built-in preset 'seed'"):
        ModelRegistry.from_flags(None, str(path))


def test_open_webuis_title_request_is_one_call(server: FakeOpenAIServer, base: str) -> None:
    server.script("agg", '{"title": "MoA explained"}')
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
    task = "### Task:\nGenerate a concise, 3-5 word title with an emoji summarizing the chat."
    conversation = [*QUESTION, {"role": "assistant", "content": "hello"}]
    answer = client.chat.completions.create(
        model="fake", messages=[*conversation, {"role": "user", "content": task}]
    )
    assert answer.choices[0].message.content == '{"title": "MoA explained"}'
    assert [r.model for r in server.requests] == ["agg"]  # no proposer ran
    server.reset()
    client.chat.completions.create(model="fake", messages=QUESTION)  # a user's question
    assert sorted(r.model for r in server.requests) == ["agg", "p1"]
