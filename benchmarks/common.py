"""What the benchmarks share: the workload, statistics, the machine, zero-latency fake models."""

from __future__ import annotations

import io
import os
import platform
import statistics
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from rich.console import Console

from langgraph_moa.nodes.context import Context, ModelSpec
from langgraph_moa.nodes.models import ModelSettings

QUESTION = "What are some fun things to do in San Francisco?"


# --------------------------------------------------------------------------- the workload
@dataclass(frozen=True)
class Timing:
    """A scripted call: first token after ``ttft`` s, then ``tokens - 1`` more, ``delay`` apart."""

    ttft: float
    tokens: int
    delay: float

    @property
    def total(self) -> float:
        return self.ttft + (self.tokens - 1) * self.delay


# Real sizes (issue #10): a proposer writes 300-500 tokens (what models write at max_tokens=512)
# and the aggregator's answer is 500 tokens. Time is compressed to keep the suite short: a
# proposer's first token comes after 150 ms, then one every 0.5 ms; the answer's first token
# after 200 ms, then one every 2 ms (500 tokens/s, faster than hosted models stream, so the client
# gets less time per token than it would in real use). Non-streamed requests get the whole answer
# when the last token would have come.
PROPOSAL_TOKENS = (300, 400, 500, 350, 450, 400)  # proposer i writes PROPOSAL_TOKENS[i % 6]
PROPOSER_TTFT, PROPOSER_DELAY = 0.15, 0.0005
AGGREGATOR = Timing(ttft=0.2, tokens=500, delay=0.002)
# (proposer layers, proposers per layer) of the latency benchmarks.
SHAPES = ((1, 4), (2, 4), (3, 6))


def proposer_timing(index: int) -> Timing:
    return Timing(PROPOSER_TTFT, PROPOSAL_TOKENS[index % len(PROPOSAL_TOKENS)], PROPOSER_DELAY)


def slowest_proposer(n: int) -> Timing:
    """The slowest call of a layer of ``n`` proposers: what the layer waits for."""
    return max((proposer_timing(i) for i in range(n)), key=lambda t: t.total)


def text_of(tokens: int, word: str = "token") -> str:
    """A reply the fake server streams as exactly ``tokens`` chunks."""
    return " ".join(f"{word}{i}" for i in range(tokens))


def proposer_names(n: int) -> list[str]:
    return [f"proposer-{i}" for i in range(n)]


def script_workload(server: Any, n_proposers: int) -> None:
    """Script the proposers and the aggregator of the latency benchmarks on ``server``."""
    for i, name in enumerate(proposer_names(n_proposers)):
        timing = proposer_timing(i)
        server.script(name, text_of(timing.tokens), ttft=timing.ttft, token_delay=timing.delay)
    server.script(
        "aggregator",
        text_of(AGGREGATOR.tokens, "answer"),
        ttft=AGGREGATOR.ttft,
        token_delay=AGGREGATOR.delay,
    )


def server_context(base_url: str, layers: int, proposers: int, **kw: Any) -> Context:
    """``layers`` proposer layers (Context.layers counts the aggregator too) on the fake server."""
    return Context(
        layers=layers + 1,
        proposers=[
            ModelSpec(model=f"together:{n}", base_url=base_url) for n in proposer_names(proposers)
        ],
        aggregator=ModelSpec(model="together:aggregator", base_url=base_url),
        **kw,
    )


# --------------------------------------------------------------------------- running the graph
async def cli_query(ctx: Context, prompt: str = QUESTION) -> tuple[float, float]:
    """One query the way ``moa ask`` runs it (graph.astream through apps/chat/turn.py run_turn).

    Returns (wall time, time to the first token of the final answer), in seconds.
    """
    from langgraph_moa.apps.chat.progress import Progress
    from langgraph_moa.apps.chat.turn import run_turn
    from langgraph_moa.graphs import graph

    first: list[float] = []

    def on_token(text: str) -> None:
        if not first:
            first.append(time.perf_counter())

    console = Console(file=io.StringIO(), highlight=False, soft_wrap=True)
    start = time.perf_counter()
    with Progress(ctx, console) as progress:
        await run_turn(graph, prompt, ctx, progress, on_token=on_token)
    end = time.perf_counter()
    return end - start, (first[0] if first else end) - start


# --------------------------------------------------------------------------- statistics
def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


# --------------------------------------------------------------------------- the machine
def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    mem = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        mem = f", {pages / 2**30:.0f} GiB RAM"
    except (ValueError, OSError, AttributeError):
        pass
    load = ""
    if hasattr(os, "getloadavg"):
        load = ", load average at start {:.1f} / {:.1f} / {:.1f}".format(*os.getloadavg())
    return (
        f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} cores{mem}{load}; "
        f"Python {sys.version.split()[0]}"
    )


# --------------------------------------------------------------------------- in-process fakes
class InstantChatModel(BaseChatModel):
    """A zero-latency chat model: answers ``reply`` at once, in one chunk (streamed or not)."""

    reply: str = "An instant answer."

    @property
    def _llm_type(self) -> str:
        return "instant-fake"

    def _usage(self) -> Any:
        return {"input_tokens": 10, "output_tokens": 3, "total_tokens": 13}

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        message = AIMessage(content=self.reply, usage_metadata=self._usage())
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        # Without it LangChain runs _generate in a worker thread: a real provider's client
        # answers on the event loop, so the fake must too.
        return self._generate(messages, stop, **kwargs)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        yield ChatGenerationChunk(
            message=AIMessageChunk(content=self.reply, usage_metadata=self._usage())
        )

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        message = AIMessageChunk(content=self.reply, usage_metadata=self._usage())
        chunk = ChatGenerationChunk(message=message)
        if run_manager is not None:
            await run_manager.on_llm_new_token(self.reply, chunk=chunk)
        yield chunk


def register_instant_provider() -> None:
    """``fake:NAME`` models answer at once, in process (a ``PROVIDERS`` entry)."""
    from langgraph_moa.nodes.models.providers import PROVIDERS

    def instant(settings: ModelSettings) -> BaseChatModel:
        # Real sizes: the state and the prompts carry what real proposals and answers weigh.
        mean = round(statistics.mean(PROPOSAL_TOKENS))
        tokens = AGGREGATOR.tokens if settings.name == "aggregator" else mean
        return InstantChatModel(reply=text_of(tokens, settings.name))

    PROVIDERS["fake"] = instant


def instant_context(layers: int, proposers: int, **kw: Any) -> Context:
    register_instant_provider()
    return Context(
        layers=layers + 1,
        proposers=[f"fake:p{i}" for i in range(proposers)],
        aggregator="fake:aggregator",
        **kw,
    )
