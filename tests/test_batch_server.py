"""``moa batch --server``: the items run on a ``langgraph dev`` server the test starts, with the
same output, resume and progress as a local run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from batch_helpers import prompts, read_records, requests_by_prompt, write_config, write_items
from conftest import run_cli
from fake_openai import FakeOpenAIServer
from test_studio import studio  # noqa: F401  (the fixture: langgraph dev on 127.0.0.1)


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


def test_an_unreachable_server_is_one_line(server: FakeOpenAIServer, tmp_path: Path) -> None:
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
    assert result.returncode == 1
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("moa: error:")]
    assert "cannot reach the LangGraph server at http://127.0.0.1:9" in line
    assert "Traceback" not in result.stderr


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
