"""Ctrl-C in ``moa chat``, pressed on a real pseudo-terminal (issue 14, item 1).

At the idle prompt Ctrl-C leaves at once; during an answer it cancels that turn only: its HTTP
requests are closed (the fake server sees the client go away), the turn is dropped from the
history, and the prompt comes back.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fake_openai import FakeOpenAIServer
from pty_session import CTRL_C, CTRL_D, PtySession

ANSWER = "the aggregated answer"


@pytest.fixture
def chat_config(tmp_path: Path) -> str:
    path = tmp_path / "chat.toml"
    path.write_text(
        'proposers = ["together:p1", "together:p2"]\naggregator = "together:agg"\n'
        "max_tokens = 2000\n"
    )
    return str(path)


def env(server: FakeOpenAIServer) -> dict[str, str]:
    return {"TOGETHER_API_KEY": "test-key", "TOGETHER_API_BASE": server.base_url}


def wait_for(condition: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def user_turns(server: FakeOpenAIServer, model: str) -> list[tuple[str, str]]:
    """The conversation (without the system prompt) of ``model``'s last request."""
    request = server.requests_for(model)[-1]
    return [(m["role"], m["content"]) for m in request.messages if m["role"] != "system"]


def test_ctrl_c_at_the_idle_prompt_leaves_at_once(
    server: FakeOpenAIServer, chat_config: str
) -> None:
    with PtySession(["chat", "--config", chat_config], env(server)) as moa:
        moa.expect("> ")
        start = time.monotonic()
        moa.send(CTRL_C)
        assert moa.wait(20) == 130
        # At once: no Enter needed (a generous bound, the machine is shared).
        assert time.monotonic() - start < 10
        assert "Traceback" not in moa.text and "moa: error" not in moa.text
    assert not server.requests


def test_ctrl_c_at_the_prompt_after_a_turn_leaves_too(
    server: FakeOpenAIServer, chat_config: str
) -> None:
    server.script("agg", ANSWER)
    with PtySession(["chat", "--config", chat_config], env(server)) as moa:
        moa.expect("> ")
        moa.send(b"hello\n")
        moa.expect(ANSWER)
        moa.expect("> ")
        moa.send(CTRL_C)
        assert moa.wait(10) == 130
        assert "Traceback" not in moa.text


def test_ctrl_c_while_proposers_run_cancels_that_turn_only(
    server: FakeOpenAIServer, chat_config: str
) -> None:
    server.script("p1", "p1 says", ttft=120)  # both proposers hang
    server.script("p2", "p2 says", ttft=120)
    server.script("agg", ANSWER)
    with PtySession(["chat", "--config", chat_config], env(server)) as moa:
        moa.expect("> ")
        moa.send(b"doomed question\n")
        wait_for(lambda: server.in_flight() == 2)
        moa.send(CTRL_C)
        moa.expect("interrupted")
        moa.expect("> ")
        # The turn's HTTP requests were closed: the server saw both clients go away.
        assert server.wait_idle(5.0)
        assert all(r.disconnected for r in server.requests)
        assert not server.requests_for("agg")

        server.script("p1", "p1 says")
        server.script("p2", "p2 says")
        moa.send(b"second question\n")
        moa.expect(ANSWER)
        moa.expect("> ")
        moa.send(CTRL_D)
        assert moa.wait(10) == 0
        assert "Traceback" not in moa.text and "moa: error" not in moa.text
    # The cancelled turn is not in the history.
    assert user_turns(server, "agg") == [("user", "second question")]
    assert user_turns(server, "p1") == [("user", "second question")]


def test_ctrl_c_while_the_answer_streams_cancels_that_turn_only(
    server: FakeOpenAIServer, chat_config: str
) -> None:
    server.script("agg", "streaming words " * 200, token_delay=0.05)
    with PtySession(["chat", "--config", chat_config], env(server)) as moa:
        moa.expect("> ")
        moa.send(b"first question\n")
        moa.expect("streaming words streaming words")  # the answer is on the screen
        moa.send(CTRL_C)
        moa.expect("interrupted")
        moa.expect("> ")
        assert server.wait_idle(5.0)
        (cut,) = server.requests_for("agg")
        assert cut.disconnected and cut.chunks_sent < 400

        server.script("agg", ANSWER)
        moa.send(b"second question\n")
        moa.expect(ANSWER)
        moa.expect("> ")
        moa.send(b"exit\n")
        assert moa.wait(10) == 0
    # Neither the cancelled question nor its partial answer stays in the conversation.
    assert user_turns(server, "agg") == [("user", "second question")]


def test_a_second_turn_after_a_cancelled_one_keeps_the_earlier_history(
    server: FakeOpenAIServer, chat_config: str
) -> None:
    server.script("agg", ANSWER)
    with PtySession(["chat", "--config", chat_config], env(server)) as moa:
        moa.expect("> ")
        moa.send(b"kept question\n")
        moa.expect(ANSWER)
        moa.expect("> ")
        server.script("p1", "p1 says", ttft=120)
        moa.send(b"doomed question\n")
        wait_for(lambda: server.in_flight("p1") == 1)
        moa.send(CTRL_C)
        moa.expect("interrupted")
        moa.expect("> ")
        server.script("p1", "p1 says")
        moa.send(b"last question\n")
        moa.expect(ANSWER)
        moa.expect("> ")
        moa.send(CTRL_D)
        assert moa.wait(10) == 0
    assert user_turns(server, "agg") == [
        ("user", "kept question"),
        ("assistant", ANSWER),
        ("user", "last question"),
    ]


def test_ctrl_c_mid_answer_ends_the_answers_line_before_the_error(
    server: FakeOpenAIServer, chat_config: str
) -> None:
    """moa ask: the partial answer's line is ended, so the error starts a line of its own."""
    server.script("agg", "streaming words " * 200, token_delay=0.05)
    with PtySession(["ask", "--config", chat_config, "a question"], env(server)) as moa:
        moa.expect("streaming words streaming words")  # the answer is on the screen
        moa.send(CTRL_C)
        moa.expect("moa: error: interrupted")
        assert moa.wait(10) == 130
        lines = moa.text.splitlines()
    (at,) = [i for i, line in enumerate(lines) if "moa: error: interrupted" in line]
    assert lines[at] == "moa: error: interrupted", lines[at]
    # (^C: the terminal's echo of the key)
    assert lines[at - 1].removesuffix("^C").endswith("streaming words "), lines[at - 1][-40:]
