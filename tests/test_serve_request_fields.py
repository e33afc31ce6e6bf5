"""OpenAI request fields beyond the conversation that change what the client gets: ``stop`` is
honoured, whichever client sends it (the ``openai`` SDK, LangChain's ``ChatOpenAI`` as a ReAct
agent binds it); fields MoA cannot honour (audio, logprobs, ``logit_bias``) and values of the
wrong type (``max_tokens: true``) are a 400 in OpenAI's shape naming the field, before any
provider is paid."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
import uvicorn
from conftest import fake_context
from fake_openai import Failure, FakeOpenAIServer, split_tokens
from langchain_openai import ChatOpenAI
from serving import app_for, running

from langgraph_moa.nodes import Context
from langgraph_moa.nodes.models import resources, settings_for
from langgraph_moa.nodes.models.resources import RESOURCES

# The aggregator writes past the point a ReAct agent stops it: the tool's observation is the
# agent's to fill in. "\nObservation:" spans two of the fake's stream tokens ("tool\n", then
# "Observation: ").
ANSWER = "Thought: I should call the weather tool\nObservation: sunny, said nobody\nFinal: 42"
STOP = "\nObservation:"
WANTED = "Thought: I should call the weather tool"
ASK = [{"role": "user", "content": "What's the weather?"}]


@pytest.fixture
def base(server: FakeOpenAIServer) -> Iterator[str]:
    server.script("p1", "a proposal")
    server.script("agg", ANSWER)
    with running(app_for(fake_context(server, ["p1"]))) as url:
        yield url


def client(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)


def test_the_answer_ends_before_the_first_stop_sequence(base: str) -> None:
    sdk = client(base)
    cases: list[tuple[str | list[str], str]] = [
        (STOP, WANTED),
        (["never said", STOP], WANTED),
        ([STOP, " call"], "Thought: I should"),  # the first in the text, whatever the order
    ]
    for stop, wanted in cases:
        reply = sdk.chat.completions.create(model="fake", messages=ASK, stop=stop)
        assert reply.choices[0].message.content == wanted
        assert reply.choices[0].finish_reason == "stop"

        chunks = list(
            sdk.chat.completions.create(
                model="fake",
                messages=ASK,
                stop=stop,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == wanted  # the sequence split across tokens was never sent
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0

    # Text that only starts like a stop sequence is sent whole at the end.
    reply = sdk.chat.completions.create(model="fake", messages=ASK, stop="42!")
    assert reply.choices[0].message.content == ANSWER
    streamed = sdk.chat.completions.create(model="fake", messages=ASK, stop="42!", stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == ANSWER


def test_an_answer_asked_again_is_cut_afresh(base: str, server: FakeOpenAIServer) -> None:
    # With tools a broken answer starts over after a blank line; its first attempt reached the
    # stop sequence, which must not keep the new answer from the client.
    server.fail("agg", Failure(drop_after_tokens=8))
    tool = {"type": "function", "function": {"name": "weather", "parameters": {}}}
    streamed = client(base).chat.completions.create(
        model="fake", messages=ASK, stop=STOP, tools=[tool], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert text == f"{WANTED}\n\n{WANTED}"
    assert len(server.requests_for("agg")) == 2


def test_a_langchain_agent_model_gets_its_stop_sequence_honoured(base: str) -> None:
    model = ChatOpenAI(model="fake", base_url=f"{base}/v1", api_key="unused", max_retries=0)
    assert model.invoke("What's the weather?", stop=[STOP]).content == WANTED
    streamed = "".join(str(c.content) for c in model.stream("What's the weather?", stop=[STOP]))
    assert streamed == WANTED


def test_the_aggregators_provider_gets_the_stop_sequences_and_stops_there(
    base: str, server: FakeOpenAIServer
) -> None:
    # They were only cut here: the aggregator wrote (and billed) its answer to the end. Now its
    # request carries them, so a provider that honours them stops; the proposers' requests
    # carry none (their answers are the aggregator's material, not the client's answer).
    server.script("agg", ANSWER, honour_stop=True)
    sdk = client(base)
    reply = sdk.chat.completions.create(model="fake", messages=ASK, stop=STOP)
    chunks = list(
        sdk.chat.completions.create(
            model="fake",
            messages=ASK,
            stop=[STOP],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert reply.choices[0].message.content == WANTED
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == WANTED
    aggregator, proposers = server.requests_for("agg"), server.requests_for("p1")
    assert len(aggregator) == len(proposers) == 2
    assert [r.body.get("stop") for r in aggregator] == [[STOP], [STOP]]
    assert all("stop" not in r.body for r in proposers)
    # What the client is billed for: the aggregator's tokens up to the stop, not its whole answer.
    assert all(r.chunks_sent == len(split_tokens(WANTED)) for r in aggregator)
    assert reply.usage is not None and chunks[-1].usage is not None
    assert reply.usage.completion_tokens == chunks[-1].usage.completion_tokens
    assert reply.usage.completion_tokens == sum(r.chunks_sent for r in server.requests[:2])
    assert reply.usage.completion_tokens < len(split_tokens(ANSWER))
    # Without stop sequences, none is sent.
    sdk.chat.completions.create(model="fake", messages=ASK)
    assert "stop" not in server.requests_for("agg")[-1].body


def test_a_provider_that_refuses_stop_is_asked_again_without_and_not_sent_it_again(
    base: str, server: FakeOpenAIServer
) -> None:
    # OpenAI's reasoning models answer 400 to a request with stop: the answer must still come
    # (cut here), not fail after the proposers were paid. The refusal is remembered for the
    # model at its endpoint, so no later request pays the refused round trip again. The model
    # is this test's own: what the process remembers of it reaches no other test.
    server.script("reasoner", ANSWER, refuse_stop=True)
    with running(app_for(fake_context(server, ["p1"], aggregator="reasoner"))) as url:
        sdk = client(url)
        for _ in range(3):
            reply = sdk.chat.completions.create(model="fake", messages=ASK, stop=STOP)
            assert reply.choices[0].message.content == WANTED
        streamed = sdk.chat.completions.create(model="fake", messages=ASK, stop=STOP, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == WANTED
    first, *later = server.requests_for("reasoner")
    assert first.status == 400 and first.body["stop"] == [STOP]
    assert [(r.status, "stop" in r.body) for r in later] == [(200, False)] * 4
    # Another model at the same endpoint still gets them.
    client(base).chat.completions.create(model="fake", messages=ASK, stop=STOP)
    assert server.requests_for("agg")[-1].body["stop"] == [STOP]


def test_the_refusals_remembered_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    # A server's clients may name any number of models: only the most recent refusals are kept.
    monkeypatch.setattr(resources, "MAX_STOP_REFUSALS", 4)
    base = settings_for(Context().aggregator, Context())
    named = [dataclasses.replace(base, model=f"together:refuser-{i}") for i in range(10)]
    for settings in named:
        RESOURCES.note_refuses_stop(settings)
    assert [RESOURCES.refuses_stop(s) for s in named] == [False] * 6 + [True] * 4


def test_another_400_is_not_asked_again(base: str, server: FakeOpenAIServer) -> None:
    server.fail("agg", Failure(status=400, message="bad request", param="messages"))
    with pytest.raises(openai.APIStatusError):
        client(base).chat.completions.create(model="fake", messages=ASK, stop=STOP)
    assert len(server.requests_for("agg")) == 1
    # Nor is it taken for a refusal of stop: the next request carries them.
    client(base).chat.completions.create(model="fake", messages=ASK, stop=STOP)
    assert server.requests_for("agg")[-1].body["stop"] == [STOP]


def test_a_refusal_of_these_stop_sequences_is_not_remembered_for_the_model(
    base: str, server: FakeOpenAIServer
) -> None:
    # A 400 naming stop for another reason than "unsupported" (one client's sequences too long,
    # say) is asked again without them, but the model still gets the next caller's: remembered,
    # one client would turn stop off (and the tokens after it on) for every caller.
    refused = Failure(status=400, message="'stop' is too long", code="invalid_value", param="stop")
    server.fail("agg", refused)
    sdk = client(base)
    assert sdk.chat.completions.create(model="fake", messages=ASK, stop=STOP).choices
    sdk.chat.completions.create(model="fake", messages=ASK, stop=STOP)
    assert [(r.status, "stop" in r.body) for r in server.requests_for("agg")] == [
        (400, True),
        (200, False),
        (200, True),
    ]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"modalities": ["audio"]}, "modalities"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": 5}, "stop"),
    ],
    ids=["audio", "modalities", "top-logprobs", "logit-bias", "five-stops", "stop-not-text"],
)
def test_fields_moa_cannot_honour_are_a_400_before_any_call(
    server: FakeOpenAIServer, base: str, fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(base).chat.completions.create(model="fake", messages=ASK, extra_body=fields)
    error = caught.value.body
    assert isinstance(error, dict) and error["param"] == param, error
    assert error["type"] == "invalid_request_error"
    assert server.requests == []


def test_fields_that_ask_for_nothing_unsupported_still_pass(base: str) -> None:
    # What clients send by default: text only, no bias, no log probabilities.
    reply = client(base).chat.completions.create(
        model="fake",
        messages=ASK,
        modalities=["text"],
        logit_bias={},
        logprobs=False,
        top_p=1,
    )
    assert reply.choices[0].message.content == ANSWER


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"max_tokens": True}, "max_tokens"),  # was read as max_tokens=1: a one-token answer
        ({"max_completion_tokens": 200.5}, "max_completion_tokens"),
        ({"temperature": True}, "temperature"),
        ({"seed": "7"}, "seed"),
        ({"n": "2"}, "n"),
        # Was read as true, unlike every other bool of the request.
        ({"stream_options": {"include_usage": "yes"}}, "stream_options.include_usage"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
            "messages[0].content[0].text",
        ),
    ],
    ids=[
        "bool-tokens",
        "float-tokens",
        "bool-temperature",
        "text-seed",
        "text-n",
        "text-include-usage",
        "content",
        "text",
    ],
)
def test_a_value_of_the_wrong_type_is_a_400_naming_the_field(
    server: FakeOpenAIServer, base: str, fields: dict[str, Any], param: str
) -> None:
    body = {"model": "fake", "messages": ASK, **fields}
    response = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"].startswith(f"{param}: ")
    assert server.requests == []


async def test_a_new_seed_per_request_keeps_the_servers_models_bounded(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each distinct seed (or temperature...) is a chat model of its own; a client sending a new
    # one per request grew the server's memory without bound. The server here runs in this
    # test's event loop, whose models RESOURCES counts.
    monkeypatch.setattr(resources, "MAX_MODELS", 16)
    server.script("p1", "a proposal")
    server.script("agg", ANSWER)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app_for(fake_context(server, ["p1"])), log_level="warning")
    uvi = uvicorn.Server(config)
    serving = asyncio.create_task(uvi.serve(sockets=[sock]))
    try:
        while not uvi.started:
            assert not serving.done()
            await asyncio.sleep(0.01)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1/chat/completions"
        async with httpx.AsyncClient(timeout=30) as http:
            for seed in range(40):
                reply = await http.post(url, json={"messages": ASK, "seed": seed})
                assert reply.json()["choices"][0]["message"]["content"] == ANSWER
        assert {r.body.get("seed") for r in server.requests} == set(range(40))  # each honoured
        assert RESOURCES.models() <= 16
    finally:
        uvi.should_exit = True
        await serving
        sock.close()


@pytest.mark.parametrize("field", ["response_format", "tools"])
def test_a_schema_too_large_for_the_aggregators_window_is_a_400_before_any_call(
    server: FakeOpenAIServer, base: str, field: str
) -> None:
    # As a response format it paid the proposers, then the aggregator's provider refused the
    # request (a 502); as tools the proposers' own prompts could not hold it (a 400 before any
    # call). Both are the client's to fix, before anything is paid. The aggregator's window
    # here is the 8192-token default of a model the catalog does not know.
    schema = {"type": "object", "properties": {"x": {"enum": list(range(20_000))}}}
    if field == "tools":
        fields: dict[str, Any] = {
            "tools": [{"type": "function", "function": {"name": "f", "parameters": schema}}]
        }
    else:
        fields = {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": schema},
            }
        }
    with pytest.raises(openai.BadRequestError) as caught:
        client(base).chat.completions.create(model="fake", messages=ASK, **fields)
    error = caught.value.body
    assert isinstance(error, dict)
    assert (error["code"], error["param"]) == ("context_length_exceeded", field)
    assert "together:agg's context window of 8192 tokens" in error["message"]
    assert server.requests == []
    # A schema that fits is sent on.
    small = {"type": "object", "properties": {"x": {"enum": list(range(20))}}}
    server.script("agg", '{"x": 3}')
    fields = {
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": small}}
    }
    reply = client(base).chat.completions.create(model="fake", messages=ASK, **fields)
    assert reply.choices[0].message.content == '{"x": 3}'


@pytest.mark.parametrize("field", ["response_format", "tools"])
@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_nan_in_a_schema_is_a_400_before_any_call(
    server: FakeOpenAIServer, base: str, field: str, number: float
) -> None:
    # Python's json reads NaN and Infinity from a body; JSON cannot carry them on to the
    # aggregator's provider, so the run paid its proposers, then answered a 502.
    schema = {"type": "object", "properties": {"x": {"type": "number", "maximum": number}}}
    part: Any = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    if field == "tools":
        part = [{"type": "function", "function": {"name": "f", "parameters": schema}}]
    body = json.dumps({"model": "fake", "messages": ASK, field: part})  # NaN, Infinity as written
    reply = httpx.post(
        f"{base}/v1/chat/completions",
        content=body,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["param"] == field
    assert error["message"] == (
        f"{field} holds NaN or Infinity, which JSON cannot carry: give finite numbers"
    )
    assert server.requests == []
