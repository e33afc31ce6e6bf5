"""``moa serve``'s Chat Completions with the official ``openai`` client, sync and async, streamed
and not, backed by the fake OpenAI-compatible provider server (all over 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from conftest import fake_context, spec
from fake_openai import (
    FakeOpenAIServer,
    RecordedRequest,
    count_prompt_tokens,
    split_tokens,
)
from serving import ServeProcess, app_for, running, serve_env

from langgraph_moa.graphs import graph
from langgraph_moa.nodes.context import Context

ANSWER = "The mixture's final answer, written by the aggregator after reading both proposals."
PROPOSALS = {"p1": "First proposal: alpha beta gamma.", "p2": "Second proposal: delta epsilon."}
CONVERSATION: list[Any] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is MoA?"},
    {"role": "assistant", "content": "Mixture-of-Agents."},
    {"role": "user", "content": [{"type": "text", "text": "Explain it in one line."}]},
]


def script(server: FakeOpenAIServer) -> None:
    for name, text in PROPOSALS.items():
        server.script(name, text)
    server.script("agg", ANSWER)


@pytest.fixture
def base(server: FakeOpenAIServer) -> Iterator[str]:
    script(server)
    with running(app_for(fake_context(server, list(PROPOSALS)))) as url:
        yield url


def client(base: str, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, **kw)


def expected_usage(requests: list[RecordedRequest]) -> dict[str, int]:
    """What the fake server billed for every call of the run."""
    prompt = sum(count_prompt_tokens(r.messages) for r in requests)
    completion = sum(len(split_tokens(r.reply or "")) for r in requests)
    total = prompt + completion
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}


def assert_whole_conversation_sent(server: FakeOpenAIServer) -> None:
    for model in (*PROPOSALS, "agg"):
        (request,) = server.requests_for(model)
        turns = [(m["role"], m["content"]) for m in request.messages if m["role"] != "system"]
        assert turns == [
            ("user", "What is MoA?"),
            ("assistant", "Mixture-of-Agents."),
            ("user", "Explain it in one line."),
        ]
        assert "You are terse." in request.messages[0]["content"]


def test_non_streamed_answer_is_the_aggregators_and_usage_adds_up(
    server: FakeOpenAIServer, base: str
) -> None:
    result = client(base).chat.completions.create(model="fake", messages=CONVERSATION)
    assert result.choices[0].message.content == ANSWER
    assert result.choices[0].finish_reason == "stop"
    assert result.model == "fake"
    assert len(server.requests) == 3  # two proposers and the aggregator
    assert result.usage is not None
    counts = {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert result.usage.model_dump(include=counts) == expected_usage(server.requests)
    assert_whole_conversation_sent(server)
    # The aggregator read both proposals; the answer holds none of their text.
    (agg,) = server.requests_for("agg")
    assert all(text in agg.messages[0]["content"] for text in PROPOSALS.values())
    assert not getattr(result.choices[0].message, "reasoning_content", None)


def test_text_parts_by_the_responses_apis_names_are_text(
    server: FakeOpenAIServer, base: str
) -> None:
    # A client replaying a Responses API history: the same conversation, its text in input_text
    # and output_text parts, is answered as the plain one (it was a 400 "not supported yet").
    def parts(kind: str, text: str) -> list[dict[str, str]]:
        return [{"type": kind, "text": text}]

    conversation: list[Any] = [
        {"role": "system", "content": parts("input_text", "You are terse.")},
        {"role": "user", "content": parts("input_text", "What is MoA?")},
        {"role": "assistant", "content": parts("output_text", "Mixture-of-Agents.")},
        CONVERSATION[-1],
    ]
    result = client(base).chat.completions.create(model="fake", messages=conversation)
    assert result.choices[0].message.content == ANSWER
    assert_whole_conversation_sent(server)
    # An image under the Responses API's name is still refused, as any image.
    picture: Any = {"type": "input_image", "image_url": "https://x.test/cat.png"}
    server.requests.clear()
    with pytest.raises(openai.BadRequestError, match="'input_image' are not supported"):
        client(base).chat.completions.create(
            model="fake",
            messages=[{"role": "user", "content": [picture]}],
        )
    assert server.requests == []


def test_streamed_answer_ends_with_usage_and_done(server: FakeOpenAIServer, base: str) -> None:
    stream = client(base).chat.completions.create(
        model="fake",
        messages=CONVERSATION,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ANSWER
    assert all(p not in text for p in PROPOSALS.values())
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.total_tokens == expected_usage(server.requests)["total_tokens"]
    assert all(c.usage is None for c in chunks[:-1])
    assert_whole_conversation_sent(server)


def test_raw_stream_is_sse_ending_in_done(base: str) -> None:
    import httpx

    with httpx.stream(
        "POST",
        f"{base}/v1/chat/completions",
        json={"model": "fake", "messages": CONVERSATION, "stream": True},
        timeout=30,
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[0].startswith(":")  # a comment at once, before the mixture has anything
    assert all(line.startswith("data: ") for line in lines[1:])
    assert lines[-1] == "data: [DONE]"


async def test_async_client_streamed_and_not(server: FakeOpenAIServer, base: str) -> None:
    aclient = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
    result = await aclient.chat.completions.create(model="fake", messages=CONVERSATION)
    assert result.choices[0].message.content == ANSWER
    assert result.usage is not None
    assert result.usage.total_tokens == expected_usage(server.requests)["total_tokens"]
    server.requests.clear()
    stream = await aclient.chat.completions.create(
        model="fake", messages=CONVERSATION, stream=True, stream_options={"include_usage": True}
    )
    parts, usage = [], None
    async for chunk in stream:
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(parts) == ANSWER
    assert usage is not None
    assert usage.total_tokens == expected_usage(server.requests)["total_tokens"]
    await aclient.close()


def test_request_fields_become_the_runs_defaults(server: FakeOpenAIServer, base: str) -> None:
    client(base).chat.completions.create(
        model="fake", messages=CONVERSATION, temperature=0.25, max_completion_tokens=40, seed=7
    )
    for request in server.requests:
        assert request.body["temperature"] == 0.25
        assert request.body["max_tokens"] == 40
        assert request.body["seed"] == 7
    server.requests.clear()
    client(base).chat.completions.create(model="fake", messages=CONVERSATION, max_tokens=30)
    assert {r.body["max_tokens"] for r in server.requests} == {30}


def test_proposals_as_reasoning_content_on_request(server: FakeOpenAIServer, base: str) -> None:
    c = client(base)
    result = c.chat.completions.create(
        model="fake", messages=CONVERSATION, extra_body={"show_proposals": True}
    )
    reasoning = result.choices[0].message.reasoning_content  # type: ignore[attr-defined]
    assert all(text in reasoning for text in PROPOSALS.values())
    assert "together:p1" in reasoning
    assert result.choices[0].message.content == ANSWER

    stream = c.chat.completions.create(
        model="fake", messages=CONVERSATION, stream=True, extra_body={"show_proposals": True}
    )
    kinds = []
    for chunk in stream:
        delta = chunk.choices[0].delta if chunk.choices else None
        if delta is not None and getattr(delta, "reasoning_content", None):
            kinds.append(("reasoning", delta.reasoning_content))  # type: ignore[attr-defined]
        elif delta is not None and delta.content:
            kinds.append(("content", delta.content))
    first_content = next(i for i, (k, _) in enumerate(kinds) if k == "content")
    reasoning_parts = [t for k, t in kinds if k == "reasoning"]
    assert len(reasoning_parts) == 2 and all(k == "reasoning" for k, _ in kinds[:first_content])
    assert "".join(t for k, t in kinds if k == "content") == ANSWER


def test_the_server_default_sends_proposals(server: FakeOpenAIServer) -> None:
    script(server)
    app = app_for(fake_context(server, list(PROPOSALS)), show_proposals=True)
    with running(app) as base:
        shown = client(base).chat.completions.create(model="fake", messages=CONVERSATION)
        hidden = client(base).chat.completions.create(
            model="fake", messages=CONVERSATION, extra_body={"show_proposals": False}
        )
    assert PROPOSALS["p1"] in shown.choices[0].message.reasoning_content  # type: ignore[attr-defined]
    assert not getattr(hidden.choices[0].message, "reasoning_content", None)


def test_models_lists_presets_and_config_and_model_picks_one(server: FakeOpenAIServer) -> None:
    script(server)
    other = Context(proposers=[spec(server, "other-p")], aggregator=spec(server, "other-agg"))
    from langgraph_moa.apps.serve.app import create_app
    from langgraph_moa.apps.serve.registry import ModelRegistry
    from langgraph_moa.apps.serve.settings import ServeSettings

    mine = fake_context(server, list(PROPOSALS))
    registry = ModelRegistry("fake", {"fake": mine, "other": other})
    with running(create_app(ServeSettings(), registry)) as base:
        c = client(base)
        ids = [m.id for m in c.models.list()]
        assert ids[:2] == ["fake", "other"]
        assert {"seed", "moa", "moa-lite", "self-moa", "together", "local"} <= set(ids)
        c.chat.completions.create(model="other", messages=CONVERSATION)
        assert {r.model for r in server.requests} == {"other-p", "other-agg"}
        server.requests.clear()
        # No model: the server's default.
        c.post("/chat/completions", body={"messages": CONVERSATION}, cast_to=object)
        assert {r.model for r in server.requests} == {"p1", "p2", "agg"}


def test_chatopenai_pointed_at_moa_serve_is_a_proposer_of_another_mixture(
    server: FakeOpenAIServer, base: str
) -> None:
    from langchain_core.messages import HumanMessage

    from langgraph_moa.nodes.context import ModelSpec

    server.script("outer-p", "An outer proposal.")
    server.script("outer-agg", "The outer answer.")
    outer = Context(
        proposers=[
            ModelSpec(model="openai:fake", base_url=f"{base}/v1"),  # a base_url gets no key
            spec(server, "outer-p"),
        ],
        aggregator=spec(server, "outer-agg"),
    )

    import asyncio

    state = asyncio.run(graph.ainvoke({"messages": [HumanMessage("Explain MoA.")]}, context=outer))
    assert state["messages"][-1].content == "The outer answer."
    inner, plain = state["layers"][0]
    assert inner["model"] == "openai:fake" and inner["text"] == ANSWER
    assert plain["text"] == "An outer proposal."
    assert inner["usage"]["total_tokens"] > 0  # the nested mixture's summed usage, streamed
    (outer_agg,) = server.requests_for("outer-agg")
    assert ANSWER in outer_agg.messages[0]["content"]
    # The inner mixture really ran: its proposers and aggregator were called.
    assert {r.model for r in server.requests} >= {"p1", "p2", "agg", "outer-p", "outer-agg"}


def test_moa_serve_process_with_a_preset(server: FakeOpenAIServer) -> None:
    """The command a user runs: ``moa serve --preset seed``, Together models via the fake."""
    served = ServeProcess("--preset", "seed", env=serve_env(server.base_url))
    try:
        c = client(served.url)
        result = c.chat.completions.create(model="seed", messages=CONVERSATION)
        assert result.choices[0].message.content.startswith(
            "Answer from mistralai/Mixtral-8x22B-Instruct-v0.1"
        )
        assert len(server.requests) == 5  # 4 proposers + the aggregator
        assert result.usage is not None
        assert result.usage.total_tokens == expected_usage(server.requests)["total_tokens"]
    finally:
        served.stop()
    assert served.proc.returncode == 0
    assert "Traceback" not in served.text()
