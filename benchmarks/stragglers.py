"""Benchmark 5: stragglers. Wait-for-all against the quorum policy under heavy-tailed latency.

Every proposer call writes 400 tokens at the pace of the latency benchmarks (~0.35 s), or takes
5x as long with a 20% chance, drawn per request by the server from a seeded generator (one per
policy and proposer, so every policy sees the same kind of draws). The aggregator's call is
fixed (200 ms): the quorum cannot help it, and a fixed aggregator keeps its noise out of the
comparison (its 500-token answer arrives whole: ``ainvoke``, nobody streams). 2 proposer layers
x 4 proposers; the policies' queries are interleaved and run ``concurrency`` at a time.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from langchain_core.messages import HumanMessage

from benchmarks.common import (
    AGGREGATOR,
    PROPOSER_DELAY,
    PROPOSER_TTFT,
    QUESTION,
    Timing,
    median,
    percentile,
    text_of,
)
from benchmarks.server import ServerProcess
from langgraph_moa.nodes.context import Context, ModelSpec

LAYERS, PROPOSERS = 2, 4
PROPOSER = Timing(PROPOSER_TTFT, 400, PROPOSER_DELAY)
TAIL_P, TAIL_X = 0.2, 5.0
AGGREGATOR_S = 0.2
GRACE_S = 0.05
# name -> (quorum, grace)
POLICIES: dict[str, tuple[int | None, float]] = {
    "wait for all (default)": (None, 0.0),
    f"quorum 3 of 4, grace {GRACE_S:g} s": (3, GRACE_S),
    f"quorum 2 of 4, grace {GRACE_S:g} s": (2, GRACE_S),
}


def _context(base_url: str, tag: str, quorum: int | None, grace: float) -> Context:
    return Context(
        layers=LAYERS + 1,
        proposers=[
            ModelSpec(model=f"together:{tag}-p{i}", base_url=base_url) for i in range(PROPOSERS)
        ],
        aggregator=ModelSpec(model=f"together:{tag}-agg", base_url=base_url),
        quorum=quorum,
        quorum_grace=grace,
    )


def run(queries: int = 200, concurrency: int = 4) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        from langgraph_moa.graphs import graph

        with ServerProcess() as server:
            contexts = {}
            for n, (name, (quorum, grace)) in enumerate(POLICIES.items()):
                tag = f"s{n}"
                for i in range(PROPOSERS):
                    server.script(
                        f"{tag}-p{i}",
                        text_of(PROPOSER.tokens),
                        ttft=PROPOSER.ttft,
                        token_delay=PROPOSER.delay,
                        tail=(TAIL_P, TAIL_X, 1000 * n + i),
                    )
                server.script(f"{tag}-agg", text_of(AGGREGATOR.tokens, "answer"), ttft=AGGREGATOR_S)
                contexts[name] = _context(server.base_url, tag, quorum, grace)
            inputs: Any = {"messages": [HumanMessage(QUESTION)]}
            warm = _context(server.base_url, "warm", None, 0.0)
            for _ in range(2):
                await graph.ainvoke(inputs, context=warm)

            walls: dict[str, list[float]] = {name: [] for name in POLICIES}
            used: dict[str, list[int]] = {name: [] for name in POLICIES}
            cancelled: dict[str, int] = dict.fromkeys(POLICIES, 0)
            gate = asyncio.Semaphore(concurrency)

            async def one(name: str) -> None:
                async with gate:
                    start = time.perf_counter()
                    state = await graph.ainvoke(inputs, context=contexts[name])
                    walls[name].append(time.perf_counter() - start)
                for layer in state["layers"]:
                    used[name].append(sum(p["text"] is not None for p in layer))
                    cancelled[name] += sum(
                        p["error"] is not None and p["error"]["kind"] == "cancelled" for p in layer
                    )

            jobs = [name for _ in range(queries) for name in POLICIES]  # interleaved
            await asyncio.gather(*(one(name) for name in jobs))
            records = server.requests()
            disconnected = {
                name: sum(r["disconnected"] for r in records if r["model"].startswith(f"s{n}-p"))
                for n, name in enumerate(POLICIES)
            }

        rows = {}
        for name in POLICIES:
            rows[name] = {
                "p50_s": median(walls[name]),
                "p95_s": percentile(walls[name], 0.95),
                "mean_proposals_per_layer": sum(used[name]) / len(used[name]),
                "cancelled_calls": cancelled[name],
                "server_disconnects": disconnected[name],
            }
        wait_all = rows["wait for all (default)"]["p95_s"]
        for row in rows.values():
            row["p95_ratio"] = row["p95_s"] / wait_all
        return {"queries": queries, "concurrency": concurrency, "policies": rows}

    return asyncio.run(main())


if __name__ == "__main__":
    import sys

    print(run(int(sys.argv[1]) if len(sys.argv) > 1 else 200))
