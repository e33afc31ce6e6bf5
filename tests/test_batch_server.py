"""``moa batch --server``: the items run on a ``langgraph dev`` server the test starts, with the
same output, resume and progress as a local run; MoA's errors reach its clients; a server killed
mid-run and restarted pays no finished item twice."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from batch_helpers import (
    error_line,
    prompts,
    read_records,
    requests_by_prompt,
    write_config,
    write_items,
)
from conftest import run_cli
from fake_openai import Failure, FakeOpenAIServer
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from langgraph_sdk import get_sync_client
from serving import running
from test_studio import start_langgraph_dev, studio  # noqa: F401  (studio: langgraph dev)

from langgraph_moa.core.batch import server as server_turns
from langgraph_moa.core.batch.inputs import Item
from langgraph_moa.nodes.context import Context
from langgraph_moa.nodes.errors import ServerGoneError
from langgraph_moa.nodes.keys import SERVER_KEY_ENVS, ServerKey, server_key

KEY = "studio-test-key"  # the server's provider key (test_studio.py)


def test_batch_runs_on_a_langgraph_server_and_resumes(
    studio: str,  # noqa: F811
    server: FakeOpenAIServer,
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path / "c.toml", server)
    items = [*prompts(5), {"question_id": 9, "turns": ["first question", "follow-up"]}]
    data = write_items(tmp_path / "in.jsonl", items)
    out = tmp_path / "out.jsonl"
    args = ["batch", str(data), "-o", str(out), "-c", str(config), "--server", studio, "-j", "3"]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    records = read_records(out)
    assert [r["id"] for r in records] == ["q0", "q1", "q2", "q3", "q4", "9"]
    for r in records:
        assert r["status"] == "ok"
        assert r["answer"].startswith("Answer from agg")
        assert [p["model"] for p in r["turns"][0]["layers"][0]] == ["together:p1", "together:p2"]
        assert r["usage"]["together:agg"]["calls"] == len(r["turns"])
    assert len(records[-1]["answers"]) == 2
    # The server's graph made the calls: once per proposer and turn.
    assert set(requests_by_prompt(server, "p1").values()) == {1}
    assert len(server.requests) == 3 * 7
    assert "moa batch: 6/6 items (100%)" in result.stderr

    # Resume: drop the last two records, as if the run had stopped there.
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:-2]))
    server.reset()
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert [r["id"] for r in read_records(out)] == ["q0", "q1", "q2", "q3", "q4", "9"]
    assert set(requests_by_prompt(server, "p1")) == {
        "question number 4",
        "first question",
        "follow-up",
    }


def test_an_unreachable_server_is_refused_in_one_line(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "c.toml", server)
    data = write_items(tmp_path / "in.jsonl", prompts(1))
    result = run_cli(
        "batch",
        str(data),
        "-o",
        str(tmp_path / "o.jsonl"),
        "-c",
        str(config),
        "--server",
        "http://127.0.0.1:9",
    )
    assert result.returncode == 2  # refused before any item was sent: nothing was paid
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("moa: error:")]
    assert "cannot reach the LangGraph server at http://127.0.0.1:9" in line
    assert "start one with 'langgraph dev' or check the URL" in line
    assert "Traceback" not in result.stderr and not (tmp_path / "o.jsonl").exists()


ACCOUNT_KEY = "lsv2_pt_account-secret-0123456789"
NO_SERVER_KEYS = dict.fromkeys(SERVER_KEY_ENVS, "")  # empty is unset, for the SDK as for moa


@pytest.mark.parametrize(
    ("env", "sent", "said"),
    [
        # An account key (LangSmith's, LangChain's) goes over https only: kept from plain http.
        (
            {"LANGSMITH_API_KEY": ACCOUNT_KEY},
            None,
            "(HTTP 401, sent no key): set LANGGRAPH_API_KEY to a key it accepts, or add "
            "LANGSMITH_API_KEY to MOA_KEY_ENVS to send it over plain http (moa sends the first "
            "set of LANGGRAPH_API_KEY, LANGSMITH_API_KEY, LANGCHAIN_API_KEY; LANGSMITH_API_KEY "
            "and LANGCHAIN_API_KEY only over https)",
        ),
        (
            {"LANGCHAIN_API_KEY": ACCOUNT_KEY},
            None,
            "or add LANGCHAIN_API_KEY to MOA_KEY_ENVS to send it over plain http",
        ),
        # The user allows it; LangGraph's own key goes anyway.
        (
            {"LANGSMITH_API_KEY": ACCOUNT_KEY, "MOA_KEY_ENVS": "LANGSMITH_API_KEY"},
            ACCOUNT_KEY,
            "(HTTP 401, with the key in LANGSMITH_API_KEY): set LANGGRAPH_API_KEY to a key it "
            "accepts (moa sends",
        ),
        (
            {"LANGGRAPH_API_KEY": "graph-key-0123456789", "LANGSMITH_API_KEY": ACCOUNT_KEY},
            "graph-key-0123456789",
            "(HTTP 401, with the key in LANGGRAPH_API_KEY)",
        ),
        ({}, None, "(HTTP 401, sent no key): set LANGGRAPH_API_KEY to a key it accepts (moa"),
    ],
)
def test_a_server_that_refuses_the_key_is_refused_with_what_to_set(
    tmp_path: Path, env: dict[str, str], sent: str | None, said: str
) -> None:
    # langgraph-sdk sent LANGSMITH_API_KEY to any --server, plain http included; and a server
    # answering 401 was told of two of the three variables the SDK reads.
    keys: list[str | None] = []
    app = FastAPI()

    @app.post("/assistants/search")
    async def search(request: Request) -> Response:
        keys.append(request.headers.get("x-api-key"))
        return JSONResponse({"detail": "Missing authentication headers"}, status_code=401)

    data = write_items(tmp_path / "in.jsonl", prompts(1))
    out = tmp_path / "o.jsonl"
    with running(app) as url:
        result = run_cli(
            "batch", str(data), "-o", str(out), "--server", url, env={**NO_SERVER_KEYS, **env}
        )
    assert keys == [sent]
    assert result.returncode == 2  # refused before any item was sent
    line = error_line(result.stderr)
    assert line.startswith(f"moa: error: the LangGraph server at {url} refused this client")
    assert said in line and not out.exists()
    assert ACCOUNT_KEY not in result.stderr + result.stdout


def test_an_account_key_goes_to_an_https_server(monkeypatch: pytest.MonkeyPatch) -> None:
    # LangGraph Platform's deployments take LANGSMITH_API_KEY, over https.
    for name in SERVER_KEY_ENVS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANGCHAIN_API_KEY", ACCOUNT_KEY)
    assert server_key("https://moa-0a1b.us.langgraph.app") == ServerKey("LANGCHAIN_API_KEY", None)
    assert server_key("http://moa-0a1b.us.langgraph.app") == ServerKey(None, "LANGCHAIN_API_KEY")
    monkeypatch.setenv("LANGSMITH_API_KEY", ACCOUNT_KEY)  # read before LangChain's, as the SDK
    assert server_key("https://deploy.example.com") == ServerKey("LANGSMITH_API_KEY", None)


def test_a_server_key_over_plain_http_to_another_host_is_warned(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in SERVER_KEY_ENVS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANGGRAPH_API_KEY", "graph-key-0123456789")
    server_turns.ServerTurns("http://192.0.2.1:2024", Context(layers=1, proposers=[]))
    assert "the key in LANGGRAPH_API_KEY is sent over plain http to 192.0.2.1" in (
        capsys.readouterr().err
    )


def test_a_password_in_the_server_url_is_never_shown(tmp_path: Path) -> None:
    # A server behind basic authentication: user:password@ in --server reaches the server, but
    # no message or record repeats it (the HTTP client's errors quote the URL whole).
    secret = "s3cret-pass/word"  # '/' is percent-encoded where the client quotes it
    app = FastAPI()

    @app.post("/assistants/search")
    async def search() -> list[dict[str, str]]:
        return [{"assistant_id": "moa", "graph_id": "moa"}]

    @app.post("/runs/wait")
    async def wait() -> Response:
        return Response(status_code=400)

    data = write_items(tmp_path / "in.jsonl", prompts(1))
    out = tmp_path / "o.jsonl"
    with running(app) as url:
        server = url.replace("http://", f"http://me:{secret.replace('/', '%2F')}@")
        failed = run_cli("batch", str(data), "-o", str(out), "--server", server)
    assert failed.returncode == 1, failed.stderr
    (record,) = read_records(out)
    assert "for url 'http://***@127.0.0.1:" in record["error"]["message"]
    unreachable = run_cli(
        "batch", str(data), "-o", str(tmp_path / "b.jsonl"), "--server", "http://me:pw@127.0.0.1:9"
    )
    (line,) = [x for x in unreachable.stderr.splitlines() if x.startswith("moa: error:")]
    assert "cannot reach the LangGraph server at http://***@127.0.0.1:9 " in line
    for text in (failed.stderr, out.read_text(), unreachable.stderr):
        assert "s3cret" not in text and "me:pw" not in text


@pytest.mark.parametrize("url", ["file:///etc/passwd", "http://[::1", "localhost:2024"])
def test_a_server_url_that_is_not_http_is_refused(tmp_path: Path, url: str) -> None:
    data = write_items(tmp_path / "in.jsonl", prompts(1))
    result = run_cli("batch", str(data), "-o", str(tmp_path / "o.jsonl"), "--server", url)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"moa: error: --server {url!r} is not an http:// or https:// URL: give the address of a "
        "LangGraph server, like http://127.0.0.1:2024"
    ]


def test_a_server_url_with_a_query_string_is_refused_unshown(tmp_path: Path) -> None:
    data = write_items(tmp_path / "in.jsonl", prompts(1))
    url = "http://127.0.0.1:9/?token=s3cret-token"
    result = run_cli("batch", str(data), "-o", str(tmp_path / "o.jsonl"), "--server", url)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("moa: error: --server (not shown) holds a query string")
    assert "s3cret" not in result.stderr


def test_settings_the_server_refuses_stop_the_run_before_any_item(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    # The server refused them item by item, a round trip each: now one line, before connecting.
    config = write_config(tmp_path / "c.toml", server, model_extra='api_key_env = "MY_API_KEY"')
    data = write_items(tmp_path / "in.jsonl", prompts(2))
    out = tmp_path / "o.jsonl"
    args = ["-o", str(out), "-c", str(config), "--server", "http://127.0.0.1:9"]
    result = run_cli("batch", str(data), *args)
    assert result.returncode == 2  # a setting's error, as for a local run
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("moa: error:")]
    assert "may not send a key of the server (api_key_env)" in line
    assert "Traceback" not in result.stderr and not out.exists()


def test_server_runs_items_in_parallel_and_resumes_after_a_client_kill(
    studio: str,  # noqa: F811
    server: FakeOpenAIServer,
    tmp_path: Path,
) -> None:
    # Each run's aggregator call takes 0.3 s: aggregator calls in flight at once are runs in
    # flight at once on the server (one aggregator call per run).
    server.script("agg", ttft=0.3)
    config = write_config(tmp_path / "c.toml", server)
    n = 50
    data = write_items(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "out.jsonl"
    args = [str(data), "-o", str(out), "-c", str(config), "--server", studio, "-j", "8"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "langgraph_moa", "batch", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and out.read_bytes().count(b"\n") >= 20:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert server.max_concurrency("agg") >= 4, "the server ran the items one at a time"
    done_before = {json.loads(line)["id"] for line in out.read_bytes().split(b"\n")[:-1]}
    assert 20 <= len(done_before) < n

    result = run_cli("batch", *args)
    assert result.returncode == 0, result.stderr
    assert f"{len(done_before)} items were already in the output" in result.stderr
    records = read_records(out)
    assert [r["id"] for r in records] == [f"q{i}" for i in range(n)]  # each once, in order
    assert all(r["status"] == "ok" for r in records)
    asked = requests_by_prompt(server, "agg")
    assert all(asked[f"question number {i}"] == 1 for i in range(n) if f"q{i}" in done_before)
    assert sum(c - 1 for c in asked.values()) <= 8  # at most the runs in flight at the kill


def test_moa_errors_reach_langgraph_sdk_and_batch_records(
    studio: str,  # noqa: F811
    server: FakeOpenAIServer,
    tmp_path: Path,
) -> None:
    # The provider quotes the rejected key, as some do: the client must never see it.
    def rejected() -> Failure:
        return Failure(status=401, message=f"Incorrect API key provided: {KEY}")

    client = get_sync_client(url=studio, api_key=None)
    question = {"messages": [{"role": "user", "content": "errors, please"}]}
    server.fail("bad1", rejected())
    server.fail("bad2", rejected())
    out = client.runs.wait(
        None,
        "moa",
        input=question,
        context={"proposers": ["together:bad1", "together:bad2"], "aggregator": "together:agg"},
        raise_error=False,
    )
    assert isinstance(out, dict)
    error = out["__error__"]
    assert error["error"] == "LayerFailedError"
    assert error["message"].startswith("layer 1: only 0 of 2 proposers answered")
    assert "HTTP 401" in error["message"] and KEY not in error["message"]

    server.fail("badagg", rejected())
    events = [
        part.data
        for part in client.runs.stream(
            None,
            "moa",
            input=question,
            context={"proposers": ["together:p1"], "aggregator": "together:badagg"},
            stream_mode="values",
        )
        if part.event == "error"
    ]
    assert events[0]["error"] == "AggregatorError"
    assert "HTTP 401" in events[0]["message"] and KEY not in events[0]["message"]

    # moa batch --server records each item's error with its kind and message.
    server.reset()
    server.fail("p1", rejected())
    server.fail("p2", rejected())
    server.fail("agg", rejected())
    config = write_config(tmp_path / "c.toml", server)
    data = write_items(tmp_path / "in.jsonl", prompts(2))
    args = ["batch", str(data), "-o", str(tmp_path / "o.jsonl"), "-c", str(config)]
    result = run_cli(*args, "--server", studio, "-j", "1")  # in order: q0 meets p1's and p2's
    assert result.returncode == 1, result.stderr
    first, second = read_records(tmp_path / "o.jsonl")
    assert first["error"]["kind"] == "layer"
    assert first["error"]["message"].startswith("layer 1: only 0 of 2 proposers answered")
    assert second["error"]["kind"] == "aggregator"
    assert "HTTP 401" in second["error"]["message"]
    assert KEY not in (tmp_path / "o.jsonl").read_text() + result.stderr


def test_a_server_killed_mid_run_and_restarted_pays_no_finished_item_twice(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    # Each run waits 1 s for its aggregator: the run outlives langgraph dev's 10 s store flush,
    # which saves runs in flight and queued (-j 20 on 16 slots keeps 4 queued); a restarted
    # langgraph dev queues those again on its own, and without graphs/retried.py would pay
    # for items the client has finished or submits again.
    server.script("agg", ttft=1.0)
    work = tmp_path / "server"
    work.mkdir()
    proc, url = start_langgraph_dev(server, work)
    config = write_config(tmp_path / "c.toml", server)
    n = 160
    data = write_items(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "out.jsonl"
    args = ["batch", str(data), "-o", str(out), "-c", str(config), "--server", url, "-j", "20"]
    client = subprocess.Popen(
        [sys.executable, "-m", "langgraph_moa", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        snapshot = work / ".langgraph_api" / ".langgraph_ops.pckl"
        deadline = time.monotonic() + 120
        began = time.time()
        while time.monotonic() < deadline:  # a flush since the run began, items finished
            flushed = snapshot.exists() and snapshot.stat().st_mtime > began + 2
            if flushed and out.exists() and out.read_bytes().count(b"\n") >= 20:
                break
            time.sleep(0.05)
        proc.kill()  # SIGKILL: no shutdown; its store as of its last flush
        proc.wait(timeout=10)
        paid_at_kill = requests_by_prompt(server, "p1")
        done_at_kill = {r["id"] for r in read_records(out)}  # no torn line
        assert 20 <= len(done_at_kill) < n
        # The same URL at once: the client's runs in flight are lost (their connections drop,
        # or the server restores and refuses them), and the client submits them again.
        proc, again = start_langgraph_dev(server, work, url.rsplit(":", 1)[1])
        assert again == url
        _, stderr = client.communicate(timeout=180)
        # Back within seconds: its runs in flight were lost with it and are submitted again,
        # and its new submissions wait for it (core/batch/server.py): the run goes on.
        assert client.returncode == 0, stderr
        assert "Traceback" not in stderr and "Warning" not in stderr
        result = run_cli(*args)  # the same command again: nothing left to pay
    finally:
        for p in (client, proc):
            if p.poll() is None:
                p.kill()
                p.wait()
    assert result.returncode == 0, result.stderr
    records = read_records(out)
    assert [r["id"] for r in records] == [f"q{i}" for i in range(n)]  # each once, in order
    assert all(r["status"] == "ok" for r in records)
    paid = requests_by_prompt(server, "p1")
    again_paid = [i for i in range(n) if paid[f"question number {i}"] > 1]
    for i in again_paid:  # paid twice only if in flight at the kill, never three times
        assert f"q{i}" not in done_at_kill and paid_at_kill.get(f"question number {i}") == 1
        assert paid[f"question number {i}"] == 2
    assert len(again_paid) <= 20


def test_the_server_stamps_each_run_with_its_request_time(studio: str) -> None:  # noqa: F811
    # The private key graphs/retried.py reads to tell a run queued before a restart: a
    # langgraph-api release that renames it fails here (tests/test_private_apis.py lists it).
    client = get_sync_client(url=studio, api_key=None)
    thread = client.threads.create()
    before = time.time() * 1000
    run = client.runs.create(
        thread["thread_id"],
        "moa",
        input={"messages": [{"role": "user", "content": "stamp"}]},
        context={"proposers": ["together:p1"], "aggregator": "together:agg"},
    )
    client.runs.join(thread["thread_id"], run["run_id"])
    stored = client.runs.get(thread["thread_id"], run["run_id"])
    stamp = stored["kwargs"]["config"]["configurable"]["__request_start_time_ms__"]
    assert before - 5000 <= stamp <= time.time() * 1000


def test_a_server_that_answers_oddly_fails_the_item_once_with_what_to_do(tmp_path: Path) -> None:
    # A LangGraph API in front of which something answers runs with an HTML page (a proxy), or
    # a server that refuses every submission as a run it started again on its own.
    submitted: list[str] = []
    app = FastAPI()

    @app.post("/assistants/search")
    async def search() -> list[dict[str, str]]:
        return [{"assistant_id": "moa", "graph_id": "moa"}]

    @app.post("/runs/wait")
    async def wait(request: Request) -> Any:
        item = (await request.json())["metadata"]["moa_batch_item"]
        submitted.append(item)
        if item == "html" or (item == "cut" and submitted.count("cut") > 1):
            return HTMLResponse("<html><body>Bad gateway, but 200</body></html>")
        if item == "cut":  # the server's keep-alive whitespace, then it died: the run is lost
            return Response(b"\n\n", media_type="application/json")
        refused = {"error": "RetriedRunError", "message": f"item {item}: ... submits it again"}
        return JSONResponse({"__error__": refused})

    items = [{"id": i, "prompt": i} for i in ("html", "again", "cut")]
    data = write_items(tmp_path / "in.jsonl", items)
    out = tmp_path / "out.jsonl"
    with running(app) as url:
        result = run_cli("batch", str(data), "-o", str(out), "--server", url, "-j", "1")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    records = {r["id"]: r for r in read_records(out)}
    assert records["html"]["status"] == "failed"
    assert "the server's answer is not JSON" in records["html"]["error"]["message"]
    assert records["again"]["status"] == "failed"
    message = records["again"]["error"]["message"]
    assert "submits it again" not in message and "again with --retry-failed" in message
    assert records["cut"]["status"] == "failed"  # by its second answer, the HTML page
    assert "the server's answer is not JSON" in records["cut"]["error"]["message"]
    # 3 resubmissions at most; a run lost after the keep-alives is submitted again
    assert submitted == ["html", "again", "again", "again", "again", "cut", "cut"]


async def test_a_server_gone_for_good_stops_the_run_with_one_line(monkeypatch: Any) -> None:
    # Submissions that cannot connect wait SERVER_BACK_S (a minute) for the server to come
    # back; shortened here. Then one line says what happened and what to do.
    monkeypatch.setattr(server_turns, "SERVER_BACK_S", 0.5)
    monkeypatch.setattr(server_turns, "SERVER_POLL_S", 0.1)
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    turns = server_turns.ServerTurns(url, Context())
    item = Item(id="q0", kind="prompt", turns=["hello"])
    started = time.monotonic()
    with pytest.raises(ServerGoneError) as gone:
        await turns.turn(item, [{"role": "user", "content": "hello"}], 0)
    assert time.monotonic() - started >= 0.5  # it waited for the server first
    message = str(gone.value)
    assert f"lost the LangGraph server at {url}" in message and "run the same command" in message


def test_settings_past_the_servers_caps_stop_the_run_at_the_first_refusal(
    studio: str,  # noqa: F811
    server: FakeOpenAIServer,
    tmp_path: Path,
) -> None:
    # The client cannot read the server's caps (its environment's): the server refuses the first
    # runs before any call, and that stops the run with one line, as a setting the client checks.
    config = write_config(tmp_path / "c.toml", server, extra="max_tokens = 100000")
    data = write_items(tmp_path / "in.jsonl", prompts(6))
    out = tmp_path / "o.jsonl"
    result = run_cli(
        "batch", str(data), "-o", str(out), "-c", str(config), "--server", studio, "-j", "2"
    )
    assert result.returncode == 2, result.stderr  # a setting's error
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("moa: error:")]
    assert line == (
        f"moa: error: the LangGraph server at {studio} refused the run's settings (CostCapError): "
        "max_tokens is 100000, above this server's cap of 4096 per request (its operator raises "
        "it with the environment variable MOA_MAX_TOKENS); ask for less"
    )
    assert "Traceback" not in result.stderr
    assert server.requests == []
    assert not out.exists() or read_records(out) == []  # no item recorded failed


def test_an_endpoint_the_server_does_not_list_stops_the_run_at_the_first_refusal(
    studio: str,  # noqa: F811
    server: FakeOpenAIServer,
    tmp_path: Path,
) -> None:
    # The server lists its clients' endpoints in MOA_CLIENT_ENDPOINTS (the fake provider's, here):
    # a config naming another is refused at the first run, before any call, like a cap.
    with FakeOpenAIServer() as elsewhere:
        config = write_config(tmp_path / "c.toml", elsewhere)
        data = write_items(tmp_path / "in.jsonl", prompts(6))
        out = tmp_path / "o.jsonl"
        result = run_cli(
            "batch", str(data), "-o", str(out), "-c", str(config), "--server", studio, "-j", "2"
        )
        assert result.returncode == 2, result.stderr
        (line,) = [x for x in result.stderr.splitlines() if x.startswith("moa: error:")]
        assert "refused the run's settings (ClientSettingError)" in line
        assert f"base_url '{elsewhere.base_url}'" in line and "MOA_CLIENT_ENDPOINTS" in line
        assert "Traceback" not in result.stderr
        assert elsewhere.requests == [] and server.requests == []
        assert not out.exists() or read_records(out) == []
