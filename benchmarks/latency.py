"""Benchmarks 1-3: MoA against its latency limit, against a raw-asyncio baseline, and its TTFT.

The limit of a query is ``layers x the slowest proposer's call + the aggregator's call`` as the
server scripts them; nothing can answer sooner. For each (proposer layers, proposers) shape the
graph (as ``moa ask`` runs it: graph.astream through cli.run.run_turn, real ChatTogether clients
over HTTP) and the raw-asyncio baseline (benchmarks/baseline.py, the ``together`` SDK) answer the
same query against the same fake server, alternating which goes first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks import baseline
from benchmarks.common import (
    AGGREGATOR,
    PROPOSER,
    QUESTION,
    SHAPES,
    cli_query,
    median,
    proposer_names,
    script_workload,
    server_context,
)
from benchmarks.server import ServerProcess


async def _baseline_query(client: Any, layers: int, proposers: int) -> tuple[float, float]:
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


async def _measure_shape(
    server: ServerProcess, layers: int, proposers: int, reps: int
) -> dict[str, Any]:
    server.reset()
    script_workload(server, proposers)
    ctx = server_context(server.base_url, layers, proposers)
    client = baseline.client(server.base_url)
    sides: dict[str, Callable[[], Awaitable[tuple[float, float]]]] = {
        "graph": lambda: cli_query(ctx),
        "baseline": lambda: _baseline_query(client, layers, proposers),
    }
    for run in sides.values():  # warm up: connections, first-call imports, caches
        await run()
        await run()
    walls: dict[str, list[float]] = {"graph": [], "baseline": []}
    ttfts: dict[str, list[float]] = {"graph": [], "baseline": []}
    pair_ratios: list[float] = []
    for rep in range(reps):
        order = ("graph", "baseline") if rep % 2 == 0 else ("baseline", "graph")
        for side in order:
            wall, ttft = await sides[side]()
            walls[side].append(wall)
            ttfts[side].append(ttft)
        pair_ratios.append(walls["graph"][-1] / walls["baseline"][-1])
    await client.close()
    limit = layers * PROPOSER.total + AGGREGATOR.total
    ttft_limit = layers * PROPOSER.total + AGGREGATOR.ttft
    g_wall, b_wall = median(walls["graph"]), median(walls["baseline"])
    g_ttft, b_ttft = median(ttfts["graph"]), median(ttfts["baseline"])
    return {
        "shape": (layers, proposers),
        "reps": reps,
        "limit_s": limit,
        "ttft_limit_s": ttft_limit,
        "graph_wall_s": g_wall,
        "baseline_wall_s": b_wall,
        "graph_ttft_s": g_ttft,
        "baseline_ttft_s": b_ttft,
        "limit_ratio": g_wall / limit,
        "baseline_limit_ratio": b_wall / limit,
        "baseline_ratio": median(pair_ratios),
        "ttft_ratio": g_ttft / ttft_limit,
        "baseline_ttft_ratio": b_ttft / ttft_limit,
    }


def run(reps: int = 7) -> list[dict[str, Any]]:
    async def main() -> list[dict[str, Any]]:
        with ServerProcess() as server:
            return [await _measure_shape(server, lay, n, reps) for lay, n in SHAPES]

    return asyncio.run(main())


if __name__ == "__main__":
    for row in run():
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
