"""Plain, JSON-serialisable records kept in graph state (they survive checkpoints and the API).

Plain data only, no LangChain: errors.py builds its records from these, and ``moa --help``
imports errors.py without loading LangChain.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal, NotRequired

from typing_extensions import TypedDict

ErrorKind = Literal[
    "timeout",  # an attempt took longer than its timeout
    "rate_limit",  # HTTP 429
    "server",  # HTTP 5xx, 408, 409
    "connection",  # could not connect, or the connection dropped before any answer
    "client",  # any other HTTP 4xx: bad request, bad key, unknown model (never retried)
    "stream",  # the streamed answer broke off before the model said it was done
    "empty",  # the model answered with empty text
    "deadline",  # missed Context.layer_deadline (retries and waits included)
    "context",  # the prompt does not fit the model's context window (nothing sent)
    "too_large",  # the response went past what its max_tokens allows: cut (never retried)
    "tool_call",  # called an unknown tool, with arguments not matching its schema, or any tool
    # where none was given (a proposer, an aggregator bound to no tools)
    "cancelled",  # cut by the layer's straggler quorum (nodes/models/quorum.py)
    "straggler",  # the last of its layer, cut after Context.straggler_grace (models/quorum.py)
    "other",  # anything else (the message says what)
]
"""Why a model call failed: records, call errors and the CLI all use these names."""


class Usage(TypedDict):
    input_tokens: int
    output_tokens: int
    total_tokens: int


class ErrorInfo(TypedDict):
    kind: ErrorKind
    message: str
    # Seconds the provider asked to wait (Retry-After) in its last refusal, if it asked.
    retry_after_s: NotRequired[float]


class Proposal(TypedDict):
    """One proposer's response in one layer."""

    layer: int  # 1-based proposer layer
    index: int  # position in the layer's proposer list
    model: str  # "provider:model"
    text: str | None  # None when the call failed
    usage: Usage | None
    latency_s: float
    attempts: int  # requests made; 0 with text = answered from the call cache (moa batch)
    error: ErrorInfo | None
    # A later-layer staircase proposer: the chunk requests that wrote it, each a call of its own
    # (its own prompt), all in ``usage``. Absent: one call.
    requests: NotRequired[int]


class CallFailure(TypedDict):
    """A model call that failed for good."""

    model: str
    error: ErrorInfo
    attempts: int


class Answer(TypedDict):
    """The aggregator's call: which model wrote the final answer and what it cost."""

    model: str  # the model that wrote the answer: the aggregator, or its fallback
    usage: Usage | None
    latency_s: float
    ttft_s: float | None
    attempts: int  # attempts of the call that answered; 0 = answered from the call cache
    fallback: bool  # True when Context.fallback_aggregator wrote the answer
    aggregator_failure: CallFailure | None  # why the aggregator did not, when fallback is True
    # Staircase: the chunk requests that wrote the answer, each a call of its own (its own
    # prompt), all in ``usage``. Absent: one call.
    requests: NotRequired[int]


class ChunkRequest(TypedDict):
    """One request of a staircase writer (the aggregator, or a later-layer proposer)."""

    index: int  # 0-based, in the order the requests were made
    started_s: float  # from the start of the staircase run
    ttft_s: float | None  # from started_s to the chunk's first token
    latency_s: float
    max_tokens: int
    final: bool  # the last request, made once the proposals it reads were complete
    continuation: str  # "first", "prefill" (provider continuation) or "instruct" (fallback)
    answer_chars: int  # characters of the answer so far it continued
    proposals: list[int | None]  # characters of each proposal it read; None: dropped (failed)
    unfinished: int  # how many of those were still being written
    text: str  # what this request wrote (the answer is these, in order)
    finish_reason: str | None
    usage: Usage | None


class Staircase(TypedDict):
    """A staircase run (``Context.staircase``): the aggregator's requests and what they cost."""

    continuation: str  # how the aggregator continued its answer: "prefill" or "instruct"
    requests: list[ChunkRequest]  # the aggregator's, in order
    # Requests and tokens of every staircase writer, later-layer proposers included.
    aggregator_requests: int
    proposer_requests: int
    input_tokens: int
    output_tokens: int


def failure_note(message: str, attempts: int, latency_s: float) -> str:
    """A failure as users see it: why, how many attempts, and the real time spent in all."""
    return f"{message} ({attempts} attempt{'s' if attempts != 1 else ''}, {latency_s:.1f} s)"


def usage_of(message: Any) -> Usage | None:
    """Token usage reported with a LangChain message, if any."""
    meta = getattr(message, "usage_metadata", None)
    if not meta:
        return None
    return Usage(
        input_tokens=int(meta.get("input_tokens", 0)),
        output_tokens=int(meta.get("output_tokens", 0)),
        total_tokens=int(meta.get("total_tokens", 0)),
    )


def tally(calls: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """Calls and tokens per model, from the records of the calls (a ``Proposal`` or ``Answer``:
    its ``model``, ``usage`` and ``requests``): every usage total of the project (a run, a batch
    item, a server response, ChatMoA's usage) is counted here."""
    totals: dict[str, dict[str, int]] = {}
    for call in calls:
        model, usage = call["model"], call["usage"]
        row = totals.setdefault(
            model, {"calls": 0, "input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
        )
        row["calls"] += int(call.get("requests", 1))
        for key in ("input_tokens", "output_tokens", "total_tokens"):
            row[key] += int(usage[key]) if usage else 0
    return totals


def usage_by_model(
    layers: list[list[Proposal]], answer: Answer | None
) -> dict[str, dict[str, int]]:
    """Calls and tokens per model over a whole run (proposers of every layer + aggregator)."""
    calls: list[Mapping[str, Any]] = [p for lay in layers for p in lay]
    if answer is not None:
        calls.append(answer)
    return tally(calls)


def total_usage(layers: list[list[Proposal]], answer: Answer | None) -> Usage:
    """Tokens of every call of a run (every proposer of every layer + the aggregator)."""
    rows = usage_by_model(layers, answer).values()
    return Usage(
        input_tokens=sum(r["input_tokens"] for r in rows),
        output_tokens=sum(r["output_tokens"] for r in rows),
        total_tokens=sum(r["total_tokens"] for r in rows),
    )
