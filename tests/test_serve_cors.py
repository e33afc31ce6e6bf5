"""Browser apps on another origin: ``moa serve --cors-origin ORIGIN`` (none by default).

A real preflight and real cross-origin requests, with httpx for the headers and with headless
Chromium (which enforces CORS as users' browsers do; skipped without /usr/bin/chromium, see
tests/test_serve_playground.py).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from conftest import fake_context, run_cli
from fake_openai import FakeOpenAIServer
from serving import app_for, running

KEY = "cors-server-key"
APP = "http://app.example.com:3000"  # the browser app's origin
AUTH = {"Authorization": f"Bearer {KEY}"}
BODY = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def base(server: FakeOpenAIServer) -> Iterator[str]:
    server.script("agg", "the answer")
    ctx = fake_context(server, ["p1"], max_attempts=1)
    with running(app_for(ctx, api_key=KEY, cors_origins=(APP,))) as url:
        yield url


def preflight(base: str, origin: str, headers: str = "authorization,content-type") -> Any:
    return httpx.options(
        f"{base}/v1/chat/completions",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": headers,
        },
    )


def test_a_listed_origin_passes_the_preflight_and_reads_answers_and_errors(
    server: FakeOpenAIServer, base: str
) -> None:
    # The preflight carries no key (browsers never send one with it), and the openai JS SDK's
    # own headers are allowed too.
    answer = preflight(base, APP, "authorization,content-type,x-stainless-lang")
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == APP
    assert "POST" in answer.headers["access-control-allow-methods"]
    assert "x-stainless-lang" in answer.headers["access-control-allow-headers"].lower()

    reply = httpx.post(
        f"{base}/v1/chat/completions", json=BODY, headers={**AUTH, "Origin": APP}, timeout=30
    )
    assert reply.status_code == 200 and reply.headers["access-control-allow-origin"] == APP
    assert reply.json()["choices"][0]["message"]["content"] == "the answer"
    with httpx.stream(
        "POST",
        f"{base}/v1/chat/completions",
        json={**BODY, "stream": True},
        headers={**AUTH, "Origin": APP},
        timeout=30,
    ) as stream:
        assert stream.headers["access-control-allow-origin"] == APP
        assert "the answer" in "".join(stream.iter_text())
    # An error is readable by the page too (status, body, and the headers that say when and
    # whether to retry).
    refused = httpx.post(f"{base}/v1/chat/completions", json=BODY, headers={"Origin": APP})
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == APP
    exposed = refused.headers["access-control-expose-headers"].lower()
    assert "retry-after" in exposed and "x-should-retry" in exposed


def test_another_origin_is_refused_and_nothing_runs(server: FakeOpenAIServer, base: str) -> None:
    answer = preflight(base, "https://evil.example")
    assert answer.status_code == 400 and "access-control-allow-origin" not in answer.headers
    reply = httpx.post(
        f"{base}/v1/chat/completions",
        json=BODY,
        headers={**AUTH, "Origin": "https://evil.example"},
        timeout=30,
    )
    # Not readable by a browser page (no allow-origin header); the key still guards the server.
    assert "access-control-allow-origin" not in reply.headers


def test_no_cors_by_default(server: FakeOpenAIServer) -> None:
    with running(app_for(fake_context(server, ["p1"]), api_key=KEY)) as base:
        # Without CORS a preflight is a request like any other: no key, so 401, and no header
        # that would let the browser go on.
        answer = preflight(base, APP)
        assert answer.status_code == 401 and "access-control-allow-origin" not in answer.headers
        reply = httpx.get(f"{base}/v1/models", headers={**AUTH, "Origin": APP})
        assert reply.status_code == 200 and "access-control-allow-origin" not in reply.headers


@pytest.mark.parametrize("origin", ["https://app.example.com/", "app.example.com", "https://a/b"])
def test_an_origin_with_a_path_or_no_scheme_is_refused_at_start(origin: str) -> None:
    # It would never match the Origin header browsers send: say so instead of failing silently.
    result = run_cli("serve", "--port", "0", "--cors-origin", origin)
    assert result.returncode == 2, result.stderr
    assert f"--cors-origin: {origin!r} is not an origin" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_origins_by_name_ipv4_and_ipv6_are_accepted() -> None:
    from pydantic import ValidationError

    from langgraph_moa.apps.serve.settings import ServeSettings

    good = ("https://app.example.com", "http://127.0.0.1:3000", "http://[::1]:8080", "*")
    assert ServeSettings(cors_origins=good).cors_origins == good
    for bad in ("http://[::1]:8080/", "http://[not-ipv6]:80", "http://[::1"):
        with pytest.raises(ValidationError, match="is not an origin"):
            ServeSettings(cors_origins=(bad,))


@contextmanager
def web_app() -> Iterator[int]:
    """A browser app's page, served on 127.0.0.1 (a port of its own); yields the port."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html><body>a browser app</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing")
def test_a_browser_page_on_a_listed_origin_calls_the_server(server: FakeOpenAIServer) -> None:
    from playwright.sync_api import sync_playwright

    call = """async ([url, key]) => {
        try {
            const r = await fetch(url + "/v1/chat/completions", {
                method: "POST",
                headers: {"Authorization": "Bearer " + key, "Content-Type": "application/json"},
                body: JSON.stringify({model: "fake", stream: true,
                                      messages: [{role: "user", content: "hi"}]}),
            });
            return r.status + " " + (await r.text());
        } catch (e) {
            return "refused: " + e;
        }
    }"""
    server.script("agg", "the answer")
    with web_app() as port:
        # One page server, two origins: localhost is listed, 127.0.0.1 is not.
        listed, other = f"http://localhost:{port}", f"http://127.0.0.1:{port}"
        ctx = fake_context(server, ["p1"], max_attempts=1)
        with (
            running(app_for(ctx, api_key=KEY, cors_origins=(listed,))) as url,
            sync_playwright() as playwright,
        ):
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                page = browser.new_page()
                page.goto(f"{listed}/")
                got = page.evaluate(call, [url, KEY])
                assert got.startswith("200 ") and "the answer" in got and "[DONE]" in got, got
                runs = len(server.requests_for("agg"))
                page.goto(f"{other}/")
                assert page.evaluate(call, [url, KEY]).startswith("refused: TypeError")
            finally:
                browser.close()
    assert len(server.requests_for("agg")) == runs  # the refused page's request never ran


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing")
def test_a_page_on_another_origin_cannot_start_runs_on_a_keyless_server(
    server: FakeOpenAIServer,
) -> None:
    # Requests a page may send anywhere without asking the server first (CORS "simple"
    # requests): a text/plain body, a form, a Blob with no type. The page cannot read the
    # answers, but the requests reach the server; LangServe read any body as JSON, so every
    # page a user of a keyless server visited could start billed runs (CSRF).
    from playwright.sync_api import sync_playwright

    send = """async (url) => {
        const msg = [{type: "human", content: "spend"}];
        const bodies = {
            "/moa/invoke": {input: {messages: msg}},
            "/moa/batch": {inputs: [{messages: msg}, {messages: msg}]},
            "/moa/stream": {input: {messages: msg}},
            "/moa/stream_log": {input: {messages: msg}},
            "/v1/chat/completions": {messages: [{role: "user", content: "spend"}]},
        };
        const sent = [];
        for (const [path, body] of Object.entries(bodies)) {
            const text = JSON.stringify(body);
            const inits = [
                {headers: {"Content-Type": "text/plain"}, body: text},
                {body: new Blob([text])},  // no Content-Type at all
                {body: new URLSearchParams({[text]: ""})},
                {body: (() => { const f = new FormData(); f.append("input", text); return f; })()},
            ];
            for (const init of inits) {
                const r = await fetch(url + path, {method: "POST", mode: "no-cors", ...init});
                sent.push(r.type);  // "opaque": sent and answered, unreadable by the page
            }
        }
        return sent;
    }"""
    server.script("agg", "the answer")
    with web_app() as port, running(app_for(fake_context(server, ["p1"], max_attempts=1))) as url:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                page = browser.new_page()
                page.goto(f"http://localhost:{port}/")  # another origin than the server's
                assert page.evaluate(send, url) == ["opaque"] * 20
            finally:
                browser.close()
        assert server.requests == []  # no run started
        assert httpx.get(f"{url}/health").json()["runs_in_flight"] == 0
