"""Start-up: the time a fresh ``moa`` takes to answer zero-latency models, and whose it is.

Each figure is the wall time of a fresh ``moa`` process (the installed command, as a user runs
it) answering one question: 1 proposer layer x 2 proposers and an aggregator, served by the fake
server (in its own process) at once. Two states of the install:

- bytecode cached: every module's ``.pyc`` exists, as after ``uv sync --compile-bytecode`` (the
  Makefile's install) or after a first run that could write them;
- no bytecode: nothing cached and nothing written (``PYTHONDONTWRITEBYTECODE=1`` with an empty
  ``PYTHONPYCACHEPREFIX``), as on a machine whose install did not compile bytecode and which does
  not let Python write it (CI machines that set PYTHONDONTWRITEBYTECODE): every run compiles
  every module again.

The project's own share is the bytecode-cached wall time less the interpreter's start-up
(``python -c pass``) and less the time spent importing other packages (``-X importtime``:
the cumulative time of each import of a non-project module that no other non-project module
made). What is left is the project's own modules and its work: settings, clients, the graph,
the query itself, the output.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import median
from benchmarks.server import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "langgraph_moa"
_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def _moa() -> list[str]:
    script = Path(sys.executable).with_name("moa")
    return [str(script)] if script.exists() else [sys.executable, "-m", PROJECT]


def _env(base_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOGETHER_", "OPENAI_"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("PYTHONPYCACHEPREFIX", None)
    return {**env, "TOGETHER_API_BASE": base_url, "TOGETHER_API_KEY": "not-needed", **extra}


ARGS = [
    "--proposer",
    "together:p0",
    "--proposer",
    "together:p1",
    "--aggregator",
    "together:aggregator",
    "What are some fun things to do in San Francisco?",
]


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{cmd} failed: {done.stderr[-2000:]}")
    return wall, done.stderr


def third_party_import_s(importtime: str) -> tuple[float, float]:
    """(seconds importing non-project modules, seconds of the project's own modules' imports)
    from ``-X importtime`` output."""
    entries = [
        (len(m.group(3)), int(m.group(1)), int(m.group(2)), m.group(4))
        for m in map(_LINE.match, importtime.splitlines())
        if m
    ]
    # Lines come children first, each followed later by its parent (one level less indented).
    # Walk backwards so every entry's parent chain is known when it is reached.
    third, own = 0, 0
    stack: list[tuple[int, bool]] = []  # (depth, is a non-project module) of open ancestors
    for depth, self_us, cumulative_us, name in reversed(entries):
        while stack and stack[-1][0] >= depth:
            stack.pop()
        outside = not name.startswith(PROJECT)
        if outside and not any(o for _, o in stack):
            third += cumulative_us
        if not outside:
            own += self_us
        stack.append((depth, outside))
    return third / 1e6, own / 1e6


def run(reps: int = 5) -> dict[str, Any]:
    with ServerProcess() as server, tempfile.TemporaryDirectory() as tmp:
        for name in ("p0", "p1", "aggregator"):
            server.script(name, f"An instant answer by {name}.")
        cached = _env(server.base_url)
        cmd = [*_moa(), *ARGS]
        _timed(cmd, cached)  # writes any .pyc still missing
        interpreter = median(
            [_timed([sys.executable, "-c", "pass"], cached)[0] for _ in range(reps)]
        )
        warm = median([_timed(cmd, cached)[0] for _ in range(reps)])
        cold: list[float] = []
        for i in range(reps):
            prefix = Path(tmp) / f"empty-{i}"
            prefix.mkdir()
            env = _env(
                server.base_url, PYTHONDONTWRITEBYTECODE="1", PYTHONPYCACHEPREFIX=str(prefix)
            )
            cold.append(_timed(cmd, env)[0])
            shutil.rmtree(prefix)
        shares, third_parties, owns = [], [], []
        for _ in range(reps):
            env = {**cached, "PYTHONPROFILEIMPORTTIME": "1"}
            wall, stderr = _timed(cmd, env)
            third, own = third_party_import_s(stderr)
            third_parties.append(third)
            owns.append(own)
            shares.append(wall - interpreter - third)
    return {
        "reps": reps,
        "interpreter_s": interpreter,
        "warm_s": warm,
        "cold_s": median(cold),
        "third_party_imports_s": median(third_parties),
        "own_imports_s": median(owns),
        "project_share_s": median(shares),
    }


if __name__ == "__main__":
    print(run())
