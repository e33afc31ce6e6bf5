"""The ASGI app of ``moa serve``: OpenAI Chat Completions, LangServe routes, health.

``create_app(settings, models)`` builds it; apps/serve/main.py runs it under uvicorn. Layers, from
the outside in: CORS when ``--cors-origin`` is given (Starlette's ``CORSMiddleware``),
``ShieldErrors`` (no traceback ever leaves), ``RequireKey`` (auth: 401, on the headers alone),
``BodyLimit`` (413), ``CancelOnDisconnect`` (a body that takes too long: 408; a client that
leaves cancels its request), ``StreamErrors`` (a LangServe stream's failure sent as the run's
error), the routes with their dependencies (runs in flight: 429), the
exception handlers (OpenAI's error shape for everything).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from sse_starlette.sse import AppStatus

from langgraph_moa.apps.serve import errors
from langgraph_moa.apps.serve.auth import RequireKey
from langgraph_moa.apps.serve.disconnect import CancelOnDisconnect
from langgraph_moa.apps.serve.langserve_routes import StreamErrors, add_moa_routes
from langgraph_moa.apps.serve.limits import BodyLimit, RunSlots, run_slot
from langgraph_moa.apps.serve.openai_routes import openai_router
from langgraph_moa.apps.serve.registry import ModelRegistry
from langgraph_moa.apps.serve.runs import RunService
from langgraph_moa.apps.serve.settings import ServeSettings


def create_app(settings: ServeSettings, models: ModelRegistry) -> FastAPI:
    service = RunService(models, settings.caps, settings.max_run_s)
    slots = RunSlots(settings.max_concurrent)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # sse-starlette cuts every stream the moment the server is told to stop; we want
        # uvicorn's drain instead: in-flight streams run on for the grace period
        # (timeout_graceful_shutdown), then uvicorn cancels what is left.
        AppStatus.disable_automatic_graceful_drain()  # type: ignore[no-untyped-call]
        yield
        await service.close_all()  # runs whose requests were cut: close their provider calls

    app = FastAPI(
        title="langgraph-moa",
        summary="Mixture-of-Agents as an OpenAI-compatible model",
        lifespan=lifespan,
        # No unauthenticated documentation routes: every route but /health is behind the key
        # (/openapi.json is added below, behind it).
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings  # how apps/serve/main.py runs it
    app.state.service = service
    app.state.slots = slots
    errors.install(app)
    app.add_middleware(StreamErrors)
    app.add_middleware(CancelOnDisconnect, request_timeout_s=settings.request_timeout_s)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    key = settings.api_key.get_secret_value() if settings.api_key else None
    app.add_middleware(RequireKey, key=key)  # before anything reads the body
    app.add_middleware(errors.ShieldErrors)
    if settings.cors_origins:
        # Outermost: preflights are answered before auth (browsers send no key with them), and
        # every response, errors included, carries the headers a browser needs to read it.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            # Whatever the client sends (the openai JS SDK adds its x-stainless-* headers).
            allow_headers=["*"],
            # Readable by the page's script: when to retry, and whether to.
            expose_headers=["Retry-After", "x-should-retry"],
            max_age=600,
        )

    slot = run_slot(slots)
    app.include_router(
        openai_router(
            service,
            show_proposals=settings.show_proposals,
            keepalive_s=settings.keepalive_s,
            task_shortcut=settings.task_shortcut,
            slot=slot,
        )
    )
    add_moa_routes(app, service, slot=slot)

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi() -> JSONResponse:
        """The schema, for clients and fuzzers."""
        return JSONResponse(app.openapi())

    # HEAD too: load balancers probe with it, without a key (auth.py lets both through). Out of
    # the schema: one operation per route there (FastAPI would give both methods one id).
    @app.head("/health", include_in_schema=False)
    @app.get("/health")
    async def health() -> dict[str, object]:
        return {
            "status": "ok",
            "runs_in_flight": slots.in_use,
            "max_concurrent": slots.limit,
        }

    return app
