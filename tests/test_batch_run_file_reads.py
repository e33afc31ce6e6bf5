"""The end of a run reads its run file as few times as it can: the statuses and whether the file
is in order are known from what was read and written, the rewrite in input order reads it once,
and a -f output is made from the records of that same read. At 200,000 records of ~13 KB each
pass was ~2.6 GB. The rewrite stays atomic."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from langgraph_moa.core.batch.outputs import RunFile


def record(n: int, status: str = "ok") -> dict[str, Any]:
    return {"id": f"q{n}", "status": status, "answer": f"answer {n}"}


def line(n: int, status: str = "ok") -> bytes:
    return (json.dumps(record(n, status), separators=(",", ":")) + "\n").encode()


def position(item_id: str) -> int | None:
    return int(item_id[1:]) if item_id.startswith("q") else None


@pytest.fixture
def opens(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The files opened for reading through Path.open."""
    seen: list[Path] = []
    real = Path.open

    def counted(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if "r" in mode:
            seen.append(self)
        return real(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", counted)
    return seen


def ids(path: Path) -> list[str]:
    return [json.loads(x)["id"] for x in path.read_bytes().splitlines()]


def test_the_end_of_a_run_reads_the_run_file_once(tmp_path: Path, opens: list[Path]) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(line(2) + line(0, "failed"))
    run = RunFile(path)
    assert run.open() == {"q2": "ok", "q0": "failed"}
    with run:
        run.append(record(1))
        run.append(record(0))  # retried: its last record counts
    opens.clear()
    assert run.statuses() == {"q2": "ok", "q0": "ok", "q1": "ok"}
    assert opens == []
    with contextlib.closing(run.finished(position)) as ordered:
        assert [r["id"] for r in ordered] == ["q0", "q1", "q2"]
    assert opens == [path]
    assert ids(path) == ["q0", "q1", "q2"]
    assert path.read_bytes() == line(0) + line(1) + line(2)
    # In order now, as the run knows: finishing again reads nothing.
    opens.clear()
    run.finish(position)
    assert opens == []


def test_a_rewrite_stopped_before_its_end_leaves_the_old_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    old = line(1) + line(0)
    path.write_bytes(old)
    run = RunFile(path)
    run.open()
    ordered: Generator[dict[str, Any], None, None] = run.finished(position)
    with contextlib.closing(ordered):
        assert next(ordered)["id"] == "q0"  # a -f output failed here
    assert path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no temporary file left
    run.finish(position)
    assert ids(path) == ["q0", "q1"]


def test_a_file_written_by_someone_else_too_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(line(1))
    run = RunFile(path)
    run.open()
    with path.open("ab") as f:  # not through this RunFile
        f.write(line(0, "failed"))
    assert run.statuses() == {"q1": "ok", "q0": "failed"}
    run.finish(position)
    assert ids(path) == ["q0", "q1"]
