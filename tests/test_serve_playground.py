"""LangServe's playground at /moa/playground/ works in a real browser: headless Chromium from the
system's packages renders its form, a question is submitted, and the answer appears.

Needs /usr/bin/chromium (Debian/Ubuntu: ``apt-get install chromium``; ``make test`` installs it
when run as root). Driven with Playwright's Python package, which launches that binary (no
browser download).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from conftest import fake_context
from fake_openai import Failure, FakeOpenAIServer
from serving import app_for, running

CHROMIUM = "/usr/bin/chromium"
ANSWER = "The playground shows the mixture's answer"

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"{CHROMIUM} is missing: install Chromium (apt-get install chromium) to run this test",
)


@pytest.fixture
def base(server: FakeOpenAIServer) -> Iterator[str]:
    server.script("p1", "a proposal")
    server.script("agg", ANSWER)
    with running(app_for(fake_context(server, ["p1"], max_attempts=1))) as url:
        yield url


def test_the_playground_renders_and_answers_a_question(server: FakeOpenAIServer, base: str) -> None:
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{base}/moa/playground/")
            page.get_by_text("MESSAGES").wait_for(timeout=20_000)  # the form rendered
            page.locator("button.rounded-full").first.click()  # add a message (Human)
            page.locator("textarea:not([id])").first.fill("What is Mixture-of-Agents?")
            page.get_by_role("button", name="Start").click()
            page.get_by_text(ANSWER).wait_for(timeout=30_000)
        finally:
            browser.close()
    assert errors == []
    (agg,) = server.requests_for("agg")
    assert agg.messages[-1]["content"] == "What is Mixture-of-Agents?"


def test_the_playground_shows_why_a_run_failed(server: FakeOpenAIServer, base: str) -> None:
    # It showed nothing: LangServe sent a generic error event, which the playground ignores.
    from playwright.sync_api import sync_playwright

    server.fail("p1", Failure(status=503, message="the provider is down"))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(f"{base}/moa/playground/")
            page.get_by_text("MESSAGES").wait_for(timeout=20_000)
            page.locator("button.rounded-full").first.click()
            page.locator("textarea:not([id])").first.fill("What is Mixture-of-Agents?")
            page.get_by_role("button", name="Start").click()
            page.get_by_text("proposers_failed").wait_for(timeout=30_000)
            shown = page.content()
        finally:
            browser.close()
    assert "only 0 of 1 proposers answered" in shown and "the provider is down" in shown
    assert server.requests_for("agg") == []
