"""``moa``: ask a Mixture-of-Agents from the terminal.

moa "What are some fun things to do in SF?"
moa --preset moa-lite --show-proposals "Explain RAFT consensus"
moa chat
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import json
import os
import sys
import uuid
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

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
) -> None:
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
    _run(_chat(ctx, show_proposals=show_proposals))


async def _chat(ctx: Any, *, show_proposals: bool) -> None:
    from langgraph.checkpoint.memory import InMemorySaver

    from langgraph_moa.apps.cli.progress import Progress
    from langgraph_moa.apps.cli.run import run_turn
    from langgraph_moa.apps.cli.settings import preflight
    from langgraph_moa.graphs import build_moa_graph

    preflight(ctx)
    # The checkpointer keeps the conversation: each turn sends only the new user message.
    graph = build_moa_graph().compile(checkpointer=InMemorySaver(), name="moa-chat")
    thread: Any = {"configurable": {"thread_id": str(uuid.uuid4())}}
    err.print("moa chat: type a message, 'exit' or Ctrl-D to leave.")
    while True:
        err.print("> ", end="")
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line or line.strip() in {"exit", "quit", "/exit"}:
            break
        if not line.strip():
            continue
        before = (await graph.aget_state(thread)).config
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
            if before.get("configurable", {}).get("checkpoint_id"):
                thread = before
            else:
                thread = {"configurable": {"thread_id": str(uuid.uuid4())}}
            continue
        write("\n\n")


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


COMMANDS = {"ask", "chat", "presets", "--help", "-h", "--version"}


def main() -> None:
    """Entry point: ``moa PROMPT`` is short for ``moa ask PROMPT``."""
    # Registered first, so it runs last of the exit handlers: with every object frozen, the
    # interpreter's final garbage collection has nothing to walk. That collection went through
    # the hundreds of thousands of objects LangChain, LangGraph and the SDKs create at import,
    # and took 0.5-1.5 s of every run (docs/performance.md).
    atexit.register(gc.freeze)
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
