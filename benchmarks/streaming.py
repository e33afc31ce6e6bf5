"""Benchmark 6: what streaming costs, and that nobody pays for it when nobody reads the tokens.

The workload of benchmarks 1-3 at one shape (2 proposer layers x 4 proposers), run five ways in
the same process, alternating: the graph as ``moa ask`` streams it, the graph with ``ainvoke``
and with ``astream(stream_mode="updates")`` (how batch jobs and non-streamed servers run it), and
the seed's approach with its answer streamed and asked for whole. For each: client CPU per
query, and how many of its requests the fake server saw streamed (its own record of each
request's ``"stream"`` field), proposers and aggregator apart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from langchain_core.messages import HumanMessage

from benchmarks import baseline
from benchmarks.common import (
    AGGREGATOR,
    QUESTION,
    cli_query,
    median,
    proposer_names,
    script_workload,
    server_context,
)
from benchmarks.latency import seed_query
from benchmarks.server import ServerProcess

LAYERS, PROPOSERS = 2, 4
WAYS = {
    "graph, streamed as `moa ask` does (stream_mode messages + custom + updates + values)": "cli",
    "graph, `ainvoke`": "ainvoke",
    'graph, `astream(stream_mode="updates")`': "updates",
    "seed, answer streamed": "seed",
    "seed, answer asked for whole": "seed_whole",
}


def run(reps: int = 9) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        from langgraph_moa.graphs import graph

        with ServerProcess() as server:
            script_workload(server, PROPOSERS)
            ctx = server_context(server.base_url, LAYERS, PROPOSERS)
            client = baseline.client(server.base_url)
            inputs: Any = {"messages": [HumanMessage(QUESTION)]}

            async def updates() -> None:
                async for _ in graph.astream(inputs, context=ctx, stream_mode="updates"):
                    pass

            names = proposer_names(PROPOSERS)
            queries: dict[str, Callable[[], Awaitable[Any]]] = {
                "cli": lambda: cli_query(ctx),
                "ainvoke": lambda: graph.ainvoke(inputs, context=ctx),
                "updates": updates,
                "seed": lambda: seed_query(client, LAYERS, PROPOSERS),
                "seed_whole": lambda: baseline.moa(
                    client, QUESTION, names, "aggregator", LAYERS, on_token=None
                ),
            }
            cpu: dict[str, list[float]] = {k: [] for k in queries}
            streamed: dict[str, dict[str, int]] = {}
            for key, query in queries.items():  # warm up, and count streamed requests
                await query()
                server.reset()
                script_workload(server, PROPOSERS)
                await query()
                records = server.requests()
                streamed[key] = {
                    "proposer_requests": sum(r["model"] != "aggregator" for r in records),
                    "proposer_streamed": sum(
                        r["stream"] for r in records if r["model"] != "aggregator"
                    ),
                    "aggregator_streamed": sum(
                        r["stream"] for r in records if r["model"] == "aggregator"
                    ),
                }
            for rep in range(reps):
                order = list(queries) if rep % 2 == 0 else list(reversed(queries))
                for key in order:
                    start = time.process_time()
                    await queries[key]()
                    cpu[key].append(time.process_time() - start)
            await client.close()
        rows = {k: {"cpu_s": median(v), **streamed[k]} for k, v in cpu.items()}
        per_token = {
            "graph": (rows["cli"]["cpu_s"] - rows["ainvoke"]["cpu_s"]) / AGGREGATOR.tokens,
            "seed": (rows["seed"]["cpu_s"] - rows["seed_whole"]["cpu_s"]) / AGGREGATOR.tokens,
        }
        return {"reps": reps, "rows": rows, "per_token_s": per_token}

    return asyncio.run(main())


if __name__ == "__main__":
    print(run())
