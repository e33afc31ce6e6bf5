"""A fake OpenAI-compatible chat-completions server for tests and benchmarks.

Why this exists
---------------
The Mixture-of-Agents library talks to LLM providers through their real client
code (the ``openai`` SDK, ``langchain_openai.ChatOpenAI``,
``langchain_together.ChatTogether``, ...).  Mocking those clients in-process
would skip exactly the parts that break in production: HTTP connection pools,
SSE parsing, retries and ``Retry-After`` handling, timeouts, usage
accounting, and how many requests really run at the same time.

:class:`FakeOpenAIServer` is a real HTTP server (starlette + uvicorn) on
``127.0.0.1`` with an ephemeral port.  Tests and the benchmark suite point the
real clients at :attr:`FakeOpenAIServer.base_url` and *script* what each model
answers, how fast (time to first token, per-token delay, or a random latency
drawn per request) and which faults it injects (HTTP errors with
``Retry-After``, hangs that trigger client timeouts, connections dropped in the
middle of a stream).  Every request is recorded with its timing, so tests can
assert what was sent and benchmarks can measure overlap and concurrency.
A reply may call tools (:class:`ToolCallReply`), in OpenAI's shapes, streamed
and not; unscripted models answer requests with ``tools`` or a
``response_format`` in kind (:func:`default_answer`).

All waiting is done with non-blocking asyncio timers against absolute
deadlines (no drift over long streams), so many concurrent requests overlap
exactly like they would against a real provider, and each streamed chunk is
written to the socket as soon as it is produced.

Usage::

    with FakeOpenAIServer() as server:
        server.script("proposer-a", "Hello there", ttft=0.2, token_delay=0.01)
        server.fail("proposer-b", Failure(status=429, retry_after="1"))
        server.rate_limit(10)  # like a provider: 429 above 10 requests per second per model
        client = openai.OpenAI(base_url=server.base_url, api_key="test-key")
        ...
        assert server.requests_for("proposer-a")[0].stream

The server is a pure test helper: it never talks to the network beyond the
loopback interface it listens on.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import math
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

__all__ = [
    "Failure",
    "FakeOpenAIServer",
    "RecordedRequest",
    "ReplySpec",
    "ToolCall",
    "ToolCallReply",
    "continuing",
    "count_prompt_tokens",
    "default_answer",
    "default_reply",
    "example_value",
    "final_assistant_prefill",
    "message_text",
    "split_tokens",
]

_TOKEN_RE = re.compile(r"\S+\s*|\s+")
_SCOPE_TRANSPORT_KEY = "fake_openai.transport"
_STOP = "stop"
_DISCONNECT = "disconnect"


# --------------------------------------------------------------------------- #
# Public data types
# --------------------------------------------------------------------------- #


@dataclass
class Failure:
    """One scripted failure, consumed by one request to its model, in order.

    Precedence when several fields are set: ``hang`` is applied first (the
    server sleeps, answering nothing), then ``status`` (an HTTP error with an
    OpenAI-style JSON body), otherwise ``drop_after_tokens`` (connection cut),
    otherwise the request is answered normally after the hang.

    Attributes:
        status: answer this HTTP status with an OpenAI-style JSON error body
            ``{"error": {"message", "type", "code", "param"}}``.
        retry_after: value of the ``Retry-After`` header (seconds or HTTP date),
            sent with ``status``.
        retry_after_ms: value of OpenAI's ``retry-after-ms`` header, sent with ``status``.
        hang: sleep this many seconds before answering anything (to trigger
            client timeouts); then answer normally (or with ``status``).  The
            sleep ends early if the client disconnects.
        drop_after_tokens: streaming: send the role chunk and this many content
            chunks (with the normal timing), then close the connection
            abruptly (incomplete chunked body, no finish chunk, no
            ``[DONE]``).  Non-streaming: wait as long as producing that many
            tokens would take, then close the connection without any response.
        message: the error message put into the JSON error body.
        error_type: the ``error.type`` field; derived from ``status`` if None
            (e.g. 429 -> ``"rate_limit_error"``).  Addition to the base API.
        code: the ``error.code`` field; derived from ``status`` if None
            (e.g. 429 -> ``"rate_limit_exceeded"``).  Addition to the base API.
        param: the ``error.param`` field (the request field refused, e.g.
            ``"stop"``, as OpenAI names it); None by default.
    """

    status: int | None = None
    retry_after: str | None = None
    retry_after_ms: str | None = None
    hang: float | None = None
    drop_after_tokens: int | None = None
    message: str = "scripted failure"
    error_type: str | None = None
    code: str | None = None
    param: str | None = None


# What OpenAI's reasoning models answer to a request carrying ``stop``.
_STOP_REFUSED = Failure(
    status=400,
    message="Unsupported parameter: 'stop' is not supported with this model.",
    error_type="invalid_request_error",
    code="unsupported_parameter",
    param="stop",
)


@dataclass
class RecordedRequest:
    """One request received by the server (successful or not).

    Records are created when the request arrives and are updated while it is
    being answered (``finished``, ``status``, ``disconnected``, ...), so read
    them after the client got its answer (see :meth:`FakeOpenAIServer.wait_idle`
    when the client gave up early and the server may still be noticing it).

    Attributes:
        model: the ``model`` of the JSON body ("" if missing).
        messages: the ``messages`` exactly as received.
        body: the full JSON body ({} if the body was not a JSON object).
        headers: request headers, names lower-cased; includes ``authorization``.
        stream: whether ``"stream": true`` was requested.
        started: ``time.perf_counter()`` when the request arrived.
        finished: ``time.perf_counter()`` when the response finished, was cut
            by the server, or when the server noticed the client went away.
        status: the HTTP status answered; 0 while nothing was answered yet and
            when no status line was ever sent (connection dropped or client
            gone before the response started).
        disconnected: True if the client closed the connection before the
            response was complete (detected from the ASGI ``http.disconnect``
            message, not guessed).
        reply: (addition) the reply text the server intended to send, after
            the ``max_tokens`` cut; None if it never got that far.
        chunks_sent: (addition) number of content chunks actually written
            (streaming) or in the answer (non-streaming).
        failure: (addition) the scripted :class:`Failure` this request
            consumed, if any.
        finish_reason: (addition) ``"stop"`` or ``"length"`` when a completion
            was produced.
    """

    model: str
    messages: list[dict[str, Any]]
    body: dict[str, Any]
    headers: dict[str, str]
    stream: bool
    started: float
    finished: float | None = None
    status: int = 0
    disconnected: bool = False
    reply: str | None = None
    chunks_sent: int = 0
    failure: Failure | None = None
    finish_reason: str | None = None

    @property
    def duration(self) -> float | None:
        """Seconds from arrival to ``finished`` (None while still running)."""
        if self.finished is None:
            return None
        return self.finished - self.started


@dataclass
class ToolCall:
    """One function call in a :class:`ToolCallReply`. ``arguments`` is sent as
    given when it is a string (to script malformed JSON), else JSON-encoded."""

    name: str
    arguments: dict[str, Any] | str
    id: str | None = None  # default: call_<n> from the request counter and position

    def encoded(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments)


@dataclass
class ToolCallReply:
    """A reply calling tools, in OpenAI's shape: ``message.tool_calls`` and
    ``finish_reason: "tool_calls"``; streamed like OpenAI streams them (the
    first chunk of each call carries its id, type and name with empty
    ``arguments``, then the arguments arrive in fragments of at most
    ``ARGUMENT_FRAGMENT`` characters, each fragment one chunk).  ``content``
    (optional text before the calls) is streamed word by word first."""

    calls: list[ToolCall]
    content: str = ""


ARGUMENT_FRAGMENT = 8

ReplySpec = str | ToolCallReply | Callable[[RecordedRequest], "str | ToolCallReply"] | None
"""What a scripted model answers: fixed text, tool calls, a function of the
request returning either (called on the server thread, once per request), or
None for the default (:func:`default_answer`)."""


@dataclass
class _Script:
    reply: ReplySpec = None
    ttft: float = 0.0
    token_delay: float = 0.0
    latency: Callable[[], float] | None = None
    honour_stop: bool = False
    refuse_stop: bool = False
    ignore_max_tokens: bool = False


# --------------------------------------------------------------------------- #
# Pure helpers (public so tests can compute expected values)
# --------------------------------------------------------------------------- #


def message_text(content: Any) -> str:
    """Text of a message ``content``: a string, or a list of parts where the
    ``{"type": "text", "text": ...}`` parts are joined with a space."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                text = part.get("text")
                if isinstance(text, str):
                    texts.append(text)
            elif isinstance(part, str):
                texts.append(part)
        return " ".join(texts)
    return str(content)


def default_reply(model: str, messages: Sequence[Mapping[str, Any]]) -> str:
    """The reply of an unscripted model (or a scripted one with reply=None).

    ``f'Answer from {model}: I considered "{snippet}" and this is my reply.'``
    where ``snippet`` is the text of the last ``user`` message with runs of
    whitespace collapsed to one space, truncated to 60 characters ("" if there
    is no user message).
    """
    last_user = ""
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == "user":
            last_user = message_text(message.get("content"))
            break
    snippet = " ".join(last_user.split())[:60]
    return f'Answer from {model}: I considered "{snippet}" and this is my reply.'


def final_assistant_prefill(record: RecordedRequest) -> str | None:
    """The answer a request asks to continue the way vLLM does: a final assistant message sent
    with ``continue_final_message: true`` (None for any other request)."""
    messages = record.messages
    if record.body.get("continue_final_message") is True and messages:
        last = messages[-1]
        if isinstance(last, Mapping) and last.get("role") == "assistant":
            return message_text(last.get("content"))
    return None


def continuing(
    text: str,
    answer_so_far: Callable[[RecordedRequest], str | None] = final_assistant_prefill,
) -> Callable[[RecordedRequest], str]:
    """A reply (for :meth:`FakeOpenAIServer.script`) that writes ``text`` across requests that
    continue it, like a model asked to continue its own answer: a request whose answer so far
    (``answer_so_far(request)``; by default vLLM's continuation, :func:`final_assistant_prefill`)
    is a prefix of ``text`` gets the rest of ``text``; any other request gets ``text`` whole.
    With ``max_tokens`` each request writes the next piece."""

    def reply(record: RecordedRequest) -> str:
        done = answer_so_far(record)
        if done and text.startswith(done):
            return text[len(done) :]
        return text

    return reply


def example_value(schema: Mapping[str, Any]) -> Any:
    """A value of a JSON schema's shape: every required field, "example" for strings, 1 for
    numbers, true, [], the first enum value or anyOf form."""
    if schema.get("enum"):
        return schema["enum"][0]
    forms = schema.get("anyOf") or schema.get("oneOf")
    if forms:
        return example_value(forms[0])
    kind = schema.get("type")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {k: example_value(props.get(k, {})) for k in schema.get("required") or []}
    return {"string": "example", "integer": 1, "number": 1.0, "boolean": True, "array": []}.get(
        str(kind), "example"
    )


def default_answer(record: RecordedRequest) -> str | ToolCallReply:
    """What an unscripted model (or a scripted one with reply=None) answers.

    - with ``tools`` (and ``tool_choice`` not "none") and no tool result since the last user
      message: a call of the named tool (or the first) with :func:`example_value` arguments;
    - with ``response_format`` ``json_schema``: an example object of the schema as JSON text;
      ``json_object``: ``{"answer": <the default reply>}``;
    - else :func:`default_reply`.
    """
    body = record.body
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and "function" in t]
    choice = body.get("tool_choice")
    answered = bool(record.messages) and record.messages[-1].get("role") == "tool"
    if tools and choice != "none" and not answered:
        named = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
        function = next((t["function"] for t in tools if t["function"]["name"] == named), None)
        function = function or tools[0]["function"]
        args = example_value(function.get("parameters") or {})
        return ToolCallReply([ToolCall(function["name"], args)])
    text = default_reply(record.model, record.messages)
    response_format = body.get("response_format")
    if not isinstance(response_format, dict):
        return text
    kind = response_format.get("type")
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {}
        return json.dumps(example_value(schema))
    if kind == "json_object":
        return json.dumps({"answer": text})
    return text


def split_tokens(text: str) -> list[str]:
    """Split a reply into stream chunks: one word each, trailing whitespace
    attached (``re.findall(r"\\S+\\s*|\\s+", text)``)."""
    return _TOKEN_RE.findall(text)


def count_prompt_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """``usage.prompt_tokens``: whitespace-separated words over all message
    contents, plus 3 per message."""
    total = 0
    for message in messages:
        content = message.get("content") if isinstance(message, Mapping) else None
        total += len(message_text(content).split()) + 3
    return total


def _error_kind(status: int) -> tuple[str, str | None]:
    if status == 400:
        return "invalid_request_error", None
    if status == 401:
        return "invalid_request_error", "invalid_api_key"
    if status == 403:
        return "permission_error", None
    if status == 404:
        return "invalid_request_error", "model_not_found"
    if status == 408:
        return "timeout_error", None
    if status == 409:
        return "conflict_error", None
    if status == 422:
        return "invalid_request_error", None
    if status == 429:
        return "rate_limit_error", "rate_limit_exceeded"
    if status == 503:
        return "server_error", "service_unavailable"
    if status >= 500:
        return "server_error", None
    return "invalid_request_error", None


def _error_body(
    status: int,
    message: str,
    error_type: str | None = None,
    code: str | None = None,
    param: str | None = None,
) -> bytes:
    default_type, default_code = _error_kind(status)
    payload = {
        "error": {
            "message": message,
            "type": error_type if error_type is not None else default_type,
            "param": param,
            "code": code if code is not None else default_code,
        }
    }
    return json.dumps(payload).encode()


def _before_stop(text: str, stop: Any) -> str:
    """``text`` up to the first of the ``stop`` sequences (a string or a list)."""
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    ends = [i for s in stops if isinstance(s, str) and s and (i := text.find(s)) >= 0]
    return text[: min(ends)] if ends else text


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


class _AbortConnection(Exception):
    """Raised to make uvicorn close a connection when no transport is known."""


class _DropAbortLogs(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, _AbortConnection)


_ABORT_FILTER = _DropAbortLogs()


# --------------------------------------------------------------------------- #
# One HTTP exchange
# --------------------------------------------------------------------------- #


class _Exchange:
    """State of one chat-completions request while it is being answered."""

    def __init__(
        self, scope: Scope, receive: Receive, send: Send, record: RecordedRequest, request_id: str
    ) -> None:
        self.request_id = request_id
        self.scope = scope
        self.receive = receive
        self.send = send
        self.record = record
        self.interrupt: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.complete = False  # response fully handed to the transport
        self.aborting = False  # we are closing the connection ourselves
        self.listener: asyncio.Task[None] | None = None

    # -- disconnect detection ------------------------------------------------
    def start_listening(self) -> None:
        self.listener = asyncio.get_running_loop().create_task(self._listen())

    async def _listen(self) -> None:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                break
        if self.complete or self.aborting:
            return
        self.record.disconnected = True
        if self.record.finished is None:
            self.record.finished = time.perf_counter()
        self.set_interrupt(_DISCONNECT)

    def set_interrupt(self, reason: str) -> None:
        if not self.interrupt.done():
            self.interrupt.set_result(reason)

    async def close(self) -> None:
        listener = self.listener
        if listener is None:
            return
        if not listener.done():
            listener.cancel()
        with contextlib.suppress(BaseException):
            await listener

    # -- timing ----------------------------------------------------------------
    async def wait_until(self, deadline: float) -> bool:
        """Sleep until ``deadline`` (perf_counter); False if interrupted."""
        if self.interrupt.done():
            return False
        delay = deadline - time.perf_counter()
        if delay > 0:
            await asyncio.wait((self.interrupt,), timeout=delay)
        return not self.interrupt.done()

    async def on_interrupt(self) -> None:
        """Handle an interrupted wait: client gone, or server stopping."""
        if self.interrupt.done() and self.interrupt.result() == _STOP:
            await self.abort()

    # -- sending ---------------------------------------------------------------
    async def start_response(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.record.status = status
        await self.send({"type": "http.response.start", "status": status, "headers": headers})

    async def body(self, data: bytes, *, more: bool) -> None:
        if not more:
            self.complete = True
            # Before sending: a client that got the last byte must see the request finished.
            if self.record.finished is None:
                self.record.finished = time.perf_counter()
        await self.send({"type": "http.response.body", "body": data, "more_body": more})

    async def send_json(
        self, status: int, payload: bytes, extra_headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            (b"x-request-id", self.request_id.encode()),
            *extra_headers,
        ]
        await self.start_response(status, headers)
        await self.body(payload, more=False)

    async def send_error(
        self,
        status: int,
        message: str,
        *,
        retry_after: str | None = None,
        retry_after_ms: str | None = None,
        error_type: str | None = None,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        extra: list[tuple[bytes, bytes]] = []
        if retry_after is not None:
            extra.append((b"retry-after", retry_after.encode("latin-1")))
        if retry_after_ms is not None:
            extra.append((b"retry-after-ms", retry_after_ms.encode("latin-1")))
        await self.send_json(status, _error_body(status, message, error_type, code, param), extra)

    async def abort(self) -> None:
        """Close the connection abruptly (whatever was sent so far is flushed,
        then the socket is closed without finishing the HTTP message)."""
        self.aborting = True
        if self.record.finished is None:
            self.record.finished = time.perf_counter()
        transport = self.scope.get(_SCOPE_TRANSPORT_KEY)
        if transport is None or not hasattr(transport, "close"):
            # Not running under uvicorn's h11/httptools protocol: make the
            # server close the connection (it answers 500 if nothing was sent).
            if self.record.status == 0:
                self.record.status = 500
            raise _AbortConnection("fake_openai: dropping connection")
        transport.close()
        # Let uvicorn notice the connection is gone before we return, so it
        # does not complain about an unfinished response.
        if self.listener is not None and not self.listener.done():
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(self.listener), timeout=1.0)


# --------------------------------------------------------------------------- #
# The server
# --------------------------------------------------------------------------- #


class _ASGIEndpoint:
    """Wrap a raw ASGI coroutine so starlette routes to it as an ASGI app."""

    def __init__(self, handler: Callable[[Scope, Receive, Send], Any]) -> None:
        self._handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._handler(scope, receive, send)


class FakeOpenAIServer:
    """A real OpenAI-compatible HTTP server on 127.0.0.1 with scripted replies.

    Endpoints: ``POST /v1/chat/completions`` (also ``/chat/completions``) and
    ``GET /v1/models`` (the scripted model ids).

    Args:
        strict: if True, a model that was not :meth:`script`-ed is answered
            404 with an OpenAI error body (code ``model_not_found``); otherwise
            any model is accepted and unscripted ones get :func:`default_reply`.

    Public attributes:
        requests: every request in arrival order (appended under a lock; the
            records are updated in place while they are answered).
        strict: see above; may be changed at any time.
        app: the starlette ASGI application (routes only; scripted connection
            drops need uvicorn's transport, so prefer the real server).

    Use :meth:`start`/:meth:`stop` or ``with FakeOpenAIServer() as server:``.
    The server runs uvicorn in a daemon thread with its own event loop; the
    reply callables and ``latency`` functions are called on that thread.
    """

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._scripts: dict[str, _Script] = {}
        self._failures: dict[str, collections.deque[Failure]] = {}
        self._in_flight: dict[str, int] = {}
        self._in_flight_total = 0
        self._peak: dict[str, int] = {}
        self._peak_total = 0
        self._counter = 0
        self._rate: float | None = None  # requests per second allowed (see rate_limit)
        self._window = 1.0
        self._accepted: dict[str, collections.deque[float]] = {}
        self.rate_limited = 0  # requests answered 429 by the rate limit
        self._exchanges: set[_Exchange] = set()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._server: uvicorn.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread_error: BaseException | None = None
        self._port: int | None = None
        self.app = self._build_app()

    # ------------------------------------------------------------------ life
    def start(self) -> Self:
        """Start serving; blocks until the server accepts connections.

        Returns self. Calling it on a running server is a no-op.
        """
        if self._thread is not None:
            return self
        logging.getLogger("uvicorn.error").addFilter(_ABORT_FILTER)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._sock = sock
        self._port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self._outer_app,
            log_level="warning",
            access_log=False,
            log_config=None,
            lifespan="off",
            interface="asgi3",
            loop="asyncio",
            proxy_headers=False,
            server_header=False,
            backlog=4096,
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread_error = None
        self._thread = threading.Thread(
            target=self._run, name=f"fake-openai-{self._port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 15.0
        while not self._server.started:
            if not self._thread.is_alive():
                error = self._thread_error
                self._cleanup_after_thread()
                raise RuntimeError(f"fake OpenAI server failed to start: {error!r}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("fake OpenAI server did not start within 15 s")
            time.sleep(0.001)
        return self

    def _run(self) -> None:
        assert self._server is not None and self._sock is not None
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._server.serve(sockets=[self._sock]))
        except BaseException as exc:
            self._thread_error = exc
        finally:
            try:
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    def stop(self) -> None:
        """Stop the server promptly (idempotent).

        Requests still in flight are cut (their connections are closed), then
        uvicorn is told to exit and its thread is joined.
        """
        thread, server, loop = self._thread, self._server, self._loop
        if thread is None or server is None:
            return
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(self._interrupt_all, _STOP)
        server.should_exit = True
        thread.join(timeout=10.0)
        if thread.is_alive():  # pragma: no cover - last resort
            server.force_exit = True
            thread.join(timeout=5.0)
        self._cleanup_after_thread()

    def _cleanup_after_thread(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._thread = None
        self._server = None
        self._loop = None

    def _interrupt_all(self, reason: str) -> None:
        for exchange in list(self._exchanges):
            exchange.set_interrupt(reason)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._thread is not None

    @property
    def port(self) -> int:
        """The TCP port (raises RuntimeError before :meth:`start`)."""
        if self._port is None or self._thread is None:
            raise RuntimeError("FakeOpenAIServer is not running; call start() first")
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no ``/v1``)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1`` - pass it as the clients' base_url."""
        return f"{self.url}/v1"

    # ------------------------------------------------------------- scripting
    def script(
        self,
        model: str,
        reply: ReplySpec = None,
        *,
        ttft: float = 0.0,
        token_delay: float = 0.0,
        latency: Callable[[], float] | None = None,
        failures: list[Failure] | None = None,
        honour_stop: bool = False,
        refuse_stop: bool = False,
        ignore_max_tokens: bool = False,
    ) -> None:
        """Script ``model`` (replacing any earlier script for it).

        Args:
            reply: fixed text, a callable ``RecordedRequest -> str``, or None
                for :func:`default_reply`.
            ttft: time to first token, counted from the request's arrival
                (after any ``Failure.hang``).  Streaming: the 200 status and
                headers go out at once, the role chunk and the first content
                chunk after ``ttft``; non-streaming: part of the total wait.
            token_delay: seconds between content chunks; non-streaming answers
                wait ``ttft + n_chunks * token_delay``.
            latency: if given, called once per request to draw the ttft
                instead of ``ttft`` (e.g. heavy-tailed benchmark latencies).
            failures: if given, replaces the model's queue of pending scripted
                failures (None keeps failures queued with :meth:`fail`).
            honour_stop: end a text reply before the first of the request's
                ``stop`` sequences, as OpenAI does (the sequence left out,
                ``finish_reason`` "stop", only the tokens before it sent and
                counted). By default ``stop`` is ignored, as some providers
                do, so the client's own cut is what a test sees.
            refuse_stop: answer every request carrying ``stop`` with a 400
                naming it (``param: "stop"``), as OpenAI's reasoning models do.
                Scripted failures queued with :meth:`fail` come first.
            ignore_max_tokens: send the whole reply whatever the request's
                ``max_tokens``, as a misbehaving provider does (by default a
                text reply is cut there, ``finish_reason`` "length").
        """
        with self._lock:
            self._scripts[model] = _Script(
                reply=reply,
                ttft=ttft,
                token_delay=token_delay,
                latency=latency,
                honour_stop=honour_stop,
                refuse_stop=refuse_stop,
                ignore_max_tokens=ignore_max_tokens,
            )
            if failures is not None:
                self._failures[model] = collections.deque(failures)

    def fail(self, model: str, *failures: Failure) -> None:
        """Append failures for the next requests to ``model`` (one each, in
        order). Works for unscripted models too (unless ``strict``)."""
        with self._lock:
            self._failures.setdefault(model, collections.deque()).extend(failures)

    def pending_failures(self, model: str) -> int:
        """How many scripted failures for ``model`` are not consumed yet."""
        with self._lock:
            return len(self._failures.get(model, ()))

    def rate_limit(self, requests_per_s: float | None, *, window_s: float = 1.0) -> None:
        """Answer 429 above ``requests_per_s`` per model, like a provider (None: no limit).

        Over any sliding ``window_s`` seconds at most ``requests_per_s * window_s`` requests to
        one model are accepted; one more is answered HTTP 429 (``rate_limit_exceeded``) with
        ``Retry-After`` (whole seconds, rounded up) and ``retry-after-ms`` saying when the oldest
        accepted request leaves the window. Rejected requests do not count against the limit.
        ``rate_limited`` counts them. Scripted failures are consumed only by accepted requests.
        """
        with self._lock:
            self._rate = requests_per_s
            self._window = window_s
            self._accepted.clear()
            self.rate_limited = 0

    def _over_limit(self, model: str, now: float) -> float | None:
        """Seconds to wait if a request to ``model`` arriving ``now`` is over the rate limit
        (lock held)."""
        if self._rate is None:
            return None
        accepted = self._accepted.setdefault(model, collections.deque())
        while accepted and accepted[0] <= now - self._window:
            accepted.popleft()
        if len(accepted) >= self._rate * self._window:
            self.rate_limited += 1
            return accepted[0] + self._window - now
        accepted.append(now)
        return None

    def reset(self) -> None:
        """Clear scripts, pending failures, records and concurrency peaks.

        Requests in flight keep running; the peaks restart from the current
        in-flight counts.
        """
        with self._lock:
            self._scripts.clear()
            self._failures.clear()
            self.requests.clear()
            self._peak = {m: n for m, n in self._in_flight.items() if n}
            self._peak_total = self._in_flight_total
            self._rate = None
            self._accepted.clear()
            self.rate_limited = 0

    # ------------------------------------------------------------ inspection
    def requests_for(self, model: str) -> list[RecordedRequest]:
        """The recorded requests for ``model``, in arrival order."""
        with self._lock:
            return [r for r in self.requests if r.model == model]

    def max_concurrency(self, model: str | None = None) -> int:
        """Peak number of requests in flight at once (arrival to end of the
        response), over all models or for one ``model``, since start/reset."""
        with self._lock:
            if model is None:
                return self._peak_total
            return self._peak.get(model, 0)

    def in_flight(self, model: str | None = None) -> int:
        """Number of requests being answered right now."""
        with self._lock:
            if model is None:
                return self._in_flight_total
            return self._in_flight.get(model, 0)

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Block until no request is in flight (e.g. until the server noticed
        a client that went away). Returns False on timeout."""
        deadline = time.monotonic() + timeout
        while self.in_flight() > 0:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True

    # -------------------------------------------------------------- the app
    def _build_app(self) -> Starlette:
        chat = _ASGIEndpoint(self._chat_completions)
        return Starlette(
            routes=[
                Route("/v1/chat/completions", chat, methods=["POST"]),
                Route("/chat/completions", chat, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/models", self._models, methods=["GET"]),
            ]
        )

    async def _outer_app(self, scope: Scope, receive: Receive, send: Send) -> None:
        # uvicorn hands us its RequestResponseCycle.send bound method; keep the
        # cycle's transport so a scripted drop can close the socket for real.
        if scope["type"] == "http":
            transport = getattr(getattr(send, "__self__", None), "transport", None)
            if transport is not None:
                scope[_SCOPE_TRANSPORT_KEY] = transport
        await self.app(scope, receive, send)

    async def _models(self, request: Request) -> JSONResponse:
        with self._lock:
            ids = list(self._scripts)
        created = int(time.time())
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": created, "owned_by": "fake-openai"}
                    for m in ids
                ],
            }
        )

    async def _chat_completions(self, scope: Scope, receive: Receive, send: Send) -> None:
        arrived = time.perf_counter()
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])
        }
        request = Request(scope, receive)
        raw = await request.body()
        parsed: Any
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        body: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
        model = body.get("model")
        model = model if isinstance(model, str) else ""
        messages_raw = body.get("messages")
        messages: list[dict[str, Any]] = messages_raw if isinstance(messages_raw, list) else []
        record = RecordedRequest(
            model=model,
            messages=messages,
            body=body,
            headers=headers,
            stream=body.get("stream") is True,
            started=arrived,
        )
        with self._lock:
            self._counter += 1
            completion_id = f"chatcmpl-fake{self._counter:06d}"
            self.requests.append(record)
            self._in_flight_total += 1
            self._peak_total = max(self._peak_total, self._in_flight_total)
            current = self._in_flight.get(model, 0) + 1
            self._in_flight[model] = current
            self._peak[model] = max(self._peak.get(model, 0), current)
            script = self._scripts.get(model)
            known = script is not None
            failure: Failure | None = None
            usable = isinstance(parsed, dict) and model and isinstance(messages_raw, list)
            # The clock read under the lock: the window's times stay in order across threads.
            wait = self._over_limit(model, time.perf_counter()) if usable else None
            if wait is not None:
                failure = Failure(
                    status=429,
                    retry_after=str(max(1, math.ceil(wait))),
                    retry_after_ms=str(max(1, math.ceil(wait * 1000))),
                    message="Rate limit reached: too many requests per second",
                )
            elif usable and (known or not self.strict):
                queue = self._failures.get(model)
                if queue:
                    failure = queue.popleft()
                elif script is not None and script.refuse_stop and "stop" in body:
                    failure = _STOP_REFUSED
        record.failure = failure
        exchange = _Exchange(scope, receive, send, record, completion_id)
        self._exchanges.add(exchange)
        exchange.start_listening()
        try:
            if not isinstance(parsed, dict):
                await exchange.send_error(400, "We could not parse the JSON body of your request.")
            elif not model:
                await exchange.send_error(400, "you must provide a model parameter")
            elif not isinstance(messages_raw, list):
                await exchange.send_error(400, "'messages' is a required property")
            elif self.strict and not known:
                await exchange.send_error(
                    404,
                    f"The model `{model}` does not exist or you do not have access to it.",
                    error_type="invalid_request_error",
                    code="model_not_found",
                )
            else:
                await self._answer(exchange, script or _Script(), failure)
        except _AbortConnection:
            raise
        except Exception as exc:  # a reply callable raised, ...: answer 500, keep serving
            logging.getLogger(__name__).exception("fake OpenAI server: error answering request")
            if record.status == 0 and not exchange.interrupt.done():
                with contextlib.suppress(Exception):
                    await exchange.send_error(500, f"fake server error: {exc!r}")
        finally:
            if record.finished is None:
                record.finished = time.perf_counter()
            self._exchanges.discard(exchange)
            with self._lock:
                self._in_flight_total -= 1
                self._in_flight[model] = self._in_flight.get(model, 1) - 1
            await exchange.close()

    async def _answer(self, ex: _Exchange, script: _Script, failure: Failure | None) -> None:
        record = ex.record
        completion_id = ex.request_id
        body = record.body
        begin = record.started
        if failure is not None and failure.hang:
            begin += failure.hang
            if not await ex.wait_until(begin):
                await ex.on_interrupt()
                return
            begin = time.perf_counter()
        if failure is not None and failure.status is not None:
            await ex.send_error(
                failure.status,
                failure.message,
                retry_after=failure.retry_after,
                retry_after_ms=failure.retry_after_ms,
                error_type=failure.error_type,
                code=failure.code,
                param=failure.param,
            )
            return

        reply_spec = script.reply
        reply: str | ToolCallReply
        if reply_spec is None:
            reply = default_answer(record)
        elif isinstance(reply_spec, str | ToolCallReply):
            reply = reply_spec
        else:
            reply = reply_spec(record)
        if isinstance(reply, ToolCallReply):
            await self._answer_tool_calls(ex, reply, begin, script)
            return
        text = reply
        if script.honour_stop:
            text = _before_stop(text, body.get("stop"))
        chunks = split_tokens(text)
        finish_reason = "stop"
        limits = [
            v
            for v in (body.get("max_tokens"), body.get("max_completion_tokens"))
            if isinstance(v, int) and not isinstance(v, bool)
        ]
        if limits and min(limits) < len(chunks) and not script.ignore_max_tokens:
            chunks = chunks[: max(min(limits), 0)]
            finish_reason = "length"
        record.reply = "".join(chunks)
        ttft = float(script.latency()) if script.latency is not None else script.ttft
        delay = script.token_delay
        drop = failure.drop_after_tokens if failure is not None else None
        usage = {
            "prompt_tokens": count_prompt_tokens(record.messages),
            "completion_tokens": len(chunks),
            "total_tokens": count_prompt_tokens(record.messages) + len(chunks),
        }
        created = int(time.time())

        if not record.stream:
            n_wait = len(chunks) if drop is None else min(drop, len(chunks))
            if not await ex.wait_until(begin + ttft + n_wait * delay):
                await ex.on_interrupt()
                return
            if drop is not None:
                await ex.abort()
                return
            record.chunks_sent = len(chunks)
            record.finish_reason = finish_reason
            payload = {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": record.model,
                "system_fingerprint": "fp_fake",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": record.reply, "refusal": None},
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                ],
                "usage": usage,
            }
            await ex.send_json(200, json.dumps(payload).encode())
            return

        # ---- streaming ----
        stream_options = body.get("stream_options")
        include_usage = (
            isinstance(stream_options, dict) and stream_options.get("include_usage") is True
        )

        def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
            payload: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": record.model,
                "system_fingerprint": "fp_fake",
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            if include_usage:
                payload["usage"] = None
            return _sse(payload)

        await ex.start_response(
            200,
            [
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-cache"),
                (b"x-request-id", completion_id.encode()),
            ],
        )
        to_send = chunks if drop is None else chunks[: max(drop, 0)]
        first_at = begin + ttft
        if not await ex.wait_until(first_at):
            await ex.on_interrupt()
            return
        await ex.body(chunk({"role": "assistant", "content": "", "refusal": None}, None), more=True)
        for i, token in enumerate(to_send):
            if i and not await ex.wait_until(first_at + i * delay):
                await ex.on_interrupt()
                return
            if ex.interrupt.done():
                await ex.on_interrupt()
                return
            await ex.body(chunk({"content": token}, None), more=True)
            record.chunks_sent += 1
        if drop is not None:
            await ex.abort()
            return
        record.finish_reason = finish_reason
        tail = chunk({}, finish_reason)
        if include_usage:
            tail += _sse(
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": record.model,
                    "system_fingerprint": "fp_fake",
                    "choices": [],
                    "usage": usage,
                }
            )
        tail += b"data: [DONE]\n\n"
        await ex.body(tail, more=False)

    async def _answer_tool_calls(
        self, ex: _Exchange, reply: ToolCallReply, begin: float, script: _Script
    ) -> None:
        """Answer with tool calls (see :class:`ToolCallReply`); no faults, no max_tokens cut."""
        record = ex.record
        calls: list[dict[str, Any]] = [
            {
                "id": call.id or f"call_{ex.request_id[-6:]}_{i}",
                "type": "function",
                "function": {"name": call.name, "arguments": call.encoded()},
            }
            for i, call in enumerate(reply.calls)
        ]
        words = split_tokens(reply.content)
        fragments = [
            (i, args[at : at + ARGUMENT_FRAGMENT])
            for i, call in enumerate(calls)
            for args in [call["function"]["arguments"]]
            for at in range(0, len(args), ARGUMENT_FRAGMENT)
        ]
        record.reply = reply.content
        record.finish_reason = "tool_calls"
        prompt = count_prompt_tokens(record.messages)
        completion = len(words) + len(calls) + len(fragments)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        created = int(time.time())
        ttft = float(script.latency()) if script.latency is not None else script.ttft
        if not record.stream:
            if not await ex.wait_until(begin + ttft + completion * script.token_delay):
                await ex.on_interrupt()
                return
            record.chunks_sent = completion
            payload = {
                "id": ex.request_id,
                "object": "chat.completion",
                "created": created,
                "model": record.model,
                "system_fingerprint": "fp_fake",
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": reply.content or None,
                            "refusal": None,
                            "tool_calls": calls,
                        },
                        "logprobs": None,
                        "finish_reason": "tool_calls",
                    }
                ],
                "usage": usage,
            }
            await ex.send_json(200, json.dumps(payload).encode())
            return

        stream_options = record.body.get("stream_options")
        include_usage = (
            isinstance(stream_options, dict) and stream_options.get("include_usage") is True
        )

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return _sse(
                {
                    "id": ex.request_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": record.model,
                    "system_fingerprint": "fp_fake",
                    "choices": [
                        {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                    ],
                    **({"usage": None} if include_usage else {}),
                }
            )

        deltas: list[dict[str, Any]] = [{"content": w} for w in words]
        for i, call in enumerate(calls):
            head = {**call, "function": {"name": call["function"]["name"], "arguments": ""}}
            deltas.append({"tool_calls": [{"index": i, **head}]})
            deltas += [
                {"tool_calls": [{"index": n, "function": {"arguments": piece}}]}
                for n, piece in fragments
                if n == i
            ]
        await ex.start_response(
            200,
            [
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-cache"),
                (b"x-request-id", ex.request_id.encode()),
            ],
        )
        first_at = begin + ttft
        if not await ex.wait_until(first_at):
            await ex.on_interrupt()
            return
        await ex.body(chunk({"role": "assistant", "content": None, "refusal": None}), more=True)
        for i, delta in enumerate(deltas):
            if (i and not await ex.wait_until(first_at + i * script.token_delay)) or (
                ex.interrupt.done()
            ):
                await ex.on_interrupt()
                return
            await ex.body(chunk(delta), more=True)
            record.chunks_sent += 1
        tail = chunk({}, "tool_calls")
        if include_usage:
            tail += _sse(
                {
                    "id": ex.request_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": record.model,
                    "system_fingerprint": "fp_fake",
                    "choices": [],
                    "usage": usage,
                }
            )
        await ex.body(tail + b"data: [DONE]\n\n", more=False)
