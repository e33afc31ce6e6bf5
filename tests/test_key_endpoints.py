"""Where a provider's own key goes: to its provider's endpoint, found as the provider's client
finds it (LangSmith's gateway included), never elsewhere unless the user allows it
(``MOA_KEY_ENVS``); a config may spell that endpoint out (nodes/keys.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from batch_helpers import error_line
from conftest import run_cli
from fake_openai import FakeOpenAIServer
from fastapi import FastAPI
from pydantic import ValidationError
from serving import running

from langgraph_moa.nodes.context import Context, ModelSpec
from langgraph_moa.nodes.errors import ProviderError
from langgraph_moa.nodes.keys import warn_plain_http
from langgraph_moa.nodes.models import resources
from langgraph_moa.nodes.models.catalog import endpoint
from langgraph_moa.nodes.models.providers import build_model
from langgraph_moa.nodes.models.settings import settings_for

SECRET = "sk-openai-secret-0123456789"
GATEWAY_KEY = "lsv2-gateway-key-0123456789"


def config(path: Path, model: str) -> Path:
    path.write_text(f"layers = 1\naggregator = {model}\nmax_attempts = 1\n", encoding="utf-8")
    return path


def test_the_openai_key_does_not_go_to_langsmiths_gateway(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    # langchain-openai sends an openai: model to LANGSMITH_GATEWAY + /openai/v1; moa gives the
    # client its key explicitly, so without the check OPENAI_API_KEY went there.
    gateway = FastAPI()
    gateway.mount("/openai", server.app)
    with running(gateway) as url:
        env = {"OPENAI_API_KEY": SECRET, "LANGSMITH_GATEWAY": url}
        refused = run_cli("--aggregator", "openai:agg", "--layers", "1", "hi", env=env)
        assert refused.returncode == 2
        assert error_line(refused.stderr) == (
            "moa: error: openai:agg: OPENAI_API_KEY is the openai provider's key: it is sent only "
            "to openai's own endpoint (or the one you set in OPENAI_API_BASE or OPENAI_BASE_URL), "
            "not to LangSmith's gateway at 127.0.0.1, where LANGSMITH_GATEWAY sends it; unset "
            "LANGSMITH_GATEWAY, or give the model the gateway's key in a config (api_key_env = "
            '"LANGSMITH_GATEWAY_API_KEY"); to send it all the same, add OPENAI_API_KEY to '
            "MOA_KEY_ENVS in your environment"
        )
        assert SECRET not in refused.stderr + refused.stdout
        assert not server.requests
        # The gateway's own key, named in a config, goes to the gateway.
        cfg = config(
            tmp_path / "c.toml",
            '{ model = "openai:agg", api_key_env = "LANGSMITH_GATEWAY_API_KEY" }',
        )
        named = run_cli("-c", str(cfg), "hi", env={**env, "LANGSMITH_GATEWAY_API_KEY": GATEWAY_KEY})
        assert named.returncode == 0, named.stderr
        # The user may send the OpenAI key there all the same.
        allowed = run_cli(
            "--aggregator",
            "openai:agg",
            "--layers",
            "1",
            "hi",
            env={**env, "MOA_KEY_ENVS": "OPENAI_API_KEY"},
        )
        assert allowed.returncode == 0, allowed.stderr
        # A variable moa reads first (OPENAI_API_BASE) takes the key past the gateway.
        server_env = {**env, "OPENAI_API_BASE": server.base_url}
        direct = run_cli("--aggregator", "openai:agg", "--layers", "1", "hi", env=server_env)
        assert direct.returncode == 0, direct.stderr
    assert [r.headers["authorization"] for r in server.requests_for("agg")] == [
        f"Bearer {GATEWAY_KEY}",
        f"Bearer {SECRET}",
        f"Bearer {SECRET}",
    ]


def test_a_key_sent_to_the_gateway_over_plain_http_is_warned(tmp_path: Path) -> None:
    # The warning looked at OPENAI_BASE_URL alone. 192.0.2.1 (TEST-NET-1) is never routed.
    cfg = config(tmp_path / "c.toml", '{ model = "openai:agg", timeout = 1 }')
    env = {
        "OPENAI_API_KEY": SECRET,
        "LANGSMITH_GATEWAY": "http://192.0.2.1",
        "MOA_KEY_ENVS": "OPENAI_API_KEY",
    }
    result = run_cli("-c", str(cfg), "hi", env=env)
    assert (
        "moa: warning: the key in OPENAI_API_KEY is sent over plain http to 192.0.2.1"
        in result.stderr
    )
    assert SECRET not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "https://api.openai.com/v1"),
        ({"OPENAI_BASE_URL": "http://b/v1"}, "http://b/v1"),
        (
            {"LANGSMITH_GATEWAY": "http://gw/", "OPENAI_BASE_URL": "http://b/v1"},
            "http://gw/openai/v1",
        ),
        ({"LANGSMITH_GATEWAY": "true"}, "https://gateway.smith.langchain.com/openai/v1"),
        ({"LANGSMITH_GATEWAY": "No", "OPENAI_BASE_URL": "http://b/v1"}, "http://b/v1"),
        ({"LANGSMITH_GATEWAY": "http://gw", "OPENAI_API_BASE": "http://a/v1"}, "http://a/v1"),
        ({"OPENAI_API_BASE": "", "OPENAI_BASE_URL": "http://b/v1"}, "http://b/v1"),
    ],
)
def test_the_openai_endpoint_is_the_one_its_client_finds(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    # Read from the variables as langchain-openai and the openai SDK read them: the client built
    # without a base_url goes where endpoint() says (moa passes that URL, to be sure it does).
    from langchain_openai import ChatOpenAI

    for name in ("OPENAI_API_BASE", "OPENAI_BASE_URL", "LANGSMITH_GATEWAY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    found = endpoint("openai", None)
    assert found is not None and found.url == expected
    client = ChatOpenAI(model="m", api_key="k").root_async_client
    assert str(client.base_url).rstrip("/") == expected


def spec(model: str, base_url: str, key: str) -> ModelSpec:
    return ModelSpec(model=model, base_url=base_url, api_key_env=key)


@pytest.mark.parametrize(
    ("model", "base_url", "key"),
    [
        ("openai:gpt-4o", "https://api.openai.com/v1", "OPENAI_API_KEY"),
        ("openai:gpt-4o", "https://API.OpenAI.com/v1/", "OPENAI_API_KEY"),
        ("openai:gpt-4o", "https://api.openai.com:443/v1", "OPENAI_API_KEY"),
        ("together:m", "https://api.together.xyz/v1", "TOGETHER_API_KEY"),
        ("together:m", "https://api.together.xyz/v1/", "TOGETHER_API_KEY"),
    ],
)
def test_a_providers_key_goes_to_its_own_endpoint_spelled_out(
    monkeypatch: pytest.MonkeyPatch, model: str, base_url: str, key: str
) -> None:
    # Copied configs spell out the official URL: refused before, though it is the provider's.
    monkeypatch.setenv(key, SECRET)
    ctx = Context(layers=1, proposers=[], aggregator=spec(model, base_url, key))
    chat = build_model(settings_for(ctx.aggregator, ctx))  # no call: nothing leaves
    assert chat is not None


@pytest.mark.parametrize(
    ("model", "base_url", "key"),
    [
        ("openai:gpt-4o", "https://api.openai.com.evil.example/v1", "OPENAI_API_KEY"),
        ("openai:gpt-4o", "http://api.openai.com/v1", "OPENAI_API_KEY"),  # plain http
        ("openai:gpt-4o", "https://api.openai.com:8443/v1", "OPENAI_API_KEY"),
        ("openai:gpt-4o", "https://api.together.xyz/v1", "OPENAI_API_KEY"),
        ("openai:m", "https://api.together.xyz/v1", "TOGETHER_API_KEY"),  # another provider's
        ("together:m", "https://api.openai.com/v1", "TOGETHER_API_KEY"),
    ],
)
def test_a_providers_key_goes_nowhere_else(
    monkeypatch: pytest.MonkeyPatch, model: str, base_url: str, key: str
) -> None:
    monkeypatch.setenv(key, SECRET)
    with pytest.raises(ValidationError, match=f"{key} is the .* provider's key: it is sent only"):
        spec(model, base_url, key)
    # Settings made without a spec are checked where the model is built.
    ctx = Context(layers=1, proposers=[])
    settings = settings_for(ctx.aggregator, ctx)
    bad = replace(settings, model=model, base_url=base_url, api_key_env=key)
    with pytest.raises(ProviderError, match=f"{key} is the .* provider's key") as refused:
        build_model(bad)
    assert SECRET not in str(refused.value)


def test_a_plain_http_warning_is_given_once_and_its_memory_bounded(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # keys._warned was a set of every endpoint warned about, outside RESOURCES and unbounded.
    monkeypatch.setattr(resources, "MAX_PLAIN_HTTP_WARNED", 2)
    urls = [f"http://192.0.2.{n}/v1" for n in (1, 2, 3)]
    for url in [urls[0], urls[0], urls[1], urls[2], urls[0]]:
        warn_plain_http(url, "MY_API_KEY")
    said = [line.split(" to ")[1].split(":")[0] for line in capsys.readouterr().err.splitlines()]
    # The first once while remembered, then again once forgotten (the two most recent kept).
    assert said == ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.1"]
