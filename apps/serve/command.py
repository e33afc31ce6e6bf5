"""``moa serve``: the command (its settings checked, the socket bound, then the server run)."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from pydantic import ValidationError

from langgraph_moa.apps.serve import settings as serve_defaults
from langgraph_moa.apps.serve.settings import KEY_ENV, ServeSettings
from langgraph_moa.core.command import err, exit_code, fail, run_async
from langgraph_moa.nodes.caps import Caps
from langgraph_moa.nodes.errors import MoAError

ORDER = 30


def register(app: typer.Typer) -> None:
    app.command(
        help="Serve MoA as an OpenAI-compatible model, with LangServe routes (docs/serving.md)."
    )(serve)


def serve(
    preset: Annotated[
        str | None, typer.Option("--preset", "-p", help="The default model (a preset name).")
    ] = None,
    config: Annotated[
        str | None,
        typer.Option("--config", "-c", help="A TOML config, served as a model named after it."),
    ] = None,
    host: Annotated[
        str, typer.Option("--host", help="Interface to listen on (all: 0.0.0.0, with a key).")
    ] = serve_defaults.DEFAULT_HOST,
    port: Annotated[
        int, typer.Option("--port", help="Port; 0 picks a free one.")
    ] = serve_defaults.DEFAULT_PORT,
    max_concurrent: Annotated[
        int, typer.Option("--max-concurrent", help="Runs in flight at most (then 429).")
    ] = serve_defaults.DEFAULT_MAX_CONCURRENT,
    max_body: Annotated[
        int, typer.Option("--max-body", help="Largest request body in bytes (then 413).")
    ] = serve_defaults.DEFAULT_MAX_BODY_BYTES,
    grace: Annotated[
        float, typer.Option("--grace", help="Seconds in-flight streams get after SIGTERM.")
    ] = serve_defaults.DEFAULT_GRACE_S,
    max_proposers: Annotated[
        int, typer.Option("--max-proposers", help="Cap: proposers per layer a request may ask for.")
    ] = Caps().proposers,
    max_layers: Annotated[
        int, typer.Option("--max-layers", help="Cap: layers (the aggregator's included).")
    ] = Caps().layers,
    max_calls: Annotated[
        int, typer.Option("--max-calls", help="Cap: model calls of one run (retries aside).")
    ] = Caps().calls,
    max_attempts: Annotated[
        int, typer.Option("--max-attempts", help="Cap: attempts per model call.")
    ] = Caps().attempts,
    max_timeout: Annotated[
        float, typer.Option("--max-timeout", help="Cap: per-call timeout in seconds.")
    ] = Caps().timeout,
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", help="Cap: max_tokens of any call.")
    ] = Caps().tokens,
    max_chunks: Annotated[
        int,
        typer.Option("--max-chunks", help="Cap: staircase chunk requests of one answer."),
    ] = Caps().chunks,
    max_run_time: Annotated[
        float,
        typer.Option("--max-run-time", help="Seconds a run may take; then it is stopped (504)."),
    ] = serve_defaults.DEFAULT_MAX_RUN_S,
    request_timeout: Annotated[
        float,
        typer.Option(
            "--request-timeout",
            help="Seconds a request's headers, then its body, may take to arrive (then 408).",
        ),
    ] = serve_defaults.DEFAULT_REQUEST_TIMEOUT_S,
    send_timeout: Annotated[
        float,
        typer.Option(
            "--send-timeout",
            help="Seconds a client may read nothing of a response filling the buffers, or take "
            "past --max-run-time to read it all (then cut).",
        ),
    ] = serve_defaults.DEFAULT_SEND_TIMEOUT_S,
    task_shortcut: Annotated[
        bool,
        typer.Option(
            "--task-shortcut/--no-task-shortcut",
            help="Answer chat UIs' title/tags/follow-up requests ('### Task:') with one model.",
        ),
    ] = True,
    show_proposals: Annotated[
        bool,
        typer.Option(
            "--show-proposals",
            help="Send the proposals as reasoning_content unless a request says otherwise.",
        ),
    ] = False,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--cors-origin",
            help="Let browser apps on this origin call the server (repeatable; * for any).",
        ),
    ] = None,
) -> None:
    try:
        from langgraph_moa.apps.serve.errors import OpenAIError
        from langgraph_moa.apps.serve.main import listen, run
        from langgraph_moa.apps.serve.registry import ModelRegistry
        from langgraph_moa.nodes.keys import is_loopback
    except ImportError as exc:
        fail(
            f"moa serve needs the 'serve' extra ({exc.name or exc} is missing): "
            "uv sync --extra serve, or pip install 'langgraph-moa[serve]'",
            2,  # a package missing, as for a model: refused before anything runs
        )

    try:
        models = ModelRegistry.from_flags(preset, config)
    except MoAError as exc:
        fail(str(exc), exit_code(exc))
    given = {
        "host": host,
        "port": port,
        "api_key": os.environ.get(KEY_ENV) or None,
        "max_concurrent": max_concurrent,
        "max_body_bytes": max_body,
        "grace_s": grace,
        "show_proposals": show_proposals,
        "task_shortcut": task_shortcut,
        "max_run_s": max_run_time,
        "request_timeout_s": request_timeout,
        "send_timeout_s": send_timeout,
        "cors_origins": tuple(cors_origin or ()),
        "caps": {
            "proposers": max_proposers,
            "layers": max_layers,
            "calls": max_calls,
            "attempts": max_attempts,
            "timeout": max_timeout,
            "tokens": max_tokens,
            "chunks": max_chunks,
        },
    }
    try:
        settings = ServeSettings.model_validate(given)
    except ValidationError as exc:
        fail(_explain(exc), 2)
    try:
        # The default model must fit the caps, else every request without a model would be a 400.
        models.check(settings.caps)
    except OpenAIError as exc:
        fail(f"the default model {models.default!r}: {exc.message}", 2)
    try:
        sock = listen(settings.host, settings.port)
    except MoAError as exc:  # a ListenError: refused before anything ran
        fail(str(exc), exit_code(exc))
    if settings.api_key is None and not is_loopback(settings.host):
        err.print(
            f"moa serve: warning: no {KEY_ENV} set and listening on {settings.host}: anyone who "
            "can reach this port can spend your provider keys",
            markup=False,
        )
    run_async(run(settings, models, sock), stoppable=False)  # it drains on SIGTERM itself


# Settings fields as the flags that set them, for messages.
FLAGS = {
    "host": "--host",
    "port": "--port",
    "api_key": KEY_ENV,
    "max_concurrent": "--max-concurrent",
    "max_body_bytes": "--max-body",
    "grace_s": "--grace",
    "max_run_s": "--max-run-time",
    "request_timeout_s": "--request-timeout",
    "send_timeout_s": "--send-timeout",
    "cors_origins": "--cors-origin",
    "caps.proposers": "--max-proposers",
    "caps.layers": "--max-layers",
    "caps.calls": "--max-calls",
    "caps.attempts": "--max-attempts",
    "caps.timeout": "--max-timeout",
    "caps.tokens": "--max-tokens",
    "caps.chunks": "--max-chunks",
}


def _explain(exc: ValidationError) -> str:
    """The settings' problems, each named by the flag (or variable) that set it, with its value
    as typed when the problem is that value (``--max-layers 0: out of range; ...``)."""
    from langgraph_moa.nodes.context import problems

    parts = []
    for problem in problems(exc, ServeSettings):
        path = ".".join(str(p) for p in problem.loc)
        flag = FLAGS.get(path) or FLAGS.get(path.rsplit(".", 1)[0])  # cors_origins.0: its flag
        if flag is None:
            where = problem.setting
        else:
            where = flag if problem.given is None else f"{flag} {problem.given}"
        parts.append(f"{where}: {problem.message}" if where else problem.message)
    return "; ".join(parts)
