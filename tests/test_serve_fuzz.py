"""No 5xx from any input: schemathesis fuzzes every operation of ``moa serve``'s own OpenAPI
schema (served at /openapi.json behind the key), over HTTP against one server (uvicorn, in a
thread) for all the requests, seeded and bounded.

Every generated request must get a non-5xx answer without a traceback or the provider's key. The
runs that are valid go to the fake provider (instant answers), so a valid request is cheap; what
costs is generating the requests (LangChain's message schemas are large), so the examples are
chosen: every operation gets schemathesis's coverage cases (each field missing, null, of the wrong
type, at its bounds: ~600 requests) and random requests, 10 per operation where they are cheap
to make or reach their own validation; /moa/batch, /moa/stream and /moa/stream_log validate
their inputs as /moa/invoke does (apps/serve/requests.py), so they get 3 (their own envelope
fields get coverage cases too). About 30 s on 2 busy cores.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
import schemathesis
from conftest import fake_context
from fake_openai import FakeOpenAIServer
from hypothesis import HealthCheck, Phase, settings
from serving import app_for, running

SERVER_KEY = "fuzz-server-key-4242"
PROVIDER_KEY = "fuzz-provider-key-1717"
AUTH = {"Authorization": f"Bearer {SERVER_KEY}"}
# One fake provider and one server for every request of the module, started at import: the
# schema is read from the server's /openapi.json (behind the key) when the tests are collected.
# One server, as in use: its clients and connections are built once (an in-process call per
# request would start the app, and a new event loop with new clients, every time).
_servers = ExitStack()
_fake = _servers.enter_context(FakeOpenAIServer())
_fake.script("agg", "the answer")
os.environ.setdefault("TOGETHER_API_KEY", PROVIDER_KEY)
_ctx = fake_context(_fake, ["p1", "p2"], max_attempts=1, timeout=5)
BASE_URL = _servers.enter_context(running(app_for(_ctx, api_key=SERVER_KEY)))
schema = schemathesis.openapi.from_url(f"{BASE_URL}/openapi.json", headers=AUTH)


@pytest.fixture(scope="module", autouse=True)
def _stop_servers() -> Iterator[None]:
    yield
    _servers.close()


@pytest.fixture(autouse=True)
def _provider_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOGETHER_API_KEY", PROVIDER_KEY)


# Their inputs are checked as /moa/invoke's are: fewer random requests (see the module).
SHARED_INPUT = r"^/moa/(batch|stream|stream_log)$"
FUZZ = settings(
    # Schemathesis's coverage cases (explicit) and random ones; no shrinking: a failure shows
    # its request as it came.
    phases=[Phase.explicit, Phase.generate],
    derandomize=True,  # a fixed seed: the same requests on every run
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


@schema.exclude(path_regex=SHARED_INPUT).parametrize()
@settings(FUZZ, max_examples=10)
def test_no_5xx_no_traceback_no_key(case: schemathesis.Case) -> None:
    _check(case)


@schema.include(path_regex=SHARED_INPUT).parametrize()
@settings(FUZZ, max_examples=3)
def test_no_5xx_no_traceback_no_key_shared_input(case: schemathesis.Case) -> None:
    _check(case)


def _check(case: schemathesis.Case) -> None:
    response = case.call(base_url=BASE_URL, headers=AUTH)
    text = response.text
    assert response.status_code < 500, (case.as_curl_command(), response.status_code, text[:500])
    assert "Traceback" not in text
    assert PROVIDER_KEY not in text and SERVER_KEY not in text
