"""The OpenAI Chat Completions shapes the server reads and writes (the subset MoA supports).

Requests are lenient where OpenAI clients send fields MoA has no use for (``top_p``, ``user``,
``metadata``...: accepted and ignored) and strict where ignoring a field would silently give the
client something else than it asked for (``n`` > 1, images, legacy ``functions``, logprobs,
``logit_bias``, audio: a 400 that says so, see ``unsupported``); ``stop`` goes to the
aggregator's provider and is honoured on the answer (nodes/stops.py). Tools, ``tool_choice``,
``parallel_tool_calls`` and ``response_format`` bind the aggregator (nodes/models/tools.py);
its tool calls come back in OpenAI's shapes (``ToolCallOut``, ``finish_reason: "tool_calls"``).
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
)

# OpenAI's limits
from langgraph_moa.nodes.context import SEED_MAX, SEED_MIN
from langgraph_moa.nodes.stops import MAX_STOPS


def _stops(value: Any) -> Any:
    # One message for every wrong shape (pydantic would name each member of a str | list union).
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if (
        isinstance(value, list)
        and len(value) <= MAX_STOPS
        and all(isinstance(s, str) for s in value)
    ):
        return value
    raise ValueError(f"stop must be a string or a list of at most {MAX_STOPS} strings")


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    # A string, or a list of content parts ({"type": "text", "text": ...}, image parts...).
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None  # role "tool": the call this message answers


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: StrictBool = False  # "yes" is not true, as for every other bool


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = Field(
        default=None, description="A model listed by GET /v1/models; default: the server's."
    )
    messages: list[ChatMessage] = Field(min_length=1)
    stream: StrictBool = False  # "yes" is not true
    stream_options: StreamOptions | None = None
    # Strict, as OpenAI reads them: true is not 1 and 1.5 not an int (pydantic would take both).
    temperature: StrictFloat | None = Field(default=None, ge=0, le=2)
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)
    seed: StrictInt | None = Field(default=None, ge=SEED_MIN, le=SEED_MAX)  # int64, as OpenAI
    n: StrictInt | None = Field(default=None, ge=1)
    # At most MAX_TOOLS, as every binding (nodes/models/tools.py binding: one rule, one message).
    tools: list[dict[str, Any]] | None = None
    functions: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    parallel_tool_calls: StrictBool | None = None
    response_format: dict[str, Any] | None = None
    logprobs: bool | None = None
    top_logprobs: StrictInt | None = Field(default=None, ge=0, le=20)
    # Sent with the aggregator's requests and honoured on the answer (nodes/stops.py): one
    # string or a list, read as a list.
    stop: Annotated[list[str], BeforeValidator(_stops)] = Field(default_factory=list)
    logit_bias: dict[str, float] | None = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    # MoA's own field (send it with the openai client's extra_body): the proposals travel as
    # reasoning_content before the answer. None = the server's default (moa serve
    # --show-proposals).
    show_proposals: StrictBool | None = None
    # MoA's own (extra_body too): staircase streaming, the answer starting while the proposers
    # still write (Context.staircase). None = the model's setting (a "+staircase" model id
    # turns it on for clients that cannot send extra fields).
    staircase: StrictBool | None = None

    def unsupported(self) -> tuple[str, str] | None:
        """(param, message) for a request MoA cannot answer as asked, else None."""
        if self.n is not None and self.n > 1:
            return "n", "n > 1 is not supported yet: ask for one choice per request"
        if self.functions:
            return "functions", "the legacy 'functions' field is not supported: send 'tools'"
        if self.logprobs or self.top_logprobs:
            param = "logprobs" if self.logprobs else "top_logprobs"
            return param, "logprobs are not supported by Mixture-of-Agents"
        if self.logit_bias:
            return "logit_bias", "logit_bias is not supported by Mixture-of-Agents"
        if self.audio is not None or any(m != "text" for m in self.modalities or ()):
            param = "audio" if self.audio is not None else "modalities"
            return param, "audio output is not supported: Mixture-of-Agents answers in text"
        return None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class FunctionCall(BaseModel):
    name: str
    arguments: str  # JSON text, as OpenAI sends it


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ToolCallDelta(ToolCallOut):
    index: int


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCallOut] | None = None
    # The proposals, when asked for (clients that show reasoning display this field).
    reasoning_content: str | None = None
    refusal: None = None


class Choice(BaseModel):
    index: int = 0
    message: ResponseMessage
    logprobs: None = None
    finish_reason: Literal["stop", "length", "tool_calls"] = "stop"


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    # MoA's own: which model wrote the answer and the calls and tokens of every model of the run.
    moa: dict[str, Any] | None = None


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    logprobs: None = None
    finish_reason: Literal["stop", "length", "tool_calls"] | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    moa: dict[str, Any] | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "langgraph-moa"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())
