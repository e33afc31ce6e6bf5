"""Clients that hold a connection without finishing their request (slow loris): one without the
key is answered 401 on its headers, before the server reads or waits for any of its body; one with
the key gets 408 when its body takes too long; one trickling its headers gets 408 too, and one
that sends nothing is closed. A client that stops reading its response, or reads it too slowly,
is cut and its slot freed. Over raw sockets, as such a client sends."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest
from conftest import fake_context
from fake_openai import FakeOpenAIServer, RecordedRequest, message_text
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from serving import ServeProcess, app_for, running, serve_env

from langgraph_moa.apps.serve.settings import ServeSettings

KEY = "slow-clients-server-key"
WAIT_S = 10.0  # generous: each answer comes at once or after the 1 s request_timeout_s


@pytest.fixture
def port(server: FakeOpenAIServer) -> Iterator[int]:
    app = app_for(fake_context(server, ["p1"]), api_key=KEY, request_timeout_s=1.0)
    with running(app) as base:
        yield int(base.rsplit(":", 1)[1])


def _start(port: int, auth: str | None) -> socket.socket:
    """A POST that declares a 500 kB body and sends one byte of it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
    head = "POST /v1/chat/completions HTTP/1.1\r\nHost: moa\r\nContent-Type: application/json\r\n"
    head += f"Authorization: {auth}\r\n" if auth else ""
    sock.sendall(f"{head}Content-Length: 500000\r\n\r\n{{".encode())
    return sock


def _answer(sock: socket.socket) -> tuple[int, dict[str, str], dict[str, object]]:
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        more = sock.recv(65536)
        if not more:
            break
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, json.loads(body)


@pytest.mark.parametrize(
    ("auth", "code"), [(None, "missing_api_key"), ("Bearer no", "invalid_api_key")]
)
def test_a_client_without_the_key_is_refused_before_its_body(
    port: int, server: FakeOpenAIServer, auth: str | None, code: str
) -> None:
    with _start(port, auth) as sock:
        started = time.monotonic()
        status, headers, body = _answer(sock)
        assert time.monotonic() - started < 0.9  # on its headers, not after the body deadline
    assert status == 401 and headers["www-authenticate"] == "Bearer"
    assert body["error"]["code"] == code  # type: ignore[index]
    assert server.requests == []


def test_a_body_that_never_finishes_is_408_and_nothing_runs(
    port: int, server: FakeOpenAIServer
) -> None:
    with _start(port, f"Bearer {KEY}") as sock:
        status, headers, body = _answer(sock)
        assert sock.recv(1) == b""  # and the connection is closed
    assert status == 408 and headers["connection"] == "close"
    error = body["error"]
    assert isinstance(error, dict) and error["code"] == "request_timeout"
    assert error["type"] == "invalid_request_error"
    assert "did not arrive within 1 s" in error["message"]
    assert server.requests == []


def test_headers_that_never_finish_are_408_and_the_connection_closed(
    port: int, server: FakeOpenAIServer
) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: moa\r\nContent-Type: app")
        status, headers, body = _answer(sock)
        assert sock.recv(1) == b""
    assert status == 408 and headers["connection"] == "close"
    error = body["error"]
    assert isinstance(error, dict) and error["code"] == "request_timeout"
    assert "headers did not arrive within 1 s" in error["message"]
    assert server.requests == []


def test_a_connection_that_sends_nothing_is_closed(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
        started = time.monotonic()
        assert sock.recv(1) == b""  # closed by the server, with nothing to answer
        assert time.monotonic() - started < WAIT_S


def test_an_idle_keep_alive_connection_is_not_cut_by_the_header_deadline(port: int) -> None:
    """Between requests, uvicorn's keep-alive (75 s) decides: a client reusing its connection
    after longer than the deadline is answered, not cut."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
        for pause in (0.0, 2.0):  # the second request after twice the 1 s deadline
            time.sleep(pause)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: moa\r\n\r\n")
            status, _, body = _answer(sock)
            assert status == 200 and body


def test_a_client_without_the_key_trickling_its_body_after_the_401_is_closed(port: int) -> None:
    """The 401 comes on the headers; uvicorn then reads and drops the body for as long as it
    comes, so the deadline holds that too: a client with no key cannot hold a connection."""
    with _start(port, None) as sock:
        status, _, _ = _answer(sock)
        assert status == 401
        started = time.monotonic()
        sock.settimeout(0.2)
        closed = False
        while not closed and time.monotonic() - started < WAIT_S:
            try:
                sock.sendall(b"a")  # a byte of the declared body every 0.2 s
                closed = sock.recv(1) == b""
            except TimeoutError:
                continue
            except OSError:  # reset by the server's close
                closed = True
        assert closed and time.monotonic() - started < 3.0  # the 1 s deadline, not for ever


def test_a_connection_whose_refused_body_came_whole_stays_open_for_the_next_request(
    port: int,
) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
        head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: moa\r\nContent-Length: 2\r\n\r\n"
        sock.sendall(head)
        assert _answer(sock)[0] == 401
        sock.sendall(b"{}")  # the rest of the body, after the answer
        time.sleep(2.0)  # twice the deadline: idle now, keep-alive's to decide
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: moa\r\n\r\n")
        assert _answer(sock)[0] == 200


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/moa/stream"])
def test_a_client_that_stops_reading_its_stream_is_cut_and_its_slot_freed(
    server: FakeOpenAIServer, route: str, caplog: pytest.LogCaptureFixture
) -> None:
    # It held its run slot for as long as it kept the socket open: a few such clients (or one,
    # here) locked everyone else out with 429s.
    # 6.4 MB: more than the sockets' buffers hold (the server's grows to 4 MB on Linux).
    answer = ("y" * 8000 + " ") * 800
    server.script("p1", "a proposal")
    server.script("agg", answer)
    # max_tokens 4,000 lets a response reach 8.4 MB (nodes/models/http.py): room for 800 such words.
    ctx = fake_context(server, ["p1"], max_tokens=4000)
    app = app_for(ctx, max_concurrent=1, send_timeout_s=1.0)
    with running(app) as base:
        if route.startswith("/v1"):
            body = {"stream": True, "messages": [{"role": "user", "content": "hi"}]}
        else:
            body = {"input": {"messages": [{"type": "human", "content": "hi"}]}}
        raw = json.dumps(body).encode()
        head = f"POST {route} HTTP/1.1\r\nHost: moa\r\nContent-Type: application/json\r\n"
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # reads nothing
        stalled.connect(("127.0.0.1", int(base.rsplit(":", 1)[1])))
        stalled.sendall(f"{head}Content-Length: {len(raw)}\r\n\r\n".encode() + raw)
        who = f"127.0.0.1:{stalled.getsockname()[1]}"  # how the log names it
        with stalled:
            deadline = time.monotonic() + 30  # generous: the cut comes 1 s after the stall
            while httpx.get(f"{base}/health").json()["runs_in_flight"] != 0:
                assert time.monotonic() < deadline, "the stalled client still holds its slot"
                time.sleep(0.1)
            # Another client gets the slot.
            reply = httpx.post(
                f"{base}/v1/chat/completions",
                json={"messages": [{"role": "user", "content": "hi"}]},
                timeout=60,
            )
            assert reply.status_code == 200
            # The stalled connection was cut: what it can still read ends short of the answer.
            got = 0
            stalled.settimeout(WAIT_S)
            try:
                while more := stalled.recv(1 << 20):
                    got += len(more)
            except ConnectionResetError:
                pass
            assert got < len(answer)
        said = [r.getMessage() for r in caplog.records if r.name == "moa.serve"]
        assert f"moa serve: {who} read nothing of its response for 1 s: connection closed" in said


def _trickle_config(tmp_path: Path, server: FakeOpenAIServer, big: str) -> Path:
    """A mixture whose answer is ``big`` when the question says "big", else a few words."""
    server.script("p1", "a proposal")

    def reply(record: RecordedRequest) -> str:
        asked = " ".join(message_text(m.get("content")) for m in record.messages)
        return big if "big" in asked else "a short answer"

    server.script("agg", reply)
    path = tmp_path / "trickle.toml"
    path.write_text(  # max_tokens: room for the big answer's 1,100 words
        "max_tokens = 2000\n"
        f'proposers = [{{ model = "together:p1", base_url = "{server.base_url}" }}]\n'
        f'aggregator = {{ model = "together:agg", base_url = "{server.base_url}" }}\n'
    )
    return path


def test_a_trickle_reader_is_cut_past_the_run_limit_and_others_are_not(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    """A client taking a few bytes now and then of an answer the server's buffers hold: they
    never fill, so --send-timeout never starts, and it held the connection and the answer for
    as long as it liked; now --max-run-time + --send-timeout after its request at most. A client
    reading normally beside it gets its whole answer."""
    big = ("y" * 99 + " ") * 1100  # 110 kB: far more than the client's socket buffer
    config = _trickle_config(tmp_path, server, big)
    args = ("--config", str(config), "--max-run-time", "3", "--send-timeout", "3")
    served = ServeProcess(*args, env=serve_env(server.base_url))
    try:
        port = int(served.url.rsplit(":", 1)[1])
        body = json.dumps({"messages": [{"role": "user", "content": "big"}]})
        trickler = socket.socket()
        trickler.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        trickler.connect(("127.0.0.1", port))
        who = f"127.0.0.1:{trickler.getsockname()[1]}"  # how the log names it
        with trickler:
            trickler.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: moa\r\n"
                b"Content-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n{body}".encode()
            )
            started = time.monotonic()
            trickler.settimeout(60)
            got, cut, parallel = 0, False, None
            while not cut and time.monotonic() - started < 90:
                try:
                    more = trickler.recv(512)  # 1 kB/s: the answer would take 2 minutes
                except ConnectionResetError:
                    more = b""
                cut = not more
                got += len(more)
                if parallel is None and got:  # the trickler has its answer: another client
                    parallel = _Reader(served.url)
                    parallel.start()
                time.sleep(0.5)
            waited = time.monotonic() - started
        assert cut and got < len(big), (got, waited)
        assert waited < 60, waited  # generous: the cut is due 6 s after the request
        assert parallel is not None
        parallel.join(timeout=60)
        assert parallel.out == {"text": "a short answer", "finish": "stop"}
        health = f"{served.url}/health"
        _wait(lambda: httpx.get(health).json()["runs_in_flight"] == 0, why="a slot stays taken")
        line = f"moa serve: {who} had not taken all of its response 6 s after its request"
        _wait(lambda: line in served.text(), why=served.text)
    finally:
        served.stop()
    assert "Traceback" not in served.text()


def test_a_response_still_going_past_the_run_limit_is_cut() -> None:
    """Whatever keeps a response going (here a stand-in route that never ends, read as it comes),
    it ends --max-run-time + --send-timeout after its request, its route cancelled."""
    app = FastAPI()
    app.state.settings = ServeSettings(max_run_s=1.0, send_timeout_s=1.0)
    ended = threading.Event()

    async def endless() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"more\n"
                await asyncio.sleep(0.1)
        finally:
            ended.set()

    @app.get("/endless")
    async def route() -> StreamingResponse:
        return StreamingResponse(endless())

    with running(app) as base:
        started = time.monotonic()
        with pytest.raises(httpx.TransportError), httpx.stream("GET", f"{base}/endless") as reply:
            for _ in reply.iter_bytes():
                assert time.monotonic() - started < 30  # generous: the cut is due after 2 s
        assert ended.wait(timeout=10)


def test_a_long_stream_read_as_it_comes_is_not_cut(
    server: FakeOpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A slow provider's stream lasting longer than the send timeout, and a second one on the
    same connection ending past the first request's limit: each is a request of its own."""
    words = [f"w{i}" for i in range(50)]
    server.script("p1", "a proposal")
    server.script("agg", " ".join(words), token_delay=0.06)  # 3 s of answer
    app = app_for(fake_context(server, ["p1"]), max_run_s=4.0, send_timeout_s=1.0)
    with running(app) as base, httpx.Client(base_url=base, timeout=60) as client:
        for _ in range(2):
            body = {"stream": True, "messages": [{"role": "user", "content": "hi"}]}
            text, finish, done = "", None, False
            with client.stream("POST", "/v1/chat/completions", json=body) as reply:
                assert reply.status_code == 200
                for line in reply.iter_lines():
                    if line == "data: [DONE]":
                        done = True
                    elif line.startswith("data: "):
                        choices = json.loads(line[6:]).get("choices") or [{}]
                        text += choices[0].get("delta", {}).get("content") or ""
                        finish = choices[0].get("finish_reason") or finish
            assert (text.split(), finish, done) == (words, "stop", True)
    said = [r.getMessage() for r in caplog.records if r.name == "moa.serve"]
    assert not [line for line in said if "had not taken all" in line], said


class _Reader(threading.Thread):
    """A client reading a short streamed answer as it comes: ``out`` has its text and finish
    reason, or the error it got."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.out: dict[str, str] = {}

    def run(self) -> None:
        client = openai.OpenAI(base_url=f"{self.url}/v1", api_key="unused", max_retries=0)
        try:
            stream = client.chat.completions.create(
                model="trickle", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            text = ""
            for chunk in stream:
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
                    if chunk.choices[0].finish_reason:
                        self.out["finish"] = chunk.choices[0].finish_reason
            self.out["text"] = text
        except openai.OpenAIError as exc:
            self.out["error"] = str(exc)


def _wait(check: Callable[[], bool], why: Callable[[], object] | str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, why() if callable(why) else why
        time.sleep(0.1)
