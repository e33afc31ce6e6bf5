"""``moa``: ask a Mixture-of-Agents from the terminal.

moa "What are some fun things to do in SF?"
moa --preset moa-lite --show-proposals "Explain RAFT consensus"
moa chat
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from langgraph_moa.apps.serve import settings as serve_defaults
from langgraph_moa.nodes.errors import ConfigError, MoAError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Ask several LLMs at once and let an aggregator write one answer (Mixture-of-Agents).",
)
# soft_wrap: one message stays one line, whatever the terminal width
# emoji=False: "together:a: ..." must not print as "together🅰 ..."
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)

PresetOpt = Annotated[
    str | None, typer.Option("--preset", "-p", help="Preset name (see 'moa presets').")
]
ConfigOpt = Annotated[str | None, typer.Option("--config", "-c", help="A TOML config file.")]
ProposerOpt = Annotated[
    list[str] | None,
    typer.Option("--proposer", help="Proposer 'provider:model'; repeat for several."),
]
AggregatorOpt = Annotated[
    str | None, typer.Option("--aggregator", "-a", help="Aggregator 'provider:model'.")
]
LayersOpt = Annotated[
    int | None,
    typer.Option("--layers", "-l", help="Layers counting the aggregator (2 = one proposer layer)."),
]
TemperatureOpt = Annotated[float | None, typer.Option("--temperature", "-t")]
MaxTokensOpt = Annotated[int | None, typer.Option("--max-tokens", "-m")]
QuorumOpt = Annotated[
    int | None,
    typer.Option(
        "--quorum",
        "-q",
        help="Go on once K proposers of a layer answered, cancelling the rest (default: all).",
    ),
]
GraceOpt = Annotated[
    float | None,
    typer.Option("--grace", help="With --quorum: seconds to still wait after the K-th answer."),
]
ShowOpt = Annotated[
    bool, typer.Option("--show-proposals", help="Print every layer's responses, by model.")
]


def fail(message: str, code: int = 1) -> NoReturn:
    from langgraph_moa.nodes.models.redact import redact

    err.print(f"moa: error: {redact(message)}", markup=False)  # no API key, ever
    raise typer.Exit(code)


def print_layer(layer: list[dict[str, Any]]) -> None:
    for p in layer:
        head = f"── layer {p['layer']} · {p['model']} · {p['latency_s']:.1f} s"
        body = p["text"] if p["text"] is not None else f"[failed: {p['error']['message']}]"
        print(f"{head}\n{body}\n", flush=True)


def write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _context(**flags: Any) -> Any:
    from langgraph_moa.apps.cli.settings import context_from_flags

    try:
        return context_from_flags(**flags)
    except ConfigError as exc:
        fail(str(exc), 2)
    except MoAError as exc:
        fail(str(exc))


@app.command(help="Answer PROMPT with Mixture-of-Agents, streaming the final answer.")
def ask(
    prompt: Annotated[str, typer.Argument(help="The question; '-' reads it from stdin.")],
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    proposer: ProposerOpt = None,
    aggregator: AggregatorOpt = None,
    layers: LayersOpt = None,
    temperature: TemperatureOpt = None,
    max_tokens: MaxTokensOpt = None,
    quorum: QuorumOpt = None,
    grace: GraceOpt = None,
    show_proposals: ShowOpt = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object with everything, at the end.")
    ] = False,
) -> None:
    if prompt == "-":
        prompt = sys.stdin.read()
    if not prompt.strip():
        fail('the prompt is empty: give a question, e.g. moa "What is MoA?"', 2)
    ctx = _context(
        preset=preset,
        config=config,
        proposers=proposer,
        aggregator=aggregator,
        layers=layers,
        temperature=temperature,
        max_tokens=max_tokens,
        quorum=quorum,
        quorum_grace=grace,
    )
    final = _run(_ask(prompt, ctx, show_proposals=show_proposals, as_json=as_json))
    if as_json:
        from langgraph_moa.apps.cli.run import report

        print(json.dumps(report(final, ctx), indent=2, ensure_ascii=False))
    else:
        write("\n")


async def _ask(prompt: str, ctx: Any, *, show_proposals: bool, as_json: bool) -> Any:
    from langgraph_moa.apps.cli.progress import Progress
    from langgraph_moa.apps.cli.run import run_turn
    from langgraph_moa.apps.cli.settings import preflight
    from langgraph_moa.graphs import graph

    preflight(ctx)  # inside the loop: the clients built here are the ones the run reuses
    with Progress(ctx, err) as progress:
        return await run_turn(
            graph,
            prompt,
            ctx,
            progress,
            on_token=None if as_json else write,
            on_layer=print_layer if show_proposals and not as_json else None,
        )


@app.command(help="An interactive multi-turn session; every turn goes through MoA.")
def chat(
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    proposer: ProposerOpt = None,
    aggregator: AggregatorOpt = None,
    layers: LayersOpt = None,
    temperature: TemperatureOpt = None,
    max_tokens: MaxTokensOpt = None,
    quorum: QuorumOpt = None,
    grace: GraceOpt = None,
    show_proposals: ShowOpt = False,
    thread: Annotated[
        str | None,
        typer.Option(
            "--thread", help="Save the conversation as NAME and resume it later (see --list)."
        ),
    ] = None,
    list_threads: Annotated[
        bool, typer.Option("--list", help="List the saved conversations and exit.")
    ] = False,
) -> None:
    if list_threads:
        _run(_list_threads())
        return
    if thread is not None and not thread.strip():
        fail("--thread needs a name, e.g. moa chat --thread work", 2)
    ctx = _context(
        preset=preset,
        config=config,
        proposers=proposer,
        aggregator=aggregator,
        layers=layers,
        temperature=temperature,
        max_tokens=max_tokens,
        quorum=quorum,
        quorum_grace=grace,
    )
    if thread is None:
        _run(_chat(ctx, show_proposals=show_proposals))
    else:
        _run(_chat_saved(ctx, thread.strip(), show_proposals=show_proposals))


async def _chat_saved(ctx: Any, name: str, *, show_proposals: bool) -> None:
    from langgraph_moa.apps.cli.threads import open_saver

    async with open_saver() as saver:
        await _chat(ctx, show_proposals=show_proposals, checkpointer=saver, thread_name=name)


async def _list_threads() -> None:
    from langgraph_moa.apps.cli.threads import DB_NAME, data_dir, list_threads, open_saver
    from langgraph_moa.graphs import build_moa_graph

    async with open_saver() as saver:
        found = await list_threads(build_moa_graph().compile(checkpointer=saver), saver)
    if not found:
        err.print(f"moa chat: no saved threads in {data_dir() / DB_NAME}", markup=False)
        return
    width = max(len(t.name) for t in found)
    for t in found:
        turns = f"{t.turns} turn{'s' if t.turns != 1 else ''}"
        print(f"{t.name:<{width}}  {turns:>9}  {t.updated[:16].replace('T', ' ')}  {t.first}")


async def _chat(
    ctx: Any,
    *,
    show_proposals: bool,
    checkpointer: Any = None,
    thread_name: str | None = None,
) -> None:
    from langgraph.checkpoint.memory import InMemorySaver

    from langgraph_moa.apps.cli.progress import Progress
    from langgraph_moa.apps.cli.run import run_turn
    from langgraph_moa.apps.cli.settings import preflight
    from langgraph_moa.apps.cli.threads import count_turns, resume_point
    from langgraph_moa.graphs import build_moa_graph

    preflight(ctx)
    # The checkpointer keeps the conversation: each turn sends only the new user message.
    # With --thread it is the SQLite store (apps/cli/threads.py), so a later process resumes it.
    graph = build_moa_graph().compile(checkpointer=checkpointer or InMemorySaver(), name="moa-chat")
    name = thread_name or str(uuid.uuid4())
    thread: Any = await resume_point(graph, name)
    if thread_name:
        turns = await count_turns(graph, thread)
        err.print(f"moa chat: thread {name!r}: " + (f"{turns} earlier turn(s)" if turns else "new"))
    err.print("moa chat: type a message, 'exit' or Ctrl-D to leave.")
    while True:
        err.print("> ", end="")
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line or line.strip() in {"exit", "quit", "/exit"}:
            break
        if not line.strip():
            continue
        try:
            with Progress(ctx, err) as progress:
                await run_turn(
                    graph,
                    line.strip(),
                    ctx,
                    progress,
                    on_token=write,
                    on_layer=print_layer if show_proposals else None,
                    config=thread,
                )
        except MoAError as exc:  # one failed turn does not end the session
            from langgraph_moa.nodes.models.redact import redact

            err.print(f"moa: error: {redact(str(exc))}", markup=False)
            # Forget the failed turn: the next one continues from the last good checkpoint
            # (a fork), so the unanswered question does not stay in the conversation.
            thread = await resume_point(graph, name)
            continue
        thread = await resume_point(graph, name)  # the turn's final checkpoint
        write("\n\n")


@app.command(
    help="Serve MoA as an OpenAI-compatible model, with LangServe routes (docs/serving.md)."
)
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
    show_proposals: Annotated[
        bool,
        typer.Option(
            "--show-proposals",
            help="Send the proposals as reasoning_content unless a request says otherwise.",
        ),
    ] = False,
) -> None:
    import os

    from pydantic import ValidationError

    from langgraph_moa.nodes.context import explain

    try:
        from langgraph_moa.apps.serve.auth import KEY_ENV
        from langgraph_moa.apps.serve.main import is_loopback, listen, run
        from langgraph_moa.apps.serve.registry import ModelRegistry
        from langgraph_moa.apps.serve.settings import ServeSettings
    except ImportError as exc:
        fail(
            f"moa serve needs the 'serve' extra ({exc.name or exc} is missing): "
            "uv sync --extra serve, or pip install 'langgraph-moa[serve]'"
        )

    try:
        models = ModelRegistry.from_flags(preset, config)
    except ConfigError as exc:
        fail(str(exc), 2)
    except MoAError as exc:
        fail(str(exc))
    given = {
        "host": host,
        "port": port,
        "api_key": os.environ.get(KEY_ENV) or None,
        "max_concurrent": max_concurrent,
        "max_body_bytes": max_body,
        "grace_s": grace,
        "show_proposals": show_proposals,
    }
    try:
        settings = ServeSettings.model_validate(given)
    except ValidationError as exc:
        fail(explain(exc).replace("max_body_bytes", "--max-body").replace("grace_s", "--grace"), 2)
    if settings.api_key is None and not is_loopback(settings.host):
        err.print(
            f"moa serve: warning: no {KEY_ENV} set and listening on {settings.host}: anyone who "
            "can reach this port can spend your provider keys",
            markup=False,
        )
    try:
        sock = listen(settings.host, settings.port)
    except OSError as exc:
        fail(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}")
    _run(run(settings, models, sock))


@app.command(help="List the presets and what they run.")
def presets() -> None:
    from langgraph_moa.nodes.context import load_preset
    from langgraph_moa.nodes.presets import preset_description, preset_names

    for name in preset_names():
        ctx = load_preset(name)
        print(f"{name}: {preset_description(name)}")
        print(f"    layers={ctx.layers}  aggregator={ctx.aggregator.model}")
        print(f"    proposers: {', '.join(s.model for s in ctx.proposers)}")


def _run(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except MoAError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except Exception as exc:  # a last resort: one line, the traceback only on request
        if os.environ.get("MOA_DEBUG"):
            raise
        fail(f"unexpected {type(exc).__name__}: {exc} (set MOA_DEBUG=1 for a traceback)")


COMMANDS = {"ask", "chat", "serve", "presets", "--help", "-h", "--version"}


def main() -> None:
    """Entry point: ``moa PROMPT`` is short for ``moa ask PROMPT``."""
    args = sys.argv[1:] or ["--help"]
    if args and args[0] not in COMMANDS:
        args = ["ask", *args]
    if args == ["--version"]:
        from importlib.metadata import version

        print(f"moa {version('langgraph-moa')}")
        return
    try:
        code = app(args=args, prog_name="moa", standalone_mode=False)
    except typer.TyperException as exc:  # a bad flag or value: one line, like every other error
        message = " ".join(str(getattr(exc, "format_message", exc.__str__)()).split())
        err.print(f"moa: error: {message} (see 'moa --help')", markup=False)
        sys.exit(2)
    except typer.Abort:
        err.print("moa: error: interrupted", markup=False)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
