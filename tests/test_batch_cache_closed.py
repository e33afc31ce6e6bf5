"""``run_batch`` closes the call cache it opened on every way out: a refused resume too. A
library caller's process goes on after the error (a notebook, a service), and it held the SQLite
file (and its -wal and -shm files) open for as long as the error was kept."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Any

import pytest
from batch_helpers import prompts
from conftest import fake_context
from fake_openai import FakeOpenAIServer
from rich.console import Console

from langgraph_moa.core.batch import BatchOptions, parse_item, run_batch
from langgraph_moa.nodes.errors import MoAError

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")


def open_files_of(path: Path) -> list[str]:
    """What this process holds open of ``path`` and SQLite's files beside it."""
    found = []
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):  # the listing's own descriptor, gone by now
            target = os.readlink(fd)
            if target.startswith(str(path.resolve())):
                found.append(target)
    return found


async def run(server: FakeOpenAIServer, out: Path, items: list[dict[str, Any]], **kw: Any) -> None:
    ctx = fake_context(server, ["p1", "p2"], **kw)
    options = BatchOptions(cache=out.with_suffix(".sqlite"))
    quiet = Console(file=io.StringIO())
    await run_batch([parse_item(i) for i in items], ctx, out, options, console=quiet)


@pytest.mark.parametrize(
    ("changed", "refusal"),
    [
        ({"temperature": 0.5}, "made with other settings"),
        ({"edited": True}, "whose prompt changed in the input"),
    ],
)
async def test_a_refused_resume_closes_the_call_cache(
    server: FakeOpenAIServer, tmp_path: Path, changed: dict[str, Any], refusal: str
) -> None:
    out = tmp_path / "out.jsonl"
    cache = out.with_suffix(".sqlite")
    await run(server, out, prompts(1), temperature=0.3)
    assert cache.is_file() and not open_files_of(cache)  # a finished run closes it
    items = prompts(2)
    if changed.pop("edited", False):
        items[0]["prompt"] += " (edited)"
    with pytest.raises(MoAError, match=refusal) as refused:
        await run(server, out, items, **{"temperature": 0.3, **changed})
    # Still held by the caller (and with it the run's frames): the file is closed all the same.
    assert refused.value is not None
    assert not open_files_of(cache)
