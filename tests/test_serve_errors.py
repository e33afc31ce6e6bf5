"""Errors clients understand: OpenAI's error shape and the right status for each failure, before
and during a stream; no traceback and no API key in a response or the log."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from conftest import fake_context, spec
from fake_openai import Failure, FakeOpenAIServer, continuing
from langchain_core.messages import HumanMessage
from langserve import RemoteRunnable
from serving import app_for, running
from test_staircase import fallback_so_far

from langgraph_moa.apps.serve.errors import from_run_error
from langgraph_moa.nodes.context import Context
from langgraph_moa.nodes.errors import InputError, UnpairedToolCallError, UnsupportedContentError

MESSAGES = [{"role": "user", "content": "Explain MoA."}]
ANSWER = "one two three four five six seven eight nine ten"
LONG = " ".join(f"word{i}" for i in range(30)) + "."


def ctx_of(server: FakeOpenAIServer, **kw: Any) -> Context:
    return fake_context(server, ["p1", "p2"], max_attempts=1, **kw)


@pytest.fixture
def base(server: FakeOpenAIServer) -> Iterator[str]:
    server.script("agg", ANSWER)
    with running(app_for(ctx_of(server))) as url:
        yield url


def client(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=30)


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return dict(body["error"])


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ({"model": "fake", "messages": []}, "messages", "messages must not be empty"),
        ({"messages": MESSAGES, "model": "gpt-4o"}, "model", "unknown model 'gpt-4o'"),
        ({"model": "fake", "messages": MESSAGES, "temperature": 3}, "temperature", "less than"),
        ({"model": "fake", "messages": MESSAGES, "max_tokens": 0}, "max_tokens", "greater than"),
        ({"model": "fake", "messages": MESSAGES, "n": 2}, "n", "n > 1 is not supported"),
        (  # int64, as OpenAI: it was sent on, and the providers' 400 was a 502 here
            {"model": "fake", "messages": MESSAGES, "seed": 2**70},
            "seed",
            "less than or equal to 9223372036854775807",
        ),
        (
            {"model": "fake", "messages": MESSAGES, "tools": [{"type": "function"}]},
            "tools",
            "tools[0] is not a function tool",
        ),
        (
            {
                "model": "fake",
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
                ],
            },
            "messages[0].content",
            "images are not supported",
        ),
        (
            {"model": "fake", "messages": [{"role": "robot", "content": "hi"}]},
            "messages[0].role",
            "'user'",
        ),
        ({"model": "fake"}, "messages", "Field required"),
        (
            {"model": "fake", "messages": [{"role": "assistant", "content": "Hello!"}]},
            "messages",
            "no user message",
        ),
    ],
    ids=[
        "no-messages",
        "unknown-model",
        "temperature-out-of-range",
        "max-tokens-out-of-range",
        "n-above-one",
        "seed-above-int64",
        "tools",
        "images",
        "unknown-role",
        "messages-missing",
        "no-user-message",
    ],
)
def test_bad_input_is_400_in_openais_shape(
    server: FakeOpenAIServer, base: str, body: dict[str, Any], param: str, message: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(base).post("/chat/completions", body=body, cast_to=object)
    response = caught.value.response
    assert response.status_code == 400
    error = error_of(response)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert message in error["message"]
    assert server.requests == []  # refused before any model was called


def test_a_streamed_conversation_with_nothing_to_answer_is_400(
    server: FakeOpenAIServer, base: str
) -> None:
    # It was a 200 whose stream ended with an error event: the stream had begun before the run.
    messages: Any = [{"role": "assistant", "content": "Hello!"}]
    with pytest.raises(openai.BadRequestError) as caught:
        client(base).chat.completions.create(model="fake", messages=messages, stream=True)
    error = error_of(caught.value.response)
    assert error["param"] == "messages" and "no user message" in error["message"]
    assert server.requests == []


@pytest.mark.parametrize("content", [b'{"model": "fake", "messages": [', b"[1, 2]", b"hello"])
def test_malformed_body_is_400(server: FakeOpenAIServer, base: str, content: bytes) -> None:
    response = httpx.post(
        f"{base}/v1/chat/completions", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_json"


def test_unknown_route_and_method_in_openais_shape(base: str) -> None:
    assert error_of(httpx.get(f"{base}/v1/nothing-here"))["type"] == "not_found_error"
    response = httpx.delete(f"{base}/v1/models")
    assert response.status_code == 405 and error_of(response)["type"] == "invalid_request_error"


def test_every_proposer_failed_is_502_streamed_or_not(server: FakeOpenAIServer, base: str) -> None:
    for stream in (False, True):
        server.fail("p1", Failure(status=503, message="overloaded"))
        server.fail("p2", Failure(status=401, message="bad key"))
        with pytest.raises(openai.APIError) as caught:
            result = client(base).chat.completions.create(
                model="fake", messages=MESSAGES, stream=stream
            )
            list(result) if stream else None  # type: ignore[call-overload]
        if stream:  # the stream started at once (200): the error is its last event
            assert not isinstance(caught.value, openai.APIStatusError)
            error = dict(caught.value.body)  # type: ignore[arg-type]
        else:
            response = caught.value.response  # type: ignore[attr-defined]
            assert response.status_code == 502
            assert response.headers["x-should-retry"] == "false"
            error = error_of(response)
            assert error["type"] == "server_error"
        assert error["code"] == "proposers_failed"
        assert "only 0 of 2 proposers answered" in error["message"]
        assert "together:p1: HTTP 503" in error["message"]
        assert server.requests_for("agg") == []


def test_aggregator_failed_is_502(server: FakeOpenAIServer, base: str) -> None:
    server.fail("agg", Failure(status=500, message="aggregator down"))
    with pytest.raises(openai.InternalServerError) as caught:
        client(base).chat.completions.create(model="fake", messages=MESSAGES)
    assert caught.value.response.status_code == 502
    error = error_of(caught.value.response)
    assert (
        error["code"] == "aggregator_failed"
        and "aggregator together:agg failed" in error["message"]
    )


def test_a_failure_after_streaming_began_ends_the_stream_with_an_error(
    server: FakeOpenAIServer, base: str
) -> None:
    server.fail("agg", Failure(drop_after_tokens=3))  # the aggregator's stream breaks off
    stream = client(base).chat.completions.create(model="fake", messages=MESSAGES, stream=True)
    received: list[str] = []
    started = time.monotonic()
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert time.monotonic() - started < 20  # ended, did not hang
    assert "".join(received) == "one two three "  # the tokens sent before the failure
    assert "aggregator together:agg failed" in caught.value.message
    assert caught.value.body["type"] == "server_error"  # type: ignore[index]


def test_raw_stream_error_event_closes_the_stream(server: FakeOpenAIServer, base: str) -> None:
    server.fail("agg", Failure(drop_after_tokens=2))
    with httpx.stream(
        "POST",
        f"{base}/v1/chat/completions",
        json={"model": "fake", "messages": MESSAGES, "stream": True},
        timeout=20,
    ) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1].startswith('data: {"error": {')
    assert "data: [DONE]" not in lines


def test_conversation_too_long_for_every_proposer_is_400(server: FakeOpenAIServer) -> None:
    small = [spec(server, p, context_window=64, max_tokens=16) for p in ("p1", "p2")]
    ctx = Context(proposers=small, aggregator=spec(server, "agg"), max_attempts=1)
    with running(app_for(ctx)) as base:
        long = [{"role": "user", "content": "word " * 400}]
        with pytest.raises(openai.BadRequestError) as caught:
            client(base).chat.completions.create(model="fake", messages=long)
    assert error_of(caught.value.response)["code"] == "context_length_exceeded"
    assert server.requests == []


def test_a_model_the_server_has_no_key_for_is_400(
    server: FakeOpenAIServer, base: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TOGETHER_API_KEY", raising=False)
    with pytest.raises(openai.BadRequestError) as caught:
        client(base).chat.completions.create(model="seed", messages=MESSAGES)
    error = error_of(caught.value.response)
    assert error["code"] == "model_not_available" and "set TOGETHER_API_KEY" in error["message"]


def test_at_the_concurrency_limit_429_with_retry_after(server: FakeOpenAIServer) -> None:
    server.script("p1", "slow", ttft=1.5)
    server.script("agg", ANSWER)
    with running(app_for(ctx_of(server), max_concurrent=1)) as base:
        first: dict[str, Any] = {}

        def run_first() -> None:
            first["result"] = client(base).chat.completions.create(model="fake", messages=MESSAGES)

        worker = threading.Thread(target=run_first)
        worker.start()
        deadline = time.monotonic() + 10
        while httpx.get(f"{base}/health").json()["runs_in_flight"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with pytest.raises(openai.RateLimitError) as caught:
            client(base).chat.completions.create(model="fake", messages=MESSAGES, stream=True)
        response = caught.value.response
        assert response.status_code == 429 and response.headers["retry-after"] == "1"
        assert error_of(response)["type"] == "rate_limit_error"
        worker.join(timeout=30)
        assert first["result"].choices[0].message.content == ANSWER
        # The slot is free again once the first run is done.
        assert httpx.get(f"{base}/health").json()["runs_in_flight"] == 0
        again = client(base).chat.completions.create(model="fake", messages=MESSAGES)
        assert again.choices[0].message.content == ANSWER


def test_a_run_the_providers_rate_limited_is_a_429_the_sdk_waits_out(
    server: FakeOpenAIServer, base: str
) -> None:
    # Waiting helps: the client gets the providers' 429 with their Retry-After, and the openai
    # SDK with its default settings waits and runs the request again, which then answers.
    limited = Failure(status=429, retry_after="1", message="slow down")
    server.fail("p1", limited)
    server.fail("p2", limited)
    started = time.monotonic()
    sdk = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", timeout=30)  # 2 retries
    reply = sdk.chat.completions.create(model="fake", messages=MESSAGES)
    assert reply.choices[0].message.content == ANSWER
    assert time.monotonic() - started >= 1  # it waited what the providers asked
    assert len(server.requests_for("p1")) == 2  # one refused run, one that answered
    server.fail("agg", Failure(status=429, retry_after="3"))
    response = httpx.post(
        f"{base}/v1/chat/completions", json={"model": "fake", "messages": MESSAGES}
    )
    assert response.status_code == 429 and response.headers["retry-after"] == "3"
    assert "x-should-retry" not in response.headers
    error = error_of(response)
    assert error["code"] == "provider_rate_limited" and error["type"] == "rate_limit_error"
    assert "retry after 3 s" in error["message"]


def test_a_wait_longer_than_the_sdk_waits_is_not_retried(
    server: FakeOpenAIServer, base: str
) -> None:
    server.fail("p1", Failure(status=429, retry_after="120"))
    server.fail("p2", Failure(status=429))  # no wait named: the other provider's counts
    sdk = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", timeout=30)  # 2 retries
    with pytest.raises(openai.RateLimitError) as caught:
        sdk.chat.completions.create(model="fake", messages=MESSAGES)
    headers = caught.value.response.headers
    assert headers["retry-after"] == "120" and headers["x-should-retry"] == "false"
    assert len(server.requests_for("p1")) == 1  # the SDK did not retry at once


def test_an_absurd_provider_wait_is_passed_on_as_a_day(server: FakeOpenAIServer, base: str) -> None:
    # An HTTP date in 2099 was passed on as Retry-After: 2299620275 (seconds, some 73 years).
    server.fail("p1", Failure(status=429, retry_after="Wed, 21 Oct 2099 07:28:00 GMT"))
    server.fail("p2", Failure(status=429, retry_after="1"))
    response = httpx.post(
        f"{base}/v1/chat/completions", json={"model": "fake", "messages": MESSAGES}
    )
    assert response.status_code == 429
    assert response.headers["retry-after"] == "86400"
    assert response.headers["x-should-retry"] == "false"
    assert "retry after 86400 s" in error_of(response)["message"]


def test_a_run_that_failed_otherwise_carries_no_retry_after(
    server: FakeOpenAIServer, base: str
) -> None:
    # One provider rate-limited, the other down: waiting does not fix that, and the server has
    # already retried each call.
    server.fail("p1", Failure(status=429, retry_after="1"))
    server.fail("p2", Failure(status=500))
    response = httpx.post(
        f"{base}/v1/chat/completions", json={"model": "fake", "messages": MESSAGES}
    )
    assert response.status_code == 502 and response.headers["x-should-retry"] == "false"
    assert "retry-after" not in response.headers


def test_body_over_the_limit_is_413(server: FakeOpenAIServer) -> None:
    with running(app_for(ctx_of(server), max_body_bytes=4096)) as base:
        big = {"model": "fake", "messages": [{"role": "user", "content": "x" * 5000}]}
        response = httpx.post(f"{base}/v1/chat/completions", json=big)
        assert response.status_code == 413
        assert "limit of 4096 bytes" in error_of(response)["message"]

        def chunked() -> Iterator[bytes]:  # no Content-Length: cut while reading
            yield b'{"model": "fake", "messages": [{"role": "user", "content": "'
            for _ in range(10):
                yield b"y" * 1000
            yield b'"}]}'

        response = httpx.post(
            f"{base}/v1/chat/completions",
            content=chunked(),
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 413
        error_of(response)
        small = httpx.post(
            f"{base}/v1/chat/completions", json={"model": "fake", "messages": MESSAGES}
        )
        assert small.status_code == 200
    assert len(server.requests_for("agg")) == 1  # only the small request ran


def test_no_api_key_and_no_traceback_in_responses_or_log(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    key = "sk-provider-secret-0123456789"
    monkeypatch.setenv("TOGETHER_API_KEY", key)
    # A provider that quotes the rejected key in its error, as some do.
    for p in ("p1", "p2"):
        server.fail(p, Failure(status=401, message=f"Incorrect API key provided: {key}"))
    caplog.set_level(logging.INFO)
    with running(app_for(ctx_of(server))) as base:
        response = httpx.post(
            f"{base}/v1/chat/completions", json={"model": "fake", "messages": MESSAGES}
        )
        assert response.status_code == 502
        assert key not in response.text and "***" in response.text
        assert "Incorrect API key provided" in error_of(response)["message"]
    assert key not in caplog.text
    assert "Traceback" not in caplog.text
    assert any(r.name == "moa.serve" and "502" in r.getMessage() for r in caplog.records)


def test_an_unexpected_error_is_a_500_on_one_log_line(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import langgraph_moa.apps.serve.runs as runs

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug in the server")

    monkeypatch.setattr(runs, "run_events", broken)
    monkeypatch.delenv("MOA_DEBUG", raising=False)
    with running(app_for(ctx_of(server))) as base:
        for stream in (False, True):
            response = httpx.post(
                f"{base}/v1/chat/completions",
                json={"model": "fake", "messages": MESSAGES, "stream": stream},
            )
            if stream:  # started at once: the error is the stream's last event
                assert response.status_code == 200
                last = response.text.strip().splitlines()[-1].removeprefix("data: ")
                assert json.loads(last)["error"]["type"] == "server_error"
            else:
                assert response.status_code == 500
                assert error_of(response)["type"] == "server_error"
            assert "a bug" not in response.text  # details stay in the log
    lines = [r.getMessage() for r in caplog.records if r.name == "moa.serve"]
    assert any("unexpected RuntimeError: a bug in the server" in line for line in lines)
    assert "Traceback" not in caplog.text and all(r.exc_info is None for r in caplog.records)


async def test_a_broken_answer_is_continued_on_every_stream_route(
    server: FakeOpenAIServer,
) -> None:
    # The aggregator's stream breaks after 3 tokens; the retry continues it (Together: the
    # prompt fallback): every stream route sends one answer, nothing repeated or lost.
    server.script("agg", continuing(LONG, fallback_so_far))
    ctx = fake_context(server, ["p1"], max_attempts=2, retry_base_s=0.01)
    with running(app_for(ctx)) as base:
        server.fail("agg", Failure(drop_after_tokens=3))
        stream = client(base).chat.completions.create(model="fake", messages=MESSAGES, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == LONG
        remote = RemoteRunnable(f"{base}/moa")
        try:
            server.fail("agg", Failure(drop_after_tokens=3))
            chunks = [c.content async for c in remote.astream({"messages": [HumanMessage("hi")]})]
            assert "".join(map(str, chunks)) == LONG
            server.fail("agg", Failure(drop_after_tokens=3))
            log = None
            async for patch in remote.astream_log({"messages": [HumanMessage("hi")]}):
                log = patch if log is None else log + patch
            assert log is not None and log.state["final_output"].content == LONG
        finally:
            await remote.async_client.aclose()
            remote.sync_client.close()
    continued = [r for r in server.requests_for("agg") if fallback_so_far(r)]
    assert [fallback_so_far(r) for r in continued] == ["word0 word1 word2 "] * 3


def test_an_answer_that_cannot_be_continued_starts_over(server: FakeOpenAIServer) -> None:
    text_answer, json_answer = "one two three four five", '{"answer": "one two three four five"}'
    server.script("agg", text_answer)
    ctx = fake_context(server, ["p1"], max_attempts=2, retry_base_s=0.01)
    tool = {"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}
    with running(app_for(ctx)) as base:
        # With tools bound, an answer that breaks after 2 tokens is asked again, whole: sent text
        # cannot be taken back, so the new answer follows a blank line.
        server.fail("agg", Failure(drop_after_tokens=2))
        stream = client(base).chat.completions.create(
            model="fake", messages=MESSAGES, stream=True, tools=[tool]
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text == "one two \n\n" + text_answer
        # With a response format the text is sent once checked: the client's parser gets the
        # JSON alone.
        server.script("agg", json_answer)
        server.fail("agg", Failure(drop_after_tokens=2))
        stream = client(base).chat.completions.create(
            model="fake",
            messages=MESSAGES,
            stream=True,
            response_format={"type": "json_object"},
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text == json_answer
        server.fail("agg", Failure(drop_after_tokens=3))
        whole = client(base).chat.completions.create(
            model="fake", messages=MESSAGES, response_format={"type": "json_object"}
        )
        assert whole.choices[0].message.content == json_answer


@pytest.mark.parametrize(
    "error",
    [UnsupportedContentError(1, 0, "image_url"), UnpairedToolCallError(2, ["call_1"], result=True)],
)
def test_a_conversation_the_mixture_cannot_use_is_the_clients_400(error: InputError) -> None:
    # Not a 502 "run failed": the client's request is what must change.
    answer = from_run_error(error)
    assert (answer.status, answer.param) == (400, "messages")
    assert str(error) in answer.message


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (
            "/v1/chat/completions",
            '{"messages": [{"role": "user", "content": "hi"}], "\\udc00": 1}',
            "\\udc00",
        ),
        (
            "/v1/chat/completions",
            '{"messages": [{"role": "user", "content": "hi", "\\ud800x": 1}]}',
            "messages[0].\\ud800x",
        ),
        (
            "/moa/invoke",
            '{"input": {"messages": [{"type": "human", "content": "hi"}],'
            ' "settings": {"\\udc00": 1}}}',
            "input.settings.\\udc00",
        ),
    ],
    ids=["v1-top-level-key", "v1-message-key", "langserve-settings-key"],
)
def test_a_lone_surrogate_in_a_key_is_400_naming_it_escaped(
    server: FakeOpenAIServer, base: str, path: str, body: str, param: str
) -> None:
    # It was a 500: the key itself was the bad part, and was put unescaped into the answer.
    response = httpx.post(
        f"{base}{path}", content=body.encode(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    error = error_of(response)
    assert (error["code"], error["param"]) == ("invalid_text", param)
    assert error["message"].startswith(f"{param}: the text holds a lone surrogate")
    assert server.requests == []


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        # Its UTF-8 bytes, which Python's JSON reader takes (surrogatepass): no escape to see.
        (b'{"messages": [{"role": "user", "content": "hi \xed\xa0\x80"}]}', "messages[0].content"),
        # UTF-16, which it reads too.
        (
            '{"messages": [{"role": "user", "content": "hi \ud800"}]}'.encode(
                "utf-16", "surrogatepass"
            ),
            "messages[0].content",
        ),
        (b'{"messages": [{"role": "user", "content": "hi \\ud800"}]}', "messages[0].content"),
    ],
    ids=["utf-8-bytes", "utf-16", "escape"],
)
def test_a_lone_surrogate_however_written_is_400(
    server: FakeOpenAIServer, base: str, raw: bytes, param: str
) -> None:
    # Only bodies that may hold one are walked (a regex over the rest): these all may.
    response = httpx.post(
        f"{base}/v1/chat/completions", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    error = error_of(response)
    assert (error["code"], error["param"]) == ("invalid_text", param)
    assert error["message"].startswith(f"{param}: the text holds a lone surrogate")
    assert server.requests == []
