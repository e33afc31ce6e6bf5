"""Benchmarks 1-3: MoA against the seed's own approach, at real sizes: wall time, time to the first
answer token and client CPU per query, and both against the latency limit.

For each (proposer layers, proposers) shape the graph (as ``moa ask`` runs it: graph.astream
through apps/chat/turn.py run_turn, real ChatTogether clients over HTTP) and the seed's approach
(benchmarks/baseline.py: ``asyncio.gather`` of non-streamed proposer calls per layer with the
``together`` SDK, then a streamed aggregator call) answer the same query against the same fake
server, in the same process, alternating which goes first. CPU is ``time.process_time`` of the
client process around each query (the server runs in its own process).

The limit of a query is ``layers x the slowest proposer's call + the aggregator's call`` as the
server scripts them; nothing can answer sooner.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks import baseline
from benchmarks.common import (
    AGGREGATOR,
    QUESTION,
    SHAPES,
    cli_query,
    median,
    proposer_names,
    script_workload,
    server_context,
    slowest_proposer,
)
from benchmarks.server import ServerProcess

Query = Callable[[], Awaitable[tuple[float, float]]]


async def seed_query(client: Any, layers: int, proposers: int) -> tuple[float, float]:
    """One query the seed's way; (wall time, time to the first answer token), in seconds."""
    first: list[float] = []

    def on_token(text: str) -> None:
        if not first:
            first.append(time.perf_counter())

    start = time.perf_counter()
    await baseline.moa(
        client, QUESTION, proposer_names(proposers), "aggregator", layers, on_token=on_token
    )
    end = time.perf_counter()
    return end - start, (first[0] if first else end) - start


async def _timed(query: Query) -> tuple[float, float, float]:
    cpu = time.process_time()
    wall, ttft = await query()
    return wall, ttft, time.process_time() - cpu


async def _measure_shape(
    server: ServerProcess, layers: int, proposers: int, reps: int
) -> dict[str, Any]:
    server.reset()
    script_workload(server, proposers)
    ctx = server_context(server.base_url, layers, proposers)
    client = baseline.client(server.base_url)
    sides: dict[str, Query] = {
        "graph": lambda: cli_query(ctx),
        "seed": lambda: seed_query(client, layers, proposers),
    }
    for run in sides.values():  # warm up: connections, first-call imports, caches
        await run()
        await run()
    walls: dict[str, list[float]] = {"graph": [], "seed": []}
    ttfts: dict[str, list[float]] = {"graph": [], "seed": []}
    cpus: dict[str, list[float]] = {"graph": [], "seed": []}
    for rep in range(reps):
        order = ("graph", "seed") if rep % 2 == 0 else ("seed", "graph")
        for side in order:
            wall, ttft, cpu = await _timed(sides[side])
            walls[side].append(wall)
            ttfts[side].append(ttft)
            cpus[side].append(cpu)
    await client.close()
    slowest = slowest_proposer(proposers)
    limit = layers * slowest.total + AGGREGATOR.total
    ttft_limit = layers * slowest.total + AGGREGATOR.ttft
    g_wall, s_wall = median(walls["graph"]), median(walls["seed"])
    g_ttft, s_ttft = median(ttfts["graph"]), median(ttfts["seed"])
    g_cpu, s_cpu = median(cpus["graph"]), median(cpus["seed"])
    return {
        "shape": (layers, proposers),
        "reps": reps,
        "limit_s": limit,
        "ttft_limit_s": ttft_limit,
        "graph_wall_s": g_wall,
        "seed_wall_s": s_wall,
        "graph_ttft_s": g_ttft,
        "seed_ttft_s": s_ttft,
        "graph_cpu_s": g_cpu,
        "seed_cpu_s": s_cpu,
        "wall_ratio": g_wall / s_wall,
        "ttft_ratio": g_ttft / s_ttft,
        "cpu_ratio": g_cpu / s_cpu,
        "limit_ratio": g_wall / limit,
        "seed_limit_ratio": s_wall / limit,
        "ttft_limit_ratio": g_ttft / ttft_limit,
        "seed_ttft_limit_ratio": s_ttft / ttft_limit,
    }


def run(reps: int = 9) -> list[dict[str, Any]]:
    async def main() -> list[dict[str, Any]]:
        with ServerProcess() as server:
            return [await _measure_shape(server, lay, n, reps) for lay, n in SHAPES]

    return asyncio.run(main())


if __name__ == "__main__":
    for row in run():
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
