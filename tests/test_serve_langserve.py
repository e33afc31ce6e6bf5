"""LangServe's routes on ``moa serve``, driven by ``langserve.RemoteRunnable`` over HTTP."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from conftest import fake_context
from fake_openai import Failure, FakeOpenAIServer
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage
from langserve import RemoteRunnable
from serving import app_for, running

ANSWER = "The aggregated answer, token by token, from the final model."
PROPOSALS = {"p1": "proposal one text", "p2": "proposal two text"}
CONVERSATION = [SystemMessage("Be brief."), HumanMessage("What is MoA?")]


@pytest.fixture
def base(server: FakeOpenAIServer) -> Iterator[str]:
    for name, text in PROPOSALS.items():
        server.script(name, text)
    server.script("agg", ANSWER)
    with running(app_for(fake_context(server, list(PROPOSALS), max_attempts=1))) as url:
        yield url


@asynccontextmanager
async def aremote(base: str) -> AsyncIterator[RemoteRunnable]:
    runnable = RemoteRunnable(f"{base}/moa")
    try:
        yield runnable
    finally:  # its HTTP client belongs to this test's event loop
        await runnable.async_client.aclose()
        runnable.sync_client.close()


async def test_invoke_returns_the_answer_with_summed_usage(
    server: FakeOpenAIServer, base: str
) -> None:
    async with aremote(base) as runnable:
        result = await runnable.ainvoke({"messages": CONVERSATION})
    assert isinstance(result, AIMessage)
    assert result.content == ANSWER
    assert result.usage_metadata is not None
    billed = sum(r.chunks_sent for r in server.requests)
    assert result.usage_metadata["output_tokens"] == billed
    assert result.response_metadata["model_name"] == "together:agg"
    # The whole conversation reached every model.
    for r in server.requests:
        assert r.messages[-1] == {"role": "user", "content": "What is MoA?"}
        assert "Be brief." in r.messages[0]["content"]


def test_sync_invoke_batch_and_stream(server: FakeOpenAIServer, base: str) -> None:
    runnable = RemoteRunnable(f"{base}/moa")
    assert runnable.invoke({"messages": CONVERSATION}).content == ANSWER
    results = runnable.batch(
        [{"messages": [HumanMessage("one")]}, {"messages": [HumanMessage("two")]}]
    )
    assert [r.content for r in results] == [ANSWER, ANSWER]
    questions = {r.messages[-1]["content"] for r in server.requests_for("agg")}
    assert {"one", "two"} <= questions
    server.script("agg", ANSWER, token_delay=0.02)  # tokens that come one at a time
    chunks = list(runnable.stream({"messages": CONVERSATION}))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    # Token by token (a reader that fell behind would get a backlog in one chunk).
    assert len(chunks) > len(ANSWER.split()) // 2
    assert "".join(str(c.content) for c in chunks) == ANSWER


def test_a_failed_input_of_a_batch_ends_the_others_before_the_answer(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # RemoteRunnable.batch raises the first error and has no partial results (it refuses
    # return_exceptions), so the other inputs' runs are cancelled, not paid for nobody. They
    # went on after the 502, billed, while their run slots were already free: five such
    # batches had 120 provider calls going on a server showing 0 runs in flight.
    monkeypatch.setenv("TOGETHER_API_BASE", server.base_url)  # for the settings' models
    monkeypatch.setenv("TOGETHER_API_KEY", "test-key")
    server.script("slow", "a slow proposal", ttft=30)
    server.fail("bad", *[Failure(status=400)] * 5)
    server.script("agg", ANSWER)
    failing = {"messages": CONVERSATION, "settings": {"proposers": ["together:bad"]}}
    slow = {"messages": CONVERSATION, "settings": {"proposers": ["together:slow"] * 4}}
    ctx = fake_context(server, ["p1"], max_attempts=1)
    with running(app_for(ctx, max_concurrent=4)) as base:
        runnable = RemoteRunnable(f"{base}/moa", timeout=60)
        for _ in range(3):
            with pytest.raises(httpx.HTTPStatusError) as caught:
                runnable.batch([failing, slow, slow, slow])
            assert caught.value.response.status_code == 502
            assert caught.value.response.json()["error"]["code"] == "proposers_failed"
            # Answered once every run had ended: the slow proposers' requests were closed (the
            # fake server notices within moments; they would otherwise wait 30 s).
            assert len(server.requests_for("slow")) == 12
            assert httpx.get(f"{base}/health").json()["runs_in_flight"] == 0
            deadline = time.monotonic() + 10
            while not all(r.disconnected for r in server.requests_for("slow")):
                assert time.monotonic() < deadline, "the other inputs' runs went on, billed"
                time.sleep(0.05)
            server.requests.clear()
        assert server.requests_for("agg") == []
        # The slots are free for others at once.
        assert runnable.invoke({"messages": CONVERSATION}).content == ANSWER


async def test_a_batch_in_process_with_return_exceptions_runs_every_input(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # LangChain's batch contract, for a caller that asks for it: each input gets its answer or
    # its error, and every run finishes.
    from langgraph_moa.apps.serve.errors import OpenAIError
    from langgraph_moa.apps.serve.langserve_routes import MoARunnable
    from langgraph_moa.apps.serve.registry import ModelRegistry
    from langgraph_moa.apps.serve.runs import RunService

    monkeypatch.setenv("TOGETHER_API_BASE", server.base_url)
    monkeypatch.setenv("TOGETHER_API_KEY", "test-key")
    server.fail("bad", Failure(status=400), Failure(status=400))
    server.script("agg", ANSWER)
    ctx = fake_context(server, ["p1"], max_attempts=1)
    runnable = MoARunnable(RunService(ModelRegistry("fake", {"fake": ctx})))
    failing = {"messages": CONVERSATION, "settings": {"proposers": ["together:bad"]}}
    ok = {"messages": CONVERSATION}
    first, second = await runnable.abatch([failing, ok], return_exceptions=True)
    assert isinstance(first, OpenAIError) and first.status == 502
    assert isinstance(second, AIMessage) and second.content == ANSWER
    with pytest.raises(OpenAIError):
        await runnable.abatch([failing, ok])


async def test_a_batch_raises_the_failure_that_came_first_not_a_cancelled_siblings(
    server: FakeOpenAIServer,
) -> None:
    import asyncio

    from langgraph_moa.apps.serve.langserve_routes import MoARunnable
    from langgraph_moa.apps.serve.registry import ModelRegistry
    from langgraph_moa.apps.serve.runs import RunService

    class Runs(MoARunnable):
        async def ainvoke(self, input: dict[str, Any], *args: Any, **kwargs: Any) -> AIMessage:
            if input["fails"]:
                await asyncio.sleep(0.05)
                raise ValueError("the cause")
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:  # a run whose cancellation surfaces as an error
                raise RuntimeError("cancelled on its way out") from None
            raise AssertionError("cancelled before")

    runnable = Runs(RunService(ModelRegistry("fake", {"fake": fake_context(server, ["p1"])})))
    with pytest.raises(ValueError, match="the cause"):  # first in time, second in order
        await runnable.abatch([{"fails": False}, {"fails": True}])


async def test_stream_carries_the_answers_tokens_only(base: str) -> None:
    async with aremote(base) as runnable:
        chunks = [c async for c in runnable.astream({"messages": CONVERSATION})]
    text = "".join(str(c.content) for c in chunks)
    assert text == ANSWER
    assert all(p not in str(c.content) for c in chunks for p in PROPOSALS.values())
    # The last chunk carries the run's usage, no text.
    assert chunks[-1].content == "" and chunks[-1].usage_metadata is not None
    total = chunks[0]
    for c in chunks[1:]:
        total += c
    assert total.usage_metadata is not None and total.usage_metadata["total_tokens"] > 0


async def test_settings_and_preset_in_the_input(
    server: FakeOpenAIServer, base: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Context fields: layers=1 asks the aggregator alone, at this temperature.
    async with aremote(base) as runnable:
        result = await runnable.ainvoke(
            {"messages": CONVERSATION, "settings": {"layers": 1, "temperature": 0.1}}
        )
    assert result.content == ANSWER
    assert [r.model for r in server.requests] == ["agg"]
    assert server.requests[0].body["temperature"] == 0.1
    server.requests.clear()
    # A preset by name (its Together models, pointed at the fake server by TOGETHER_API_BASE).
    monkeypatch.setenv("TOGETHER_API_BASE", server.base_url)
    monkeypatch.setenv("TOGETHER_API_KEY", "test-key")
    async with aremote(base) as runnable:
        await runnable.ainvoke({"messages": CONVERSATION, "preset": "seed"})
    assert "databricks/dbrx-instruct" in {r.model for r in server.requests}


def test_a_new_rpm_per_request_keeps_the_servers_gates_bounded(
    server: FakeOpenAIServer, base: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A client may set a model's rpm in the settings; each distinct value is a rate-limit gate,
    # which a long-lived server kept for good. Now only the recent ones and those its cached
    # chat models (also bounded) hold stay.
    import gc

    from langgraph_moa.nodes.models import resources
    from langgraph_moa.nodes.models.resources import RESOURCES

    monkeypatch.setattr(resources, "MAX_GATES", 8)
    monkeypatch.setattr(resources, "MAX_MODELS", 8)
    monkeypatch.setenv("TOGETHER_API_BASE", server.base_url)
    runnable = RemoteRunnable(f"{base}/moa")
    before = RESOURCES.gates()
    for rpm in range(6000, 6040):
        aggregator = {"model": "together:agg", "rpm": rpm}
        settings = {"layers": 1, "aggregator": aggregator}
        assert runnable.invoke({"messages": CONVERSATION, "settings": settings}).content == ANSWER
    gc.collect()
    assert len(server.requests_for("agg")) == 40
    assert RESOURCES.gates() <= before + 8 + 8


@pytest.mark.parametrize(
    ("input_", "message"),
    [
        ({"messages": CONVERSATION, "preset": "nope"}, "unknown model 'nope'"),
        (
            {"messages": CONVERSATION, "settings": {"layers": 0}},
            "layers = 0: out of range; allowed: 1 to 10",
        ),
        ({"messages": CONVERSATION, "settings": {"retries": 2}}, "retries: unknown setting"),
        (
            {
                "messages": CONVERSATION,
                "settings": {
                    "proposers": [{"model": "openai:x", "base_url": "http://attacker.invalid"}]
                },
            },
            "'base_url' cannot be set by a request",
        ),
        (
            {"messages": CONVERSATION, "settings": {"aggregator": "local:/etc/passwd"}},
            "not a file path",
        ),
        ({"messages": []}, "messages"),
        # Nothing for the models to answer: a 400, not a stream LangServe leaves unfinished.
        ({"messages": [AIMessage(content="an assistant turn only")]}, "no user message"),
    ],
    ids=[
        "unknown-preset",
        "bad-layers",
        "unknown-setting",
        "endpoint",
        "local-path",
        "empty",
        "nothing-to-answer",
    ],
)
def test_bad_input_is_400_before_anything_runs(
    server: FakeOpenAIServer, base: str, input_: dict[str, object], message: str
) -> None:
    from langserve.serialization import WellKnownLCSerializer

    body = WellKnownLCSerializer().dumps({"input": input_})
    for endpoint in ("invoke", "stream"):
        response = httpx.post(
            f"{base}/moa/{endpoint}", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 400, response.text
        assert message in response.json()["error"]["message"]
    assert server.requests == []


def test_a_seed_past_int64_is_a_400_before_anything_runs(
    server: FakeOpenAIServer, base: str
) -> None:
    # As OpenAI bounds it: it was sent on, and the providers' 400 was a 502 once the proposers
    # had been paid.
    body = {
        "input": {"messages": [{"type": "human", "content": "hi"}], "settings": {"seed": 2**70}}
    }
    response = httpx.post(f"{base}/moa/invoke", json=body, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_settings" and "9223372036854775807" in error["message"]
    assert server.requests == []


@pytest.mark.parametrize(
    "route", ["moa/invoke", "moa/batch", "moa/stream", "moa/stream_log", "v1/chat/completions"]
)
@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        None,
    ],
    ids=["text", "form", "multipart", "none"],
)
def test_a_body_not_declared_json_is_400_on_every_route(
    server: FakeOpenAIServer, base: str, route: str, content_type: str | None
) -> None:
    # What any web page may send without a preflight: LangServe ran it as JSON (CSRF on a
    # server without a key; tests/test_serve_cors.py sends it from a browser). One status on
    # every route (it was 415 on /moa/*, a misleading "must be a JSON object" on /v1).
    one = {"messages": [{"type": "human", "content": "hi"}]}
    body: dict[str, Any] = {"inputs": [one]} if route == "moa/batch" else {"input": one}
    if route.startswith("v1/"):
        body = {"messages": [{"role": "user", "content": "hi"}]}
    headers = {"content-type": content_type} if content_type else {}
    response = httpx.post(f"{base}/{route}", content=json.dumps(body), headers=headers, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "unsupported_media_type")
    assert "Content-Type: application/json" in error["message"]
    assert server.requests == []
    # JSON with a charset, as browsers and some clients write it, is JSON.
    typed = {"content-type": "application/json; charset=utf-8"}
    answered = httpx.post(f"{base}/{route}", content=json.dumps(body), headers=typed)
    assert answered.status_code == 200, answered.text


async def test_a_failed_run_is_502_for_invoke(server: FakeOpenAIServer, base: str) -> None:
    for p in PROPOSALS:
        server.fail(p, Failure(status=503))
    with pytest.raises(httpx.HTTPStatusError) as caught:
        async with aremote(base) as runnable:
            await runnable.ainvoke({"messages": CONVERSATION})
    assert caught.value.response.status_code == 502
    assert caught.value.response.json()["error"]["code"] == "proposers_failed"


async def test_a_failed_run_is_the_same_error_on_every_route(
    server: FakeOpenAIServer, base: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The streams said 500 "Internal Server Error" where invoke said 502 proposers_failed, and
    # never ended their body; the log said only "response already started".
    async def fails(call: Any) -> httpx.Response:
        for p in PROPOSALS:
            server.fail(p, Failure(status=503, message="the provider is down"))
        with pytest.raises(httpx.HTTPStatusError) as caught:
            await call()
        return caught.value.response

    async def drain(stream: AsyncIterator[Any]) -> None:
        async for _ in stream:
            pass

    question = {"messages": CONVERSATION}
    async with aremote(base) as runnable:
        invoked = await fails(lambda: runnable.ainvoke(question))
        streamed = await fails(lambda: drain(runnable.astream(question)))
        logged = await fails(lambda: drain(runnable.astream_log(question)))

    def timeless(body: Any) -> str:  # the same but for each call's time ("0.1 s")
        return re.sub(r"\d+\.\d+ s\)", "T s)", json.dumps(body))

    for response in (invoked, streamed, logged):
        assert response.status_code == 502
        assert timeless(response.json()) == timeless(invoked.json())
        assert response.json()["error"]["code"] == "proposers_failed"
        assert "the provider is down" in response.json()["error"]["message"]
    # The body ends cleanly, with the error as its last event.
    for route in ("stream", "stream_log"):
        for p in PROPOSALS:
            server.fail(p, Failure(status=503, message="the provider is down"))
        body = {"input": {"messages": [{"type": "human", "content": "hi"}]}}
        with httpx.stream("POST", f"{base}/moa/{route}", json=body, timeout=30) as response:
            text = "".join(response.iter_text())  # an incomplete read would raise here
        events = [e for e in text.split("\r\n\r\n") if e.startswith("event: ")]
        assert events[-1].startswith("event: error\r\ndata: ")
        last = json.loads(events[-1].split("data: ", 1)[1])
        assert last["status_code"] == 502
        assert timeless(json.loads(last["message"])) == timeless(invoked.json())
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 5, lines  # one per failed run: invoke, 2 x stream, 2 x stream_log
    assert all(line.startswith("moa serve: 502 layer 1: only 0 of 2") for line in lines), lines


def test_playground_schemas_and_stream_log(base: str) -> None:
    page = httpx.get(f"{base}/moa/playground/", follow_redirects=True)
    assert page.status_code == 200 and "<html" in page.text.lower()
    schema = httpx.get(f"{base}/moa/input_schema").json()
    assert {"messages", "preset", "settings"} <= set(schema["properties"])
    # The playground reads /stream_log: it works (the graph's Send objects stay out of it).
    from langserve.serialization import WellKnownLCSerializer

    body = WellKnownLCSerializer().dumps({"input": {"messages": CONVERSATION}})
    with httpx.stream(
        "POST",
        f"{base}/moa/stream_log",
        content=body,
        headers={"content-type": "application/json"},
        timeout=30,
    ) as response:
        text = "".join(response.iter_text())
    assert "event: error" not in text
    assert "event: end" in text and "streamed_output" in text


def test_the_playground_serves_its_files_and_404s_any_other_name(base: str) -> None:
    page = httpx.get(f"{base}/moa/playground/index.html")
    assert page.status_code == 200
    assets = re.findall(r"/moa/playground/(assets/[^\"']+)", page.text)
    assert assets and all(
        httpx.get(f"{base}/moa/playground/{a}").status_code == 200 for a in assets
    )
    # LangServe answered these 500: a folder, a NUL byte, a name too long to open.
    for name in ("assets", "assets/", "%00", "a%00.js", "x" * 300 + ".js", "..%2fserver.py"):
        response = httpx.get(f"{base}/moa/playground/{name}")
        assert response.status_code == 404, name
        assert response.json()["error"]["type"] == "not_found_error"


def test_stream_events_is_not_served(base: str) -> None:
    # It fails on graphs with Send (langserve#721): not offered rather than broken.
    response = httpx.post(f"{base}/moa/stream_events", json={"input": {}})
    assert response.status_code == 404


def test_a_message_with_the_fields_the_schema_requires_is_accepted(base: str) -> None:
    # What the input schema says a message needs is what the server needs: each kind of message
    # built from its required fields alone runs (a message without "type" is refused, so the
    # schema says "type" is required; otherwise its oneOf branches overlap, and schema-driven
    # clients and fuzzers build messages the server refuses).
    schema = httpx.get(f"{base}/moa/input_schema").json()
    branches = schema["properties"]["messages"]["items"]["oneOf"]
    kinds = []
    for branch in branches:
        message = schema["$defs"][branch["$ref"].rsplit("/", 1)[-1]]
        assert "type" in message["required"], message["title"]
        props = message["properties"]
        built = {k: props[k].get("const", "hi") for k in message["required"]}
        kinds.append(built["type"])
        body = {"input": {"messages": [built, {"type": "human", "content": "hi"}]}}
        response = httpx.post(f"{base}/moa/invoke", json=body, timeout=30)
        assert response.status_code == 200, (built, response.text)
    assert {"human", "ai", "system", "tool", "AIMessageChunk"} <= set(kinds)


@pytest.mark.parametrize("route", ["invoke", "batch", "stream", "stream_log"])
def test_a_message_langchain_cannot_build_is_a_400(base: str, route: str) -> None:
    # LangChain's AIMessage raises a TypeError (not a validation error) for an invalid tool
    # call with a key it does not know; found by a schemathesis run against moa serve.
    broken = {
        "type": "ai",
        "content": "x",
        "invalid_tool_calls": [
            {
                "type": "invalid_tool_call",
                "args": None,
                "error": None,
                "id": None,
                "name": None,
                "extra": 1,
            }
        ],
    }
    one = {"messages": [{"type": "human", "content": "hi"}, broken]}
    body = {"inputs": [one]} if route == "batch" else {"input": one}
    response = httpx.post(f"{base}/moa/{route}", json=body, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    where = "inputs[0].messages[1]" if route == "batch" else "input.messages[1]"
    assert error["param"] == where and error["message"].startswith(f"{where}: not a valid message")
