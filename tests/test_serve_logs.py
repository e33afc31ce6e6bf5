"""Logs a reader can trust: client (and provider) text in the server's log is escaped, one event
one line, read from a real ``moa serve`` process's stderr."""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
import pytest
from fake_openai import Failure, FakeOpenAIServer
from langchain_core.messages import HumanMessage
from langserve import RemoteRunnable
from serving import ServeProcess, serve_env

FORGED = "\nERROR: moa serve: FORGED LINE\r\x1b[2K"
SEED = (
    "Qwen/Qwen2-72B-Instruct",
    "Qwen/Qwen1.5-72B-Chat",
    "mistralai/Mixtral-8x22B-Instruct-v0.1",
    "databricks/dbrx-instruct",
)


def test_no_forged_lines_and_no_control_characters(server: FakeOpenAIServer) -> None:
    for model in SEED:  # a provider's error message that echoes what the client sent
        server.fail(model, Failure(status=400, message=f"bad model{FORGED}"))
    process = ServeProcess("--preset", "seed", env=serve_env(server.base_url))
    try:
        question = {"type": "human", "content": f"hi{FORGED}"}
        bodies = [
            ("/moa/invoke", {"input": {"messages": [question], f"key{FORGED}": 1}}),
            ("/moa/invoke", {"input": {"messages": [question], "preset": f"p{FORGED}"}}),
            ("/moa/invoke", {"input": {"messages": [question]}}),  # the provider's 400s
            ("/v1/chat/completions", {"model": f"m{FORGED}", "messages": [{"role": "user"}]}),
        ]
        for path, body in bodies:
            httpx.post(f"{process.url}{path}", json=body, timeout=30)
        time.sleep(0.5)  # let the log reader catch up
    finally:
        process.stop()
    log = process.text()
    assert "moa serve: 502" in log  # the provider failure was logged
    lines = log.splitlines()
    assert not any(line.startswith("ERROR: moa serve: FORGED") for line in lines)
    assert "\x1b" not in log and "\r" not in log


def test_the_servers_logger_escapes_whatever_it_is_given(caplog: pytest.LogCaptureFixture) -> None:
    from langgraph_moa.apps.serve.errors import log

    with caplog.at_level(logging.INFO, logger="moa.serve"):
        log.error("moa serve: unexpected %s", f"KeyError: 'k{FORGED}\ud800\u2028'")
    (record,) = caplog.records
    line = record.getMessage()
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\u2028" not in line
    assert "k\\nERROR: moa serve: FORGED LINE\\r\\x1b[2K\\ud800\\u2028'" in line
    line.encode()  # no lone surrogate left: the log handler can write it


async def test_stream_log_keeps_the_log_one_line_per_event(server: FakeOpenAIServer) -> None:
    # LangServe's /stream_log calls astream_log, which langchain_core deprecates: Python's
    # warning took two lines of stderr (its place, then the source line) at the first request.
    process = ServeProcess("--preset", "seed", env=serve_env(server.base_url))
    try:
        remote = RemoteRunnable(f"{process.url}/moa")
        try:
            for _ in range(2):
                patches = [p async for p in remote.astream_log({"messages": [HumanMessage("hi")]})]
                assert patches  # the run streamed
        finally:
            await remote.async_client.aclose()
            remote.sync_client.close()
        await asyncio.sleep(0.5)  # let the log reader catch up
    finally:
        process.stop()
    lines = process.text().splitlines()
    assert all(line.startswith(("moa serve:", "INFO:", "WARNING:", "ERROR:")) for line in lines), (
        lines
    )
    (said,) = [line for line in lines if "astream_log" in line]  # once
    assert said.startswith("WARNING:  moa serve: LangChainDeprecationWarning: ")
