"""A user behind a company proxy: every request goes through it, from every command and both
HTTP transports (httpx for ``moa ask``, aiohttp for ``moa batch``). ``HTTPS_PROXY``/``HTTP_PROXY``
(with ``NO_PROXY``) are the variables every HTTP client reads, for every model; ``OPENAI_PROXY``
is langchain-openai's own, for ``openai:`` models, which it made fail to build (ChatOpenAI
refuses a proxy beside the HTTP clients we give it)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from conftest import run_cli
from fake_openai import FakeOpenAIServer
from http_proxy import ForwardProxy

PROXY_VARIABLES = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY",
                   "all_proxy", "NO_PROXY", "no_proxy", "OPENAI_PROXY")  # fmt: skip


@pytest.fixture(autouse=True)
def _no_proxy_of_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def _config(tmp_path: Path, server: FakeOpenAIServer, provider: str) -> Path:
    config = tmp_path / "moa.toml"
    spec = f'{{ model = "{provider}:m", base_url = "{server.base_url}" }}'
    config.write_text(f"layers = 2\nproposers = [{spec}]\naggregator = {spec}\n")
    return config


@pytest.mark.parametrize(
    ("variable", "provider"),
    [
        ("HTTP_PROXY", "together"),
        *((variable, "openai") for variable in ("HTTP_PROXY", "http_proxy", "ALL_PROXY")),
        ("OPENAI_PROXY", "openai"),
    ],
)
def test_moa_ask_goes_through_the_proxy(
    server: FakeOpenAIServer, tmp_path: Path, variable: str, provider: str
) -> None:
    server.script("m", "Through the proxy.")
    with ForwardProxy() as proxy:
        env = {variable: proxy.url, "TOGETHER_API_KEY": "k", "OPENAI_API_KEY": "k"}
        done = run_cli("ask", "-c", str(_config(tmp_path, server, provider)), "hi", env=env)
    assert done.returncode == 0, done.stderr
    assert "Through the proxy." in done.stdout
    assert len(server.requests) == 2
    assert len(proxy.forwarded) == 2  # proposer and aggregator, both through it
    # Not langchain-openai's warning that the proxy is ignored: it is not (just above).
    assert "proxy auto-detection" not in done.stderr and "langchain" not in done.stderr


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "OPENAI_PROXY"])
def test_moa_batch_goes_through_the_proxy(
    server: FakeOpenAIServer, tmp_path: Path, variable: str
) -> None:
    server.script("m", "Through the proxy.")
    data = tmp_path / "in.jsonl"
    data.write_text(
        "".join(json.dumps({"id": f"i{i}", "prompt": f"q{i}"}) + "\n" for i in range(3))
    )
    out = tmp_path / "out.jsonl"
    provider = "openai" if variable == "OPENAI_PROXY" else "together"
    config = _config(tmp_path, server, provider)
    with ForwardProxy() as proxy:
        env = {variable: proxy.url, "TOGETHER_API_KEY": "k", "OPENAI_API_KEY": "k"}
        done = run_cli("batch", str(data), "-o", str(out), "-c", str(config), env=env)
    assert done.returncode == 0, done.stderr
    assert len(out.read_text().splitlines()) == 3
    assert len(proxy.forwarded) == len(server.requests) == 6


def test_no_proxy_is_honoured(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.script("m", "Straight there.")
    with ForwardProxy() as proxy:
        env = {"HTTP_PROXY": proxy.url, "NO_PROXY": "127.0.0.1", "TOGETHER_API_KEY": "k"}
        done = run_cli("ask", "-c", str(_config(tmp_path, server, "together")), "hi", env=env)
    assert done.returncode == 0, done.stderr
    assert len(server.requests) == 2 and proxy.forwarded == []


SOCKS = "socks5://proxyuser:S3cret@127.0.0.1:1080"


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("OPENAI_PROXY", "notaurl", "not an http://, https:// or socks5:// proxy URL"),
        ("OPENAI_PROXY", "127.0.0.1:3128", "not an http://, https:// or socks5:// proxy URL"),
        ("OPENAI_PROXY", "ftp://proxyuser:S3cret@h", "not an http://, https:// or socks5://"),
        ("OPENAI_PROXY", "http://proxyuser:S3cret@[::1", "not a valid URL"),
        ("OPENAI_PROXY", "http://127.0.0.1:99999", "port 99999 out of range (1-65535)"),
        ("HTTPS_PROXY", "http://proxyuser:S3cret@127.0.0.1:abc", "not a valid URL"),
        ("HTTP_PROXY", "host:3128x", "not a valid URL (Invalid port: '3128x')"),
        ("http_proxy", "http://proxyuser:p/S3cret@h:1", "not a valid URL"),  # "/" in a password
        ("ALL_PROXY", SOCKS, "a SOCKS proxy needs the socksio package: pip install socksio"),
        ("OPENAI_PROXY", SOCKS, "a SOCKS proxy needs the socksio package: pip install socksio"),
    ],
)
def test_a_bad_proxy_variable_is_one_line_naming_it(
    server: FakeOpenAIServer, tmp_path: Path, variable: str, value: str, said: str
) -> None:
    # httpx refused them as the clients were built: "unexpected ValueError/InvalidURL/ImportError"
    # naming no variable, exit 1, and the proxy's user name shown.
    if value.startswith("socks5") and importlib.util.find_spec("socksio") is not None:
        pytest.skip("socksio is installed: SOCKS proxies work")
    env = {variable: value, "OPENAI_API_KEY": "k"}
    done = run_cli("ask", "-c", str(_config(tmp_path, server, "openai")), "hi", env=env)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"moa: error: {variable} = '") and said in line, line
    assert line.endswith(("set it to http://host:port, or unset it", "use an http:// proxy"))
    assert "proxyuser" not in line and "S3cret" not in line
    assert server.requests == []
