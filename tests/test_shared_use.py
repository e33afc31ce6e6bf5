"""Issue 20: a shared config, a shared folder, concurrent runs and hostile text must not leak a
secret, destroy a file, garble a terminal or pay twice. Each test drives ``moa`` as a process on
real files, against the fake provider server."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli
from fake_openai import FakeOpenAIServer

SECRET = "sk-together-secret-0123456789"


def config(path: Path, model: str) -> Path:
    path.write_text(f"layers = 1\naggregator = {model}\nmax_attempts = 1\n", encoding="utf-8")
    return path


def error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("moa: error:")]
    assert len(lines) == 1, stderr
    return lines[0]


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


def test_a_base_url_must_be_http(tmp_path: Path) -> None:
    spec = '{ model = "openai:agg", base_url = "file:///etc/passwd" }'
    result = run_cli("--config", str(config(tmp_path / "c.toml", spec)), "hi")
    assert result.returncode == 2
    assert "'file:///etc/passwd' is not an http:// or https:// URL" in error_line(result.stderr)


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
