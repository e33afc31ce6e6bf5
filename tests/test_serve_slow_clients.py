"""Clients that hold a connection without finishing their request (slow loris): one without the
key is answered 401 on its headers, before the server reads or waits for any of its body; one with
the key gets 408 when its body takes too long; one trickling its headers gets 408 too, and one
that sends nothing is closed. Over raw sockets, as such a client sends."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from conftest import fake_context
from fake_openai import FakeOpenAIServer
from serving import app_for, running

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
