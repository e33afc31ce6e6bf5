"""``moa chat --thread NAME`` keeps a conversation across processes; ``--list`` shows them."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli
from fake_openai import Failure, FakeOpenAIServer

SEED_PROPOSERS = [
    "Qwen/Qwen2-72B-Instruct",
    "Qwen/Qwen1.5-72B-Chat",
    "mistralai/Mixtral-8x22B-Instruct-v0.1",
    "databricks/dbrx-instruct",
]


def env(server: FakeOpenAIServer, data: Path) -> dict[str, str]:
    return {
        "TOGETHER_API_KEY": "test-key",
        "TOGETHER_API_BASE": server.base_url,
        "MOA_DATA_DIR": str(data),
    }


def chat(server: FakeOpenAIServer, data: Path, stdin: str, *args: str) -> str:
    result = run_cli("chat", "--preset", "seed", *args, env=env(server, data), stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def conversation_of_last_request(server: FakeOpenAIServer) -> list[tuple[str, str]]:
    last = server.requests[-1]
    return [(m["role"], m["content"]) for m in last.messages if m["role"] != "system"]


def answer(question: str) -> str:
    return (
        f'Answer from mistralai/Mixtral-8x22B-Instruct-v0.1: I considered "{question}" and this '
        "is my reply."
    )


def test_a_thread_resumes_in_another_process(server: FakeOpenAIServer, tmp_path: Path) -> None:
    first = chat(server, tmp_path, "first question\n", "--thread", "work")
    assert "thread 'work': new" in first
    second = chat(server, tmp_path, "second question\n", "--thread", "work")
    assert "thread 'work': 1 earlier turn(s)" in second
    assert conversation_of_last_request(server) == [
        ("user", "first question"),
        ("assistant", answer("first question")),
        ("user", "second question"),
    ]
    assert (tmp_path / "chat-threads.sqlite").is_file()
    # Another thread and no thread at all start empty.
    chat(server, tmp_path, "elsewhere\n", "--thread", "other")
    assert conversation_of_last_request(server) == [("user", "elsewhere")]
    chat(server, tmp_path, "no thread\n")
    assert conversation_of_last_request(server) == [("user", "no thread")]


def test_a_failed_turn_leaves_the_thread_as_it_was(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    chat(server, tmp_path, "kept question\n", "--thread", "t")
    for m in SEED_PROPOSERS:
        server.fail(m, Failure(status=401))
    failed = chat(server, tmp_path, "doomed question\n", "--thread", "t")
    assert "only 0 of 4 proposers answered" in failed
    # The next process sees the thread as it was before the failed turn, and so do two more
    # turns in one process (each continues from the one before, not from the failed one).
    chat(server, tmp_path, "next question\nlast question\n", "--thread", "t")
    assert conversation_of_last_request(server) == [
        ("user", "kept question"),
        ("assistant", answer("kept question")),
        ("user", "next question"),
        ("assistant", answer("next question")),
        ("user", "last question"),
    ]


def test_a_failed_first_turn_leaves_an_empty_thread(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    for m in SEED_PROPOSERS:
        server.fail(m, Failure(status=401))
    chat(server, tmp_path, "doomed\n", "--thread", "fresh")
    chat(server, tmp_path, "retry\n", "--thread", "fresh")
    assert conversation_of_last_request(server) == [("user", "retry")]


def test_list_shows_the_saved_threads(server: FakeOpenAIServer, tmp_path: Path) -> None:
    empty = run_cli("chat", "--list", env=env(server, tmp_path))
    assert empty.returncode == 0 and empty.stdout == ""
    assert "no saved threads" in empty.stderr
    chat(server, tmp_path, "alpha one\nalpha two\n", "--thread", "alpha")
    chat(server, tmp_path, "beta question\n", "--thread", "beta")
    listed = run_cli("chat", "--list", env=env(server, tmp_path))
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("beta ") and "1 turn " in lines[0] and "beta question" in lines[0]
    assert lines[1].startswith("alpha") and "2 turns" in lines[1] and "alpha one" in lines[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--thread", "  "], "--thread needs a name")],
)
def test_bad_thread_flags(
    server: FakeOpenAIServer, tmp_path: Path, args: list[str], message: str
) -> None:
    result = run_cli("chat", "--preset", "seed", *args, env=env(server, tmp_path))
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_an_unusable_data_dir_is_one_line(server: FakeOpenAIServer, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = run_cli(
        "chat", "--preset", "seed", "--thread", "x", env=env(server, blocker / "sub"), stdin="hi\n"
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("moa: error:")]
    assert len(lines) == 1 and "cannot open the chat thread store" in lines[0]
    assert f"{blocker} is a file, not a folder" in lines[0]
    assert "MOA_DATA_DIR" in lines[0] and "Traceback" not in result.stderr


def test_a_planted_checkpoint_runs_no_code_and_is_named(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    # MOA_DATA_DIR on a shared disk: whoever can write the store can put a value there that
    # LangGraph's default serializer rebuilds as os.system(...).
    import contextlib
    import sqlite3

    import ormsgpack
    from langgraph.checkpoint.serde.jsonplus import EXT_CONSTRUCTOR_POS_ARGS

    chat(server, tmp_path, "first question\n", "--thread", "t")
    chat(server, tmp_path, "kept\n", "--thread", "kept")
    marker = tmp_path / "pwned"
    call = ormsgpack.packb(("os", "system", [f"touch {marker}"]))
    payload = ormsgpack.packb(ormsgpack.Ext(EXT_CONSTRUCTOR_POS_ARGS, call))
    with contextlib.closing(sqlite3.connect(tmp_path / "chat-threads.sqlite")) as conn, conn:
        conn.execute("UPDATE checkpoints SET checkpoint = ? WHERE thread_id = 't'", (payload,))
    result = run_cli(
        "chat", "--preset", "seed", "--thread", "t", env=env(server, tmp_path), stdin="again\n"
    )
    assert not marker.exists()
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "moa: error: chat thread 't' in " in result.stderr
    assert "cannot be read: it was changed outside moa" in result.stderr
    # The list still shows every thread, the damaged one said so.
    listed = run_cli("chat", "--list", env=env(server, tmp_path))
    assert listed.returncode == 0, listed.stderr
    assert "kept" in listed.stdout and "(cannot be read: changed outside moa)" in listed.stdout
    assert not marker.exists()


def test_a_pickled_checkpoint_is_named_and_the_others_listed(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    # A row typed "pickle" (which the strict serializer never loads) made all of --list fail.
    import contextlib
    import sqlite3

    chat(server, tmp_path, "first question\n", "--thread", "t")
    chat(server, tmp_path, "kept\n", "--thread", "kept")
    with contextlib.closing(sqlite3.connect(tmp_path / "chat-threads.sqlite")) as conn, conn:
        conn.execute(
            "UPDATE checkpoints SET type = 'pickle', checkpoint = ? WHERE thread_id = 't'",
            (b"\x80\x04K\x01.",),
        )
    result = run_cli(
        "chat", "--preset", "seed", "--thread", "t", env=env(server, tmp_path), stdin="again\n"
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "cannot be read: it was changed outside moa" in result.stderr
    listed = run_cli("chat", "--list", env=env(server, tmp_path))
    assert listed.returncode == 0, listed.stderr
    assert "kept" in listed.stdout and "(cannot be read: changed outside moa)" in listed.stdout
