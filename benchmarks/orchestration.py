"""Benchmark 4: CPU the graph itself costs per query, with zero-latency in-process models.

The MoA graph (2 proposer layers x 4 proposers + aggregator, ``fake:`` models that answer at
once) against a bare LangGraph graph of the same shape whose nodes do nothing: the same
fan-out with ``Send``, the same join and aggregate steps, the same reducers. Both are run with
``ainvoke``, alternating in blocks; CPU is ``time.process_time``.
"""

from __future__ import annotations

import asyncio
import gc
import operator
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from langchain_core.messages import AnyMessage, HumanMessage
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import Send
from typing_extensions import TypedDict

from benchmarks.common import QUESTION, cli_query, instant_context, median

LAYERS, PROPOSERS = 2, 4


class BareState(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    proposals: Annotated[list[Any], operator.add]
    layers: Annotated[list[Any], operator.add]


def bare_graph() -> Any:
    """The MoA graph's shape with no-op nodes."""

    def fan_out(state: BareState) -> list[Send] | str:
        if len(state.get("layers") or []) >= LAYERS:
            return "aggregate"
        return [Send("propose", {"index": i}) for i in range(PROPOSERS)]

    async def propose(task: dict[str, Any]) -> dict[str, Any]:
        return {}

    def join(state: BareState) -> dict[str, Any]:
        return {}

    async def aggregate(state: BareState) -> dict[str, Any]:
        return {}

    builder = StateGraph(BareState)
    builder.add_node("propose", propose)  # type: ignore[call-overload]
    builder.add_node("join", join)
    builder.add_node("aggregate", aggregate)
    builder.add_conditional_edges(START, fan_out, ["propose", "aggregate"])
    builder.add_edge("propose", "join")
    # The layer count lives in a counter here: join's no-op writes nothing.
    counter = {"n": 0}

    def next_layer(state: BareState) -> list[Send] | str:
        counter["n"] += 1
        if counter["n"] % LAYERS == 0:
            return "aggregate"
        return [Send("propose", {"index": i}) for i in range(PROPOSERS)]

    builder.add_conditional_edges("join", next_layer, ["propose", "aggregate"])
    return builder.compile()


async def _cpu_per_query(run: Callable[[], Awaitable[Any]], n: int) -> float:
    gc.collect()
    start = time.process_time()
    for _ in range(n):
        await run()
    return (time.process_time() - start) / n


def run(blocks: int = 7, per_block: int = 40) -> dict[str, Any]:
    """CPU ms per query: MoA graph (ainvoke), bare graph (ainvoke), MoA as ``moa ask`` runs it."""

    async def main() -> dict[str, Any]:
        from langgraph_moa.graphs import graph

        ctx = instant_context(LAYERS, PROPOSERS)
        bare = bare_graph()
        inputs: Any = {"messages": [HumanMessage(QUESTION)]}
        sides: dict[str, Callable[[], Awaitable[Any]]] = {
            "moa": lambda: graph.ainvoke(inputs, context=ctx),
            "bare": lambda: bare.ainvoke(inputs),
            "moa_cli": lambda: cli_query(ctx),
        }
        state = await graph.ainvoke(inputs, context=ctx)
        assert len(state["layers"]) == LAYERS and all(
            p["text"] for lay in state["layers"] for p in lay
        )
        for side in sides.values():  # warm up
            for _ in range(10):
                await side()
        cpu: dict[str, list[float]] = {k: [] for k in sides}
        ratios: list[float] = []
        for block in range(blocks):
            order = list(sides) if block % 2 == 0 else list(reversed(sides))
            for name in order:
                cpu[name].append(await _cpu_per_query(sides[name], per_block))
            ratios.append(cpu["moa"][-1] / cpu["bare"][-1])
        return {
            "moa_ms": median(cpu["moa"]) * 1000,
            "bare_ms": median(cpu["bare"]) * 1000,
            "moa_cli_ms": median(cpu["moa_cli"]) * 1000,
            "ratio": median(ratios),
            "queries": blocks * per_block,
        }

    return asyncio.run(main())


if __name__ == "__main__":
    print(run())
