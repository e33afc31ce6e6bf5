"""Staircase streaming (``Context.staircase``): the aggregator writes while the proposers do.

After Wang et al., "Staircase Streaming for Low-Latency Multi-Agent Inference" (arXiv 2510.05059).
The mixture runs as nodes of one superstep, side by side (graphs/moa.py): a ``staircase_propose``
node per proposer of every layer and one ``staircase_aggregate`` node. They share one run
(``_Run``, below), whose calls are:

- layer 1 proposers stream their answers (``Growing`` texts, nodes/models/growing.py);
- each later layer's proposers and the aggregator are *writers*: a writer writes its answer in
  chunks. Chunk k is asked for once every unfinished input (a proposal of the layer before) has
  grown by the k-th size of ``Context.staircase_chunks`` since chunk k-1 was asked for (or
  finished), and is at most that many tokens long. Its request carries every input as it is so
  far, an unfinished one ending with the ``UNFINISHED`` marker, and continues the writer's answer
  so far (``ask_model(prefill=...)``: provider continuation or the fallback,
  nodes/models/continuation.py). When every input is complete, one last request finishes the
  answer (up to the writer's ``max_tokens`` in all). A chunk the model ends itself ("stop")
  ends the answer, and so does the aggregator's answer reaching one of the run's stop sequences
  (sent with each of its requests, never a proposer's: nodes/stops.py), which the provider may
  ignore or which may straddle two chunks.
- So a later layer consumes the earlier layer's chunks as they come: layer 2's answers grow while
  layer 1's do, and the aggregator reads layer 2's.

The aggregator's chunks stream with ``ANSWER_TAG`` through ``stream_mode="messages"`` like the
standard answer (each chunk request has its own message id); a custom event
``{"event": "answer_chunk", ...}`` marks each request's start. Failures: a proposer or writer
that fails (or is cut by the quorum or the straggler grace) is dropped from later chunks; a layer
left with fewer than ``min_proposals`` answers fails the run. A chunk request that fails after
streaming part of its text keeps that text (it was shown) and the retry continues from it, so the
streamed answer is always every request's text in order. When the aggregator fails for good the
fallback aggregator (if any) writes the answer again, announced by ``answer_fallback``. A step
resumed after it failed (a checkpointer's thread run again) asks no finished proposer again: it
takes what the step's nodes saved (``_resume``).

A proposal answered by the call cache (a resumed ``moa batch`` or ``moa compare``) arrives whole;
it is replayed to its readers piece by piece as they ask for it (``Growing.replay``), so the
aggregator is still asked as in a staircase run: over unfinished proposals, chunk by chunk.

**Why nodes that wait on each other cannot deadlock.** LangGraph runs a superstep's tasks in at
most ``max_concurrency`` workers at a time (a thread pool for ``invoke``/``stream``, whose default
size is small; a semaphore for ``ainvoke``/``astream``), so a node may start only after others
ended, or never run while a sibling waits for it. So no node waits for another *node*: a call is
started by whichever node first needs it: the proposer's own node, or a writer that reads it
(the aggregator, a later layer's proposer) when LangGraph has not started that node yet. Calls
run as tasks of the run on the event loop, beside the nodes; each node waits only for calls that
are running. A proposer node returns its proposal whoever started its call; the aggregator node
returns the answer, every layer and the staircase record once every call has ended. The
aggregator is the first task of the step, so with ``max_concurrency=1`` it starts every call and
the answer still streams while the proposals do.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, NotRequired

from langchain_core.messages import AIMessage, AnyMessage
from langchain_core.runnables.config import ensure_config, merge_configs
from langgraph.config import get_stream_writer
from langgraph.constants import TAG_NOSTREAM
from langgraph.runtime import Runtime
from langgraph.types import Overwrite
from typing_extensions import TypedDict

from langgraph_moa.nodes.aggregate import ANSWER_TAG, call_failure, failed_note, final_message
from langgraph_moa.nodes.caps import chunk_requests
from langgraph_moa.nodes.childconfig import calls_with
from langgraph_moa.nodes.context import Context, ModelSpec
from langgraph_moa.nodes.errors import AggregatorError, LayerFailedError
from langgraph_moa.nodes.models import CallFailedError, CallResult, ask_model, settings_for
from langgraph_moa.nodes.models.calls import (
    RETRIED_KINDS,
    RETRY_AFTER_CAP_S,
    Sent,
    retry_wait_s,
)
from langgraph_moa.nodes.models.continuation import continuation_of
from langgraph_moa.nodes.models.growing import Collector, Growing, pieces_of
from langgraph_moa.nodes.models.quorum import quorum_call
from langgraph_moa.nodes.models.resources import RESOURCES
from langgraph_moa.nodes.propose import ProposeTask
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
from langgraph_moa.nodes.resumed import saved_writes
from langgraph_moa.nodes.stops import StopAt, reaches, stops_of

# Why a proposal the step's failure cut short has no text (a resume asks for it again).
RUN_FAILED = "cancelled: the run failed"
# Ends a proposal still being written, in the references of a chunk request.
UNFINISHED = "\n[unfinished: this response is still being written]"


class StaircaseInput(TypedDict):
    messages: list[AnyMessage]
    stop: NotRequired[list[str] | str | None]


@dataclass
class _Source:
    """One proposal of a staircase run: its growing text, its record, and its call (a task of the
    run, started by ``_Run.claim``)."""

    growing: Growing
    record: Proposal
    work: Callable[[], Coroutine[Any, Any, None]] | None = None
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
    cached: int = 0  # requests the call cache answered (no request made)

    def made(self) -> int:
        """The requests really made (0: the whole text came from the call cache)."""
        return len(self.requests) - self.cached


@dataclass
class _Run:
    """One staircase run, shared by the nodes of its superstep (see the module)."""

    ctx: Context
    messages: list[AnyMessage]
    key: str  # the superstep's; also the run's group key for the quorum (nodes/models/quorum.py)
    # The graph run's ``RunControl``, held so that its id (in ``key``) names no other run while
    # this one is kept.
    control: object = None
    start: float = field(default_factory=time.perf_counter)
    layers: list[list[_Source]] = field(default_factory=list)
    nodes: int = 0  # the step's nodes LangGraph runs: one per proposer, and the aggregator
    # (on a resume, only those that saved nothing: ``_resume``)
    left: int = 0  # nodes that have ended
    closed: bool = False  # the answer is complete, or the step failed: no call starts any more
    answered: bool = False  # resumed after the aggregator's answer was saved: nothing to do
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # what was saved is applied
    crash: BaseException | None = None  # an error a call raised (not a model failure)
    crashed: asyncio.Event = field(default_factory=asyncio.Event)
    # Requests and tokens of every writer but the aggregator (later-layer proposers).
    proposer_requests: int = 0
    proposer_usage: Usage = field(
        default_factory=lambda: Usage(input_tokens=0, output_tokens=0, total_tokens=0)
    )

    def since(self, at: float | None = None) -> float:
        return (at if at is not None else time.perf_counter()) - self.start

    def claim(self, source: _Source) -> asyncio.Task[None] | None:
        """``source``'s call, started now if nobody has started it (as a task of the caller's
        context: its node's callbacks and stream writer); None once the run is closed."""
        if source.task is None and source.work is not None and not self.closed:
            source.task = asyncio.create_task(_call(self, source))
        return source.task


async def _call(run: _Run, source: _Source) -> None:
    """A source's call; an error that is not a model's failure (those are recorded) goes to the
    aggregator node, which raises it."""
    assert source.work is not None
    try:
        await source.work()
    except Exception as exc:
        if run.crash is None:
            run.crash = exc
            run.crashed.set()
    finally:
        if not source.growing.done:
            source.growing.finish(failed=True)


def _close(run: _Run, why: str) -> None:
    """No call is needed any more: cancel those running, record what never finished."""
    run.closed = True
    for sources in run.layers:
        for source in sources:
            if source.task is not None:
                source.task.cancel()
            if not source.growing.done:
                source.record["error"] = ErrorInfo(kind="cancelled", message=why)
                source.record["text"] = source.record["usage"] = None
                source.growing.finish(failed=True)


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
    with calls_with(config):
        yield


# --- one writer --------------------------------------------------------------------------------


async def _write(
    run: _Run,
    spec: ModelSpec,
    inputs: Sequence[_Source],
    output: Growing,
    *,
    answer: bool,
    stop: Sequence[str] = (),
) -> _Written:
    """Write ``spec``'s answer over ``inputs`` chunk by chunk into ``output`` (see the module);
    ``stop``: the aggregator's stop sequences."""
    ctx, schedule = run.ctx, run.ctx.staircase_chunks
    settings = settings_for(spec, ctx)
    # Each request is tried once by the call loop; this loop retries, from the text shown.
    once = ctx.model_copy(update={"max_attempts": 1})
    tags = [ANSWER_TAG] if answer else [TAG_NOSTREAM]
    written = _Written()
    for source in inputs:  # what it reads is running, whichever node LangGraph started
        run.claim(source)
    marks = [0] * len(inputs)
    # The requests the schedule allows for max_tokens, as the servers' cost cap counts them
    # (nodes/caps.py): a provider streaming several tokens per piece would otherwise take more.
    limit = chunk_requests(schedule, settings.max_tokens)
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
        last = final or len(written.requests) + 1 >= limit
        chunk = left if last else min(size, left)
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
            get_stream_writer()({"event": "answer_chunk", **request})
        result = await _chunk(
            run, replace(settings, max_tokens=chunk), once, references, output, tags=tags, stop=stop
        )
        request["latency_s"] = run.since() - request["started_s"]
        request["text"] = output.text()[len(so_far) :]
        if result is not None:
            request["ttft_s"] = result.ttft_s
            request["usage"] = usage_of(result.message)
            request["finish_reason"] = (result.message.response_metadata or {}).get("finish_reason")
            written.message_id = result.message.id
            written.cached += result.attempts == 0
            _add(written.usage, request["usage"])
        written.requests.append(request)
        if result is None or last or request["finish_reason"] != "length":
            break  # the model ended its answer (or had nothing more to say), or it was the last
        if reaches(output.text(), stop):
            break  # what comes after a stop sequence is not wanted
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
    stop: Sequence[str],
) -> CallResult | None:
    """One chunk, retried from the text shown; None when the model had nothing more to add."""
    for attempt in range(1, run.ctx.max_attempts + 1):
        so_far = output.text()
        try:
            with _collecting(output):
                result = await ask_model(
                    settings,
                    ctx,
                    run.messages,
                    references,
                    tags=tags,
                    stream=True,
                    prefill=so_far or None,
                    stop=stop,
                )
        except CallFailedError as exc:
            if exc.kind == "empty" and so_far:
                return None  # a continuation with nothing to add: the answer is complete
            asked = exc.retry_after_s
            too_long = asked is not None and asked > RETRY_AFTER_CAP_S  # as ask_model's own
            if exc.kind not in RETRIED_KINDS or attempt == run.ctx.max_attempts or too_long:
                raise CallFailedError(
                    exc.kind, exc.message, attempt, exc.latency_s, retry_after_s=asked
                ) from None
            await asyncio.sleep(retry_wait_s(attempt, run.ctx.retry_base_s, asked))
        else:
            if result.attempts == 0:  # answered by the call cache: nothing streamed
                # As many pieces as the answer's tokens (what streaming counted), so the rest of
                # the answer is asked for as in the run that cached it.
                usage = usage_of(result.message)
                tokens = usage["output_tokens"] if usage else len(pieces_of(result.text))
                output.add(result.text, max(tokens, 1))
            return result
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
    get_stream_writer()({"event": "proposal", **record})


async def _propose(run: _Run, source: _Source, spec: ModelSpec, sample: int) -> None:
    """A layer-1 proposer: one streamed call."""
    ctx, layer = run.ctx, source.record["layer"]
    started, error, sent = time.perf_counter(), None, Sent()
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
            sent=sent,
        )
        try:
            result = await quorum_call(ctx, layer, f"{run.key}:{layer}", call, lambda: sent.count)
        except CallFailedError as exc:
            source.record["attempts"] = exc.attempts
            error = exc.info()
        else:
            source.record["text"], source.record["usage"] = result.text, usage_of(result.message)
            source.record["attempts"] = result.attempts
            if result.attempts == 0:
                # Answered by the call cache, whole: its readers get it as it would have
                # streamed, piece by piece as they ask, so they still write over it unfinished.
                source.growing.replay(result.text)
                await source.growing.ended()
    _finished(run, source, started, error)


async def _written_call(
    run: _Run, source: _Source, spec: ModelSpec, inputs: Sequence[_Source]
) -> CallResult:
    start = time.perf_counter()
    written = await _write(run, spec, inputs, source.growing, answer=False)
    run.proposer_requests += len(written.requests)
    source.record["requests"] = len(written.requests)
    _add(run.proposer_usage, written.usage)
    message = AIMessage(content=written.text, usage_metadata=dict(written.usage))
    return CallResult(
        text=written.text,
        message=message,
        attempts=written.made(),
        latency_s=time.perf_counter() - start,
        ttft_s=written.first_token_s,
    )


async def _propose_written(
    run: _Run, source: _Source, spec: ModelSpec, inputs: Sequence[_Source]
) -> None:
    """A later-layer proposer: a writer over the layer before."""
    layer, started, error = source.record["layer"], time.perf_counter(), None
    call = _written_call(run, source, spec, inputs)
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
            source.record["attempts"] = result.attempts
        else:
            error = ErrorInfo(kind="empty", message="answered with empty text")
    _finished(run, source, started, error)


async def _check_layer(run: _Run, layer: int, sources: list[_Source]) -> None:
    """Fail the run when the layer ends with fewer than ``min_proposals`` answers."""
    await asyncio.gather(*(s.growing.ended() for s in sources))
    ok = sum(1 for s in sources if not s.growing.failed)
    if ok < min(run.ctx.min_proposals, len(sources)):
        raise LayerFailedError(layer, [s.record for s in sources], run.ctx.min_proposals)


# --- the node ----------------------------------------------------------------------------------


async def _answer(
    run: _Run, inputs: list[_Source], stop: Sequence[str]
) -> tuple[ModelSpec, _Written, CallFailure | None]:
    ctx, spec = run.ctx, run.ctx.aggregator
    try:
        return spec, await _write(run, spec, inputs, Growing(), answer=True, stop=stop), None
    except CallFailedError as exc:
        fallback = ctx.fallback_aggregator
        failure = call_failure(spec, exc)
        if fallback is None:
            raise AggregatorError(f"aggregator {failed_note(spec, exc)}", [failure]) from None
        get_stream_writer()(
            {
                "event": "answer_fallback",
                "model": fallback.model,
                "failed_model": spec.model,
                "kind": exc.kind,
                "message": exc.message,
            }
        )
        try:
            written = await _write(run, fallback, inputs, Growing(), answer=True, stop=stop)
            return fallback, written, failure
        except CallFailedError as exc2:
            raise AggregatorError(
                f"aggregator {failed_note(spec, exc)}; fallback aggregator "
                f"{failed_note(fallback, exc2)}",
                [failure, call_failure(fallback, exc2)],
            ) from None


# --- the superstep's nodes ---------------------------------------------------------------------

# Runs in flight by superstep run (``_run_key``), made by the step's first node.
_RUNS: dict[str, _Run] = RESOURCES.staircases
# Runs no longer in flight (the aggregator's node ended, or the step failed) whose step has nodes
# LangGraph has not started yet: such a node finds its run closed instead of starting its call
# again. A run is dropped when the step's last node ends; but a failed or cancelled step's
# LangGraph cancels nodes before they start (async), or the step fails outside any of them, so a
# run cannot wait for all of them: it is dropped at the latest once ``_ENDED_KEPT`` runs ended
# after it.
_ENDED: OrderedDict[str, _Run] = RESOURCES.staircases_ended
_ENDED_KEPT = 64


def active_runs() -> int:
    """Staircase runs in flight (tests, the memory benchmark: 0 when idle)."""
    return len(_RUNS)


def _run_key(runtime: Runtime[Context]) -> str:
    # Every task of a superstep shares its checkpoint id (a fresh id per step of every run,
    # checkpointer or not; LangGraph always sets it in a graph), but a resume of the step runs
    # it again under the same id: the graph run's ``RunControl`` (one per ``invoke``/``stream``,
    # shared with its subgraphs) tells this run of the step from an earlier, failed one.
    info = runtime.execution_info
    assert info is not None, "a staircase node runs in a LangGraph graph"
    return f"{info.checkpoint_id}:{id(runtime.control):x}:stair"


def _new_run(ctx: Context, messages: list[AnyMessage], key: str, control: object) -> _Run:
    run = _Run(ctx, messages, key, control)
    for layer in range(1, ctx.layers):
        specs = ctx.proposers_of(layer)
        sources = [_Source(Growing(), _record(layer, i, s)) for i, s in enumerate(specs)]
        for i, (spec, source) in enumerate(zip(specs, sources, strict=True)):
            if layer == 1:
                source.work = partial(_propose, run, source, spec, specs[:i].count(spec))
            else:
                source.work = partial(_propose_written, run, source, spec, run.layers[-1])
        run.layers.append(sources)
    run.nodes = sum(len(sources) for sources in run.layers) + 1
    return run


def _resume(run: _Run, saved: Sequence[tuple[str, str, Any]]) -> None:
    """Take what an earlier run of this step saved (nodes/resumed.py): LangGraph runs again only
    the nodes with nothing saved, so the run waits for those alone. A saved proposal is used as
    it is, never asked for again, except one the step's failure cut short, whose call the run
    makes again (started by its readers: its own node, which returned it, does not run)."""
    kept: dict[tuple[int, int], Proposal] = {}
    for _task, channel, value in saved:
        if channel == "answer":  # the aggregator finished: only proposer nodes run, for nothing
            run.answered = run.closed = True
        elif channel == "proposals" and isinstance(value, list):  # a proposer node's write
            kept.update(((r["layer"], r["index"]), r) for r in value)
    sources = [s for layer in run.layers for s in layer]
    run.nodes = sum(1 for s in sources if _at(s.record) not in kept) + (not run.answered)
    for source in sources:
        record = kept.get(_at(source.record))
        if record is None or run.answered or _cut(record):
            continue
        source.record, source.work = record, None
        if record["error"] is None:
            source.growing.finish(text=record["text"])
        else:
            source.growing.finish(failed=True)


def _at(record: Proposal) -> tuple[int, int]:
    return record["layer"], record["index"]


def _cut(record: Proposal) -> bool:
    error = record["error"]
    return error is not None and error["kind"] == "cancelled" and error["message"] == RUN_FAILED


def _end(run: _Run) -> None:
    """The run is no longer in flight; kept for its nodes still to come."""
    if _RUNS.get(run.key) is run:
        del _RUNS[run.key]
        if run.left < run.nodes:
            _ENDED[run.key] = run
            while len(_ENDED) > _ENDED_KEPT:
                _ENDED.popitem(last=False)


@asynccontextmanager
async def _joined(
    runtime: Runtime[Context], messages: list[AnyMessage], *, ends: bool = False
) -> AsyncIterator[_Run]:
    """This node's superstep's run (made by the step's first node). ``ends``: the run is no
    longer in flight once this node ends (the aggregator's)."""
    key = _run_key(runtime)
    run = _RUNS.get(key) or _ENDED.get(key)
    made = run is None
    if run is None:
        run = _RUNS[key] = _new_run(runtime.context, messages, key, runtime.control)
    try:
        if made:
            try:
                _resume(run, await saved_writes(runtime))
            finally:
                run.ready.set()
            if run.answered:
                _end(run)
        await run.ready.wait()
        yield run
    except BaseException:
        # The step fails or is cancelled: none of its calls is needed any more.
        _close(run, RUN_FAILED)
        _end(run)
        raise
    finally:
        run.left += 1
        if run.left >= run.nodes:
            for runs in (_RUNS, _ENDED):
                if runs.get(key) is run:
                    del runs[key]
        elif ends:
            _end(run)


async def staircase_propose(task: ProposeTask, runtime: Runtime[Context]) -> dict[str, Any]:
    """One proposer of a staircase run: its call (started here unless a reader started it
    first), its proposal once the call has ended."""
    async with _joined(runtime, task["messages"]) as run:
        if run.answered:
            return {}  # the saved answer holds every layer as the aggregator read it
        source = run.layers[task["layer"] - 1][task["index"]]
        call = run.claim(source)
        if call is not None:
            await asyncio.wait([call])  # ends when the call does, however (never raises)
        # Also written whole, in order, by the aggregator node as ``layers``.
        return {"proposals": [source.record]}


async def staircase_aggregate(state: StaircaseInput, runtime: Runtime[Context]) -> dict[str, Any]:
    """The aggregator of a staircase run: its answer, written while the proposals grow."""
    stop = stops_of(state.get("stop"))
    async with _joined(runtime, state["messages"], ends=True) as run:
        spec, written, failure = await _aggregate(run, stop)
    ctx = run.ctx
    usage = written.usage
    record = Answer(
        model=spec.model,
        usage=usage if written.requests else None,
        latency_s=run.since(),
        ttft_s=written.first_token_s,
        attempts=written.made(),
        fallback=failure is not None,
        aggregator_failure=failure,
        requests=len(written.requests),
    )
    total = Usage(**run.proposer_usage)
    _add(total, usage)
    return {
        "messages": [
            final_message(StopAt(stop).cut(written.text), written.message_id, usage, spec.model)
        ],
        "answer": record,
        "layers": Overwrite([[s.record for s in sources] for sources in run.layers]),
        # The proposer nodes' writes of this step: in ``layers`` now.
        "proposals": Overwrite([]),
        "references": None,
        "turn_stop": None,  # done with (see aggregate.py)
        "staircase": Staircase(
            continuation=continuation_of(settings_for(spec, ctx)),
            requests=written.requests,
            aggregator_requests=len(written.requests),
            proposer_requests=run.proposer_requests,
            input_tokens=total["input_tokens"],
            output_tokens=total["output_tokens"],
        ),
    }


async def _aggregate(
    run: _Run, stop: Sequence[str]
) -> tuple[ModelSpec, _Written, CallFailure | None]:
    """The answer, once written; every call of the run has ended when it returns."""
    checks = [
        asyncio.create_task(_check_layer(run, layer, sources))
        for layer, sources in enumerate(run.layers, start=1)
    ]
    answer = asyncio.create_task(_answer(run, run.layers[-1], stop))
    crashed = asyncio.create_task(run.crashed.wait())
    try:
        watched: set[asyncio.Task[Any]] = {answer, crashed, *checks}
        while not answer.done():
            done, watched = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            if run.crash is not None:
                raise run.crash
            for task in done:
                if task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        result = answer.result()
        # An answer the model ended before every proposal did no longer needs them.
        _close(run, "cancelled: the answer was complete without it")
        calls = [s.task for sources in run.layers for s in sources if s.task is not None]
        await asyncio.gather(*calls, return_exceptions=True)
        return result
    finally:
        for task in (answer, crashed, *checks):
            task.cancel()
