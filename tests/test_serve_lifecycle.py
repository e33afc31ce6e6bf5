"""A client that goes away costs nothing; SIGTERM drains in-flight streams and exits 0.

Checked where it matters, at the fake provider server: its recorded requests (closed by the client
before the answer was complete) and its count of requests in flight.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from conftest import fake_context
from fake_openai import FakeOpenAIServer
from serving import ServeProcess, app_for, running, serve_env

LONG = " ".join(f"w{i}" for i in range(200))


def wait_for(check: Callable[[], bool], timeout: float = 10.0, why: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out {why() if why else ''}"
        time.sleep(0.02)


def raw_stream_request(port: int, body: dict[str, Any]) -> socket.socket:
    """A request on a bare socket: the test decides when the client goes away."""
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\n"
        + f"Content-Length: {len(data)}\r\n\r\n".encode()
        + data
    )
    return sock


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "not-streamed"])
def test_client_gone_while_proposers_run_closes_their_requests(
    server: FakeOpenAIServer, stream: bool
) -> None:
    # Proposers that would take 30 s to answer; the client leaves after they started.
    for name in ("p1", "p2"):
        server.script(name, LONG, ttft=30)
    app = app_for(fake_context(server, ["p1", "p2"]))
    with running(app) as base:
        port = int(base.rsplit(":", 1)[1])
        question = [{"role": "user", "content": "hi"}]
        sock = raw_stream_request(port, {"model": "fake", "messages": question, "stream": stream})
        wait_for(lambda: server.in_flight() == 2)
        sock.close()  # the client goes away before any byte of the answer
        wait_for(lambda: server.in_flight() == 0, timeout=5)
        assert [r.disconnected for r in server.requests] == [True, True]
        assert all(r.duration is not None and r.duration < 10 for r in server.requests)
        assert server.requests_for("agg") == []
        wait_for(lambda: httpx.get(f"{base}/health").json()["runs_in_flight"] == 0, timeout=5)


def test_client_gone_while_the_answer_streams_closes_the_aggregators_request(
    server: FakeOpenAIServer,
) -> None:
    server.script("agg", LONG, token_delay=0.05)  # 10 s of answer
    app = app_for(fake_context(server, ["p1", "p2"]))
    with running(app) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        stream = client.chat.completions.create(
            model="fake", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        got = []
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                got.append(chunk.choices[0].delta.content)
            if len(got) == 5:
                break
        stream.close()  # the client goes away mid-answer
        wait_for(lambda: server.in_flight() == 0, timeout=5)
        (agg,) = server.requests_for("agg")
        assert agg.disconnected
        assert 5 <= agg.chunks_sent < 100  # generation stopped soon after, not at 200 tokens
        wait_for(lambda: httpx.get(f"{base}/health").json()["runs_in_flight"] == 0, timeout=5)


def test_langserve_stream_client_gone_closes_the_run(server: FakeOpenAIServer) -> None:
    server.script("agg", LONG, token_delay=0.05)
    app = app_for(fake_context(server, ["p1"]))
    with running(app) as base:
        from langchain_core.messages import HumanMessage
        from langserve.serialization import WellKnownLCSerializer

        body = WellKnownLCSerializer().dumps({"input": {"messages": [HumanMessage("hi")]}})
        with httpx.stream(
            "POST",
            f"{base}/moa/stream",
            content=body,
            headers={"content-type": "application/json"},
            timeout=30,
        ) as response:
            for n, _ in enumerate(response.iter_lines()):
                if n > 10:
                    break
        wait_for(lambda: server.in_flight() == 0, timeout=5)
        (agg,) = server.requests_for("agg")
        assert agg.disconnected and agg.chunks_sent < 100


@pytest.mark.parametrize("route", ["invoke", "batch", "stream", "stream_log"])
def test_langserve_client_gone_while_proposers_run_closes_their_requests(
    server: FakeOpenAIServer, route: str
) -> None:
    for name in ("p1", "p2"):
        server.script(name, LONG, ttft=30)
    app = app_for(fake_context(server, ["p1", "p2"]))
    with running(app) as base:
        one = {"messages": [{"type": "human", "content": "hi"}]}
        body = {"inputs": [one]} if route == "batch" else {"input": one}
        data = json.dumps(body).encode()
        sock = socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])))
        sock.sendall(
            f"POST /moa/{route} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
            + b"Content-Type: application/json\r\n"
            + f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        wait_for(lambda: server.in_flight() == 2)
        sock.close()
        gone = time.monotonic()
        wait_for(lambda: server.in_flight() == 0, timeout=5)
        closed = time.monotonic() - gone
        assert closed < 3, closed  # the bound is 1 s; generous on a shared machine
        assert [r.disconnected for r in server.requests] == [True, True]
        time.sleep(0.3)
        assert server.requests_for("agg") == []  # and no aggregator call after it
        wait_for(lambda: httpx.get(f"{base}/health").json()["runs_in_flight"] == 0, timeout=5)


def slow_config(tmp_path: Path, server: FakeOpenAIServer, tokens: int, delay: float) -> Path:
    server.script("p1", "a short proposal")
    server.script("slow-agg", " ".join(f"t{i}" for i in range(tokens)), token_delay=delay)
    path = tmp_path / "slow.toml"
    path.write_text(
        f'proposers = [{{ model = "together:p1", base_url = "{server.base_url}" }}]\n'
        f'aggregator = {{ model = "together:slow-agg", base_url = "{server.base_url}" }}\n'
    )
    return path


def stream_in_thread(url: str, model: str, out: dict[str, Any]) -> threading.Thread:
    def consume() -> None:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
        parts: list[str] = []
        out["parts"] = parts
        try:
            stream = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hi"}], stream=True
            )
            for chunk in stream:
                if chunk.choices:
                    parts.append(chunk.choices[0].delta.content or "")
                    if chunk.choices[0].finish_reason:
                        out["finish"] = chunk.choices[0].finish_reason
        except Exception as exc:
            out["error"] = exc

    thread = threading.Thread(target=consume)
    thread.start()
    return thread


def refused(url: str) -> bool:
    """Whether a new request goes unserved: refused, or (a connection uvicorn accepted as it
    stopped listening) closed before any response."""
    try:
        httpx.get(f"{url}/health", timeout=1)
    except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
        return True
    return False


def test_sigterm_lets_in_flight_streams_finish_then_exits_0(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    config = slow_config(tmp_path, server, tokens=60, delay=0.05)  # a 3 s answer
    served = ServeProcess("--config", str(config), "--grace", "20", env=serve_env(server.base_url))
    try:
        out: dict[str, Any] = {}
        consumer = stream_in_thread(served.url, "slow", out)
        # generous: the machine may be busy (the first run also builds the clients)
        wait_for(lambda: len("".join(out.get("parts", []))) > 0, timeout=60, why=lambda: out)
        served.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: refused(served.url), timeout=5)  # no new requests
        consumer.join(timeout=30)
        assert "error" not in out, out.get("error")
        assert "".join(out["parts"]).split() == [f"t{i}" for i in range(60)]  # the whole answer
        assert out["finish"] == "stop"
        assert served.wait(timeout=20) == 0
    finally:
        served.stop()
    (agg,) = server.requests_for("slow-agg")
    assert not agg.disconnected and agg.chunks_sent == 60
    assert "Traceback" not in served.text()


def test_sigterm_cuts_streams_after_the_grace_period(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    config = slow_config(tmp_path, server, tokens=400, delay=0.05)  # a 20 s answer
    served = ServeProcess("--config", str(config), "--grace", "1", env=serve_env(server.base_url))
    try:
        out: dict[str, Any] = {}
        consumer = stream_in_thread(served.url, "slow", out)
        # generous: the machine may be busy (the first run also builds the clients)
        wait_for(lambda: len("".join(out.get("parts", []))) > 0, timeout=60, why=lambda: out)
        started = time.monotonic()
        served.proc.send_signal(signal.SIGTERM)
        assert served.wait(timeout=15) == 0
        assert time.monotonic() - started < 12  # the 1 s grace period, not the 20 s answer
        consumer.join(timeout=15)
        assert "finish" not in out  # the stream was cut, the client saw it end
    finally:
        served.stop()
    # ... and the provider's generation was stopped with it.
    wait_for(lambda: server.in_flight() == 0, timeout=5)
    (agg,) = server.requests_for("slow-agg")
    assert agg.disconnected and agg.chunks_sent < 400
    assert "Traceback" not in served.text()


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["--preset", "nope"], "unknown preset 'nope'", 2),
        (
            ["--preset", "seed", "--max-concurrent", "0"],
            "--max-concurrent 0: out of range; allowed: 1 or more",
            2,
        ),
        (["--preset", "seed", "--max-body", "10"], "--max-body 10: out of range; allowed: 1024", 2),
        (
            ["--preset", "seed", "--max-layers", "11"],
            "--max-layers 11: out of range; allowed: 1 to",
            2,
        ),
        (
            ["--preset", "seed", "--port", "70000"],
            "--port 70000: out of range; allowed: 0 to 65535",
            2,
        ),
        (["--preset", "seed", "--send-timeout", "0"], "--send-timeout 0: out of range", 2),
        (["--preset", "seed", "--request-timeout", "-1"], "--request-timeout -1: out of", 2),
        # An infinite grace crashed at start (OverflowError); the other durations said
        # pydantic's "Input should be a finite number" without the value or the range.
        (["--grace", "inf"], "--grace inf: not a finite number; allowed: 0 or more", 2),
        (["--grace", "nan"], "--grace nan: not a finite number; allowed: 0 or more", 2),
        (["--max-timeout", "inf"], "--max-timeout inf: not a finite number; allowed: above 0", 2),
        (["--max-run-time", "nan"], "--max-run-time nan: not a finite number; allowed: above", 2),
        # An empty host is every interface to the socket: the server was open to the network.
        (["--host", ""], "--host: '' is not an address: give one of this machine's", 2),
        (["--cors-origin", "not a url"], "--cors-origin: 'not a url' is not an origin: give", 2),
        (
            ["--max-layers", "0", "--grace", "inf"],  # every problem, on the one line
            "--grace inf: not a finite number; allowed: 0 or more; --max-layers 0: out of range",
            2,
        ),
    ],
)
def test_bad_serve_flags_are_one_line(
    server: FakeOpenAIServer, args: list[str], message: str, code: int
) -> None:
    from conftest import run_cli

    # A flag let through starts the server: the timeout ends the test then.
    result = run_cli("serve", "--port", "0", *args, env=serve_env(server.base_url), timeout=60)
    assert result.returncode == code
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("moa: error:") and message in lines[0]


@pytest.mark.parametrize("key", ["clé-secrète", "hex-key-from-a-file\n", "two words"])
def test_a_server_key_no_client_can_send_is_refused_at_start(
    server: FakeOpenAIServer, key: str
) -> None:
    # Every request would have been a 401 (the openai SDK cannot even send a non-ASCII key).
    from conftest import run_cli

    env = serve_env(server.base_url, MOA_SERVER_API_KEY=key)
    result = run_cli("serve", "--port", "0", "--preset", "seed", env=env)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("moa: error: MOA_SERVER_API_KEY: must be printable ASCII")
    assert key.strip() not in result.stderr + result.stdout


def test_a_missing_provider_key_stops_the_server_at_start(server: FakeOpenAIServer) -> None:
    from conftest import run_cli

    env = serve_env(server.base_url)
    del env["TOGETHER_API_KEY"], env["TOGETHER_API_BASE"]  # Together's real endpoint needs a key
    result = run_cli("serve", "--port", "0", "--preset", "seed", env=env)
    assert result.returncode == 2  # refused before any call, as a bad setting
    assert "set TOGETHER_API_KEY" in result.stderr and "Traceback" not in result.stderr


def test_a_busy_port_is_refused_in_one_line(server: FakeOpenAIServer) -> None:
    from conftest import run_cli

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli(
            "serve", "--port", str(port), "--preset", "seed", env=serve_env(server.base_url)
        )
    assert result.returncode == 2  # refused before anything ran: nothing was paid
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"moa: error: cannot listen on 127.0.0.1:{port}: ")
    assert "choose another --port (0 picks a free one)" in line


def test_an_address_of_no_interface_here_is_refused_in_one_line(server: FakeOpenAIServer) -> None:
    from conftest import run_cli

    env = serve_env(server.base_url, MOA_SERVER_API_KEY="a-key-for-other-hosts")
    # 192.0.2.1 is TEST-NET-1 (RFC 5737): no machine's interface has it.
    result = run_cli("serve", "--host", "192.0.2.1", "--port", "0", "--preset", "seed", env=env)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("moa: error: cannot listen on 192.0.2.1:0: ")
    assert "give --host one of its addresses (127.0.0.1 for this machine only" in line


def test_a_socket_the_system_will_not_make_is_refused_like_a_busy_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import errno

    from langgraph_moa.apps.serve import main
    from langgraph_moa.nodes.errors import ListenError

    # A kernel without IPv6 (--host ::1) or no file descriptor left fails at socket(), before
    # bind: that escaped as a traceback, exit 1.
    def no_socket(*args: Any, **kwargs: Any) -> socket.socket:
        raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")

    monkeypatch.setattr(main.socket, "socket", no_socket)
    with pytest.raises(ListenError) as raised:
        main.listen("::1", 0)
    assert "cannot listen on ::1:0: Address family not supported by protocol" in str(raised.value)


async def test_a_reader_that_falls_behind_gets_the_backlog_in_one_chunk(
    server: FakeOpenAIServer,
) -> None:
    from langchain_core.messages import HumanMessage

    from langgraph_moa.apps.serve.runs import RunStream
    from langgraph_moa.core.turns import Finished, Token

    answer = " ".join(f"t{i}" for i in range(30))
    server.script("agg", answer)
    run = RunStream([HumanMessage("hi")], fake_context(server, ["p1"]), set())
    try:
        while not run._task.done():  # the reader is late: the whole run is already queued
            await asyncio.sleep(0.02)
        events = [event async for event in _until_token(run)]
        first = events[-1]
        assert isinstance(first, Token)
        assert first.text + run.ready_text() == answer  # the backlog, at once
        assert isinstance(await anext(run), Finished)  # what came after it is kept, in order
    finally:
        await run.aclose()


async def _until_token(run: Any) -> Any:
    from langgraph_moa.core.turns import Token

    async for event in run:
        yield event
        if isinstance(event, Token):
            return
