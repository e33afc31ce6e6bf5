"""``moa``: ask a Mixture-of-Agents from the terminal.

moa "What are some fun things to do in SF?"
moa --preset moa-lite --show-proposals "Explain RAFT consensus"
moa chat
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import gc
import json
import os
import sys
import uuid
from collections.abc import Callable, Iterator
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


def reader_gone() -> NoReturn:
    """Whoever read our output went away (``moa ... | head``): stop quietly, as Unix tools do."""
    # The status a shell reports for a tool killed by SIGPIPE. Python ignores SIGPIPE (its sockets
    # need that), so the error arrives as BrokenPipeError instead. /dev/null in place of the
    # closed pipe keeps the interpreter's last flush from failing again.
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        with contextlib.suppress(OSError):
            os.dup2(devnull, fd)
    raise typer.Exit(141)


@contextlib.contextmanager
def stdout_may_close() -> Iterator[None]:
    """Output outside the event loop: a closed pipe ends the command quietly there too."""
    try:
        yield
    except BrokenPipeError:
        reader_gone()


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
    from langgraph_moa.apps.cli.stdin import InputError, checked, read_prompt

    try:
        prompt = read_prompt() if prompt == "-" else checked(prompt, "the prompt")
    except InputError as exc:
        fail(str(exc), 2)
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
    with stdout_may_close():
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
        code = _run(_chat(ctx, show_proposals=show_proposals))
    else:
        code = _run(_chat_saved(ctx, thread.strip(), show_proposals=show_proposals))
    if code:
        raise typer.Exit(code)


async def _chat_saved(ctx: Any, name: str, *, show_proposals: bool) -> int:
    from langgraph_moa.apps.cli.threads import open_saver

    async with open_saver() as saver:
        return await _chat(ctx, show_proposals=show_proposals, checkpointer=saver, thread_name=name)


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
) -> int:
    """The chat session; returns the exit status (130: left with Ctrl-C)."""
    from langgraph.checkpoint.memory import InMemorySaver

    from langgraph_moa.apps.cli.interrupts import CtrlC, Interrupted
    from langgraph_moa.apps.cli.progress import Progress
    from langgraph_moa.apps.cli.run import run_turn
    from langgraph_moa.apps.cli.settings import preflight
    from langgraph_moa.apps.cli.stdin import ChatInput, InputError
    from langgraph_moa.apps.cli.threads import count_turns, resume_point
    from langgraph_moa.graphs import build_moa_graph
    from langgraph_moa.nodes.models.redact import redact

    lines = ChatInput()
    preflight(ctx)
    # The checkpointer keeps the conversation: each turn sends only the new user message.
    # With --thread it is the SQLite store (apps/cli/threads.py), so a later process resumes it.
    graph = build_moa_graph().compile(checkpointer=checkpointer or InMemorySaver(), name="moa-chat")
    name = thread_name or str(uuid.uuid4())
    thread: Any = await resume_point(graph, name)
    if thread_name:
        turns = await count_turns(graph, thread)
        err.print(f"moa chat: thread {name!r}: " + (f"{turns} earlier turn(s)" if turns else "new"))
    err.print("moa chat: type a message, 'exit' or Ctrl-D to leave; Ctrl-C stops an answer.")
    with CtrlC() as ctrl_c:
        while True:
            err.print("> ", end="")
            try:
                line = await ctrl_c.step(lines.readline())
            except Interrupted:  # Ctrl-C at the prompt: leave at once
                err.print()
                return 130
            except InputError as exc:  # not text: say so and ask again
                err.print(f"moa: error: {exc}", markup=False)
                continue
            if line is None or line.strip() in {"exit", "quit", "/exit"}:
                break
            if not line.strip():
                continue
            shown = Shown()
            try:
                with Progress(ctx, err) as progress:
                    await ctrl_c.step(
                        run_turn(
                            graph,
                            line.strip(),
                            ctx,
                            progress,
                            on_token=shown.write,
                            on_layer=print_layer if show_proposals else None,
                            config=thread,
                        )
                    )
            except (MoAError, Interrupted) as exc:  # one failed turn does not end the session
                if shown.any:
                    write("\n")  # end the partial answer's line
                if isinstance(exc, Interrupted):
                    err.print("moa: interrupted: this turn is dropped", markup=False)
                else:
                    err.print(f"moa: error: {redact(str(exc))}", markup=False)
                # Forget the turn: the next one continues from the last good checkpoint (a
                # fork), so the unanswered question does not stay in the conversation.
                thread = await resume_point(graph, name)
                continue
            thread = await resume_point(graph, name)  # the turn's final checkpoint
            write("\n\n")
    return 0


class Shown:
    """Writes answer text to stdout and remembers whether any was shown."""

    def __init__(self) -> None:
        self.any = False

    def write(self, text: str) -> None:
        self.any = True
        write(text)


@app.command(
    help="Answer every item of a dataset (JSONL or a JSON list; '-' for stdin) with MoA: "
    "resumable (rerun the same command after a crash), rate-limited, cached, with the cost "
    "up front (--dry-run). See docs/batch.md."
)
def batch(
    input_path: Annotated[
        str | None,
        typer.Argument(
            metavar="INPUT",
            help="Items: {prompt}, {messages}, {instruction} (AlpacaEval) or "
            "{question_id, turns} (MT-Bench), one JSON object a line or a JSON list.",
        ),
    ] = None,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Where the records go (JSONL).")
    ] = None,
    fmt: Annotated[
        str,
        typer.Option("--format", "-f", help="jsonl (every detail), alpaca-eval or mt-bench."),
    ] = "jsonl",
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    proposer: ProposerOpt = None,
    aggregator: AggregatorOpt = None,
    layers: LayersOpt = None,
    temperature: TemperatureOpt = None,
    max_tokens: MaxTokensOpt = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-j", help="Items in flight at once.")
    ] = 8,
    skip_invalid: Annotated[
        bool, typer.Option("--skip-invalid", help="Record malformed items as failed and go on.")
    ] = False,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Run the items that failed again.")
    ] = False,
    cache: Annotated[
        str | None,
        typer.Option("--cache", help="The model-call cache (default: moa-cache.sqlite beside -o)."),
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Use no call cache.")] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Print items, calls, tokens and cost expected; run nothing."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --dry-run: print JSON.")] = False,
    replay: Annotated[
        str | None,
        typer.Option(
            "--replay", help="Re-aggregate the proposals of a run file; no proposer runs."
        ),
    ] = None,
    server: Annotated[
        str | None,
        typer.Option("--server", help="Run the items on a LangGraph server at this URL."),
    ] = None,
    assistant: Annotated[
        str, typer.Option("--assistant", help="The graph or assistant on --server.")
    ] = "moa",
    generator: Annotated[
        str | None,
        typer.Option("--generator", help="The name AlpacaEval/MT-Bench outputs give the model."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="Run at most N of the remaining items.")
    ] = None,
) -> None:
    from langgraph_moa.apps.batch.cli import batch as run

    flags = {
        "preset": preset,
        "config": config,
        "proposers": proposer,
        "aggregator": aggregator,
        "layers": layers,
        "temperature": temperature,
        "max_tokens": max_tokens,
    }
    _exit_with(
        lambda: run(
            input_path=input_path,
            output=output,
            fmt=fmt,
            flags=flags,
            concurrency=concurrency,
            skip_invalid=skip_invalid,
            retry_failed=retry_failed,
            cache=cache,
            no_cache=no_cache,
            dry_run=dry_run,
            as_json=as_json,
            replay=replay,
            server=server,
            assistant=assistant,
            generator=generator,
            limit=limit,
            console=err,
        )
    )


@app.command(
    help="Does MoA pay off on your prompts? Answer them with the mixture and with each single "
    "model (through moa batch: resumable, cached), judge the mixture against each pairwise with "
    "the positions swapped, and write REPORT_DIR/report.md, results.json and plot.png: win "
    "rates with 95% intervals, length-controlled, cost and latency. See docs/compare.md."
)
def compare(
    prompts: Annotated[
        str | None,
        typer.Argument(
            metavar="PROMPTS",
            help="Items as for moa batch (JSONL or a JSON list; '-' for stdin); default: the "
            "starter set of 30 prompts.",
        ),
    ] = None,
    system: Annotated[
        list[str] | None,
        typer.Option(
            "--system",
            "-s",
            help="NAME=SPEC, SPEC a preset, a config file or provider:model; repeat. The first "
            "is the candidate. Default: the preset against its aggregator and proposers alone.",
        ),
    ] = None,
    judge: Annotated[
        str | None,
        typer.Option("--judge", "-J", help="The judge, provider:model (default: the aggregator)."),
    ] = None,
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="REPORT_DIR (default: ./moa-compare)."),
    ] = None,
    report_only: Annotated[
        str | None,
        typer.Option("--report-only", help="Redraw REPORT_DIR's report and plot; call nothing."),
    ] = None,
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    proposer: ProposerOpt = None,
    aggregator: AggregatorOpt = None,
    layers: LayersOpt = None,
    temperature: TemperatureOpt = None,
    max_tokens: MaxTokensOpt = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-j", help="Answers or judgments in flight at once.")
    ] = 8,
    judge_max_tokens: Annotated[
        int, typer.Option("--judge-max-tokens", help="Length limit of each judgment.")
    ] = 512,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Use no call cache.")] = False,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Run failed answers and judgments again.")
    ] = False,
    limit: Annotated[
        int | None, typer.Option("--limit", help="Use only the first N prompts.")
    ] = None,
) -> None:
    try:
        from langgraph_moa.apps.compare.cli import compare as run
    except ImportError as exc:  # numpy / matplotlib come with the extra
        fail(
            f"moa compare needs the 'compare' extra ({exc.name} is missing): "
            "uv sync --extra compare, or pip install 'langgraph-moa[compare]'"
        )
    flags = {
        "preset": preset,
        "config": config,
        "proposers": proposer,
        "aggregator": aggregator,
        "layers": layers,
        "temperature": temperature,
        "max_tokens": max_tokens,
    }
    _exit_with(
        lambda: run(
            prompts=prompts,
            system=system,
            judge=judge,
            output=output,
            report_only_dir=report_only,
            flags=flags,
            concurrency=concurrency,
            judge_max_tokens=judge_max_tokens,
            no_cache=no_cache,
            retry_failed=retry_failed,
            limit=limit,
            console=err,
        )
    )


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

    with stdout_may_close():
        for name in preset_names():
            ctx = load_preset(name)
            print(f"{name}: {preset_description(name)}")
            print(f"    layers={ctx.layers}  aggregator={ctx.aggregator.model}")
            print(f"    proposers: {', '.join(s.model for s in ctx.proposers)}")


def _run(coro: Any) -> Any:
    from langgraph_moa.apps.cli.stdin import InputError

    try:
        return asyncio.run(coro)
    except BrokenPipeError:
        reader_gone()
    except InputError as exc:
        fail(str(exc), 2)
    except MoAError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except Exception as exc:  # a last resort: one line, the traceback only on request
        _unexpected(exc)


def _exit_with(command: Callable[[], int]) -> NoReturn:
    """Run an application's command (batch, compare) and exit with its status; its errors are
    one line: 2 for bad input or settings, 1 otherwise."""
    from langgraph_moa.apps.batch.inputs import InputError

    try:
        code = command()
    except MoAError as exc:
        fail(str(exc), 2 if isinstance(exc, ConfigError | InputError) else 1)
    except Exception as exc:  # a last resort, as in _run
        _unexpected(exc)
    raise typer.Exit(code)


def _unexpected(exc: Exception) -> NoReturn:
    if os.environ.get("MOA_DEBUG"):
        raise exc
    fail(f"unexpected {type(exc).__name__}: {exc} (set MOA_DEBUG=1 for a traceback)")


COMMANDS = {"ask", "chat", "serve", "batch", "compare", "presets", "--help", "-h", "--version"}


def main() -> None:
    """Entry point: ``moa PROMPT`` is short for ``moa ask PROMPT``."""
    # Registered first, so it runs last of the exit handlers: with every object frozen, the
    # interpreter's final garbage collection has nothing to walk. That collection went through
    # the hundreds of thousands of objects LangChain, LangGraph and the SDKs create at import,
    # and took 0.5-1.5 s of every run (docs/performance.md).
    atexit.register(gc.freeze)
    args = sys.argv[1:] or ["--help"]
    if sys.stdout is None:  # `moa ... >&-`: Python starts without a stdout
        err.print("moa: error: stdout is closed: nowhere to write the answer", markup=False)
        sys.exit(2)
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
