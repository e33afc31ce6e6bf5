"""Errors in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, with the right
status, on every route; and nothing else: no traceback and no API key in a response or the log.

- 400 bad input (``invalid_request_error``), 401 missing or wrong key, 413 body too large,
  429 at the concurrency limit or when a run failed only because its providers rate-limited the
  server (both with ``Retry-After``: waiting helps), 502 when a layer's proposers or the
  aggregator failed otherwise (``LayerFailedError``, ``AggregatorError``), 504 when a run passed
  the server's deadline, 500 for anything unexpected. Every 5xx carries
  ``x-should-retry: false`` and no ``Retry-After``: a retry cannot fix it, waiting does not help.
- Every message goes through ``redact`` (nodes/models/redact.py) before it is sent or logged.
- ``ShieldErrors`` is the last net: an exception no handler took becomes a 500 (or, once a
  response has started, is logged and the body ended where it was) on one line. Starlette's
  own outermost handler would re-raise it to the server, which logs the traceback.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from langgraph_moa.apps.serve.schemas import ErrorBody, ErrorDetail
from langgraph_moa.nodes.errors import (
    AggregatorError,
    BindOverflowError,
    CapabilityError,
    ConfigError,
    InputError,
    LayerFailedError,
    MoAError,
    ProviderError,
)
from langgraph_moa.nodes.models.redact import redact

log = logging.getLogger("moa.serve")

# Retry-After for a run its providers rate-limited when none of them said how long to wait.
PROVIDER_WAIT_S = 10
# The OpenAI SDKs wait what Retry-After asks only up to 60 s, else retry at once
# (openai-python's _base_client): a longer wait is sent with x-should-retry: false.
SDK_WAIT_CAP_S = 60
# The longest provider wait passed on: a day, the longest window providers' quotas use (per-day
# request limits). A longer one is a provider's mistake (an HTTP date decades ahead), passed on
# as a day rather than as a number of seconds that means "never".
PROVIDER_WAIT_CAP_S = 86_400

# Characters a client could use to forge or hide log lines: C0/C1 controls (newline, carriage
# return, ANSI escapes), Unicode line separators, and lone surrogates (not encodable in UTF-8).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def one_line(text: str) -> str:
    """``text`` with every unsafe character written as its escape (``\\n``, ``\\x1b``...)."""
    return _UNSAFE.sub(
        lambda m: m.group().encode("unicode_escape", "backslashreplace").decode(), text
    )


class OneLine(logging.Filter):
    """Every record of the server's logger as one line a client cannot forge: its arguments may
    hold client text (a model name, a field, an exception's message)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = one_line(record.getMessage()), None
        return True


log.addFilter(OneLine())

# error.type per status, as OpenAI names them
TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "server_error",
    503: "server_error",
    504: "server_error",
}


class OpenAIError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = redact(message)
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        detail = ErrorDetail(
            message=self.message,
            type=TYPES.get(
                self.status, "server_error" if self.status >= 500 else "invalid_request_error"
            ),
            param=self.param,
            code=self.code,
        )
        return ErrorBody(error=detail).model_dump()

    def log(self) -> None:
        if self.status >= 500:
            log.error("moa serve: %s %s", self.status, self.message)

    def response(self) -> JSONResponse:
        self.log()
        headers = dict(self.headers)
        if self.status >= 500:
            # A 5xx here comes after the server's own retries (a layer or the aggregator failed),
            # from a hung provider (the run's deadline) or from a bug: a client's retry would run
            # and bill the whole mixture again. The OpenAI SDKs retry 5xx unless told not to.
            headers.setdefault("x-should-retry", "false")
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def from_run_error(exc: BaseException) -> OpenAIError:
    """The answer for an error a run raised."""
    message = str(exc)
    if isinstance(exc, OpenAIError):
        return exc
    if isinstance(exc, LayerFailedError | AggregatorError) and exc.kind == "rate_limit":
        return _rate_limited(exc, message)
    if isinstance(exc, LayerFailedError):
        if exc.kind == "context":  # the conversation fits no proposer: the client's to fix
            return OpenAIError(400, message, param="messages", code="context_length_exceeded")
        return OpenAIError(502, message, code="proposers_failed")
    if isinstance(exc, AggregatorError):
        return OpenAIError(502, message, code="aggregator_failed")
    if isinstance(exc, CapabilityError):  # the mixture's aggregator cannot do what was asked
        return OpenAIError(400, message, param="model", code="model_not_capable")
    if isinstance(exc, ConfigError):
        return OpenAIError(400, message, code="invalid_settings")
    if isinstance(exc, InputError):  # the conversation cannot be used (EmptyConversationError...)
        return OpenAIError(400, message, param="messages")
    if isinstance(exc, BindOverflowError):  # tools or a response format the client sent
        return OpenAIError(400, message, param=exc.part, code="context_length_exceeded")
    if isinstance(exc, ProviderError):
        # A model of the chosen mixture cannot be built here (a key the server lacks, a package
        # it misses): retrying will not help; another model may.
        return OpenAIError(400, message, param="model", code="model_not_available")
    if isinstance(exc, MoAError):
        return OpenAIError(502, message, code="run_failed")
    return unexpected(exc)


def _rate_limited(exc: LayerFailedError | AggregatorError, message: str) -> OpenAIError:
    """A run that failed only because its providers answered 429 after the server's own retries:
    waiting helps, so the client gets the 429 with the longest wait a provider asked for."""
    failed = exc.failures
    errors = [f["error"] for f in failed if f["error"] is not None]
    asked = [e["retry_after_s"] for e in errors if "retry_after_s" in e]
    wait = min(max(1, math.ceil(max(asked))), PROVIDER_WAIT_CAP_S) if asked else PROVIDER_WAIT_S
    headers = {"Retry-After": str(wait)}
    if wait > SDK_WAIT_CAP_S:  # the SDK would retry at once and be refused again
        headers["x-should-retry"] = "false"
    return OpenAIError(
        429,
        f"{message}; the providers are rate-limiting this server: retry after {wait} s",
        code="provider_rate_limited",
        headers=headers,
    )


def unexpected(exc: BaseException) -> OpenAIError:
    """A 500 for a bug: one log line (the traceback only with MOA_DEBUG=1), a generic answer."""
    text = redact(f"{type(exc).__name__}: {exc}")
    if os.environ.get("MOA_DEBUG"):
        log.error("moa serve: unexpected %s", text, exc_info=exc)
    else:
        log.error("moa serve: unexpected %s (set MOA_DEBUG=1 for a traceback)", text)
    return OpenAIError(500, "internal server error; the server's log has the details")


# How pydantic names the member of a union in an error's location ("str", "list[dict[str,any]]",
# "function-after[...]"): not a field of the request, so not part of the param a client is told.
_UNION_MEMBER = re.compile(r"(str|int|float|bool|none|[a-z-]+\[.*\])")


def _param(loc: Iterable[Any]) -> str:
    parts = [
        p for p in loc if p != "body" and not (isinstance(p, str) and _UNION_MEMBER.fullmatch(p))
    ]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def validation_error(errors: Iterable[Any]) -> OpenAIError:
    """400 for a body that does not parse or does not match the schema; names the field."""
    errs = [e if isinstance(e, Mapping) else {"msg": str(e)} for e in errors]
    if not errs:
        return OpenAIError(400, "invalid request")
    first = errs[0]
    kind = first.get("type", "")
    if kind == "json_invalid" or first.get("msg") == "Invalid JSON body":
        return OpenAIError(400, "the request body is not valid JSON", code="invalid_json")
    param = _param(first.get("loc", ()))
    if not param:  # the body itself: missing, or not an object
        return OpenAIError(400, "the request body must be a JSON object", code="invalid_json")
    if kind == "too_short" and param == "messages":
        return OpenAIError(400, "messages must not be empty", param="messages")
    by_field: dict[str, list[str]] = {}  # a union's members each say what they wanted: or'ed
    for e in errs[:3]:
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        by_field.setdefault(_param(e.get("loc", ())), []).append(msg)
    messages = [
        f"{where}: {' or '.join(msgs)}" if where else " or ".join(msgs)
        for where, msgs in by_field.items()
    ]
    return OpenAIError(400, "; ".join(messages), param=param or None)


def install(app: FastAPI) -> None:
    """Route every error of ``app`` through OpenAI's shape."""

    async def on_openai(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, OpenAIError)
        return exc.response()

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}"
        # LangServe's own 422s: bad input is a 400 on every route, as OpenAI answers it.
        status = 400 if exc.status_code == 422 else exc.status_code
        error = OpenAIError(status, message, headers=exc.headers)
        return error.response()

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return validation_error(exc.errors()).response()

    async def on_moa(request: Request, exc: Exception) -> JSONResponse:
        return from_run_error(exc).response()

    app.add_exception_handler(OpenAIError, on_openai)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(MoAError, on_moa)


class ShieldErrors:
    """Pure ASGI middleware: an exception that escaped every handler is answered 500 on one line
    (only logged once the response started: its stream is cut, the client sees it end)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = ended = False

        async def tracked(message: Message) -> None:
            nonlocal started, ended
            if message["type"] == "http.response.start":
                started = True
            elif message["type"] == "http.response.body":
                ended = not message.get("more_body", False)
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except asyncio.CancelledError:
            # The server cancels the requests still running when the shutdown grace period is
            # over; this is the request's own task, so the cancellation ends here, on one line
            # (uvicorn would log it with a traceback).
            log.warning("moa serve: %s %s cut at shutdown", scope["method"], scope["path"])
        except Exception as exc:
            error = from_run_error(exc)  # a MoAError a LangServe stream raised, or a bug
            if not started:
                await error.response()(scope, receive, send)
                return
            if isinstance(exc, MoAError):
                log.warning("moa serve: a stream ended with an error: %s", error.message)
            if not ended:  # the body ends where it was cut, not as an incomplete read
                await send({"type": "http.response.body", "body": b"", "more_body": False})
