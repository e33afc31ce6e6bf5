"""``moa batch``'s start-up: LangChain, LangSmith, LangGraph and the OpenAI SDK are imported with
the cyclic garbage collector off (``startup`` in core/command.py).

Those imports make hundreds of thousands of long-lived objects; with the collector on, it walks
them again and again while they are made. Pinned by behaviour, not by time (the machine is
shared): a real one-item run against the fake server records, as each package is first
imported, whether the collector was on. The same run shows that what only some runs need
(``jsonschema``, for bound tools and response formats) is not imported by the others.

``moa --help``, a command's ``--help`` and a bad flag import none of that stack at all: they
answered in 0.8 s, most of it importing LangChain's messages for the errors' records.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from batch_helpers import prompts, read_records, write_config, write_items
from fake_openai import FakeOpenAIServer

HEAVY = ("langchain_core.language_models.chat_models", "langsmith", "langgraph.graph", "openai")
NOT_NEEDED = ("jsonschema",)  # ~0.1 s of CPU

# `moa` as its entry point runs it, with an import hook (the public sys.meta_path protocol) that
# notes gc.isenabled() at each first import of a HEAVY package and finds nothing itself.
WATCHED_MOA = f"""
import gc, json, sys

seen = {{}}

class Watch:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name in {HEAVY + NOT_NEEDED!r} and name not in seen:
            seen[name] = gc.isenabled()
        return None

sys.meta_path.insert(0, Watch)
sys.argv = ["moa", *sys.argv[1:]]
from langgraph_moa.cli import main
try:
    main()
finally:
    print("collector on at import:", json.dumps(seen), file=sys.stderr)
"""


def test_batch_imports_the_stack_with_the_collector_off_and_no_more(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    items = write_items(tmp_path / "in.jsonl", prompts(1))
    config = write_config(tmp_path / "moa.toml", server)
    out = tmp_path / "out.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOGETHER_", "OPENAI_"))}
    done = subprocess.run(
        [sys.executable, "-c", WATCHED_MOA, "batch", str(items), "-o", str(out), "-c", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert [r["status"] for r in read_records(out)] == ["ok"]
    line = done.stderr.rsplit("collector on at import: ", 1)[1].splitlines()[0]
    assert json.loads(line) == dict.fromkeys(HEAVY, False)  # and none of NOT_NEEDED


# The packages of the stack, by their top-level names.
STACK = ("langchain_core", "langchain", "langsmith", "langgraph", "openai")

# `moa` as its entry point runs it, then the packages of STACK it imported.
MOA_THEN_STACK = f"""
import sys
sys.argv = ["moa", *sys.argv[1:]]
from langgraph_moa.cli import main
try:
    main()
finally:
    stack = {{m.split(".")[0] for m in sys.modules}} & set({STACK!r})
    print("imported:", sorted(stack), file=sys.stderr)
"""


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--help"], 0),
        *(([c, "--help"], 0) for c in ("ask", "chat", "presets", "batch", "compare", "serve")),
        (["--no-such-flag"], 2),
        (["batch", "in.jsonl", "--concurrency", "many"], 2),
        (["serve", "--port", "eighty"], 2),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_help_and_bad_flags_import_no_langchain(args: list[str], code: int) -> None:
    done = subprocess.run(
        [sys.executable, "-c", MOA_THEN_STACK, *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert done.returncode == code, done.stderr
    assert done.stderr.rsplit("imported: ", 1)[1].strip() == "[]"
