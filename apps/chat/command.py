"""``moa ask`` (also plain ``moa PROMPT``), ``moa chat`` and ``moa presets``: the mixture in a
terminal.

moa "What are some fun things to do in SF?"
moa --preset moa-lite --show-proposals "Explain RAFT consensus"
moa chat --thread work
"""

from __future__ import annotations

import json
import shlex
import uuid
from typing import Annotated, Any

import typer

from langgraph_moa.core.command import (
    err,
    fail,
    guarded,
    model_flags,
    run_async,
    stdout_may_close,
    write,
)
from langgraph_moa.nodes.errors import InputError, MoAError

ORDER = 0  # first in `moa --help`: `moa PROMPT` is `moa ask PROMPT`
DEFAULT_COMMAND = "ask"

ShowOpt = Annotated[
    bool, typer.Option("--show-proposals", help="Print every layer's responses, by model.")
]


def register(app: typer.Typer) -> None:
    app.command(help="Answer PROMPT with Mixture-of-Agents, streaming the final answer.")(ask)
    app.command(help="An interactive multi-turn session; every turn goes through MoA.")(chat)
    app.command(help="List the presets and what they run.")(presets)


def print_layer(layer: list[dict[str, Any]]) -> None:
    for p in layer:
        head = f"── layer {p['layer']} · {p['model']} · {p['latency_s']:.1f} s"
        body = p["text"] if p["text"] is not None else f"[failed: {p['error']['message']}]"
        write(f"{head}\n{body}\n\n")


def _context(flags: dict[str, Any]) -> Any:
    from langgraph_moa.core.settings import context_from_flags

    return guarded(lambda: context_from_flags(**flags))


@model_flags(quorum=True)
def ask(
    prompt: Annotated[
        str, typer.Argument(metavar="PROMPT", help="The question; '-' reads it from stdin.")
    ],
    show_proposals: ShowOpt = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object with everything, at the end.")
    ] = False,
    *,
    flags: dict[str, Any],
) -> None:
    from langgraph_moa.apps.chat.stdin import checked, read_prompt

    try:
        prompt = read_prompt() if prompt == "-" else checked(prompt, "the prompt")
    except InputError as exc:
        fail(str(exc), 2)
    if not prompt.strip():
        fail('the prompt is empty: give a question, e.g. moa "What is MoA?"', 2)
    ctx = _context(flags)
    final = run_async(_ask(prompt, ctx, show_proposals=show_proposals, as_json=as_json))
    with stdout_may_close():
        if as_json:
            from langgraph_moa.apps.chat.turn import report

            print(json.dumps(report(final, ctx), indent=2, ensure_ascii=False))
        else:
            write("\n")


async def _ask(prompt: str, ctx: Any, *, show_proposals: bool, as_json: bool) -> Any:
    from langgraph_moa.apps.chat.progress import Progress
    from langgraph_moa.apps.chat.turn import run_turn
    from langgraph_moa.core.settings import preflight
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


@model_flags(quorum=True)
def chat(
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
    *,
    flags: dict[str, Any],
) -> None:
    if list_threads:
        if thread is not None or show_proposals or any(v is not None for v in flags.values()):
            fail("--list lists the saved threads and exits: give it alone", 2)  # not ignored
        run_async(_list_threads())
        return
    if thread is not None and not thread.strip():
        fail("--thread needs a name, e.g. moa chat --thread work", 2)
    ctx = _context(flags)
    if thread is None:
        code = run_async(_chat(ctx, show_proposals=show_proposals))
    else:
        name = thread.strip()
        # Stopped (SIGTERM) mid-turn: the completed turns are saved, the unfinished one is
        # forgotten when the thread resumes (apps/chat/threads.py).
        kept = (
            f"the conversation so far is kept in thread {name!r}: "
            f"moa chat --thread {shlex.quote(name)} goes on with it"
        )
        code = run_async(_chat_saved(ctx, name, show_proposals=show_proposals), kept=kept)
    if code:
        raise typer.Exit(code)


async def _chat_saved(ctx: Any, name: str, *, show_proposals: bool) -> int:
    from langgraph_moa.apps.chat.threads import open_saver, thread_lock
    from langgraph_moa.core.locks import one_writer

    async with open_saver() as saver:
        with one_writer(thread_lock(name), f"chat thread {name!r}", "leave that chat first"):
            return await _chat(
                ctx, show_proposals=show_proposals, checkpointer=saver, thread_name=name
            )


async def _list_threads() -> None:
    from langgraph_moa.apps.chat.threads import DB_NAME, data_dir, list_threads, open_saver
    from langgraph_moa.graphs import build_moa_graph

    async with open_saver() as saver:
        found = await list_threads(build_moa_graph().compile(checkpointer=saver), saver)
    if not found:
        err.print(f"moa chat: no saved threads in {data_dir() / DB_NAME}", markup=False)
        return
    width = max(len(t.name) for t in found)
    for t in found:
        turns = f"{t.turns} turn{'s' if t.turns != 1 else ''}"
        write(f"{t.name:<{width}}  {turns:>9}  {t.updated[:16].replace('T', ' ')}  {t.first}\n")


async def _chat(
    ctx: Any,
    *,
    show_proposals: bool,
    checkpointer: Any = None,
    thread_name: str | None = None,
) -> int:
    """The chat session; returns the exit status (130: left with Ctrl-C)."""
    from langgraph.checkpoint.memory import InMemorySaver

    from langgraph_moa.apps.chat.interrupts import CtrlC, Interrupted
    from langgraph_moa.apps.chat.progress import Progress
    from langgraph_moa.apps.chat.stdin import ChatInput
    from langgraph_moa.apps.chat.threads import count_turns, resume_point
    from langgraph_moa.apps.chat.turn import run_turn
    from langgraph_moa.core.settings import preflight
    from langgraph_moa.graphs import build_moa_graph
    from langgraph_moa.nodes.models.redact import redact

    lines = ChatInput()
    preflight(ctx)
    # The checkpointer keeps the conversation: each turn sends only the new user message.
    # With --thread it is the SQLite store (apps/chat/threads.py), so a later process resumes it.
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


def presets() -> None:
    from langgraph_moa.nodes.context import load_preset
    from langgraph_moa.nodes.presets import preset_description, preset_names

    with stdout_may_close():
        for name in preset_names():
            ctx = load_preset(name)
            print(f"{name}: {preset_description(name)}")
            print(f"    layers={ctx.layers}  aggregator={ctx.aggregator.model}")
            print(f"    proposers: {', '.join(s.model for s in ctx.proposers)}")
