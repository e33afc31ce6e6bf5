"""Staircase streaming (``Context.staircase``): the aggregator writes while the proposers do.

After Wang et al., "Staircase Streaming for Low-Latency Multi-Agent Inference" (arXiv 2510.05059).
One node runs the whole mixture, its calls side by side:

- layer 1 proposers stream their answers (``Growing`` texts, nodes/models/growing.py);
- each later layer's proposers and the aggregator are *writers*: a writer writes its answer in
  chunks. Chunk k is asked for once every unfinished input (a proposal of the layer before) has
  grown by the k-th size of ``Context.staircase_chunks`` since chunk k-1 was asked for (or
  finished), and is at most that many tokens long. Its request carries every input as it is so
  far, an unfinished one ending with the ``UNFINISHED`` marker, and continues the writer's answer
  so far (``ask_model(prefill=...)``: provider continuation or the fallback,
  nodes/models/continuation.py). When every input is complete, one last request finishes the
  answer (up to the writer's ``max_tokens`` in all). A chunk the model ends itself ("stop")
  ends the answer.
- So a later layer consumes the earlier layer's chunks as they come: layer 2's answers grow while
  layer 1's do, and the aggregator reads layer 2's.

The aggregator's chunks stream with ``ANSWER_TAG`` through ``stream_mode="messages"`` like the
standard answer (each chunk request has its own message id); a custom event
``{"event": "answer_chunk", ...}`` marks each request's start. Failures: a proposer or writer
that fails (or is cut by the quorum or the straggler grace) is dropped from later chunks; a layer
left with fewer than ``min_proposals`` answers fails the run. A chunk request that fails after
streaming part of its text keeps that text (it was shown) and the retry continues from it, so the
streamed answer is always every request's text in order. When the aggregator fails for good the
fallback aggregator (if any) writes the answer again, announced by ``answer_fallback``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from langchain_core.messages import AIMessage, AnyMessage
from langchain_core.runnables.config import (
    ensure_config,
    merge_configs,
    var_child_runnable_config,
)
from langgraph.config import get_stream_writer
from langgraph.constants import TAG_NOSTREAM
from langgraph.runtime import Runtime
from langgraph.types import Overwrite, StreamWriter
from typing_extensions import TypedDict

from langgraph_moa.nodes.aggregate import ANSWER_TAG, call_failure, failed_note, final_message
from langgraph_moa.nodes.context import Context, ModelSpec
from langgraph_moa.nodes.errors import AggregatorError, LayerFailedError
from langgraph_moa.nodes.models import CallFailedError, CallResult, ask_model, settings_for
from langgraph_moa.nodes.models.calls import BACKOFF_CAP_S
from langgraph_moa.nodes.models.continuation import continuation_of
from langgraph_moa.nodes.models.growing import Collector, Growing
from langgraph_moa.nodes.models.quorum import quorum_call
from langgraph_moa.nodes.records import (
    Answer,
    CallFailure,
    ChunkRequest,
    ErrorInfo,
    Proposal,
    Staircase,
    Usage,
    usage_of,
)

# Ends a proposal still being written, in the references of a chunk request.
UNFINISHED = "\n[unfinished: this response is still being written]"
# Failures worth another request (the call loop's rule, nodes/models/calls.py).
RETRIED = {"rate_limit", "server", "connection", "timeout", "stream"}


class StaircaseInput(TypedDict):
    messages: list[AnyMessage]


@dataclass
class _Source:
    """One proposal of a staircase run: its growing text, its task and its record."""

    growing: Growing
    record: Proposal
    task: asyncio.Task[None] | None = None


@dataclass
class _Written:
    """What a writer wrote: its text, its requests and their tokens."""

    text: str = ""
    requests: list[ChunkRequest] = field(default_factory=list)
    usage: Usage = field(
        default_factory=lambda: Usage(input_tokens=0, output_tokens=0, total_tokens=0)
    )
    message_id: str | None = None
    first_token_s: float | None = None


@dataclass
class _Run:
    ctx: Context
    messages: list[AnyMessage]
    emit: StreamWriter
    key: str  # the run's group key for the quorum (nodes/models/quorum.py)
    start: float = field(default_factory=time.perf_counter)
    # Requests and tokens of every writer but the aggregator (later-layer proposers).
    proposer_requests: int = 0
    proposer_usage: Usage = field(
        default_factory=lambda: Usage(input_tokens=0, output_tokens=0, total_tokens=0)
    )

    def since(self, at: float | None = None) -> float:
        return (at if at is not None else time.perf_counter()) - self.start


def _add(total: Usage, usage: Usage | None) -> None:
    if usage:
        total["input_tokens"] += usage["input_tokens"]
        total["output_tokens"] += usage["output_tokens"]
        total["total_tokens"] += usage["total_tokens"]


def _record(layer: int, index: int, spec: ModelSpec) -> Proposal:
    return Proposal(
        layer=layer,
        index=index,
        model=spec.model,
        text=None,
        usage=None,
        latency_s=0.0,
        attempts=0,
        error=None,
    )


@contextmanager
def _collecting(growing: Growing) -> Iterator[None]:
    """Model calls in this block (of this task) stream their pieces into ``growing``."""
    config = merge_configs(ensure_config(), {"callbacks": [Collector(growing)]})
    token = var_child_runnable_config.set(config)
    try:
        yield
    finally:
        var_child_runnable_config.reset(token)


# --- one writer --------------------------------------------------------------------------------


async def _write(
    run: _Run,
    spec: ModelSpec,
    inputs: Sequence[_Source],
    output: Growing,
    *,
    answer: bool,
) -> _Written:
    """Write ``spec``'s answer over ``inputs`` chunk by chunk into ``output`` (see the module)."""
    ctx, schedule = run.ctx, run.ctx.staircase_chunks
    settings = settings_for(spec, ctx)
    # Each request is tried once by the call loop; this loop retries, from the text shown.
    once = ctx.model_copy(update={"max_attempts": 1})
    tags = [ANSWER_TAG] if answer else [TAG_NOSTREAM]
    written = _Written()
    marks = [0] * len(inputs)
    k = 0
    while True:
        size = schedule[min(k, len(schedule) - 1)]
        waits = [s.growing.grown_to(marks[i] + size) for i, s in enumerate(inputs)]
        await asyncio.gather(*waits)
        final = all(s.growing.done for s in inputs)
        marks = [s.growing.pieces for s in inputs]
        references: list[str] = []
        sizes: list[int | None] = []
        for s in inputs:
            text = s.growing.text()
            sizes.append(None if s.growing.failed else len(text))
            if not s.growing.failed and text.strip():
                references.append(text if s.growing.done else text + UNFINISHED)
        left = settings.max_tokens - output.pieces
        if left <= 0:
            break
        chunk = left if final else min(size, left)
        so_far = output.text()
        request = ChunkRequest(
            index=len(written.requests),
            started_s=run.since(),
            ttft_s=None,
            latency_s=0.0,
            max_tokens=chunk,
            final=final,
            continuation=continuation_of(settings) if so_far else "first",
            answer_chars=len(so_far),
            proposals=sizes,
            unfinished=sum(1 for s in inputs if not s.growing.done),
            text="",
            finish_reason=None,
            usage=None,
        )
        if answer:
            run.emit({"event": "answer_chunk", **request})
        result = await _chunk(
            run, replace(settings, max_tokens=chunk), once, references, output, tags=tags
        )
        request["latency_s"] = run.since() - request["started_s"]
        request["text"] = output.text()[len(so_far) :]
        if result is not None:
            request["ttft_s"] = result.ttft_s
            request["usage"] = usage_of(result.message)
            request["finish_reason"] = (result.message.response_metadata or {}).get("finish_reason")
            written.message_id = result.message.id
            _add(written.usage, request["usage"])
        written.requests.append(request)
        if result is None or final or request["finish_reason"] != "length":
            break  # the model ended its answer (or had nothing more to say)
        k += 1
    written.text = output.text()
    written.first_token_s = run.since(output.first_at) if output.first_at is not None else None
    return written


async def _chunk(
    run: _Run,
    settings: Any,
    ctx: Context,
    references: list[str],
    output: Growing,
    *,
    tags: list[str],
) -> CallResult | None:
    """One chunk, retried from the text shown; None when the model had nothing more to add."""
    for attempt in range(1, run.ctx.max_attempts + 1):
        so_far = output.text()
        try:
            with _collecting(output):
                return await ask_model(
                    settings,
                    ctx,
                    run.messages,
                    references,
                    tags=tags,
                    stream=True,
                    prefill=so_far or None,
                )
        except CallFailedError as exc:
            if exc.kind == "empty" and so_far:
                return None  # a continuation with nothing to add: the answer is complete
            if exc.kind not in RETRIED or attempt == run.ctx.max_attempts:
                raise CallFailedError(
                    exc.kind,
                    exc.message,
                    attempt,
                    exc.latency_s,
                    retry_after_s=exc.retry_after_s,
                ) from None
            wait = min(BACKOFF_CAP_S, run.ctx.retry_base_s * 2 ** (attempt - 1))
            await asyncio.sleep(wait * random.uniform(0.5, 1.0))
    raise AssertionError("unreachable")


# --- proposers ---------------------------------------------------------------------------------


def _finished(run: _Run, source: _Source, started: float, error: ErrorInfo | None) -> None:
    record = source.record
    record["latency_s"] = time.perf_counter() - started
    if error is not None:
        record["error"], record["text"] = error, None
        source.growing.finish(failed=True)
    else:
        source.growing.finish(text=record["text"])
    run.emit({"event": "proposal", **record})


async def _propose(run: _Run, source: _Source, spec: ModelSpec, sample: int) -> None:
    """A layer-1 proposer: one streamed call."""
    ctx, layer = run.ctx, source.record["layer"]
    started, error = time.perf_counter(), None
    with _collecting(source.growing):
        call = ask_model(
            settings_for(spec, ctx),
            ctx,
            run.messages,
            None,
            tags=[TAG_NOSTREAM],
            stream=True,
            deadline_s=ctx.layer_deadline,
            sample=sample,
        )
        try:
            result = await quorum_call(
                ctx, layer, f"{run.key}:{layer}", call, lambda: source.record["attempts"]
            )
        except CallFailedError as exc:
            source.record["attempts"] = exc.attempts
            error = exc.info()
        else:
            source.record["text"], source.record["usage"] = result.text, usage_of(result.message)
            source.record["attempts"] = result.attempts
    _finished(run, source, started, error)


async def _written_call(
    run: _Run, spec: ModelSpec, inputs: Sequence[_Source], output: Growing
) -> CallResult:
    start = time.perf_counter()
    written = await _write(run, spec, inputs, output, answer=False)
    run.proposer_requests += len(written.requests)
    _add(run.proposer_usage, written.usage)
    message = AIMessage(content=written.text, usage_metadata=dict(written.usage))
    return CallResult(
        text=written.text,
        message=message,
        attempts=len(written.requests),
        latency_s=time.perf_counter() - start,
        ttft_s=written.first_token_s,
    )


async def _propose_written(
    run: _Run, source: _Source, spec: ModelSpec, inputs: Sequence[_Source]
) -> None:
    """A later-layer proposer: a writer over the layer before."""
    layer, started, error = source.record["layer"], time.perf_counter(), None
    call = _written_call(run, spec, inputs, source.growing)
    try:
        result = await quorum_call(
            run.ctx, layer, f"{run.key}:{layer}", call, lambda: source.record["attempts"]
        )
    except CallFailedError as exc:
        source.record["attempts"] = exc.attempts
        error = exc.info()
    else:
        if result.text.strip():
            source.record["text"], source.record["usage"] = result.text, usage_of(result.message)
            source.record["attempts"] = source.record["requests"] = result.attempts
        else:
            error = ErrorInfo(kind="empty", message="answered with empty text")
    _finished(run, source, started, error)


async def _check_layer(run: _Run, layer: int, sources: list[_Source]) -> None:
    """Fail the run when the layer ends with fewer than ``min_proposals`` answers."""
    await asyncio.gather(*(s.growing.grown_to(2**62) for s in sources))
    ok = sum(1 for s in sources if not s.growing.failed)
    if ok < min(run.ctx.min_proposals, len(sources)):
        raise LayerFailedError(layer, [s.record for s in sources], run.ctx.min_proposals)


# --- the node ----------------------------------------------------------------------------------


async def _answer(
    run: _Run, inputs: list[_Source]
) -> tuple[ModelSpec, _Written, CallFailure | None]:
    ctx, spec = run.ctx, run.ctx.aggregator
    try:
        return spec, await _write(run, spec, inputs, Growing(), answer=True), None
    except CallFailedError as exc:
        fallback = ctx.fallback_aggregator
        failure = call_failure(spec, exc)
        if fallback is None:
            raise AggregatorError(f"aggregator {failed_note(spec, exc)}", [failure]) from None
        run.emit(
            {
                "event": "answer_fallback",
                "model": fallback.model,
                "failed_model": spec.model,
                "kind": exc.kind,
                "message": exc.message,
            }
        )
        try:
            return fallback, await _write(run, fallback, inputs, Growing(), answer=True), failure
        except CallFailedError as exc2:
            raise AggregatorError(
                f"aggregator {failed_note(spec, exc)}; fallback aggregator "
                f"{failed_note(fallback, exc2)}",
                [failure, call_failure(fallback, exc2)],
            ) from None


def _run_key(runtime: Runtime[Context]) -> str:
    info = runtime.execution_info
    return f"{info.checkpoint_id}:stair" if info else f"{id(runtime)}:{time.time_ns()}:stair"


async def staircase(state: StaircaseInput, runtime: Runtime[Context]) -> dict[str, Any]:
    ctx = runtime.context  # resolved by graphs/adapt.py
    run = _Run(ctx, list(state["messages"]), get_stream_writer(), _run_key(runtime))
    layers: list[list[_Source]] = []
    tasks: list[asyncio.Task[None]] = []
    answer: asyncio.Task[tuple[ModelSpec, _Written, CallFailure | None]] | None = None
    try:
        for layer in range(1, ctx.layers):
            specs = ctx.proposers_of(layer)
            sources = [_Source(Growing(), _record(layer, i, s)) for i, s in enumerate(specs)]
            for i, (spec, source) in enumerate(zip(specs, sources, strict=True)):
                if layer == 1:
                    work = _propose(run, source, spec, specs[:i].count(spec))
                else:
                    work = _propose_written(run, source, spec, layers[-1])
                source.task = asyncio.create_task(work)
                tasks.append(source.task)
            tasks.append(asyncio.create_task(_check_layer(run, layer, sources)))
            layers.append(sources)
        answer = asyncio.create_task(_answer(run, layers[-1]))
        watched = [answer, *tasks]
        while not answer.done():
            done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            watched = [t for t in watched if not t.done()]
        spec, written, failure = answer.result()
        # An answer the model ended before every proposal did no longer needs them.
        for sources in layers:
            for source in sources:
                if not source.growing.done:
                    source.record["error"] = ErrorInfo(
                        kind="cancelled", message="cancelled: the answer was complete without it"
                    )
                    source.record["text"] = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for task in [*tasks, *([answer] if answer is not None else [])]:
            task.cancel()
    usage = written.usage
    record = Answer(
        model=spec.model,
        usage=usage if written.requests else None,
        latency_s=run.since(),
        ttft_s=written.first_token_s,
        attempts=len(written.requests),
        fallback=failure is not None,
        aggregator_failure=failure,
        requests=len(written.requests),
    )
    total = Usage(**run.proposer_usage)
    _add(total, usage)
    return {
        "messages": [final_message(written.text, written.message_id, usage, spec.model)],
        "answer": record,
        "layers": Overwrite([[s.record for s in sources] for sources in layers]),
        "proposals": Overwrite([]),
        "references": None,
        "staircase": Staircase(
            continuation=continuation_of(settings_for(spec, ctx)),
            requests=written.requests,
            aggregator_requests=len(written.requests),
            proposer_requests=run.proposer_requests,
            input_tokens=total["input_tokens"],
            output_tokens=total["output_tokens"],
        ),
    }
