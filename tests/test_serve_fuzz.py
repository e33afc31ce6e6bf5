"""No 5xx from any input: schemathesis fuzzes every operation of ``moa serve``'s own OpenAPI
schema (served at /openapi.json behind the key), in process, seeded and bounded.

Every generated request must get a non-5xx answer without a traceback or the provider's key. The
runs that are valid go to the fake provider (instant answers), so a valid request is cheap.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from conftest import fake_context
from fake_openai import FakeOpenAIServer
from hypothesis import HealthCheck, Phase, settings
from serving import app_for

SERVER_KEY = "fuzz-server-key-4242"
PROVIDER_KEY = "fuzz-provider-key-1717"
_fake = FakeOpenAIServer().start()  # one for the module: schemathesis builds the app at import
_fake.script("agg", "the answer")


def _app() -> object:
    import os

    os.environ.setdefault("TOGETHER_API_KEY", PROVIDER_KEY)
    ctx = fake_context(_fake, ["p1", "p2"], max_attempts=1, timeout=5)
    return app_for(ctx, api_key=SERVER_KEY)


schema = schemathesis.openapi.from_asgi(
    "/openapi.json", _app(), headers={"Authorization": f"Bearer {SERVER_KEY}"}
)


@pytest.fixture(scope="module", autouse=True)
def _stop_fake() -> Iterator[None]:
    yield
    _fake.stop()


@pytest.fixture(autouse=True)
def _provider_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOGETHER_API_KEY", PROVIDER_KEY)


@schema.parametrize()
@settings(
    max_examples=10,
    # Schemathesis's boundary cases (explicit) and random ones; no shrinking: a failure shows
    # its request as it came, and the suite stays under a minute.
    phases=[Phase.explicit, Phase.generate],
    derandomize=True,  # a fixed seed: the same requests on every run
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_5xx_no_traceback_no_key(case: schemathesis.Case) -> None:
    response = case.call(headers={"Authorization": f"Bearer {SERVER_KEY}"})
    text = response.text
    assert response.status_code < 500, (case.as_curl_command(), response.status_code, text[:500])
    assert "Traceback" not in text
    assert PROVIDER_KEY not in text and SERVER_KEY not in text
