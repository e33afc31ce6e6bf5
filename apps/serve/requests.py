"""Every request body checked before a route reads it: 400 in OpenAI's shape, never a 5xx.

- On every route: a body declared JSON (``check_json_type`` says why), which must not hold lone
  surrogates (``"\\ud800"``): valid JSON escapes, but not text: they cannot be encoded to send to
  a provider or to write to a log.
- On LangServe's run routes (``/moa/invoke``, ``/batch``, ``/stream``, ``/stream_log``): the
  envelope (``input``/``inputs``, ``config``, ``kwargs``, stream_log's filters) and each input are
  validated here, with the same rules as LangServe's schema plus ``/v1``'s: a message's
  content is text (an image part is refused, as on ``/v1``, not dropped). LangServe's own
  parsing answered 500 to some malformed inputs (a message without ``"type"``) and 422 to others;
  what reaches it now is valid. LangChain's own message classes raise other errors than
  pydantic's on some malformed messages (an ``invalid_tool_calls`` entry with an unknown key is
  a ``TypeError`` from inside their validator): those are the input's fault too, a 400 naming the
  message.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from langchain_core.messages import AnyMessage
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from langgraph_moa.apps.serve.errors import OpenAIError, one_line, validation_error
from langgraph_moa.nodes.history import TEXT_PARTS
from langgraph_moa.nodes.models.calls import SURROGATE_ESCAPE


def content_text(content: Any, param: str) -> str:
    """A message's content as text (400 for a part that is not text, e.g. an image)."""
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for j, part in enumerate(content):
        if isinstance(part, str):  # LangChain's content lists may hold bare strings
            texts.append(part)
            continue
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in TEXT_PARTS:  # input_text and the like too, as the graph reads them
            if not isinstance(part.get("text"), str):
                where = f"{param}[{j}].text"
                raise OpenAIError(400, f"{where}: a text part's text must be a string", param=where)
            texts.append(part["text"])
            continue
        what = (
            "images are"
            if kind in ("image_url", "image")
            else f"content parts of type {kind!r} are"
        )
        raise OpenAIError(
            400,
            f"{what} not supported yet: send text",
            param=param,
            code="unsupported",
        )
    return "\n".join(texts)


class _Config(BaseModel):
    """LangServe's config (a RunnableConfig: ``RemoteRunnable`` sends tags, metadata...). The
    runnable reads none of it; LangServe keeps only the keys it allows. Typed where clients send
    values, so a malformed one is a 400 here."""

    model_config = ConfigDict(extra="allow")

    tags: list[str] | None = None
    metadata: dict[str, Any] | None = None
    run_name: str | None = None
    recursion_limit: int | None = None
    max_concurrency: int | None = None
    configurable: dict[str, Any] | None = None


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config: _Config | None = None
    kwargs: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_null_config(cls, data: Any) -> Any:
        # LangServe reads an explicit null config as an error of its own (a 500): refuse it here.
        if isinstance(data, dict):
            for key in ("config", "kwargs"):
                if key in data and data[key] is None:
                    raise ValueError(f"{key} is null: leave it out, or give an object")
        return data


class _One(_Envelope):
    input: dict[str, Any]


class _Batch(_Envelope):
    inputs: list[dict[str, Any]] = Field(min_length=1)
    config: _Config | list[_Config] | None = None  # type: ignore[assignment]


class _StreamLog(_One):
    diff: bool | None = None
    include_names: list[str] | None = None
    include_types: list[str] | None = None
    include_tags: list[str] | None = None
    exclude_names: list[str] | None = None
    exclude_types: list[str] | None = None
    exclude_tags: list[str] | None = None


ENVELOPES: dict[str, type[_Envelope]] = {
    "invoke": _One,
    "stream": _One,
    "stream_log": _StreamLog,
    "batch": _Batch,
}


def _surrogate(value: Any) -> list[str] | None:
    """Where in ``value`` a lone surrogate is, if anywhere: the path's parts, outermost first, its
    keys escaped (``settings``, ``.\\udc00`` for a bad key) so that it can be sent and logged."""
    if isinstance(value, str):
        return None if _encodable(value) else []
    if isinstance(value, dict):
        for key, item in value.items():
            if not _encodable(str(key)):
                return [f".{one_line(str(key))}"]
            if (found := _surrogate(item)) is not None:
                return [f".{one_line(str(key))}", *found]  # named only once found
        return None
    if isinstance(value, list):
        for i, item in enumerate(value):
            if (found := _surrogate(item)) is not None:
                return [f"[{i}]", *found]
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _may_hold_surrogates(raw: bytes) -> bool:
    """Whether a body may hold a lone surrogate once parsed: as an escape (one regex search), or
    as bytes that are not strict UTF-8 (json.loads reads UTF-16, and UTF-8's surrogate bytes):
    the rest (nearly every body) is not walked string by string."""
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return True
    return SURROGATE_ESCAPE.search(text) is not None


async def _json(request: Request) -> Any:
    """The body parsed (None if not JSON: the route's own parsing answers it, 400 invalid_json);
    400 ``invalid_text`` if it holds a lone surrogate."""
    raw = await request.body()  # cached on the request: the route reads it again
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if _may_hold_surrogates(raw) and (found := _surrogate(body)) is not None:
        where = "".join(found).removeprefix(".") or "body"
        raise OpenAIError(
            400,
            f"{where}: the text holds a lone surrogate (an unpaired \\ud800-\\udfff escape); "
            "send valid Unicode",
            param=where if where != "body" else None,
            code="invalid_text",
        )
    return body


async def check_body(request: Request) -> None:
    """The dependency of every route that takes a body."""
    if request.method == "POST":
        check_json_type(request)  # before the body is even read
        await _json(request)


def check_json_type(request: Request) -> None:
    """400 ``unsupported_media_type`` unless the body is declared JSON (``application/json``, or
    ``application/*+json`` as FastAPI reads it on /v1). A 400, as OpenAI's API answers a body it
    does not read as JSON, on every route alike: the openai SDKs and ``RemoteRunnable`` always
    send JSON, so only a hand-written client (curl's ``-d`` without a type) or a web page sees it.

    A web page on any origin may POST a body typed ``text/plain``, a form, or a ``Blob`` with no
    type at all without the browser asking the server first (CORS "simple" requests, e.g.
    ``fetch(url, {mode: "no-cors"})``): it cannot read the answer, but the request runs. LangServe
    parses any body as JSON whatever its type, so on a server without a key any page its users
    visit could start billed runs. A JSON type makes the browser ask first (a preflight), which
    the server refuses unless ``--cors-origin`` lists the page's origin.
    """
    given = request.headers.get("content-type", "")
    media = given.split(";", 1)[0].strip().lower()
    if media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    ):
        return
    got = f"Content-Type {one_line(media[:100])!r}" if media else "no Content-Type"
    raise OpenAIError(
        400,
        f"the request body must be JSON, sent with 'Content-Type: application/json' ({got})",
        code="unsupported_media_type",
    )


_MESSAGE: TypeAdapter[Any] = TypeAdapter(AnyMessage)


def _broken_message(one: Any) -> str:
    """Which message of an input LangChain refuses to build: ``messages[i]``."""
    messages = one.get("messages") if isinstance(one, dict) else None
    for i, message in enumerate(messages if isinstance(messages, list) else []):
        try:
            _MESSAGE.validate_python(message)
        except Exception:
            return f"messages[{i}]"
    return "messages"


def langserve_check(
    input_type: type[BaseModel],
) -> Callable[[Request], Awaitable[None]]:
    """The dependency of the LangServe routes: the envelope and each input, before LangServe."""

    async def check(request: Request) -> None:
        if request.method != "POST":
            return
        check_json_type(request)  # before the body is even read
        body = await _json(request)
        if body is None:
            raise OpenAIError(400, "the request body is not valid JSON", code="invalid_json")
        envelope = ENVELOPES.get(request.url.path.rsplit("/", 1)[-1])
        if envelope is None:
            return
        try:
            parsed = envelope.model_validate(body)
            inputs = parsed.inputs if isinstance(parsed, _Batch) else [parsed.input]  # type: ignore[attr-defined]
            name = "inputs" if isinstance(parsed, _Batch) else "input"
            for i, one in enumerate(inputs):
                at: tuple[Any, ...] = (name, i) if name == "inputs" else (name,)
                try:
                    input_type.model_validate(one)
                except ValidationError as exc:
                    raise validation_error(
                        [{**e, "loc": (*at, *e["loc"])} for e in exc.errors()]
                    ) from None
                except OpenAIError:
                    raise
                except Exception as exc:  # raised by LangChain's validators (see the module)
                    prefix = f"inputs[{i}]" if name == "inputs" else "input"
                    where = f"{prefix}.{_broken_message(one)}"
                    raise OpenAIError(
                        400,
                        f"{where}: not a valid message: {type(exc).__name__}: {exc}",
                        param=where,
                    ) from None
        except ValidationError as exc:
            raise validation_error(exc.errors()) from None

    return check
