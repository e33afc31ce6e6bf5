"""Prove tests/fake_openai.py against the real provider clients over real HTTP.

Every test talks to a FakeOpenAIServer on 127.0.0.1 through the ``openai``
SDK, ``langchain_openai.ChatOpenAI`` or ``langchain_together.ChatTogether``;
nothing here touches any other network address.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest
from fake_openai import (
    Failure,
    FakeOpenAIServer,
    RecordedRequest,
    count_prompt_tokens,
    default_reply,
    split_tokens,
)
from langchain_core.messages import AIMessageChunk
from langchain_openai import ChatOpenAI
from langchain_together import ChatTogether
from openai.types.chat import ChatCompletionMessageParam

USER: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What is the capital of France?"}
]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAIServer]:
    srv = FakeOpenAIServer().start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(autouse=True)
def _clean(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "server" in request.fixturenames:
        srv: FakeOpenAIServer = request.getfixturevalue("server")
        srv.wait_idle(5.0)
        srv.reset()


def client(server: FakeOpenAIServer, **kwargs: Any) -> openai.OpenAI:
    kwargs.setdefault("max_retries", 0)
    return openai.OpenAI(base_url=server.base_url, api_key="test-key", **kwargs)


# --------------------------------------------------------------------------- #
# openai SDK
# --------------------------------------------------------------------------- #


def test_openai_non_streaming_default_reply_and_usage(server: FakeOpenAIServer) -> None:
    with client(server) as c:
        resp = c.chat.completions.create(model="gpt-fake", messages=USER)
    expected = default_reply("gpt-fake", USER)
    assert expected.startswith("Answer from gpt-fake: ")
    assert "What is the capital of France?" in expected
    assert resp.object == "chat.completion"
    assert resp.model == "gpt-fake"
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == expected
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == 6 + 3
    assert resp.usage.completion_tokens == len(split_tokens(expected))
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens

    [rec] = server.requests
    assert rec.model == "gpt-fake"
    assert rec.messages == USER
    assert rec.stream is False
    assert rec.status == 200
    assert rec.disconnected is False
    assert rec.headers["authorization"] == "Bearer test-key"
    assert rec.finished is not None and rec.finished >= rec.started
    assert server.requests_for("gpt-fake") == [rec]
    assert server.requests_for("other") == []


def test_openai_streaming_chunks_and_usage(server: FakeOpenAIServer) -> None:
    server.script("streamer", "Paris is the capital of France.")
    with client(server) as c:
        stream = c.chat.completions.create(
            model="streamer",
            messages=USER,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    contents = [
        ch.choices[0].delta.content
        for ch in chunks[1:]
        if ch.choices and ch.choices[0].delta.content
    ]
    assert contents == ["Paris ", "is ", "the ", "capital ", "of ", "France."]
    finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices]
    assert finish[-1] == "stop" and set(finish[:-1]) == {None}
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert usage_chunk.usage.completion_tokens == 6
    assert usage_chunk.usage.prompt_tokens == 9
    assert usage_chunk.usage.total_tokens == 15
    assert len({ch.id for ch in chunks}) == 1

    [rec] = server.requests
    assert rec.stream is True
    assert rec.body["stream_options"] == {"include_usage": True}
    assert rec.chunks_sent == 6 and rec.finish_reason == "stop"
    assert rec.disconnected is False and rec.status == 200


def test_streaming_without_include_usage_sends_no_usage(server: FakeOpenAIServer) -> None:
    server.script("m", "one two")
    with client(server) as c:
        chunks = list(c.chat.completions.create(model="m", messages=USER, stream=True))
    assert all(ch.usage is None for ch in chunks)
    assert all(ch.choices for ch in chunks)
    assert [ch.choices[0].delta.content for ch in chunks[1:-1]] == ["one ", "two"]


def test_max_tokens_cuts_reply_with_finish_reason_length(server: FakeOpenAIServer) -> None:
    server.script("m", "a b c d e f")
    with client(server) as c:
        resp = c.chat.completions.create(model="m", messages=USER, max_tokens=3)
        resp2 = c.chat.completions.create(model="m", messages=USER, max_completion_tokens=2)
        resp3 = c.chat.completions.create(model="m", messages=USER, max_tokens=50)
    assert resp.choices[0].message.content == "a b c "
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage is not None and resp.usage.completion_tokens == 3
    assert resp2.choices[0].message.content == "a b "
    assert resp3.choices[0].message.content == "a b c d e f"
    assert resp3.choices[0].finish_reason == "stop"


def test_prompt_tokens_count_text_parts(server: FakeOpenAIServer) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "You are terse."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "first part"},
                {"type": "text", "text": "and the   second"},
            ],
        },
    ]
    assert count_prompt_tokens(messages) == 3 + 3 + 5 + 3
    with client(server) as c:
        resp = c.chat.completions.create(model="m", messages=messages)
    assert resp.usage is not None and resp.usage.prompt_tokens == 14
    assert (
        resp.choices[0].message.content
        == 'Answer from m: I considered "first part and the second" and this is my reply.'
    )
    assert server.requests[0].messages == messages


def test_reply_callable_latency_and_models_endpoint(server: FakeOpenAIServer) -> None:
    def echo(req: RecordedRequest) -> str:
        return f"{req.model} saw {len(req.messages)} messages"

    server.script("echo", echo)
    server.script("slow", "ok", latency=lambda: 0.2)
    with client(server) as c:
        resp = c.chat.completions.create(model="echo", messages=USER * 2)
        t0 = time.perf_counter()
        c.chat.completions.create(model="slow", messages=USER)
        elapsed = time.perf_counter() - t0
        ids = {m.id for m in c.models.list()}
    assert resp.choices[0].message.content == "echo saw 2 messages"
    assert elapsed >= 0.19
    assert ids == {"echo", "slow"}


def test_invalid_json_is_400_and_recorded(server: FakeOpenAIServer) -> None:
    r = httpx.post(
        server.base_url + "/chat/completions",
        content=b"{nope",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert server.requests[0].status == 400


# --------------------------------------------------------------------------- #
# LangChain clients
# --------------------------------------------------------------------------- #


def test_langchain_chat_openai_invoke_and_stream(server: FakeOpenAIServer) -> None:
    server.script("lc-model", "Bonjour from the fake.")
    llm = ChatOpenAI(
        model="lc-model",
        base_url=server.base_url,
        api_key="test-key",
        stream_usage=True,
        max_retries=0,
    )
    msg = llm.invoke("Say hi")
    assert msg.content == "Bonjour from the fake."
    assert msg.usage_metadata is not None
    assert msg.usage_metadata["input_tokens"] == 2 + 3
    assert msg.usage_metadata["output_tokens"] == 4
    assert msg.usage_metadata["total_tokens"] == 9

    chunks = list(llm.stream("Say hi"))
    total = chunks[0]
    for ch in chunks[1:]:
        total = total + ch
    assert isinstance(total, AIMessageChunk)
    assert total.content == "Bonjour from the fake."
    assert total.usage_metadata is not None
    assert total.usage_metadata["output_tokens"] == 4
    assert total.usage_metadata["input_tokens"] == 5

    plain, streamed = server.requests
    assert plain.stream is False and streamed.stream is True
    assert streamed.body.get("stream_options") == {"include_usage": True}
    assert plain.headers["authorization"] == "Bearer test-key"


def test_langchain_chat_together(server: FakeOpenAIServer) -> None:
    llm = ChatTogether(
        base_url=server.base_url, api_key="k", model="together/model-x", max_retries=0
    )
    msg = llm.invoke("Hello Together")
    expected = default_reply("together/model-x", [{"role": "user", "content": "Hello Together"}])
    assert msg.content == expected
    assert msg.usage_metadata is not None
    assert msg.usage_metadata["output_tokens"] == len(split_tokens(expected))

    text = "".join(str(ch.content) for ch in llm.stream("Hello Together"))
    assert text == expected

    plain, streamed = server.requests
    assert plain.headers["authorization"] == "Bearer k"
    assert plain.model == streamed.model == "together/model-x"
    assert streamed.stream is True
    # ChatTogether does not ask for streamed usage unless stream_usage=True.
    assert "stream_options" not in streamed.body


# --------------------------------------------------------------------------- #
# Faults
# --------------------------------------------------------------------------- #


def test_scripted_429_with_retry_after(server: FakeOpenAIServer) -> None:
    server.fail("limited", Failure(status=429, retry_after="2", message="Slow down"))
    assert server.pending_failures("limited") == 1
    with client(server) as c:
        with pytest.raises(openai.RateLimitError) as info:
            c.chat.completions.create(model="limited", messages=USER)
        err = info.value
        assert err.status_code == 429
        assert err.response.headers["retry-after"] == "2"
        assert err.code == "rate_limit_exceeded"
        assert err.type == "rate_limit_error"
        assert "Slow down" in err.message
        # The failure was consumed: the next request succeeds.
        ok = c.chat.completions.create(model="limited", messages=USER)
    assert ok.choices[0].message.content == default_reply("limited", USER)
    assert [r.status for r in server.requests_for("limited")] == [429, 200]
    assert server.requests[0].failure is not None


def test_client_retries_honour_retry_after(server: FakeOpenAIServer) -> None:
    # Without the header the SDK would back off >= ~1 s over two retries.
    server.script(
        "flaky",
        "fine",
        failures=[
            Failure(status=503, retry_after="0.01"),
            Failure(status=500, retry_after="0.01"),
        ],
    )
    with client(server, max_retries=2) as c:
        t0 = time.perf_counter()
        resp = c.chat.completions.create(model="flaky", messages=USER)
        elapsed = time.perf_counter() - t0
    assert resp.choices[0].message.content == "fine"
    assert elapsed < 0.9, elapsed
    recs = server.requests_for("flaky")
    assert [r.status for r in recs] == [503, 500, 200]
    assert [r.headers.get("x-stainless-retry-count") for r in recs] == ["0", "1", "2"]


def test_drop_after_tokens_streaming(server: FakeOpenAIServer) -> None:
    server.script("dropper", "w1 w2 w3 w4 w5 w6", failures=[Failure(drop_after_tokens=3)])
    received: list[str] = []
    finish_reasons: list[str | None] = []
    raised: BaseException | None = None
    with client(server) as c:
        try:
            for ch in c.chat.completions.create(model="dropper", messages=USER, stream=True):
                if ch.choices:
                    finish_reasons.append(ch.choices[0].finish_reason)
                    if ch.choices[0].delta.content:
                        received.append(ch.choices[0].delta.content)
        except (openai.APIError, httpx.HTTPError) as exc:
            raised = exc
    assert received == ["w1 ", "w2 ", "w3 "]
    assert "stop" not in finish_reasons
    # httpx sees the incomplete chunked body; the SDK reports a connection error.
    assert raised is not None
    server.wait_idle()
    [rec] = server.requests
    assert rec.status == 200 and rec.chunks_sent == 3
    assert rec.disconnected is False and rec.finished is not None


def test_drop_non_streaming_closes_without_response(server: FakeOpenAIServer) -> None:
    server.fail("dropper", Failure(drop_after_tokens=0))
    with client(server) as c, pytest.raises(openai.APIConnectionError):
        c.chat.completions.create(model="dropper", messages=USER)
    server.wait_idle()
    [rec] = server.requests
    assert rec.status == 0


def test_hang_triggers_client_timeout_and_is_recorded_as_disconnect(
    server: FakeOpenAIServer,
) -> None:
    server.fail("hanger", Failure(hang=10))
    t0 = time.perf_counter()
    with client(server, timeout=0.3) as c, pytest.raises(openai.APITimeoutError):
        c.chat.completions.create(model="hanger", messages=USER)
    assert time.perf_counter() - t0 < 2.0
    assert server.wait_idle(5.0)
    [rec] = server.requests
    assert rec.disconnected is True
    assert rec.status == 0
    assert rec.duration is not None and 0.25 < rec.duration < 2.0


def test_early_stream_close_is_recorded_as_disconnect(server: FakeOpenAIServer) -> None:
    server.script("long", " ".join(f"t{i}" for i in range(40)), token_delay=0.05)
    with client(server) as c:
        stream = c.chat.completions.create(model="long", messages=USER, stream=True)
        seen = 0
        for ch in stream:
            if ch.choices and ch.choices[0].delta.content:
                seen += 1
                if seen == 3:
                    break
        stream.close()
    assert server.wait_idle(5.0)
    [rec] = server.requests
    assert rec.disconnected is True
    assert rec.status == 200
    assert 3 <= rec.chunks_sent < 40
    assert rec.duration is not None and rec.duration < 1.5


# --------------------------------------------------------------------------- #
# Timing and concurrency
# --------------------------------------------------------------------------- #


def test_concurrent_requests_overlap(server: FakeOpenAIServer) -> None:
    server.script("par", "x y z", ttft=0.3)
    with client(server) as c:
        c.models.list()  # warm the client up outside the timed region

        def call(_: int) -> str | None:
            resp = c.chat.completions.create(model="par", messages=USER)
            return resp.choices[0].message.content

        with ThreadPoolExecutor(max_workers=8) as pool:
            t0 = time.perf_counter()
            results = list(pool.map(call, range(8)))
            elapsed = time.perf_counter() - t0
    assert results == ["x y z"] * 8
    assert elapsed < 1.5, elapsed
    assert server.max_concurrency("par") == 8
    assert server.max_concurrency() == 8
    assert all(r.duration is not None and r.duration >= 0.29 for r in server.requests)


def test_concurrent_async_streams_overlap(server: FakeOpenAIServer) -> None:
    server.script("apar", "x y z", ttft=0.3, token_delay=0.01)

    async def main() -> float:
        async with openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0) as ac:

            async def one() -> str:
                parts: list[str] = []
                stream = await ac.chat.completions.create(model="apar", messages=USER, stream=True)
                async for ch in stream:
                    if ch.choices and ch.choices[0].delta.content:
                        parts.append(ch.choices[0].delta.content)
                return "".join(parts)

            t0 = time.perf_counter()
            texts = await asyncio.gather(*(one() for _ in range(8)))
            assert texts == ["x y z"] * 8
            return time.perf_counter() - t0

    assert asyncio.run(main()) < 1.5
    assert server.max_concurrency("apar") == 8


def test_first_chunk_arrives_well_before_last(server: FakeOpenAIServer) -> None:
    server.script("ticker", " ".join(f"t{i}" for i in range(10)), ttft=0.1, token_delay=0.05)
    arrivals: list[float] = []
    with client(server) as c:
        c.models.list()
        t0 = time.perf_counter()
        for ch in c.chat.completions.create(model="ticker", messages=USER, stream=True):
            if ch.choices and ch.choices[0].delta.content:
                arrivals.append(time.perf_counter() - t0)
    assert len(arrivals) == 10
    first, last = arrivals[0], arrivals[-1]
    assert 0.08 <= first < 0.4, first
    assert last - first >= 0.35, (first, last)  # 9 gaps of 50 ms = 0.45 s
    assert last < 1.5


# --------------------------------------------------------------------------- #
# Modes and lifecycle
# --------------------------------------------------------------------------- #


def test_strict_mode_rejects_unknown_models() -> None:
    with FakeOpenAIServer(strict=True) as srv:
        srv.script("known", "yes")
        with client(srv) as c:
            with pytest.raises(openai.NotFoundError) as info:
                c.chat.completions.create(model="unknown", messages=USER)
            assert info.value.code == "model_not_found"
            ok = c.chat.completions.create(model="known", messages=USER)
        assert ok.choices[0].message.content == "yes"
        assert [r.status for r in srv.requests] == [404, 200]


def test_reset_clears_scripts_failures_and_records(server: FakeOpenAIServer) -> None:
    server.script("a", "scripted", ttft=0.0)
    server.fail("a", Failure(status=500))
    with client(server) as c:
        c.chat.completions.create(model="b", messages=USER)
    # The client can hold its answer a moment before the server has
    # finished the request; wait so the peak restarts from zero.
    assert server.wait_idle()
    server.reset()
    assert server.requests == [] and server.max_concurrency() == 0
    assert server.pending_failures("a") == 0
    with client(server) as c:
        resp = c.chat.completions.create(model="a", messages=USER)
    assert resp.choices[0].message.content == default_reply("a", USER)


def test_stop_is_prompt_and_idempotent_with_requests_in_flight() -> None:
    srv = FakeOpenAIServer()
    with pytest.raises(RuntimeError):
        _ = srv.base_url
    srv.start()
    base_url = srv.base_url
    assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
    srv.script("forever", ttft=60)
    errors: list[BaseException] = []

    def background() -> None:
        with openai.OpenAI(base_url=base_url, api_key="k", max_retries=0) as c:
            try:
                for _ in c.chat.completions.create(model="forever", messages=USER, stream=True):
                    pass
            except (openai.APIError, httpx.HTTPError) as exc:
                errors.append(exc)

    thread = threading.Thread(target=background, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while srv.in_flight("forever") == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert srv.in_flight("forever") == 1
    t0 = time.perf_counter()
    srv.stop()
    assert time.perf_counter() - t0 < 2.0
    srv.stop()  # idempotent
    thread.join(5)
    assert not thread.is_alive()
    assert errors, "the in-flight stream should have been cut"
    assert not srv.running
    with pytest.raises(httpx.ConnectError):
        httpx.get(base_url + "/models", timeout=2)
