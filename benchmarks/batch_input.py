"""Batch input at 2 GB: peak RSS of ``moa batch --limit 10`` over a 2 GB dataset of short prompts.

Short prompts are the hard case for memory: a 2 GB file of them holds over twenty million items,
and anything the run keeps per item (an id, a dict entry) is multiplied by that. Each way of
giving the input runs the real command in a child process (``moa batch INPUT -o OUT --limit 10``,
a 2-proposer MoA against the fake provider in its own process, the call cache on), alone under a
small fresh parent that reports the child's peak RSS (``RUSAGE_CHILDREN``: a child forked from
this benchmark would inherit its peak). The floor is the same command over 12 items.

Ways: a JSONL file; the same bytes on stdin (``-``, spooled to a temporary file); a JSON list;
MT-Bench questions (two turns each, ``-f mt-bench``); and ``--dry-run`` over the JSONL file (which
reads every item to count its tokens). The files are made in a temporary folder and removed
after their runs, one shape at a time (at most ~5 GB on disk at once: the file, a stdin copy and
the run's temporary ids).

``python -m benchmarks.batch_input [SIZE_MB]`` (default 2048) prints the results as JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SIZE_MB = 2048
LIMIT = 10
TARGET_MIB = 300  # the bound on peak RSS at 2 GB
PROMPT = "Question {n}: what is a fun thing to do in San Francisco this weekend?"
PEAK = (
    "import resource, subprocess, sys, time\n"
    "stdin = open(sys.argv[1], 'rb') if sys.argv[1] != '-' else subprocess.DEVNULL\n"
    "t = time.perf_counter()\n"
    "run = subprocess.run(sys.argv[2:], stdin=stdin, stdout=subprocess.DEVNULL,\n"
    "                     stderr=subprocess.PIPE, text=True)\n"
    "wall = time.perf_counter() - t\n"
    "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
    "print(run.returncode, peak, wall)\n"
    "print(run.stderr[-2000:])"
)


def _jsonl(n: int) -> str:
    return json.dumps({"id": f"q{n}", "prompt": PROMPT.format(n=n)}) + "\n"


def _mt_bench(n: int) -> str:
    turns = [PROMPT.format(n=n), "Now say it in one sentence."]
    return json.dumps({"question_id": n, "category": "writing", "turns": turns}) + "\n"


def _write(path: Path, size: int, line: Callable[[int], str], listed: bool = False) -> int:
    """Write items until ``size`` bytes; how many."""
    n = written = 0
    with path.open("w", encoding="utf-8", buffering=1 << 20) as f:
        if listed:
            f.write("[\n")
        while written < size:
            text = line(n)
            if listed:
                text = ("" if n == 0 else ",\n") + text.rstrip("\n")
            f.write(text)
            written += len(text)
            n += 1
        if listed:
            f.write("\n]\n")
    return n


def _measure(args: list[str], stdin: Path | None = None) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOGETHER_", "OPENAI_"))}
    moa = [sys.executable, "-m", "langgraph_moa", *args]
    probe = subprocess.run(
        [sys.executable, "-c", PEAK, str(stdin or "-"), *moa],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=True,
    )
    first, _, stderr = probe.stdout.partition("\n")
    code, peak, wall = first.split()
    if int(code) != 0:
        raise RuntimeError(f"moa batch {' '.join(args)} exited {code}: {stderr}")
    return {"peak_rss_mib": float(peak), "wall_s": float(wall)}


SHAPES: tuple[tuple[str, str, Callable[[int], str], bool], ...] = (
    ("jsonl", "questions.jsonl", _jsonl, False),
    ("json-list", "questions.json", _jsonl, True),
    ("mt-bench", "mt_bench.jsonl", _mt_bench, False),
)


def run(size_mb: int = SIZE_MB) -> dict[str, Any]:
    from benchmarks.server import ServerProcess

    size = size_mb << 20
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="moa-bench-input-") as folder, ServerProcess() as srv:
        tmp = Path(folder)
        free = shutil.disk_usage(tmp).free
        if free < 3 * size + (2 << 30):
            raise RuntimeError(f"{tmp}: {free >> 20} MiB free; this needs about {3 * size_mb} MiB")
        for name in ("p1", "p2", "agg"):
            srv.script(name, f"{name} says: go to the beach.")

        def spec(name: str) -> str:
            return f'{{ model = "together:{name}", base_url = "{srv.base_url}" }}'

        cfg = tmp / "moa.toml"
        cfg.write_text(
            f"layers = 2\nproposers = [{spec('p1')}, {spec('p2')}]\naggregator = {spec('agg')}\n",
            encoding="utf-8",
        )
        small = tmp / "small.jsonl"
        small.write_text("".join(_jsonl(n) for n in range(12)), encoding="utf-8")

        def batch(data: str, out: str, *more: str, stdin: Path | None = None) -> dict[str, Any]:
            args = ["batch", data, "-o", str(tmp / out), "-c", str(cfg), *more]
            return _measure(args, stdin)

        rows["floor"] = {**batch(str(small), "floor.jsonl", "--limit", str(LIMIT)), "items": 12}
        for shape, filename, line, listed in SHAPES:
            data = tmp / filename
            t0 = time.perf_counter()
            items = _write(data, size, line, listed)
            made = {"items": items, "bytes": data.stat().st_size}
            print(
                f"batch-input: {filename}: {items:,} items, {made['bytes'] >> 20} MiB "
                f"in {time.perf_counter() - t0:.0f} s",
                file=sys.stderr,
                flush=True,
            )
            limit = ("--limit", str(LIMIT))
            if shape == "jsonl":
                rows["jsonl"] = {**batch(str(data), "a.jsonl", *limit), **made}
                rows["stdin"] = {**batch("-", "b.jsonl", *limit, stdin=data), **made}
                rows["dry-run"] = {**batch(str(data), "c.jsonl", "--dry-run"), **made}
            elif shape == "json-list":
                rows["json-list"] = {**batch(str(data), "d.jsonl", *limit), **made}
            else:
                fmt = ("-f", "mt-bench")
                rows["mt-bench"] = {**batch(str(data), "e.jsonl", *limit, *fmt), **made}
            data.unlink()
    return {"size_mb": size_mb, "limit": LIMIT, "rows": rows}


WAYS = {
    "floor": "12 items (the floor: the same command over a tiny file)",
    "jsonl": "JSONL file",
    "stdin": "the same JSONL on stdin (`-`)",
    "dry-run": "`--dry-run` over the JSONL file (every item read and counted)",
    "json-list": "JSON list",
    "mt-bench": "MT-Bench questions (2 turns each), `-f mt-bench`",
}


def render(r: dict[str, Any]) -> list[str]:
    rows = r["rows"]
    worst = max(row["peak_rss_mib"] for row in rows.values())
    out = [
        "## Batch input at 2 GB: memory of `moa batch --limit 10`",
        "",
        f"`moa batch INPUT -o OUT --limit {r['limit']}` (the real command, a child process) over "
        f"{r['size_mb']:,} MiB of short prompts (about 90 bytes an item: the case where anything "
        "kept per item counts most), a 2-proposer MoA against the fake provider in its own "
        "process, the call cache on; `--dry-run` reads every item to count its tokens. Peak RSS "
        "is the child's own (`RUSAGE_CHILDREN` of a small fresh parent); wall includes start-up "
        "and the first pass over the file, which checks every line and id before any call "
        "(benchmarks/batch_input.py).",
        "",
        "| input | items | size | peak RSS | wall |",
        "|---|---|---|---|---|",
    ]
    for key, label in WAYS.items():
        row = rows[key]
        size = f"{row['bytes'] / 2**20:,.0f} MiB" if "bytes" in row else "1 KiB"
        out.append(
            f"| {label} | {row['items']:,} | {size} | {row['peak_rss_mib']:.0f} MiB "
            f"| {row['wall_s']:.0f} s |"
        )
    target = TARGET_MIB
    met = "met" if worst < target else "**not met**"
    out += [
        "",
        f"Highest peak: {worst:.0f} MiB (target < {target} MiB at 2 GB: {met}); above the floor: "
        f"{worst - rows['floor']['peak_rss_mib']:+.0f} MiB.",
        "",
    ]
    return out


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else SIZE_MB), indent=2))
