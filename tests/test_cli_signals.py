"""``moa batch``, ``moa compare``, ``moa ask`` and ``moa chat`` stopped by a signal mid-run:
Ctrl-C (SIGINT) and SIGTERM (``kill``, a service manager, a CI timeout) stop them the same way,
with one line saying where what finished is and how to resume, never silently and never a
traceback."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from batch_helpers import prompts, read_records, write_config, write_items
from compare_helpers import always_a
from compare_helpers import env as compare_env
from conftest import ROOT, run_cli
from fake_openai import FakeOpenAIServer


def hang_after(answered: int) -> object:
    """A latency for the fake server: the first ``answered`` requests at once, then none."""
    count = itertools.count()
    return lambda: 0.0 if next(count) < answered else 300.0


def wait_for(condition: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("sig", "code", "said"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "stopped by SIGTERM")],
)
@pytest.mark.parametrize("command", ["batch", "compare"])
def test_a_signal_stops_a_run_with_a_line_saying_how_to_resume(
    server: FakeOpenAIServer,
    tmp_path: Path,
    command: str,
    sig: signal.Signals,
    code: int,
    said: str,
) -> None:
    cfg = write_config(tmp_path / "c.toml", server)
    data = write_items(tmp_path / "in.jsonl", prompts(6))
    out = tmp_path / ("o.jsonl" if command == "batch" else "report")
    args = [str(data), "-o", str(out), "-c", str(cfg), "-j", "1"]
    if command == "compare":
        args = [str(data), "-o", str(out), "--system", f"moa={cfg}", "--system", "one=together:p1"]
        args += ["--judge", "together:judge", "-j", "1"]
        server.script("judge", always_a)
    server.script("agg", latency=hang_after(2))  # two items answered, the third hangs
    proc = subprocess.Popen(
        [sys.executable, "-m", "langgraph_moa", command, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **compare_env(server)},
        cwd=ROOT,
    )
    try:
        wait_for(lambda: len(server.requests_for("agg")) >= 3)  # the hanging one is in flight
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and stdout == ""
    last = stderr.splitlines()[-1]
    if command == "batch":
        assert last == (
            f"moa batch: {said}; the finished items are in {out}: run the same command again "
            "to finish the rest"
        )
        assert [r["id"] for r in read_records(out)] == ["q0", "q1"]  # nothing finished is lost
        # The same command finishes the rest.
        server.script("agg")
        again = subprocess.run(
            [sys.executable, "-m", "langgraph_moa", command, *args],
            capture_output=True,
            text=True,
            env={**os.environ, **compare_env(server)},
            cwd=ROOT,
            timeout=120,
        )
        assert again.returncode == 0, again.stderr
        assert "2 items were already in the output and were skipped" in again.stderr
        assert len(read_records(out)) == 6
    else:
        assert last == (
            f"moa compare: {said}; what finished is in {out}: run the same command again to resume"
        )


def answering_slowly(server: FakeOpenAIServer) -> None:
    """The aggregator streams a long answer, a word every 0.2 s: a signal arrives mid-answer."""
    server.script("agg", "word " * 1000, token_delay=0.2)


def start_moa(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "langgraph_moa", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **env},
        cwd=ROOT,
    )


def read_until(proc: subprocess.Popen[bytes], needle: bytes) -> str:
    """Read stdout until ``needle`` shows (reading blocks until moa prints; EOF fails); what
    was read."""
    assert proc.stdout is not None
    seen = b""
    while needle not in seen:
        chunk = proc.stdout.read1(4096)
        assert chunk, seen
        seen += chunk
    return seen.decode()


def terminate(proc: subprocess.Popen[bytes]) -> str:
    """SIGTERM, then moa's stderr once it exited."""
    return stop(proc, signal.SIGTERM)[1]


def stop(proc: subprocess.Popen[bytes], sig: signal.Signals) -> tuple[str, str]:
    """``sig``, then the rest of moa's stdout and its stderr once it exited."""
    proc.send_signal(sig)
    try:
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return stdout.decode(), stderr.decode()


@pytest.mark.parametrize(
    ("sig", "code", "said"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "stopped by SIGTERM")],
)
def test_a_signal_mid_answer_stops_ask_with_one_line_after_the_partial_one(
    server: FakeOpenAIServer, tmp_path: Path, sig: signal.Signals, code: int, said: str
) -> None:
    answering_slowly(server)
    cfg = write_config(tmp_path / "c.toml", server)
    proc = start_moa(["ask", "-c", str(cfg), "a question"], compare_env(server))
    shown = read_until(proc, b"word word")  # the answer is streaming
    rest, stderr = stop(proc, sig)
    stdout = shown + rest
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    assert stderr.splitlines()[-1] == f"moa: error: {said}"
    # The partial answer's line is ended, once: on a terminal the error starts a line of its own.
    assert stdout.endswith("word \n") and stdout.count("\n") == 1, stdout[-40:]
    assert server.wait_idle(10)  # its request was closed, not left to finish


def test_sigterm_mid_answer_stops_chat_and_keeps_its_thread(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path / "c.toml", server)
    env = {**compare_env(server), "MOA_DATA_DIR": str(tmp_path / "data")}
    server.script("agg", "the first answer")
    proc = start_moa(["chat", "-c", str(cfg), "--thread", "my work"], env)
    assert proc.stdin is not None
    proc.stdin.write(b"first question\n")
    proc.stdin.flush()
    read_until(proc, b"the first answer")
    answering_slowly(server)
    proc.stdin.write(b"second question\n")
    proc.stdin.flush()
    read_until(proc, b"word word")
    stderr = terminate(proc)
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr
    assert stderr.splitlines()[-1] == (
        "moa: error: stopped by SIGTERM; the conversation so far is kept in thread 'my work': "
        "moa chat --thread 'my work' goes on with it"
    )
    # What the line says: the completed turn is kept, the stopped one is not.
    listed = run_cli("chat", "--list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split()[:4] == ["my", "work", "1", "turn"]


def test_sigterm_stops_chat_without_a_thread_with_one_line(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    answering_slowly(server)
    cfg = write_config(tmp_path / "c.toml", server)
    proc = start_moa(["chat", "-c", str(cfg)], compare_env(server))
    assert proc.stdin is not None
    proc.stdin.write(b"a question\n")
    proc.stdin.flush()
    read_until(proc, b"word word")
    stderr = terminate(proc)
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr
    # Nothing is said kept: the conversation was in memory only.
    assert stderr.splitlines()[-1] == "moa: error: stopped by SIGTERM"
