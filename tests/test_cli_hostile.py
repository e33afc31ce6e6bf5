"""The ``moa`` command against a careless or hostile user (issue 14): bad stdin, pipes that close,
presets that name paths, values that are not finite, settings errors that must say where the bad
value came from. Each test runs the command as a subprocess, the way a user does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, run_cli
from fake_openai import FakeOpenAIServer

KEY = {"TOGETHER_API_KEY": "test-key"}


def together_env(server: FakeOpenAIServer) -> dict[str, str]:
    return {**KEY, "TOGETHER_API_BASE": server.base_url}


def moa(
    *args: str,
    stdin: bytes | None = b"",
    env: dict[str, str] | None = None,
    shell_redirect: str = "",
    timeout: float = 60,
) -> subprocess.CompletedProcess[bytes]:
    """``moa ARGS`` with raw bytes on stdin; ``shell_redirect`` (e.g. ``<&-``) goes through sh."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("TOGETHER_", "OPENAI_"))}
    full_env.update(env or {})
    command = [sys.executable, "-m", "langgraph_moa", *args]
    if shell_redirect:
        command = ["sh", "-c", f'exec "$@" {shell_redirect}', "sh", *command]
    return subprocess.run(
        command,
        input=stdin if not shell_redirect else None,
        capture_output=True,
        env=full_env,
        cwd=ROOT,
        timeout=timeout,
    )


def one_error_line(stderr: bytes) -> str:
    text = stderr.decode("utf-8", "replace")
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.startswith("moa: error:")]
    assert len(lines) == 1, text
    return lines[0]


# --- 3. bad stdin --------------------------------------------------------------------------------

# A strict UTF-8 locale (en_US.UTF-8 is not installed here: PYTHONIOENCODING gives the same
# strict decoding), and C.UTF-8 (where Python reads bad bytes as surrogates).
LOCALES = {
    "strict-utf8": {"PYTHONIOENCODING": "utf-8:strict", "LC_ALL": "C.UTF-8"},
    "c-utf8": {"LC_ALL": "C.UTF-8"},
    "posix": {"LC_ALL": "C"},
}


@pytest.mark.parametrize("locale", list(LOCALES))
def test_invalid_utf8_on_stdin_is_one_line_before_any_call(
    server: FakeOpenAIServer, locale: str
) -> None:
    result = moa(
        "--preset",
        "seed",
        "-",
        stdin=b"caf\xc3\xa9 \xff oops",
        env={**together_env(server), **LOCALES[locale]},
    )
    assert result.returncode == 2, result.stderr
    error = one_error_line(result.stderr)
    assert "stdin is not valid UTF-8" in error and "byte 0xff at offset 6" in error, error
    assert not server.requests


@pytest.mark.parametrize("locale", list(LOCALES))
def test_an_undecodable_argument_is_one_line_before_any_call(
    server: FakeOpenAIServer, locale: str
) -> None:
    env = {**os.environ, **together_env(server), **LOCALES[locale]}
    env = {k: v for k, v in env.items() if not k.startswith("OPENAI_")}
    result = subprocess.run(
        [
            os.fsencode(sys.executable),
            b"-m",
            b"langgraph_moa",
            b"--preset",
            b"seed",
            b"bad \xff byte",
        ],
        capture_output=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "the prompt is not valid UTF-8: byte 0xff at offset 4" in one_error_line(result.stderr)
    assert not server.requests


def test_stdin_closed_is_one_line(server: FakeOpenAIServer) -> None:
    result = moa("--preset", "seed", "-", env=together_env(server), shell_redirect="<&-")
    assert result.returncode == 2
    assert "stdin is closed" in one_error_line(result.stderr)
    assert not server.requests


def test_chat_with_stdin_closed_is_one_line(server: FakeOpenAIServer) -> None:
    result = moa("chat", "--preset", "seed", env=together_env(server), shell_redirect="<&-")
    assert result.returncode == 2
    assert "stdin is closed" in one_error_line(result.stderr)
    assert not server.requests


def test_chat_skips_an_undecodable_line_and_goes_on(server: FakeOpenAIServer) -> None:
    result = moa(
        "chat", "--preset", "seed", env=together_env(server), stdin=b"bad \xfe line\nfine line\n"
    )
    assert result.returncode == 0, result.stderr
    stderr = result.stderr.decode()
    assert stderr.count("moa: error:") == 1 and "Traceback" not in stderr
    assert "moa: error: line 1 is not valid UTF-8: byte 0xfe at offset 4" in stderr
    asked = {m["content"] for r in server.requests for m in r.messages if m["role"] == "user"}
    assert asked == {"fine line"}


# --- 4. the local-model notice -------------------------------------------------------------------


def test_no_local_notice_when_every_model_is_given(server: FakeOpenAIServer) -> None:
    result = run_cli(
        "--proposer",
        "together:p",
        "--aggregator",
        "together:agg",
        "hi",
        env={"TOGETHER_API_BASE": server.base_url},
    )
    assert result.returncode == 0, result.stderr
    assert "local model" not in result.stderr
    assert {r.model for r in server.requests} == {"p", "agg"}


def test_the_notice_names_what_stays_local(server: FakeOpenAIServer) -> None:
    result = run_cli(
        "--proposer",
        "together:p",
        "--layers",
        "1",
        "hi",
        "--max-tokens",
        "8",
        env={"TOGETHER_API_BASE": server.base_url},
    )
    notices = [line for line in result.stderr.splitlines() if "no TOGETHER_API_KEY" in line]
    assert notices == [
        "moa: no TOGETHER_API_KEY: the aggregator is the embedded local model (SmolLM2-135M); "
        "set it for Together's models, or pick models with --aggregator or --preset"
    ], result.stderr


# --- 5. --preset names a preset, never a path ----------------------------------------------------


def test_preset_never_reads_a_path(server: FakeOpenAIServer, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "p.toml").write_text('layers = 1\naggregator = "together:agg"\n')
    relative = os.path.relpath(elsewhere / "p", ROOT)
    for value in (relative, str(elsewhere / "p"), str(elsewhere / "p.toml"), f"../{relative}"):
        result = run_cli("--preset", value, "hi", env=together_env(server))
        assert result.returncode == 2, (value, result.stderr)
        error = one_error_line(result.stderr.encode())
        assert f"unknown preset {value!r}" in error and "use --config for a file" in error
    assert not server.requests
    # The same file through --config runs.
    result = run_cli("--config", str(elsewhere / "p.toml"), "hi", env=together_env(server))
    assert result.returncode == 0, result.stderr


def test_config_never_reads_a_preset_by_name(tmp_path: Path) -> None:
    result = run_cli("--config", "seed", "hi", env=KEY)
    assert result.returncode == 2
    error = one_error_line(result.stderr.encode())
    assert "config file 'seed' not found" in error and "--preset seed" in error


# --- 6. a reader that goes away ------------------------------------------------------------------


def _stdout_closed_early(
    command: list[str], env: dict[str, str], stdin: bytes = b""
) -> tuple[int, str]:
    """Run ``command | head -c 20``: read a little of stdout, then close it."""
    proc = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith(("TOGETHER_", "OPENAI_"))},
            **env,
        },
        cwd=ROOT,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(stdin)
    proc.stdin.close()
    proc.stdout.read(20)
    proc.stdout.close()
    assert proc.stderr is not None
    stderr = proc.stderr.read()
    return proc.wait(timeout=60), stderr.decode()


# Longer than a pipe's buffer (64 KiB), so the writer notices the reader has gone.
BIG = ("x" * 999 + " ") * 200


@pytest.mark.parametrize("command", ["ask", "chat"])
def test_a_closed_pipe_ends_quietly(server: FakeOpenAIServer, command: str) -> None:
    server.script("agg", BIG)
    base = [sys.executable, "-m", "langgraph_moa"]
    flags = ["--preset", "seed", "--layers", "1", "-a", "together:agg", "-m", "4000"]
    if command == "ask":
        code, stderr = _stdout_closed_early([*base, *flags, "hi"], together_env(server))
    else:
        code, stderr = _stdout_closed_early(
            [*base, "chat", *flags], together_env(server), stdin=b"one\ntwo\n"
        )
    assert "moa: error" not in stderr and "Traceback" not in stderr, stderr
    if command == "ask":
        assert stderr.strip() == "", stderr
    assert code == 141  # 128 + SIGPIPE: what a shell reports for `cat` in the same place


def test_help_into_a_closed_pipe_ends_quietly() -> None:
    """`moa --help | head -1`: the reader goes before the help is written."""
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "langgraph_moa", "--help"],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (141, "")


@pytest.mark.parametrize("command", ["ask", "chat", "batch", "compare", "serve", "presets"])
def test_every_command_takes_h_for_help(command: str) -> None:
    done = run_cli(command, "-h")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Usage: moa {command} ")


# --- 7. durations must be finite ------------------------------------------------------------------


@pytest.mark.parametrize(
    "setting",
    [
        "timeout = inf",
        "timeout = nan",
        "layer_deadline = inf",
        "retry_base_s = nan",
        "quorum_grace = inf",
        "straggler_grace = inf",
        'aggregator = { model = "together:agg", timeout = inf }',
    ],
)
def test_durations_must_be_finite(tmp_path: Path, setting: str) -> None:
    config = tmp_path / "c.toml"
    body = 'proposers = ["together:p"]\n'
    if not setting.startswith("aggregator"):
        body += 'aggregator = "together:agg"\n'
    config.write_text(body + setting + "\n")
    result = run_cli("--config", str(config), "hi", env=KEY)
    assert result.returncode == 2, result.stderr
    field = setting.split("=")[0].strip()
    error = one_error_line(result.stderr.encode())
    assert "finite number" in error and (field in error or "aggregator.timeout" in error), error


def test_a_grace_flag_must_be_finite() -> None:
    result = run_cli("--preset", "seed", "--quorum", "2", "--grace", "inf", "hi", env=KEY)
    assert result.returncode == 2
    error = one_error_line(result.stderr.encode())
    assert "--grace inf: not a finite number; allowed: 0 or more" in error


# --- 9. errors say where the bad value came from -------------------------------------------------


def test_a_bad_flag_is_named_as_the_flag() -> None:
    result = run_cli("--layers", "0", "hi", env=KEY)
    assert result.returncode == 2
    error = one_error_line(result.stderr.encode())
    assert error == "moa: error: --layers 0: out of range; allowed: 1 to 10", error
    result = run_cli("--preset", "seed", "--proposer", "qwen72b", "hi", env=KEY)
    error = one_error_line(result.stderr.encode())
    assert error.startswith("moa: error: --proposer 'qwen72b': model name 'qwen72b' must look"), (
        error
    )


def test_a_bad_config_value_is_named_with_the_file(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('proposers = ["together:p"]\naggregator = "together:agg"\nlayers = 40\n')
    result = run_cli("--config", str(config), "hi", env=KEY)
    assert result.returncode == 2
    error = one_error_line(result.stderr.encode())
    assert (
        error == f"moa: error: config file '{config}': layers = 40: out of range; allowed: 1 to 10"
    )


def test_a_mix_of_flag_and_file_names_both(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        'proposers = ["together:p", "together:q"]\naggregator = "together:agg"\nmin_proposals = 2\n'
    )
    result = run_cli("--config", str(config), "--quorum", "1", "hi", env=KEY)
    error = one_error_line(result.stderr.encode())
    assert error.startswith(
        f"moa: error: --quorum 1 with config file '{config}': quorum=1 is below"
    )


# --- found while trying to break the fixes -------------------------------------------------------


def test_an_empty_preset_name_is_an_error_not_the_default() -> None:
    result = run_cli("--preset", "", "hi", env=KEY)
    assert result.returncode == 2
    assert "unknown preset ''" in one_error_line(result.stderr.encode())


def test_config_from_a_pipe_a_folder_an_endless_device_or_with_a_bom(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    env = {**os.environ, **together_env(server)}
    moa_cmd = f"{sys.executable} -m langgraph_moa"
    piped = subprocess.run(
        [
            "bash",
            "-c",
            f"{moa_cmd} --config <(printf 'layers=1\\naggregator=\"together:agg\"\\n') hi",
        ],
        capture_output=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert piped.returncode == 0, piped.stderr
    assert [r.model for r in server.requests] == ["agg"]
    for path, expected in ((str(tmp_path), "is a folder"), ("/dev/zero", "larger than 1 MiB")):
        result = run_cli("--config", path, "hi", env=KEY)
        assert result.returncode == 2
        assert expected in one_error_line(result.stderr.encode())
    bom = tmp_path / "bom.toml"
    bom.write_bytes(b'\xef\xbb\xbflayers = 1\naggregator = "together:agg"\n')
    assert run_cli("--config", str(bom), "hi", env=together_env(server)).returncode == 0


def test_stdout_closed_is_one_line(server: FakeOpenAIServer) -> None:
    result = moa("--preset", "seed", "hi", env=together_env(server), shell_redirect=">&-")
    assert result.returncode == 2
    assert "stdout is closed" in one_error_line(result.stderr)
    assert not server.requests


def test_stderr_closed_keeps_notices_out_of_the_answer() -> None:
    # No key: the aggregator is the embedded model, and the notice saying so must not land in
    # stdout when stderr is closed (print(file=None) writes to stdout).
    result = moa(
        "--proposer", "together:p", "--layers", "1", "--max-tokens", "4", "hi",
        shell_redirect="2>&-",
    )  # fmt: skip
    assert result.returncode == 0
    assert result.stdout.strip() and b"TOGETHER_API_KEY" not in result.stdout


def test_endless_stdin_is_refused(server: FakeOpenAIServer) -> None:
    result = moa("--preset", "seed", "-", env=together_env(server), shell_redirect="< /dev/zero")
    assert result.returncode == 2
    assert "stdin holds more than 16 MiB" in one_error_line(result.stderr)
    assert not server.requests


def test_an_endless_chat_line_is_skipped_and_ctrl_c_still_works(server: FakeOpenAIServer) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOGETHER_", "OPENAI_"))}
    with open("/dev/zero", "rb") as zero:
        proc = subprocess.Popen(
            [sys.executable, "-m", "langgraph_moa", "chat", "--preset", "seed"],
            stdin=zero,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**env, **together_env(server)},
            cwd=ROOT,
        )
    assert proc.stderr is not None
    seen = b""
    while b"skipped" not in seen:  # reading blocks until moa prints (or exits: then it fails)
        chunk = proc.stderr.read1(4096)
        assert chunk, seen
        seen += chunk
    proc.send_signal(signal.SIGINT)  # the reads never block: the loop must still see Ctrl-C
    assert proc.wait(30) == 130
    assert b"line 1 is longer than 16 MiB: skipped" in seen
    assert not server.requests
