"""Issue 20: a shared config, a shared folder, concurrent runs and hostile text must not leak a
secret, destroy a file, garble a terminal or pay twice. Each test drives ``moa`` as a process on
real files, against the fake provider server."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest
from batch_helpers import error_line, prompts, read_records, write_config, write_items
from compare_helpers import always_a, results, write_mixture, write_prompts
from compare_helpers import env as compare_env
from conftest import ROOT, run_cli
from fake_openai import Failure, FakeOpenAIServer
from pty_session import PtySession

SECRET = "sk-together-secret-0123456789"
BOM = b"\xef\xbb\xbf"


def config(path: Path, model: str) -> Path:
    path.write_text(f"layers = 1\naggregator = {model}\nmax_attempts = 1\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------------- 1. secrets
def test_a_configs_base_url_gets_no_provider_key(server: FakeOpenAIServer, tmp_path: Path) -> None:
    spec = f'{{ model = "together:agg", base_url = "{server.base_url}" }}'
    cfg = config(tmp_path / "c.toml", spec)
    result = run_cli("--config", str(cfg), "hi", env={"TOGETHER_API_KEY": SECRET})
    assert result.returncode == 0, result.stderr
    (request,) = server.requests_for("agg")
    assert SECRET not in request.headers["authorization"]


def test_a_configs_named_key_goes_to_its_url(server: FakeOpenAIServer, tmp_path: Path) -> None:
    spec = f'{{ model = "openai:agg", base_url = "{server.base_url}", api_key_env = "MY_API_KEY" }}'
    cfg = config(tmp_path / "c.toml", spec)
    result = run_cli("--config", str(cfg), "hi", env={"MY_API_KEY": "proxy-key-42"})
    assert result.returncode == 0, result.stderr
    (request,) = server.requests_for("agg")
    assert request.headers["authorization"] == "Bearer proxy-key-42"


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        ('api_key_env = "HOME"', "'HOME' does not look like a key variable"),
        ('api_key_env = "AWS_SECRET_ACCESS_KEY"', "only variables named *_API_KEY or *_TOKEN"),
    ],
)
def test_a_config_cannot_read_any_variable(
    server: FakeOpenAIServer, tmp_path: Path, extra: str, said: str
) -> None:
    spec = f'{{ model = "openai:agg", base_url = "{server.base_url}", {extra} }}'
    result = run_cli("--config", str(config(tmp_path / "c.toml", spec)), "hi")
    assert result.returncode == 2
    line = error_line(result.stderr)
    assert "api_key_env" in line and said in line and "MOA_KEY_ENVS" in line
    assert not server.requests
    # The user (not the config) can allow a name.
    allowed = run_cli(
        "--config",
        str(tmp_path / "c.toml"),
        "hi",
        env={"MOA_KEY_ENVS": extra.split('"')[1], "HOME": str(Path.home())},
    )
    assert allowed.returncode == 0, allowed.stderr


@pytest.mark.parametrize(
    ("model", "env", "said"),
    [
        # A provider's own key, to the config's endpoint or to another provider's.
        ("together:agg", "TOGETHER_API_KEY", "TOGETHER_API_KEY is the together provider's key"),
        ("openai:agg", "OPENAI_API_KEY", "OPENAI_API_KEY is the openai provider's key"),
        ("openai:agg", "TOGETHER_API_KEY", "not to this model's base_url"),
        # moa serve's own key, and a token every GitHub Actions job holds.
        ("openai:agg", "MOA_SERVER_API_KEY", "MOA_SERVER_API_KEY is one of moa's own variables"),
        ("openai:agg", "GITHUB_TOKEN", "GITHUB_TOKEN is a well-known token of another service"),
    ],
)
def test_a_config_cannot_send_a_known_key_to_its_endpoint(
    server: FakeOpenAIServer, tmp_path: Path, model: str, env: str, said: str
) -> None:
    spec = f'{{ model = "{model}", base_url = "{server.base_url}", api_key_env = "{env}" }}'
    cfg = config(tmp_path / "c.toml", spec)
    result = run_cli("--config", str(cfg), "hi", env={env: SECRET})
    assert result.returncode == 2
    line = error_line(result.stderr)
    assert f"config file '{cfg}': aggregator.api_key_env: " in line
    assert said in line and f"add {env} to MOA_KEY_ENVS in your environment" in line
    assert SECRET not in result.stderr + result.stdout
    assert not server.requests
    # The user (not the config) can send it there all the same.
    allowed = run_cli("--config", str(cfg), "hi", env={env: SECRET, "MOA_KEY_ENVS": env})
    assert allowed.returncode == 0, allowed.stderr
    (request,) = server.requests_for("agg")
    assert request.headers["authorization"] == f"Bearer {SECRET}"


def test_a_providers_key_still_goes_to_its_own_endpoint(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    # Named outright, to the provider's endpoint (the one the user set in TOGETHER_API_BASE),
    # with no base_url or with that very URL.
    env = {"TOGETHER_API_KEY": SECRET, "TOGETHER_API_BASE": server.base_url}
    for extra in ("", f', base_url = "{server.base_url}/"'):
        spec = f'{{ model = "together:agg", api_key_env = "TOGETHER_API_KEY"{extra} }}'
        cfg = config(tmp_path / "c.toml", spec)
        result = run_cli("--config", str(cfg), "hi", env=env)
        assert result.returncode == 0, result.stderr
    assert [r.headers["authorization"] for r in server.requests_for("agg")] == [
        f"Bearer {SECRET}"
    ] * 2
    # Another provider's model, with no base_url: the Together key would go to OpenAI.
    spec = '{ model = "openai:agg", api_key_env = "TOGETHER_API_KEY" }'
    cfg = config(tmp_path / "c.toml", spec)
    result = run_cli("--config", str(cfg), "hi", env={**env, "OPENAI_BASE_URL": server.base_url})
    assert result.returncode == 2
    assert "not to the openai provider's endpoint" in error_line(result.stderr)
    assert len(server.requests) == 2


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_files_every_user_can_write_are_refused(server: FakeOpenAIServer, tmp_path: Path) -> None:
    # Whoever may edit a config chooses where the prompts and named keys go; a call cache, the
    # answers; a thread store, the conversations. Any user of the machine, once o+w.
    cfg = write_config(tmp_path / "c.toml", server)
    data = write_items(tmp_path / "in.jsonl", prompts(1))
    cache = tmp_path / "calls.sqlite"
    assert batch(data, "-o", tmp_path / "a.jsonl", "-c", cfg, "--cache", cache).returncode == 0
    server.reset()
    cache.chmod(0o666)
    refused = batch(data, "-o", tmp_path / "b.jsonl", "-c", cfg, "--cache", cache)
    assert refused.returncode == 2
    assert error_line(refused.stderr) == (
        f"moa: error: the call cache {cache}: every user of this machine can change it (mode "
        f"0666), so anyone could change the answers it gives: make it yours alone (chmod o-w "
        f"{cache}), or pass another --cache; where chmod changes nothing (WSL's /mnt/c, FAT, "
        "CIFS), set MOA_ALLOW_SHARED_FILES=1 to use it all the same"
    )
    cfg.chmod(0o646)
    for result in (
        run_cli("-c", str(cfg), "hi"),
        batch(data, "-o", tmp_path / "c.jsonl", "-c", cfg),
    ):
        assert result.returncode == 2
        line = error_line(result.stderr)
        assert f"config file '{cfg}': every user of this machine can change it (mode 0646)" in line
        assert f"make it yours alone (chmod o-w {cfg})" in line
    assert not server.requests
    cfg.chmod(0o664)  # the group may: a team's shared config
    assert run_cli("-c", str(cfg), "hi").returncode == 0
    threads = tmp_path / "data"
    env = {"MOA_DATA_DIR": str(threads)}
    assert run_cli("chat", "-c", str(cfg), "--thread", "t", stdin="hi\n", env=env).returncode == 0
    (threads / "chat-threads.sqlite").chmod(0o666)
    chat = run_cli("chat", "-c", str(cfg), "--thread", "t", stdin="again\n", env=env)
    assert chat.returncode == 2
    assert "can change it (mode 0666), so anyone could rewrite your conversations" in error_line(
        chat.stderr
    )
    # The folder of its lock files: anyone could replace a lock file there, and two chats hold
    # one thread.
    (threads / "chat-threads.sqlite").chmod(0o600)
    (threads / "thread-locks").chmod(0o777)
    chat = run_cli("chat", "-c", str(cfg), "--thread", "t", stdin="again\n", env=env)
    assert chat.returncode == 2
    assert error_line(chat.stderr).startswith(
        f"moa: error: the chat thread store {threads}/chat-threads.sqlite: every user of this "
        f"machine can change the folder {threads}/thread-locks (mode 0777) and replace what it "
        "holds, so anyone could rewrite your conversations: make that folder yours alone"
    )


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_files_every_user_can_write_are_read_when_the_user_allows_them(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    # WSL's /mnt/c, FAT and CIFS mounts show every file as 0777 and ignore chmod: the refusal's
    # own advice cannot be followed there, so the user (not a config) may allow such files.
    cfg = write_config(tmp_path / "c.toml", server)
    data = write_items(tmp_path / "in.jsonl", prompts(1))
    cache = tmp_path / "calls.sqlite"
    threads = tmp_path / "data"
    env = {"MOA_DATA_DIR": str(threads)}
    assert run_cli("chat", "-c", str(cfg), "--thread", "t", stdin="hi\n", env=env).returncode == 0
    assert batch(data, "-o", tmp_path / "a.jsonl", "-c", cfg, "--cache", cache).returncode == 0
    for shared in (cfg, cache, threads / "chat-threads.sqlite"):
        shared.chmod(0o777)  # what such a mount shows for every file
    server.reset()
    for allowed in ("0", "yes"):  # only =1 allows them: anything else is the default refusal
        refused = run_cli("-c", str(cfg), "hi", env={"MOA_ALLOW_SHARED_FILES": allowed})
        assert refused.returncode == 2
        assert "set MOA_ALLOW_SHARED_FILES=1 to use it all the same" in error_line(refused.stderr)
    assert not server.requests
    allow = {"MOA_ALLOW_SHARED_FILES": "1"}
    asked = run_cli("-c", str(cfg), "hi", env=allow)
    assert asked.returncode == 0, asked.stderr
    out = tmp_path / "b.jsonl"
    ran = batch(data, "-o", out, "-c", cfg, "--cache", cache, env=allow)
    assert ran.returncode == 0, ran.stderr
    assert read_records(out)[0]["cached_calls"] == 3  # the shared cache was read
    chat = run_cli("chat", "-c", str(cfg), "--thread", "t", stdin="again\n", env={**env, **allow})
    assert chat.returncode == 0, chat.stderr


def test_a_base_url_must_be_http(tmp_path: Path) -> None:
    spec = '{ model = "openai:agg", base_url = "file:///etc/passwd" }'
    result = run_cli("--config", str(config(tmp_path / "c.toml", spec)), "hi")
    assert result.returncode == 2
    assert "'file:///etc/passwd' is not an http:// or https:// URL" in error_line(result.stderr)


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://127.0.0.1:abc/v1", "'http://127.0.0.1:abc/v1' has no valid port: give a number"),
        ("http://127.0.0.1:99999/v1", "has no valid port: give a number from 1 to 65535"),
        ("http://127.0.0.1:8000/v\t1", "holds '\\t' at 23: give the URL alone"),
    ],
)
def test_a_base_url_the_http_client_cannot_take_is_one_line(
    tmp_path: Path, url: str, said: str
) -> None:
    # They passed the config's check, then failed the first call: "unexpected InvalidURL", or
    # "unhandled errors in a TaskGroup", exit 1.
    spec = f'{{ model = "openai:agg", base_url = "{url}" }}'
    result = run_cli("--config", str(config(tmp_path / "c.toml", spec)), "hi")
    assert result.returncode == 2, result.stderr
    assert said in error_line(result.stderr)


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        # The most common slip: the key pasted where its variable's name goes.
        (f'api_key_env = "{SECRET}"', "api_key_env: must be the name of the environment variable"),
        (
            'api_key_env = "gsk_Ab12Cd34Ef56Gh78"',
            "not the key itself; the value given is not shown",
        ),
        (
            f'base_url = "http://me:{SECRET}@127.0.0.1:9/v1"',
            "base_url: holds a user name or password (user:password@host)",
        ),
        (f'base_url = "ftp://me:{SECRET}@host/v1"', "the URL is not shown"),
        # Azure-style keys go in the query string: no provider here takes one there.
        (
            f'base_url = "http://127.0.0.1:9/v1?api-key={SECRET}"',
            "base_url: holds a query string or fragment (after '?' or '#')",
        ),
        (f'base_url = "ftp://host/v1?key={SECRET}"', "the URL is not shown"),
    ],
)
def test_a_key_in_a_config_is_refused_and_never_shown(
    server: FakeOpenAIServer, tmp_path: Path, extra: str, said: str
) -> None:
    spec = f'{{ model = "openai:agg", {extra} }}'
    cfg = config(tmp_path / "c.toml", spec)
    data = write_items(tmp_path / "in.jsonl", prompts(1))
    for result in (
        run_cli("--config", str(cfg), "hi"),
        batch(data, "-o", tmp_path / "o", "-c", cfg),
    ):
        assert result.returncode == 2
        assert said in error_line(result.stderr)
        assert SECRET not in result.stderr + result.stdout and "Ab12Cd34" not in result.stderr
    assert not (tmp_path / "o").exists()  # a record would have kept the URL with its password


def test_a_key_over_plain_http_to_another_host_is_warned(tmp_path: Path) -> None:
    # 192.0.2.1 is TEST-NET-1: never routed, so the call fails (timeout 1 s) after the warning.
    spec = (
        '{ model = "openai:agg", base_url = "http://192.0.2.1/v1", api_key_env = "MY_API_KEY",'
        " timeout = 1 }"
    )
    result = run_cli(
        "--config", str(config(tmp_path / "c.toml", spec)), "hi", env={"MY_API_KEY": SECRET}
    )
    assert "moa: warning: the key in MY_API_KEY is sent over plain http to 192.0.2.1" in (
        result.stderr
    )
    assert SECRET not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("value", "said"),
    [
        (SECRET + " ", "TOGETHER_API_KEY starts or ends with a space, tab or newline"),
        (SECRET + "\r", "TOGETHER_API_KEY starts or ends with a space, tab or newline"),
        ("\t" + SECRET, "TOGETHER_API_KEY starts or ends with a space, tab or newline"),
        ("Bearer " + SECRET, "TOGETHER_API_KEY starts with 'Bearer '"),
    ],
)
def test_a_mistyped_key_is_named(server: FakeOpenAIServer, value: str, said: str) -> None:
    env = {"TOGETHER_API_KEY": value, "TOGETHER_API_BASE": server.base_url}
    result = run_cli("--aggregator", "together:agg", "--layers", "1", "hi", env=env)
    assert result.returncode != 0
    line = error_line(result.stderr)
    assert said in line and SECRET not in result.stderr
    assert not server.requests


# ------------------------------------------------------------------- 2, 3. files written safely
def batch(*args: str | Path, env: dict[str, str] | None = None) -> CompletedProcess[str]:
    return run_cli("batch", *map(str, args), env=env)


def test_a_planted_temporary_file_is_never_followed(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path / "c.toml", server)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    # AlpacaEval's file is written atomically; the run file is rewritten in input order on resume.
    (tmp_path / "out.json.tmp").symlink_to(victim)
    (tmp_path / "run.jsonl.tmp").symlink_to(victim)
    data = write_items(tmp_path / "in.jsonl", prompts(3))
    result = batch(data, "-o", tmp_path / "out.json", "-f", "alpaca-eval", "-c", cfg)
    assert result.returncode == 0, result.stderr
    write_items(tmp_path / "late.jsonl", prompts(1, start=2))
    assert batch(tmp_path / "late.jsonl", "-o", tmp_path / "run.jsonl", "-c", cfg).returncode == 0
    assert batch(data, "-o", tmp_path / "run.jsonl", "-c", cfg).returncode == 0  # rewritten

    assert victim.read_text() == "precious\n"
    for name in ("out.json", "run.jsonl"):
        assert not (tmp_path / name).is_symlink()
    assert len(json.loads((tmp_path / "out.json").read_text())) == 3
    assert [r["id"] for r in read_records(tmp_path / "run.jsonl")] == ["q0", "q1", "q2"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp") and not p.is_symlink()]


def test_an_output_that_is_not_ours_is_refused_untouched(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path / "c.toml", server)
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"my notes\nthe last line, no newline")
    listed = tmp_path / "data.json"
    listed.write_text(json.dumps(prompts(2)))
    report = tmp_path / "report.json"
    report.write_text('{"mine": true}\n')
    cases = [
        ([listed, "-o", notes], "notes.txt: line 1 is not a batch record"),
        ([listed, "-o", listed], "that is the input file"),
        ([listed, "-o", report, "-f", "alpaca-eval"], "is not the output of an earlier moa batch"),
    ]
    before = {p: p.read_bytes() for p in (notes, listed, report)}
    for args, said in cases:
        result = batch(*args, "-c", cfg)
        assert result.returncode != 0 and said in error_line(result.stderr), result.stderr
    assert {p: p.read_bytes() for p in before} == before
    assert not server.requests
    # A torn last line that is not the start of a record is not "repaired" either.
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_bytes(b'{"id":"q0","status":"ok"}\nnot a record')
    result = batch(listed, "-o", foreign, "-c", cfg)
    assert "the last line is not a batch record" in error_line(result.stderr)
    assert foreign.read_bytes() == b'{"id":"q0","status":"ok"}\nnot a record'


def test_a_binary_output_or_replay_file_is_one_line(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    # json.loads on bytes guesses UTF-16/32 and raises UnicodeDecodeError, not a JSON error.
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'layers = 1\naggregator = {{ model = "together:agg", base_url = "{server.base_url}" }}\n',
        encoding="utf-8",
    )
    data = write_items(tmp_path / "in.jsonl", prompts(2))
    utf16 = tmp_path / "notes.jsonl"
    utf16.write_bytes(b'\xff\xfe{"id":1}\n')
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"id": "caf\xe9", "status": "ok"}\n')
    for target in (utf16, latin):
        before = target.read_bytes()
        result = batch(data, "-o", target, "-c", cfg)
        assert result.returncode != 0
        assert f"{target}: line 1 is not a batch record" in error_line(result.stderr)
        assert target.read_bytes() == before
        replayed = batch("--replay", target, "-o", tmp_path / "new.jsonl", "-a", "together:agg")
        assert replayed.returncode == 2
        assert f"--replay {target}: line 1 is not a batch record" in error_line(replayed.stderr)
    assert not server.requests


# ------------------------------------------------------------------- 4. terminal injection
TITLE = "\x1b]0;PWNED\x07"
CLEAR = "\x1b[2J\x1b[H"
LINK = "\x1b]8;;http://evil.example/\x1b\\click\x1b]8;;\x1b\\"
CSI = "\x9b31m"  # the one-character CSI of C1


def test_model_and_provider_text_is_shown_not_executed(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    server.script("p1", f"proposal {TITLE}{LINK} end")
    server.script("agg", f"answer {CLEAR}{CSI}red\rfake prompt$ ")
    server.fail("p2", Failure(status=400, message=f"bad request {TITLE}"))
    cfg = write_config(tmp_path / "c.toml", server, extra="max_attempts = 1")
    with PtySession(["--config", str(cfg), "--show-proposals", "hi"], {}) as moa:
        assert moa.wait(60) == 0, moa.text
        raw = bytes(moa.raw)
    for sequence in (TITLE, CLEAR, LINK, CSI, "\rfake"):
        assert sequence.encode() not in raw, sequence
    shown = raw.decode()
    assert "proposal \\x1b]0;PWNED\\x07\\x1b]8;;http://evil.example/" in shown  # --show-proposals
    assert "answer \\x1b[2J\\x1b[H\\x9b31mred\\x0dfake prompt$" in shown  # the streamed answer
    assert "bad request \\x1b]0;PWNED\\x07" in shown  # the provider's error, on stderr

    # --json and a redirected stdout keep the exact text.
    as_json = run_cli("--config", str(cfg), "--show-proposals", "--json", "hi")
    assert json.loads(as_json.stdout)["answer"] == f"answer {CLEAR}{CSI}red\rfake prompt$ "
    server.fail("p2", Failure(status=400, message=f"bad request {TITLE}"))
    redirected = run_cli("--config", str(cfg), "hi")
    assert f"answer {CLEAR}{CSI}red" in redirected.stdout  # (text mode reads \r as a newline)
    assert TITLE not in redirected.stderr and "\\x1b]0;PWNED" in redirected.stderr


# ------------------------------------------------------------------- 5. one writer
def start_moa(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("TOGETHER_", "OPENAI_"))}
    return subprocess.Popen(
        [sys.executable, "-m", "langgraph_moa", *map(str, args)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**full_env, **(env or {})},
        cwd=ROOT,
    )


def wait_until(done: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def holds_lock(lock: Path, proc: subprocess.Popen[str]) -> Callable[[], bool]:
    return lambda: lock.exists() and lock.read_text().strip() == str(proc.pid)


def first_run_holding(
    server: FakeOpenAIServer, tmp_path: Path, out: Path
) -> tuple[subprocess.Popen[str], threading.Event, Path, Path]:
    """(the run, refused, config, input): a run of 4 items on ``out`` that holds its lock, slow
    (3 s per item) until ``refused`` is set, once a second run has been turned away."""
    refused = threading.Event()
    server.script("agg", latency=lambda: 0.0 if refused.is_set() else 3.0)
    cfg = write_config(tmp_path / "c.toml", server)
    data = write_items(tmp_path / "in.jsonl", prompts(4))
    first = start_moa("batch", data, "-o", out, "-c", cfg, "-j", "1")
    wait_until(holds_lock(out.parent / f".{out.name}.lock", first))
    return first, refused, cfg, data


def test_two_batch_runs_on_one_output_pay_once(server: FakeOpenAIServer, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    first, refused, cfg, data = first_run_holding(server, tmp_path, out)
    second = batch(data, "-o", out, "-c", cfg, "-j", "1")  # what a second terminal does
    # The output is locked before the input is read: refused at once, even with an input that
    # would take long to read (a pipe nobody writes to blocks until the end of time).
    fifo = tmp_path / "endless"
    os.mkfifo(fifo)
    third = run_cli("batch", str(fifo), "-o", str(out), "-c", str(cfg), timeout=30)
    refused.set()
    for other in (second, third):
        assert other.returncode == 2, other.stderr
        line = error_line(other.stderr)
        assert f"is in use by another moa process (pid {first.pid})" in line
        assert "to run in parallel, give each process its own part of the input and its own -o" in (
            line
        )
    assert first.wait(120) == 0, first.communicate()
    assert [r["id"] for r in read_records(out)] == ["q0", "q1", "q2", "q3"]
    assert len(server.requests) == 4 * 3  # every item answered once: nobody paid twice
    # --help says the same as the message: --limit does not split a run.
    shown = " ".join(run_cli("batch", "--help").stdout.replace("│", " ").split())
    assert "--limit" in shown and (
        "Not a way to split a run: to run in parallel, give each process its own part of the input "
        "and its own -o." in shown
    )


@pytest.mark.parametrize("first_format", ["jsonl", "mt-bench"])
def test_a_jsonl_run_and_a_format_run_on_one_output_exclude_each_other(
    server: FakeOpenAIServer, tmp_path: Path, first_format: str
) -> None:
    # A -f run keeps its journal in .moa-batch/ and writes -o at its end; a jsonl run writes -o
    # as it goes. Each took only its own lock, so both ran and the last to finish replaced the
    # other's file: paid items lost, both exiting 0.
    refused = threading.Event()
    server.script("agg", latency=lambda: 0.0 if refused.is_set() else 3.0)
    cfg = write_config(tmp_path / "c.toml", server)
    data = write_items(
        tmp_path / "in.jsonl", [{"question_id": n, "turns": ["hi"]} for n in range(4)]
    )
    out = tmp_path / "answers.jsonl"
    second_format = "mt-bench" if first_format == "jsonl" else "jsonl"
    first = start_moa("batch", data, "-o", out, "-c", cfg, "-j", "1", "-f", first_format)
    wait_until(lambda: len(server.requests) > 0)
    second = batch(data, "-o", out, "-c", cfg, "-j", "1", "-f", second_format)
    refused.set()
    assert second.returncode == 2, second.stderr
    # Refused by the lock, or, once a jsonl run's -o exists, by what it is, before locking.
    line = error_line(second.stderr)
    assert f"is in use by another moa process (pid {first.pid})" in line or (
        first_format == "jsonl" and "the output of a moa batch run written without -f" in line
    )
    assert first.wait(120) == 0, first.communicate()
    assert len(server.requests) == 4 * 3  # the second paid for nothing
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [("question_id" in r and "choices" in r) for r in rows] == [
        first_format == "mt-bench"
    ] * 4
    # Once done, each is named as what it is to a run in the other format.
    again = batch(data, "-o", out, "-c", cfg, "-f", second_format)
    assert again.returncode == 2
    said = (
        "the -f output of an earlier moa batch run"
        if first_format == "mt-bench"
        else ("the output of a moa batch run written without -f")
    )
    assert said in error_line(again.stderr) and len(server.requests) == 4 * 3


def test_a_symlink_to_an_output_is_that_output(server: FakeOpenAIServer, tmp_path: Path) -> None:
    # Two names of one file: a second run through a link is refused as on the file itself
    # (each used to take the lock of its own name and pay for every item again).
    big = tmp_path / "big-disk"
    big.mkdir()
    out, link = big / "out.jsonl", tmp_path / "link.jsonl"
    link.symlink_to(out)
    first, refused, cfg, data = first_run_holding(server, tmp_path, out)
    wait_until(out.exists)  # a link is followed only to a file that is there
    second = batch(data, "-o", link, "-c", cfg, "-j", "1")
    refused.set()
    assert second.returncode == 2, second.stderr
    assert f"is in use by another moa process (pid {first.pid})" in error_line(second.stderr)
    assert first.wait(120) == 0, first.communicate()
    assert len(server.requests) == 4 * 3  # nobody paid twice
    # Resumed through the link: nothing to run, and the link still names the file it named.
    again = batch(data, "-o", link, "-c", cfg)
    assert again.returncode == 0, again.stderr
    assert len(server.requests) == 4 * 3
    assert link.is_symlink() and [r["id"] for r in read_records(link)] == ["q0", "q1", "q2", "q3"]
    assert not (tmp_path / ".moa-batch").exists()  # the work folder is beside the file


def test_a_hard_link_to_an_output_is_that_output(server: FakeOpenAIServer, tmp_path: Path) -> None:
    # Two names of one file (one st_dev and st_ino), neither a link to the other: each name had
    # a lock file of its own, so both runs paid for every item.
    out, other = tmp_path / "out.jsonl", tmp_path / "elsewhere" / "same.jsonl"
    out.touch()
    other.parent.mkdir()
    os.link(out, other)
    first, refused, cfg, data = first_run_holding(server, tmp_path, out)
    second = batch(data, "-o", other, "-c", cfg, "-j", "1")
    refused.set()
    assert second.returncode == 2, second.stderr
    assert error_line(second.stderr) == (
        f"moa: error: output {other} is in use by another moa process, under another name of the "
        "same file (a hard link): wait for it to finish, or, to run in parallel, give each process "
        "its own part of the input and its own -o"
    )
    assert first.wait(120) == 0, first.communicate()
    assert len(server.requests) == 4 * 3  # nobody paid twice
    assert [r["id"] for r in read_records(other)] == ["q0", "q1", "q2", "q3"]
    # Once the first run is over, the other name is free to resume: nothing is left to pay.
    again = batch(data, "-o", other, "-c", cfg)
    assert again.returncode == 0, again.stderr
    assert len(server.requests) == 4 * 3


def test_a_folder_pipe_or_device_as_output_is_refused_before_any_call(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path / "c.toml", server)
    data = write_items(tmp_path / "in.jsonl", prompts(2))
    folder = tmp_path / "answers"
    folder.mkdir()
    (tmp_path / "link").symlink_to(folder)
    for fmt in ("alpaca-eval", "mt-bench", "jsonl"):
        for given in (folder, tmp_path / "link"):
            result = batch(data, "-o", given, "-f", fmt, "-c", cfg)
            assert result.returncode == 2, result.stderr
            assert "that is a folder; give a file name" in error_line(result.stderr)
    assert not server.requests  # -f alpaca-eval used to run every item, then fail to write
    assert list(folder.iterdir()) == []
    # A pipe hung the run (its resume reads the output first); /dev/null kept nothing of what
    # was paid (and got a work folder in /dev).
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for given in (fifo, Path(os.devnull)):
        result = run_cli("batch", str(data), "-o", str(given), "-c", str(cfg), timeout=60)
        assert result.returncode == 2, result.stderr
        assert "that is not a regular file (a pipe or a device)" in error_line(result.stderr)
    assert not server.requests


def test_a_killed_holder_leaves_no_stale_lock(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.script("agg", ttft=30)  # the first run hangs in its first item
    cfg = write_config(tmp_path / "c.toml", server)
    data = write_items(tmp_path / "in.jsonl", prompts(2))
    out = tmp_path / "out.jsonl"
    holder = start_moa("batch", data, "-o", out, "-c", cfg)
    wait_until(lambda: server.in_flight("agg") > 0)
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    server.script("agg")
    result = batch(data, "-o", out, "-c", cfg)
    assert result.returncode == 0, result.stderr
    assert [r["id"] for r in read_records(out)] == ["q0", "q1"]


def test_one_chat_per_thread(server: FakeOpenAIServer, tmp_path: Path) -> None:
    env = {
        "TOGETHER_API_KEY": "test-key",
        "TOGETHER_API_BASE": server.base_url,
        "MOA_DATA_DIR": str(tmp_path),
    }
    cfg = write_config(tmp_path / "c.toml", server)
    with PtySession(["chat", "--config", str(cfg), "--thread", "shared"], env) as first:
        first.expect("type a message")
        second = run_cli("chat", "--config", str(cfg), "--thread", "shared", env=env, stdin="hi\n")
        assert second.returncode == 2
        line = error_line(second.stderr)
        assert "chat thread 'shared' is in use by another moa process" in line
        other = run_cli("chat", "--config", str(cfg), "--thread", "other", env=env, stdin="hi\n")
        assert other.returncode == 0, other.stderr
        first.send(b"exit\n")
        assert first.wait() == 0
    after = run_cli("chat", "--config", str(cfg), "--thread", "shared", env=env, stdin="hi\n")
    assert after.returncode == 0, after.stderr


def test_two_compares_on_one_folder(server: FakeOpenAIServer, tmp_path: Path) -> None:
    refused = threading.Event()
    server.script("judge", always_a)
    server.script("agg", latency=lambda: 0.0 if refused.is_set() else 3.0)
    data = write_prompts(tmp_path / "p.jsonl", 2)
    mix = write_mixture(tmp_path / "mix.toml")
    args = ("compare", data, "--config", mix, "--judge", "together:judge", "-o", tmp_path / "r")
    first = start_moa(*args, env=compare_env(server))
    wait_until(holds_lock(tmp_path / "r" / ".moa.lock", first))
    second = run_cli(*map(str, args), env=compare_env(server))
    refused.set()
    assert second.returncode == 2
    assert "report folder" in error_line(second.stderr) and "in use by another moa" in (
        second.stderr
    )
    assert first.wait(120) == 0, first.communicate()
    assert results(tmp_path / "r")["pairs"]


# ------------------------------------------------------------------- 6, 8. input
PEAK_RSS = (
    "import resource, subprocess, sys\n"
    "run = subprocess.run(sys.argv[1:], stdin=subprocess.DEVNULL, capture_output=True, text=True)\n"
    "mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024\n"
    "print(run.returncode, mb)\n"
    "print(run.stdout + run.stderr)"
)


def peak_rss_mb(*args: str | Path, env: dict[str, str]) -> tuple[int, int, str]:
    """(exit status, peak resident MB, stdout + stderr) of ``moa ARGS`` run alone in a fresh
    parent."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("TOGETHER_", "OPENAI_"))}
    probe = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, sys.executable, "-m", "langgraph_moa", *map(str, args)],
        capture_output=True,
        text=True,
        env={**full_env, **env},
        cwd=ROOT,
        timeout=300,
    )
    first, _, said = probe.stdout.partition("\n")
    code, mb = first.split()
    return int(code), int(mb), said


def test_a_large_input_with_limit_keeps_memory_flat(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    # A window the 4 MiB items fit: else they are refused as the input is read (core/batch/fits.py)
    cfg = write_config(tmp_path / "c.toml", server, model_extra="context_window = 8000000")
    small = write_items(tmp_path / "small.jsonl", prompts(12))
    big = tmp_path / "big.jsonl"
    filler = "x" * (4 << 20)  # 4 MiB items after the first twelve: 400 MB in all
    with big.open("w") as f:
        f.write(small.read_text())
        for n in range(100):
            f.write(json.dumps({"id": f"big{n}", "prompt": filler}) + "\n")
    base_code, base, _ = peak_rss_mb("batch", small, "-o", tmp_path / "a.jsonl", "-c", cfg,
                                  "--limit", "10", env={})  # fmt: skip
    code, peak, _ = peak_rss_mb("batch", big, "-o", tmp_path / "b.jsonl", "-c", cfg,
                             "--limit", "10", env={})  # fmt: skip
    assert (base_code, code) == (0, 0)
    assert len(read_records(tmp_path / "b.jsonl")) == 10
    # Reading the whole file, as before, needed more than the file's size on top.
    assert peak - base < 60, (base, peak)
    print(f"peak RSS: {base} MB over 12 items, {peak} MB over 400 MB")
    assert peak < 300


@pytest.fixture(scope="module")
def many_items(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """200,000 short prompts (8 MB), as JSONL and as a JSON list: memory that grew by one id per
    item (a string and a dict entry, ~90 bytes) grew by more than 17 MB here."""
    folder = tmp_path_factory.mktemp("many")
    items = [{"id": f"i{n}", "prompt": f"What is {n} plus {n}?"} for n in range(200_000)]
    jsonl = write_items(folder / "many.jsonl", items)
    listed = folder / "many.json"
    listed.write_text(json.dumps(items))
    return jsonl, listed


def test_many_small_items_keep_memory_flat(
    server: FakeOpenAIServer, tmp_path: Path, many_items: tuple[Path, Path]
) -> None:
    jsonl, listed = many_items
    cfg = write_config(tmp_path / "c.toml", server)
    small = write_items(tmp_path / "small.jsonl", prompts(12))
    _, base, _ = peak_rss_mb("batch", small, "-o", tmp_path / "a.jsonl", "-c", cfg, "--limit",
                             "10", env={})  # fmt: skip
    out = tmp_path / "b.jsonl"
    runs = {
        "jsonl": ("batch", jsonl, "-o", out, "-c", cfg, "--limit", "10"),
        "resumed": ("batch", jsonl, "-o", out, "-c", cfg, "--limit", "10"),
        "a JSON list, 2 samples": (
            *("batch", listed, "-o", tmp_path / "c.jsonl", "-c", cfg),
            *("--limit", "10", "--samples", "2"),
        ),
        "a dry run": ("batch", listed, "-o", out, "-c", cfg, "--dry-run"),
    }
    peaks, said = {}, {}
    for name, args in runs.items():
        status, peaks[name], said[name] = peak_rss_mb(*args, env={})
        assert status == 0, said[name]
    print(f"peak RSS: {base} MB over 12 items; over 200,000: {peaks}")
    assert all(peak - base < 8 for peak in peaks.values()), (base, peaks)
    # Resumed exactly: the first 20 items once each (in the order they finished: the run is not
    # complete), and the rest counted right.
    finished = [r["id"] for r in read_records(out)]
    assert sorted(finished) == sorted(f"i{n}" for n in range(20))
    assert "199980 items left; run the same command again without --limit" in said["resumed"]
    assert "200000 items (20 already done, 199980 to run)" in said["a dry run"], said["a dry run"]
    sampled = [r["id"] for r in read_records(tmp_path / "c.jsonl")]
    assert sorted(sampled) == sorted(f"i{n}#s{k}" for n in range(5) for k in range(2))


def test_a_repeated_id_is_refused_with_both_lines(tmp_path: Path) -> None:
    items = [{"id": f"i{n}", "prompt": f"What is {n} plus {n}?"} for n in range(5000)]
    data = write_items(tmp_path / "in.jsonl", [*items, {"id": "i7", "prompt": "again"}])
    result = run_cli("batch", str(data), "--dry-run")
    assert result.returncode == 2
    line = error_line(result.stderr)
    assert "line 5001: id 'i7' is already the id of line 8" in line and "--skip-invalid" in line
    skipped = run_cli("batch", str(data), "--dry-run", "--skip-invalid", "--json")
    assert json.loads(skipped.stdout)["invalid"] == 1, skipped.stderr


def test_a_full_temporary_folder_is_named(tmp_path: Path, many_items: tuple[Path, Path]) -> None:
    import resource

    def small_files() -> None:  # a file size limit fails writes as a full disk does
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    jsonl, _ = many_items
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOGETHER_", "OPENAI_"))}
    env["TMPDIR"] = str(tmp_path)
    cases = ((str(jsonl), None, "the input's ids"), ("-", jsonl, "a copy of stdin"))
    for arg, stdin, what in cases:
        with open(stdin or os.devnull, "rb") as source:
            result = subprocess.run(
                [sys.executable, "-m", "langgraph_moa", "batch", arg, "--dry-run"],
                stdin=source,
                capture_output=True,
                text=True,
                env=env,
                cwd=ROOT,
                timeout=180,
                preexec_fn=small_files,
            )
        assert result.returncode == 2
        line = error_line(result.stderr)
        assert f"cannot write {what} in the temporary folder {tmp_path}" in line
        assert "set TMPDIR to a folder with room" in line


def test_a_json_list_is_read_item_by_item(tmp_path: Path) -> None:
    # The list is read in 1 MiB chunks: items cross chunk boundaries, and a number sits across
    # the first one (its digits must not come out as two numbers).
    head = '[{"prompt": "first", "note": "'
    number = "1234567890"
    cut = (1 << 20) + 1 - len(number) // 2  # where the number starts: across the chunk's end
    text = head + "x" * (cut - len(head) - len('"}, ')) + '"}, ' + number
    items = [{"id": f"i{n}", "prompt": f"caf\u00e9 \u2028 {n} " + "y" * 700} for n in range(3000)]
    text += ", " + json.dumps(items, ensure_ascii=False)[1:]
    listed = tmp_path / "in.json"
    listed.write_text(text, encoding="utf-8")
    assert text[cut : cut + len(number)] == number and len(json.loads(text)) == 3002
    result = run_cli("batch", str(listed), "--dry-run", "--skip-invalid", "--json")
    assert result.returncode == 0, result.stderr
    counted = json.loads(result.stdout)
    assert (counted["items"], counted["invalid"], counted["to_run"]) == (3002, 1, 3001)

    huge = tmp_path / "huge.json"
    huge.write_text(json.dumps([{"prompt": "ok"}, {"prompt": "z" * (17 << 20)}]))
    result = run_cli("batch", str(huge), "--dry-run")
    assert result.returncode == 2
    assert "item 2 is longer than 16 MiB (the limit per item)" in error_line(result.stderr)

    # A mistake in a small item of a big list is named as such (the window grows only for an
    # item it may have cut).
    broken = tmp_path / "broken.json"
    rest = json.dumps([{"prompt": "z" * 1000}] * (18 << 10))[1:]
    broken.write_text('[{"prompt": "ok"}, {"prompt": tru}, ' + rest)
    result = run_cli("batch", str(broken), "--dry-run")
    assert result.returncode == 2
    assert "item 2: not valid JSON (Expecting value)" in error_line(result.stderr)


def test_a_pipe_given_by_name_is_read_like_stdin(server: FakeOpenAIServer, tmp_path: Path) -> None:
    # `moa batch <(zcat items.jsonl.gz) -o ...`: a pipe can be read once; the input is read
    # twice (checked, then run), so it is copied first, as stdin is (was: "unexpected
    # UnsupportedOperation: File or stream is not seekable").
    cfg = write_config(tmp_path / "c.toml", server)
    fifo = tmp_path / "items"
    os.mkfifo(fifo)
    text = "".join(json.dumps(i) + "\n" for i in prompts(3))

    def feed() -> None:
        with fifo.open("w", encoding="utf-8") as f:
            f.write(text)

    writer = threading.Thread(target=feed)
    writer.start()
    out = tmp_path / "out.jsonl"
    result = batch(fifo, "-o", out, "-c", cfg)
    writer.join(10)
    assert result.returncode == 0, result.stderr
    assert [r["id"] for r in read_records(out)] == ["q0", "q1", "q2"]


def test_dev_zero_is_refused_at_the_line_cap(tmp_path: Path) -> None:
    result = run_cli("batch", "/dev/zero", "--dry-run", timeout=60)
    assert result.returncode == 2
    assert "line 1 is longer than 16 MiB (the limit per item)" in error_line(result.stderr)


def test_bom_and_unicode_line_separators_are_read(server: FakeOpenAIServer, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", server)
    odd = "one\u2028two\u2029three\u0085four"
    items = [{"id": "a", "prompt": odd}, {"id": "b", "prompt": "plain"}]
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_bytes(
        BOM + "".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items).encode()
    )
    listed = tmp_path / "in.json"
    listed.write_bytes(BOM + json.dumps(items, ensure_ascii=False).encode())
    for data, out in ((jsonl, "a.jsonl"), (listed, "b.jsonl")):
        result = batch(data, "-o", tmp_path / out, "-c", cfg)
        assert result.returncode == 0, result.stderr
        records = read_records(tmp_path / out)
        assert records[0]["input"]["prompt"] == odd and records[0]["turns"][0]["prompt"] == odd


def test_stdin_that_is_not_utf8_is_named(server: FakeOpenAIServer, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", server)
    result = subprocess.run(
        [sys.executable, "-m", "langgraph_moa", "batch", "-", "--dry-run", "-c", str(cfg)],
        input=b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n',
        capture_output=True,
        cwd=ROOT,
    )
    assert result.returncode == 2
    line = error_line(result.stderr.decode())
    assert "stdin: line 2: not valid UTF-8: byte 0xe9 at offset 15" in line


def strict_json(text: str) -> Any:
    """``text`` read as jq, JavaScript and Go read JSON: no NaN, no Infinity."""

    def refuse(token: str) -> None:
        raise ValueError(f"{token} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_nan_and_infinity_in_an_input_are_refused_before_any_call(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    # Python's json reads NaN, Infinity, -Infinity (and 1e999 as infinity); they were copied into
    # every record, which strict readers (jq, JavaScript, Go) then refuse.
    cfg = write_config(tmp_path / "c.toml", server)
    fine = '{"id": "ok", "prompt": "Is NaN a number? Is Infinity?", "score": 1e308}'
    cases = [
        ("in.jsonl", [], f'{fine}\n{{"id": "b", "prompt": "hi", "score": NaN}}\n', "line 2", "NaN"),
        (
            "alpaca.json",
            ["-f", "alpaca-eval"],
            f'[{fine}, {{"instruction": "hi", "weights": [1, -Infinity]}}]',
            "item 2",
            "-Infinity",
        ),
        (
            "mt.jsonl",
            ["-f", "mt-bench"],
            f'{fine}\n{{"question_id": 81, "turns": ["hi"], "x": {{"y": Infinity}}}}\n',
            "line 2",
            "Infinity",
        ),
        ("big.jsonl", [], f'{fine}\n{{"prompt": "hi", "score": 1e999}}\n', "line 2", "1e999"),
    ]
    # An integer longer than Python converts (4300 digits) was "unexpected ValueError".
    digits = "9" * 5000
    long_int = f'{fine}\n{{"prompt": "hi", "n": {digits}}}\n'
    cases.append(("long.jsonl", [], long_int, "line 2", f"{digits[:20]}... has 5000"))
    for name, flags, text, where, token in cases:
        data = tmp_path / name
        data.write_text(text, encoding="utf-8")
        out = tmp_path / f"{name}.out"
        for args in ([data, "-o", out, *flags, "-c", cfg], [data, "--dry-run", "-c", cfg]):
            result = batch(*args)
            assert result.returncode == 2, result.stderr
            line = error_line(result.stderr)
            assert line.startswith(f"moa: error: {data}: {where}: {token} "), line
            if name != "long.jsonl":
                assert "write null instead" in line and "jq, JavaScript and Go refuse" in line
            else:
                assert line.endswith("write it as a string instead (or pass --skip-invalid to "
                                     "record it as failed)")  # fmt: skip
        assert not out.exists()
    assert not server.requests
    # moa compare reads its prompts the same way (and has no --skip-invalid to offer).
    args = ("compare", tmp_path / "in.jsonl", "--config", write_mixture(tmp_path / "mix.toml"))
    compared = run_cli(*map(str, args), "--judge", "together:judge", "-o", str(tmp_path / "r"),
                       env=compare_env(server))  # fmt: skip
    assert compared.returncode == 2
    line = error_line(compared.stderr)
    assert f"{tmp_path / 'in.jsonl'}: line 2: NaN is not valid JSON" in line
    assert line.endswith("write null instead") and not server.requests
    # --skip-invalid records the line as failed, as it was: every record is strict JSON.
    out = tmp_path / "skipped.jsonl"
    result = batch(tmp_path / "alpaca.json", "-o", out, "-c", cfg, "--skip-invalid")
    assert result.returncode == 1, result.stderr
    ok, failed = [strict_json(line) for line in out.read_text().splitlines()]
    assert ok["status"] == "ok" and ok["input"]["score"] == 1e308
    assert failed["status"] == "failed"
    assert "-Infinity is not valid JSON" in failed["error"]["message"]
    assert failed["input"] == '{"instruction": "hi", "weights": [1, -Infinity]}'


# ------------------------------------------------------------------- 7. resume
def test_a_resume_with_other_settings_is_refused(server: FakeOpenAIServer, tmp_path: Path) -> None:
    data = write_items(tmp_path / "in.jsonl", prompts(3))
    out = tmp_path / "out.jsonl"
    warm = write_config(tmp_path / "warm.toml", server, model_extra="temperature = 0.7")
    assert batch(data, "-o", out, "-c", warm, "--limit", "1").returncode == 0
    cold = write_config(tmp_path / "cold.toml", server, model_extra="temperature = 0.2")
    prompt = tmp_path / "prompt.toml"
    other_prompt = 'aggregation_prompt = "Pick the best one of these: {references}"\n'
    prompt.write_text(warm.read_text() + other_prompt)
    before = len(server.requests)
    for cfg, said in (
        (cold, "temperature of together:agg: 0.7 -> 0.2; temperature of together:p1: 0.7 -> 0.2"),
        (prompt, "(the aggregation prompt)"),
    ):
        result = batch(data, "-o", out, "-c", cfg)
        assert result.returncode == 2
        line = error_line(result.stderr)
        assert "holds 1 finished items made with other settings" in line and said in line
        assert "--mixed-settings" in line
    assert len(server.requests) == before and len(read_records(out)) == 1
    mixed = batch(data, "-o", out, "-c", cold, "--mixed-settings")
    assert mixed.returncode == 0, mixed.stderr
    assert "1 finished items were made with other settings" in mixed.stderr
    temperatures = [r["settings"]["sampling"]["together:agg"]["temperature"] for r in
                    read_records(out)]  # fmt: skip
    assert temperatures == [0.7, 0.2, 0.2]  # each record says which settings made it


# ------------------------------------------------------------------- 9. degraded items
def test_an_item_missing_a_proposal_is_degraded_and_can_be_redone(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    # p2 gives up on the first item (-j 1: q0) after both its attempts are rate limited.
    server.fail("p2", *[Failure(status=429, retry_after="0", message="slow down")] * 2)
    cfg = write_config(tmp_path / "c.toml", server, extra="max_attempts = 2")
    data = write_items(tmp_path / "in.jsonl", prompts(3))
    out = tmp_path / "out.jsonl"
    first = batch(data, "-o", out, "-c", cfg, "-j", "1")
    assert first.returncode == 3, first.stderr
    assert "2 ok, 1 degraded, 0 failed" in first.stderr
    assert "1 items were answered with fewer proposals than configured" in first.stderr
    assert "--retry-degraded" in first.stderr
    q0, q1, _ = read_records(out)
    assert q0["status"] == "degraded" and q0["answer"] and q0["error"] is None
    (missing,) = q0["missing_proposals"]
    assert missing["model"] == "together:p2" and missing["kind"] == "rate_limit"
    assert "HTTP 429" in missing["message"] and (missing["turn"], missing["layer"]) == (1, 1)
    assert q1["status"] == "ok" and q1["missing_proposals"] == []

    # --retry-failed leaves a degraded item alone; --retry-degraded redoes only the missing call
    # (p1's proposal comes from the call cache) and the aggregation.
    before = len(server.requests)
    assert batch(data, "-o", out, "-c", cfg, "--retry-failed").returncode == 3
    assert len(server.requests) == before
    again = batch(data, "-o", out, "-c", cfg, "--retry-degraded")
    assert again.returncode == 0, again.stderr
    assert [r["status"] for r in read_records(out)] == ["ok", "ok", "ok"]
    assert sorted(r.model for r in server.requests[before:]) == ["agg", "p2"]


def test_a_degraded_answer_is_judged_and_reported(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.script("judge", always_a)
    server.fail("p2", Failure(status=500, message="down"))
    mix = tmp_path / "mix.toml"
    write_mixture(mix)
    mix.write_text(mix.read_text() + "max_attempts = 1\n", encoding="utf-8")
    data = write_prompts(tmp_path / "p.jsonl", 2)
    args = ("compare", data, "--config", mix, "--judge", "together:judge", "-o", tmp_path / "r")
    result = run_cli(*map(str, args), "-j", "1", env=compare_env(server))
    assert result.returncode == 3, result.stderr
    assert "1 answers were made with fewer proposals than configured" in result.stderr
    assert "--retry-degraded" in result.stderr
    found = results(tmp_path / "r")
    mine = next(s for s in found["systems"] if s["candidate"])
    assert (mine["answers"], mine["degraded"], mine["failed"]) == (2, 1, 0)
    assert all(p["missing"] == 0 for p in found["pairs"])  # the degraded answer was judged
    assert "had fewer proposals than configured" in (tmp_path / "r" / "report.md").read_text()


def test_retries_after_a_shared_429_pause_are_spread(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    # Six items at once: each one's p1 call is rate limited with Retry-After: 2 s, which pauses p1
    # for every caller. Released at one instant, the six retries would hit the limit together.
    server.fail("p1", *[Failure(status=429, retry_after="2")] * 6)
    cfg = write_config(tmp_path / "c.toml", server, extra="max_attempts = 4")
    data = write_items(tmp_path / "in.jsonl", prompts(6))
    result = batch(data, "-o", tmp_path / "out.jsonl", "-c", cfg, "-j", "6")
    assert result.returncode == 0, result.stderr
    answered = sorted(r.started for r in server.requests_for("p1") if r.status == 200)
    assert len(answered) == 6
    # With a 1 s ramp (half the pause), six retries in lockstep are within a few ms of each other.
    assert answered[-1] - answered[0] > 0.3, [round(t - answered[0], 3) for t in answered]


# ------------------------------------------------------------------- 10. smaller
def test_a_corrupt_call_cache_is_named(server: FakeOpenAIServer, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", server)
    data = write_items(tmp_path / "in.jsonl", prompts(2))
    cache = tmp_path / "calls.sqlite"
    cache.write_bytes(b"SQLite format 3\x00" + b"cut short by a crash\n" * 400)
    result = batch(data, "-o", tmp_path / "out.jsonl", "-c", cfg, "--cache", cache)
    assert result.returncode == 2
    line = error_line(result.stderr)
    assert f"the call cache {cache}: file is not a database" in line
    assert "move it away or delete it" in line and "--no-cache" in line
    # Damaged before its tables could be read, it may have been another program's: both said.
    assert "if it was moa's call cache, move it away" in line
    assert "if another program's, give --cache a file of its own" in line
    assert "DatabaseError" not in result.stderr and not server.requests
    # A file that is no SQLite at all is someone's file, not a broken cache: never "delete it".
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n" * 400)
    result = batch(data, "-o", tmp_path / "out.jsonl", "-c", cfg, "--cache", notes)
    assert error_line(result.stderr) == (
        f"moa: error: the call cache {notes}: not a call cache: not a SQLite file: give --cache a "
        "file of its own"
    )
    assert result.returncode == 2 and notes.read_text() == "my notes\n" * 400
    # Nor is a folder or a pipe (SQLite said "unable to open" / "disk I/O error": free space).
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    for odd in (tmp_path, pipe):
        result = batch(data, "-o", tmp_path / "out.jsonl", "-c", cfg, "--cache", odd)
        assert error_line(result.stderr) == (
            f"moa: error: the call cache {odd}: not a call cache: not a regular file: give "
            "--cache a file of its own"
        )
    assert not server.requests


def test_a_path_through_a_file_is_named(server: FakeOpenAIServer, tmp_path: Path) -> None:
    # A cache, an output or a report folder whose folder is a file: an OSError, first an
    # "unexpected" error, then the OS's words ("File exists", "Not a directory"), which do not
    # say which file is in the way.
    cfg = write_config(tmp_path / "c.toml", server)
    data = write_items(tmp_path / "in.jsonl", prompts(2))
    afile = tmp_path / "afile"
    afile.write_text("x")
    for cache in (afile / "calls.sqlite", afile / "deeper" / "calls.sqlite"):
        result = batch(data, "-o", tmp_path / "out.jsonl", "-c", cfg, "--cache", cache)
        assert result.returncode == 2
        assert error_line(result.stderr) == (
            f"moa: error: the call cache {cache}: {afile} is a file, not a folder: choose a "
            "folder you can use for it (--cache), or pass --no-cache"
        )
    for out, fmt in [(afile / "out.jsonl", "jsonl"), (afile / "sub" / "out.json", "alpaca-eval")]:
        result = batch(data, "-o", out, "-f", fmt, "-c", cfg)
        assert result.returncode == 2
        assert error_line(result.stderr) == (
            f"moa: error: -o {out}: {afile} is a file, not a folder; give another -o"
        )
    # The work folder beside the output (the journal of a --format, the default call cache).
    work = tmp_path / "answers" / ".moa-batch"
    work.parent.mkdir()
    work.write_text("x")
    out = work.parent / "out.json"
    result = batch(data, "-o", out, "-f", "alpaca-eval", "-c", cfg)
    assert error_line(result.stderr) == (
        f"moa: error: -o {out}: {work} is a file, not a folder; give another -o"
    )
    result = batch(data, "-o", work.parent / "out.jsonl", "-c", cfg)
    assert f"the call cache {work}/out.jsonl.cache.sqlite: {work} is a file, not a folder" in (
        error_line(result.stderr)
    )
    report = afile / "report"
    args = ("compare", data, "--config", write_mixture(tmp_path / "mix.toml"), "-o", report)
    compared = run_cli(*map(str, args), "--judge", "together:judge", env=compare_env(server))
    assert compared.returncode == 2
    assert error_line(compared.stderr) == (
        f"moa: error: cannot create the report folder '{report}': {afile} is a file, not a "
        "folder: choose another path"
    )
    assert not server.requests
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "answers", "c.toml", "in.jsonl",
                                                          "mix.toml"]  # fmt: skip


def test_a_cache_that_is_another_file_of_the_run_is_refused(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    # SQLite wrote its pages into the run's records (and the run ended in a UnicodeDecodeError).
    cfg = write_config(tmp_path / "c.toml", server)
    data = write_items(tmp_path / "in.jsonl", prompts(2))
    out = tmp_path / "out.jsonl"
    before = {p: p.read_bytes() for p in (cfg, data)}
    for cache, role in [(out, "output"), (data, "input"), (cfg, "config")]:
        result = batch(data, "-o", out, "-c", cfg, "--cache", cache)
        assert result.returncode == 2
        assert error_line(result.stderr) == (
            f"moa: error: --cache {cache}: that is the {role} file; give the cache its own"
        )
    alpaca = batch(data, "-o", out, "-f", "alpaca-eval", "-c", cfg, "--cache", out)
    assert "that is the output file" in error_line(alpaca.stderr)
    assert not server.requests and not out.exists()
    assert before == {p: p.read_bytes() for p in (cfg, data)}


def _plant(cache: Path, marker: Path) -> int:
    """Replace every entry of ``cache`` with a value LangGraph's default serializer would rebuild
    as ``os.system("touch MARKER")``, as a colleague who can write the file could."""
    import sqlite3

    import ormsgpack
    from langgraph.checkpoint.serde.jsonplus import EXT_CONSTRUCTOR_POS_ARGS

    call = ormsgpack.packb(("os", "system", [f"touch {marker}"]))
    payload = ormsgpack.packb(ormsgpack.Ext(EXT_CONSTRUCTOR_POS_ARGS, call))
    with contextlib.closing(sqlite3.connect(cache)) as conn, conn:
        return conn.execute("UPDATE cache SET val = ?, encoding = 'msgpack'", (payload,)).rowcount


def test_a_planted_call_cache_entry_runs_no_code(server: FakeOpenAIServer, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", server)
    data = write_items(tmp_path / "in.jsonl", prompts(2))
    cache, marker = tmp_path / "shared.sqlite", tmp_path / "pwned"
    assert batch(data, "-o", tmp_path / "a.jsonl", "-c", cfg, "--cache", cache).returncode == 0
    assert _plant(cache, marker) == 6  # 2 items x (2 proposers + the aggregator)
    server.reset()
    result = batch(data, "-o", tmp_path / "b.jsonl", "-c", cfg, "--cache", cache)
    assert result.returncode == 0, result.stderr
    assert not marker.exists()
    # The planted entries are no answers: the calls are made again, and the user is told.
    assert len(server.requests) == 6
    assert [r["cached_calls"] for r in read_records(tmp_path / "b.jsonl")] == [0, 0]
    assert f"6 entries of the call cache {cache} were not model calls" in result.stderr
    assert "allowed_msgpack_modules" not in result.stderr  # the library's advice to allow it


# Rows LangGraph's strict serializer cannot read at all: a pickle (which it never loads), a JSON
# constructor naming os.system, bytes that are no msgpack.
UNREADABLE_ROWS = {
    "pickle": b"\x80\x04K\x01.",
    "json": b'{"lc": 1, "type": "constructor", "id": ["os", "system"], "kwargs": {}}',
    "msgpack": b"\xc1\xc1",
}


@pytest.mark.parametrize("encoding", list(UNREADABLE_ROWS))
def test_an_unreadable_call_cache_entry_is_asked_again(
    server: FakeOpenAIServer, tmp_path: Path, encoding: str
) -> None:
    import sqlite3

    cfg = write_config(tmp_path / "c.toml", server)
    data = write_items(tmp_path / "in.jsonl", prompts(2))
    cache = tmp_path / "shared.sqlite"
    assert batch(data, "-o", tmp_path / "a.jsonl", "-c", cfg, "--cache", cache).returncode == 0
    with contextlib.closing(sqlite3.connect(cache)) as conn, conn:
        conn.execute(
            "UPDATE cache SET val = ?, encoding = ?", (UNREADABLE_ROWS[encoding], encoding)
        )
    server.reset()
    result = batch(data, "-o", tmp_path / "b.jsonl", "-c", cfg, "--cache", cache)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert len(server.requests) == 6
    assert f"6 entries of the call cache {cache} were not model calls" in result.stderr


def test_another_programs_database_is_not_a_call_cache(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    import sqlite3

    cfg = write_config(tmp_path / "c.toml", server)
    data = write_items(tmp_path / "in.jsonl", prompts(2))
    for name, schema in [("users.db", "users (name)"), ("other.db", "cache (a, b)")]:
        db = tmp_path / name
        with contextlib.closing(sqlite3.connect(db)) as conn, conn:
            conn.execute(f"CREATE TABLE {schema}")
        before = db.read_bytes()
        result = batch(data, "-o", tmp_path / "out.jsonl", "-c", cfg, "--cache", db)
        assert result.returncode == 2
        line = error_line(result.stderr)
        assert f"the call cache {db}: not a call cache" in line and "--no-cache" in line
        assert db.read_bytes() == before  # no table added to someone's database
        assert not server.requests and not (tmp_path / "out.jsonl").exists()


def test_a_full_disk_leaves_no_half_record(server: FakeOpenAIServer, tmp_path: Path) -> None:
    # A file size limit (ulimit -f) fails a write part-way, as a full disk does: the bytes up to
    # the limit are written, the rest refused.
    import resource

    cfg = write_config(tmp_path / "c.toml", server)
    one = tmp_path / "one.jsonl"
    assert (
        batch(write_items(tmp_path / "1.jsonl", prompts(1)), "-o", one, "-c", cfg).returncode == 0
    )
    size = one.stat().st_size
    limit = size * 2 + size // 2  # two records fit, the third is cut in the middle

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out = tmp_path / "out.jsonl"
    data = write_items(tmp_path / "in.jsonl", prompts(5))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOGETHER_", "OPENAI_"))}
    args = [sys.executable, "-m", "langgraph_moa", "batch", str(data), "-o", str(out)]
    full = subprocess.run(
        [*args, "-c", str(cfg), "-j", "1", "--no-cache"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        preexec_fn=small_files,
    )
    assert full.returncode == 1
    line = error_line(full.stderr)
    assert f"cannot write {out}" in line and "the finished items are kept" in line
    assert len(read_records(out)) == 2  # read_records: no torn last line
    resumed = batch(data, "-o", out, "-c", cfg)
    assert resumed.returncode == 0 and "torn" not in resumed.stderr, resumed.stderr
    assert [r["id"] for r in read_records(out)] == [f"q{i}" for i in range(5)]


def test_a_full_call_cache_keeps_the_answers_it_paid_for(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    # The cache's write-ahead log grows by pages (4 KiB or more per stored call) while a record
    # is about 2 KiB: under a 96 KiB file size limit (as a full disk) the cache fills within a
    # few items and the output never does. Every item used to fail with the cache's error after
    # its calls were paid, to be paid again by --retry-failed.
    import resource

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (96 << 10, 96 << 10))

    cfg = write_config(tmp_path / "c.toml", server)
    data = write_items(tmp_path / "in.jsonl", prompts(12))
    out, cache = tmp_path / "out.jsonl", tmp_path / "calls.sqlite"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOGETHER_", "OPENAI_"))}
    args = [sys.executable, "-m", "langgraph_moa", "batch", str(data), "-o", str(out)]
    full = subprocess.run(
        [*args, "-c", str(cfg), "-j", "2", "--cache", str(cache)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        preexec_fn=small_files,
    )
    assert full.returncode == 0, full.stderr
    assert "Traceback" not in full.stderr
    assert [r["status"] for r in read_records(out)] == ["ok"] * 12
    assert len(server.requests) == 12 * 3  # each call paid once, none thrown away
    # SQLite names a full disk "database or disk is full", a refused write "disk I/O error".
    said = re.search(rf"the call cache {re.escape(str(cache))} could not store (\d+) answers "
                     r"\(disk I/O error\)", full.stderr)  # fmt: skip
    assert said and 0 < int(said[1]) < 36, full.stderr


def test_runs_sharing_a_call_cache_both_finish(server: FakeOpenAIServer, tmp_path: Path) -> None:
    # Two outputs in one folder on one --cache, or a resume beside another run: a data team's
    # normal case. The cache's write probe needed SQLite's write lock: another writer holding it
    # had the run wait 5 s, then refused ("database is locked: free some space ...").
    server.script("agg", ttft=0.2)  # each run lasts long enough to overlap the other
    cfg = write_config(tmp_path / "c.toml", server)
    cache = tmp_path / "calls.sqlite"
    runs = {
        name: start_moa(
            "batch", write_items(tmp_path / f"{name}.in.jsonl", prompts(6, start)),
            "-o", tmp_path / f"{name}.jsonl", "-c", cfg, "--cache", cache, "-j", "2",
        )
        for name, start in (("a", 0), ("b", 3))  # q3..q5 in both: either may answer them first
    }  # fmt: skip
    for name, run in runs.items():
        _, stderr = run.communicate(timeout=120)
        assert run.returncode == 0, stderr
        assert "could not store" not in stderr, stderr
        assert [r["status"] for r in read_records(tmp_path / f"{name}.jsonl")] == ["ok"] * 6
    # Another writer holding the lock as a run opens the cache (a sqlite3 shell with a
    # transaction open, or a run's store at that instant): the run starts, and stores once the
    # lock is let go.
    import sqlite3

    holder = sqlite3.connect(cache, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        data = write_items(tmp_path / "c.in.jsonl", prompts(2, 10))
        server.reset()
        third = start_moa("batch", data, "-o", tmp_path / "c.jsonl", "-c", cfg, "--cache", cache)
        wait_until(lambda: bool(server.requests) or third.poll() is not None)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    _, stderr = third.communicate(timeout=120)
    assert third.returncode == 0, stderr
    assert "could not store" not in stderr, stderr
    assert [r["status"] for r in read_records(tmp_path / "c.jsonl")] == ["ok"] * 2


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_an_output_that_cannot_be_written_is_named(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path / "c.toml", server)
    data = write_items(tmp_path / "in.jsonl", prompts(2))
    out = tmp_path / "out.jsonl"
    assert batch(data, "-o", out, "-c", cfg, "--limit", "1").returncode == 0
    server.reset()
    # A colleague's file, or one made read-only on purpose; root ignores modes, not +i.
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(out)], capture_output=True).returncode != 0:
            pytest.skip("root, and no chattr +i here")
    else:
        out.chmod(0o444)
    try:
        result = batch(data, "-o", out, "-c", cfg)
    finally:
        subprocess.run(["chattr", "-i", str(out)], capture_output=True)
    assert result.returncode == 2
    assert error_line(result.stderr) == (
        f"moa: error: cannot write {out}: permission denied: choose a folder you can write to"
    )
    assert not server.requests and len(read_records(out)) == 1


def test_an_unwritable_folder_is_named(server: FakeOpenAIServer, tmp_path: Path) -> None:
    # /sys refuses new files even to root (EACCES; EROFS where it is mounted read-only): a folder
    # the user cannot write, as a read-only mount or another user's folder is.
    cfg = write_config(tmp_path / "c.toml", server)
    data = write_items(tmp_path / "in.jsonl", prompts(1))
    out = f"/sys/moa-test-{os.getpid()}.jsonl"
    result = batch(data, "-o", out, "-c", cfg)
    assert result.returncode == 2
    line = error_line(result.stderr)
    assert f"cannot lock output {out}" in line and ("choose a writable folder" in line or (
        "choose a folder you can write to" in line))  # fmt: skip
    report = run_cli("compare", str(data), "--config", str(cfg), "-o", "/sys/moa-test-report",
                     env=compare_env(server))  # fmt: skip
    assert report.returncode == 2
    assert "cannot create the report folder '/sys/moa-test-report'" in error_line(report.stderr)
    assert "choose a" in report.stderr and not server.requests


def test_compare_says_when_no_verdict_or_no_interval_holds(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    server.script("judge", always_a)  # A in both orders: every pair a tie
    server.script("mute", "Both answers have merits.")  # never a verdict line
    # Four systems (the mixture, each of its models alone): 3 baselines x 3 prompts x 2 orders.
    data = write_prompts(tmp_path / "p.jsonl", 3)
    mix = write_mixture(tmp_path / "mix.toml")
    args = ["compare", str(data), "--config", str(mix), "-o", str(tmp_path / "r")]
    ties = run_cli(*args, "--judge", "together:judge", env=compare_env(server))
    assert ties.returncode == 0, ties.stderr
    verdict = ties.stdout.strip().splitlines()[-1]
    assert "+0 points (no 95% CI: all 3 judged pairs had the same outcome)" in verdict
    assert (
        "CI +0 to +0" not in verdict and "50–50" not in (tmp_path / "r" / "report.md").read_text()
    )

    mute = run_cli(*args, "--judge", "together:mute", env=compare_env(server))
    assert mute.returncode == 1, mute.stderr
    assert "moa compare: no verdict could be read from the judge: 18 of 18 judgments" in mute.stderr
    assert "No verdict" in mute.stdout and "Traceback" not in mute.stderr
