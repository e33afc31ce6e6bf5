"""Staircase streaming against standard MoA, side by side (issue 22).

The fake server (its own process) answers at the issue's timing: proposers write 400 tokens, the
first after 300 ms, then one every 20 ms (~8.3 s); the aggregator writes 500 tokens the same way
(~10.3 s). Every model continues an answer it is asked to continue (the fallback prompt here:
the models are ``together:`` ones), so a staircase answer is the same 500 tokens. Standard and
staircase runs alternate, as ``moa ask`` runs them (run_turn over graph.astream). Reported per
shape (proposer layers x proposers): time to the first answer token, total time, aggregator
requests and input tokens (every call of the run), each as the median over the runs, and the
staircase/standard ratios.
"""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

from rich.console import Console

from benchmarks.common import QUESTION, Timing, median, proposer_names, server_context, text_of
from benchmarks.server import ServerProcess

PROPOSER = Timing(ttft=0.3, tokens=400, delay=0.02)
AGGREGATOR = Timing(ttft=0.3, tokens=500, delay=0.02)
SHAPES = ((1, 4), (2, 4))


def _script(server: ServerProcess, n: int) -> None:
    for name in proposer_names(n):
        server.script(
            name,
            text_of(PROPOSER.tokens, name.replace("-", "")),
            ttft=PROPOSER.ttft,
            token_delay=PROPOSER.delay,
            continues=True,  # a later-layer staircase proposer continues its own answer
        )
    server.script(
        "aggregator",
        text_of(AGGREGATOR.tokens, "answer"),
        ttft=AGGREGATOR.ttft,
        token_delay=AGGREGATOR.delay,
        continues=True,
    )


async def _query(base_url: str, layers: int, n: int, staircase: bool) -> dict[str, float]:
    from langgraph_moa.apps.chat.progress import Progress
    from langgraph_moa.apps.chat.turn import run_turn
    from langgraph_moa.graphs import graph

    ctx = server_context(base_url, layers, n, staircase=staircase, max_tokens=600)
    first: list[float] = []

    def on_token(text: str) -> None:
        if not first:
            first.append(time.perf_counter())

    console = Console(file=io.StringIO())
    start = time.perf_counter()
    with Progress(ctx, console) as progress:
        final = await run_turn(graph, QUESTION, ctx, progress, on_token=on_token)
    end = time.perf_counter()
    answer = final["messages"][-1].text
    assert answer == text_of(AGGREGATOR.tokens, "answer"), answer[-200:]
    record = final.get("staircase")
    return {
        "ttft_s": (first[0] if first else end) - start,
        "total_s": end - start,
        "aggregator_requests": record["aggregator_requests"] if record else 1,
        "input_tokens": sum(row["input_tokens"] for row in final["usage"].values()),
    }


def run(reps: int = 3) -> dict[str, Any]:
    rows = []
    with ServerProcess() as server:
        for layers, n in SHAPES:
            server.reset()
            _script(server, n)
            runs: dict[str, list[dict[str, float]]] = {"standard": [], "staircase": []}
            for _ in range(reps):  # alternating, so drift hits both alike
                for mode in ("standard", "staircase"):
                    runs[mode].append(
                        asyncio.run(_query(server.base_url, layers, n, mode == "staircase"))
                    )
            med = {
                mode: {k: median([r[k] for r in rs]) for k in rs[0]} for mode, rs in runs.items()
            }
            ratio = {k: med["staircase"][k] / med["standard"][k] for k in med["standard"]}
            rows.append({"layers": layers, "proposers": n, "reps": reps, **med, "ratio": ratio})
    return {"rows": rows}


def render(result: dict[str, Any]) -> list[str]:
    rows = result["rows"]
    out = [
        "## Staircase streaming against standard MoA",
        "",
        f"The issue's timing on the fake server (own process): proposers write "
        f"{PROPOSER.tokens} tokens, the first after {PROPOSER.ttft * 1000:.0f} ms, then one every "
        f"{PROPOSER.delay * 1000:.0f} ms; the aggregator writes {AGGREGATOR.tokens} tokens the "
        "same way. `together:` models, so the staircase continues answers with the fallback "
        "prompt (nodes/models/continuation.py); default chunk schedule (16, 32, 64, 128 tokens). "
        f"Standard and staircase alternate, {rows[0]['reps']} runs each per shape, as `moa ask` "
        "runs them; medians. Input tokens: every call of the run.",
        "",
        "| shape | figure | standard | staircase | ratio | target |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        shape = f"{row['layers']} layer{'s' if row['layers'] > 1 else ''} x {row['proposers']}"
        std, st, r = row["standard"], row["staircase"], row["ratio"]
        ttft_ok = "met" if r["ttft_s"] <= 0.3 else "**not met**"
        total_ok = "met" if r["total_s"] <= 1.1 else "**not met**"
        out += [
            f"| {shape} | first answer token | {std['ttft_s']:.2f} s | {st['ttft_s']:.2f} s | "
            f"{r['ttft_s']:.2f}x | <= 0.3x: {ttft_ok} |",
            f"| {shape} | total time | {std['total_s']:.2f} s | {st['total_s']:.2f} s | "
            f"{r['total_s']:.2f}x | <= 1.1x: {total_ok} |",
            f"| {shape} | aggregator requests | {std['aggregator_requests']:.0f} | "
            f"{st['aggregator_requests']:.0f} | {r['aggregator_requests']:.0f}x | reported |",
            f"| {shape} | input tokens | {std['input_tokens']:,.0f} | {st['input_tokens']:,.0f} | "
            f"{r['input_tokens']:.2f}x | reported |",
        ]
    return out


# --------------------------------------------------------------------------- the embedded model
async def _local_query(staircase: bool) -> dict[str, float]:
    from langgraph_moa.apps.chat.progress import Progress
    from langgraph_moa.apps.chat.turn import run_turn
    from langgraph_moa.graphs import graph
    from langgraph_moa.nodes.context import load_preset

    ctx = load_preset("local").model_copy(update={"staircase": staircase})
    first: list[float] = []

    def on_token(text: str) -> None:
        if not first:
            first.append(time.perf_counter())

    start = time.perf_counter()
    with Progress(ctx, Console(file=io.StringIO())) as progress:
        final = await run_turn(graph, QUESTION, ctx, progress, on_token=on_token)
    end = time.perf_counter()
    record = final.get("staircase")
    return {
        "ttft_s": (first[0] if first else end) - start,
        "total_s": end - start,
        "aggregator_requests": record["aggregator_requests"] if record else 1,
        "input_tokens": sum(row["input_tokens"] for row in final["usage"].values()),
    }


def run_local(reps: int = 3) -> dict[str, Any]:
    """The ``local`` preset (3 SmolLM2 proposers, 1 layer, all on this CPU), alternating."""
    asyncio.run(_local_query(False))  # load the model copies first
    runs: dict[str, list[dict[str, float]]] = {"standard": [], "staircase": []}
    for _ in range(reps):
        for mode in ("standard", "staircase"):
            runs[mode].append(asyncio.run(_local_query(mode == "staircase")))
    med = {mode: {k: median([r[k] for r in rs]) for k in rs[0]} for mode, rs in runs.items()}
    ratio = {k: med["staircase"][k] / med["standard"][k] for k in med["standard"]}
    return {"rows": [{"layers": 1, "proposers": 3, "reps": reps, **med, "ratio": ratio}]}


def render_local(result: dict[str, Any]) -> list[str]:
    row = result["rows"][0]
    std, st, r = row["standard"], row["staircase"], row["ratio"]
    return [
        "## Staircase streaming with the embedded local model",
        "",
        "The `local` preset (3 SmolLM2-135M proposers of 128 tokens, 1 layer, the aggregator the "
        "same model) run by llama.cpp in the process on 2 cores with its pool of 2 loaded copies: "
        "provider continuation (a raw prompt). Standard and staircase alternate, "
        f"{row['reps']} runs each; medians. Every call shares the same two cores and two model "
        "copies, so the aggregator's chunks queue behind the proposers'.",
        "",
        "| figure | standard | staircase | ratio |",
        "|---|---|---|---|",
        f"| first answer token | {std['ttft_s']:.2f} s | {st['ttft_s']:.2f} s | "
        f"{r['ttft_s']:.2f}x |",
        f"| total time | {std['total_s']:.2f} s | {st['total_s']:.2f} s | {r['total_s']:.2f}x |",
        f"| aggregator requests | {std['aggregator_requests']:.0f} | "
        f"{st['aggregator_requests']:.0f} | {r['aggregator_requests']:.0f}x |",
        f"| input tokens | {std['input_tokens']:,.0f} | {st['input_tokens']:,.0f} | "
        f"{r['input_tokens']:.2f}x |",
    ]
