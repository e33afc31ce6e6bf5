"""Memory: peak RSS of ``moa ask`` answering 1 query, and 1,000 queries one after another.

Each count runs in a fresh child process that calls the CLI's ``ask`` command (the function
``moa ask`` runs: settings from a config file, preflight, a new event loop per query, the graph
streamed as the CLI streams it). The models are zero-latency fakes reached through the real
clients (ChatTogether over HTTP to the fake server, which runs in a third process so its request
records do not count), at real sizes (400-token proposals, a 500-token answer): 1 proposer
layer x 3 proposers (small, so that 1,000 queries fit the time
budget), with a quorum of 2 so the quorum's per-layer coordinator and its cancellations run too.
A per-query leak in a cache, the graph or the model clients would show as growth of the
1,000-query peak.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


LAYERS, PROPOSERS, QUORUM = 1, 3, 2  # proposer layers; kept small: 1,000 queries must fit


def _config(base_url: str) -> str:
    proposers = ", ".join(
        f'{{ model = "together:p{i}", base_url = "{base_url}" }}' for i in range(PROPOSERS)
    )
    return (
        f"layers = {LAYERS + 1}\nquorum = {QUORUM}\nproposers = [{proposers}]\n"
        f'aggregator = {{ model = "together:aggregator", base_url = "{base_url}" }}\n'
    )


def _child(queries: int, config: str, out: str) -> None:
    from langgraph_moa.apps.chat.command import ask
    from langgraph_moa.nodes.models import cache, http, quorum

    checkpoints: dict[int, float] = {}
    for i in range(1, queries + 1):
        ask(prompt=f"Question number {i}: what is fun in San Francisco?", config=config)
        if i in (1, 10, 100, 1000) or i == queries:
            checkpoints[i] = _rss_now_mib()
    result = {
        "queries": queries,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_mib_after": checkpoints,
        "quorum_groups_left": quorum.active_groups(),
        "model_caches_left": cache.cached_loops() + http.cached_loops(),
    }
    Path(out).write_text(json.dumps(result), encoding="utf-8")


def _rss_now_mib() -> float:
    with open("/proc/self/statm", encoding="utf-8") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _measure(queries: int, config: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "result.json")
        subprocess.run(
            [sys.executable, "-m", "benchmarks.memory", "--child", str(queries), config, out],
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=600,
        )
        result: dict[str, Any] = json.loads(Path(out).read_text(encoding="utf-8"))
        return result


def run(many: int = 1000) -> dict[str, Any]:
    from benchmarks.common import AGGREGATOR, text_of
    from benchmarks.server import ServerProcess

    with tempfile.TemporaryDirectory() as tmp, ServerProcess() as server:
        # Real sizes: 400-token proposals and a 500-token answer, sent at once.
        for i in range(PROPOSERS):
            server.script(f"p{i}", text_of(400))
        server.script("aggregator", text_of(AGGREGATOR.tokens, "answer"))
        config = str(Path(tmp) / "memory-bench.toml")
        Path(config).write_text(_config(server.base_url), encoding="utf-8")
        one = _measure(1, config)
        lots = _measure(many, config)
    return {"one": one, "many": lots, "growth": lots["peak_rss_mib"] / one["peak_rss_mib"] - 1}


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    else:
        print(run(int(sys.argv[1]) if len(sys.argv) > 1 else 1000))
