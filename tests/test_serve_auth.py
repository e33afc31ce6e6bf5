"""Auth: with MOA_SERVER_API_KEY set, every route but GET /health needs the bearer key."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from conftest import fake_context
from fake_openai import FakeOpenAIServer
from serving import ServeProcess, running, serve_env
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from langgraph_moa.apps.serve.app import create_app
from langgraph_moa.apps.serve.auth import RequireKey
from langgraph_moa.apps.serve.registry import ModelRegistry
from langgraph_moa.apps.serve.settings import ServeSettings
from langgraph_moa.nodes.keys import is_loopback

KEY = "moa-server-key-for-tests-42"
MESSAGES = [{"role": "user", "content": "Explain MoA."}]


@pytest.fixture(scope="module")
def served(_server: FakeOpenAIServer) -> Iterator[ServeProcess]:
    process = ServeProcess(
        "--preset", "seed", env=serve_env(_server.base_url, MOA_SERVER_API_KEY=KEY)
    )
    try:
        yield process
    finally:
        process.stop()
    assert process.proc.returncode == 0
    assert KEY not in process.text()  # nor the wrong keys' neighbour: the key itself never logged


def assert_401(response: httpx.Response, code: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["type"] == "authentication_error"


def test_health_is_open(served: ServeProcess) -> None:
    response = httpx.get(f"{served.url}/health")
    assert response.status_code == 200 and response.json()["status"] == "ok"
    # A load balancer's HEAD probe too (it was a 405: only GET was routed).
    head = httpx.head(f"{served.url}/health")
    assert head.status_code == 200 and head.content == b""


def test_without_a_key_401(served: ServeProcess, server: FakeOpenAIServer) -> None:
    response = httpx.post(f"{served.url}/v1/chat/completions", json={"messages": MESSAGES})
    assert_401(response, "missing_api_key")
    assert server.requests == []


def test_with_a_wrong_key_401(served: ServeProcess, server: FakeOpenAIServer) -> None:
    for header in (f"Bearer {KEY}x", f"Bearer {KEY[:-1]}", f"Basic {KEY}", "Bearer"):
        response = httpx.get(f"{served.url}/v1/models", headers={"Authorization": header})
        assert_401(response, "invalid_api_key")
    c = openai.OpenAI(base_url=f"{served.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        c.chat.completions.create(model="seed", messages=MESSAGES)  # type: ignore[arg-type]
    assert server.requests == []


def test_with_the_right_key(served: ServeProcess, server: FakeOpenAIServer) -> None:
    c = openai.OpenAI(base_url=f"{served.url}/v1", api_key=KEY, max_retries=0)
    assert "seed" in [m.id for m in c.models.list()]
    result = c.chat.completions.create(model="seed", messages=MESSAGES)  # type: ignore[arg-type]
    assert result.choices[0].message.content
    assert len(server.requests) == 5
    # The provider calls carry the provider's key, never the server's.
    assert all(KEY not in r.headers.get("authorization", "") for r in server.requests)
    lower = httpx.get(f"{served.url}/v1/models", headers={"authorization": f"bearer {KEY}"})
    assert lower.status_code == 200


def flat(routes: list[Any]) -> Iterator[Any]:
    """Every route, those of included routers too."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from flat(inner.routes)
        else:
            yield route


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def test_every_route_but_health_needs_the_key(server: FakeOpenAIServer) -> None:
    app = create_app(
        ServeSettings(api_key=KEY),
        ModelRegistry("fake", {"fake": fake_context(server, ["p1"])}),
    )
    routes = [
        (method, concrete(route.path))
        for route in flat(app.routes)
        for method in sorted(route.methods or {"GET"})
        if method != "HEAD"
    ]
    assert len(routes) > 10  # the OpenAI routes and LangServe's
    with running(app) as base:
        for method, path in routes:
            response = httpx.request(method, f"{base}{path}", json={})
            if path == "/health":
                assert response.status_code == 200
            else:
                assert_401(response, "missing_api_key")
    assert server.requests == []


def test_without_a_key_the_server_listens_on_loopback(server: FakeOpenAIServer) -> None:
    process = ServeProcess("--preset", "seed", env=serve_env(server.base_url))
    try:
        assert process.url.startswith("http://127.0.0.1:")
        assert "auth off" in process.log[0]
    finally:
        process.stop()
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10")


def test_an_idle_connection_outlives_the_clients_keep_alive(served: ServeProcess) -> None:
    """The server keeps an idle connection longer than clients do (httpx: 5 s), so a client
    never sends a request on a connection the server is closing at that moment."""
    import http.client
    import time

    port = int(served.url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/health")
        first = conn.getresponse()
        assert first.status == 200 and first.read()
        sock = conn.sock
        time.sleep(6)  # longer than uvicorn's default keep-alive (5 s)
        conn.request("GET", "/health")  # on the same connection, still open
        assert conn.getresponse().status == 200
        assert conn.sock is sock
    finally:
        conn.close()


def test_a_websocket_without_the_key_is_refused() -> None:
    # Only http was checked: any other scope passed, a websocket without a key too.
    async def accepting(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await WebSocket(scope, receive, send).accept()
            await send({"type": "websocket.close", "code": 1000})

    client = TestClient(RequireKey(accepting, KEY))
    with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect("/v1/x"):
        pass
    assert refused.value.code == 1008
    with client.websocket_connect("/v1/x", headers={"Authorization": f"Bearer {KEY}"}) as ws:
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
        assert closed.value.code == 1000  # accepted, then closed by the app
