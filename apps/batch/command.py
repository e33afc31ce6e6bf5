"""``moa batch``: the command's flags; the run itself is in run.py (imported when used)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from langgraph_moa.core.command import err, exit_with, model_flags, startup

ORDER = 10


def register(app: typer.Typer) -> None:
    app.command(
        help="Answer every item of a dataset (JSONL or a JSON list; '-' for stdin) with MoA: "
        "resumable (rerun the same command after a crash), rate-limited, cached, with the cost "
        "up front (--dry-run). See docs/batch.md."
    )(batch)


@model_flags()
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
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-j", help="Items in flight at once.")
    ] = 8,
    skip_invalid: Annotated[
        bool, typer.Option("--skip-invalid", help="Record malformed items as failed and go on.")
    ] = False,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Run the items that failed again.")
    ] = False,
    retry_degraded: Annotated[
        bool,
        typer.Option(
            "--retry-degraded",
            help="Run again the items answered with fewer proposals than configured (a proposer "
            "gave up); the proposals that came are reused from the call cache.",
        ),
    ] = False,
    cache: Annotated[
        str | None,
        typer.Option(
            "--cache",
            help="A call cache to share across outputs: calls already in it are reused "
            "(default: one per output, in .moa-batch/ beside -o).",
        ),
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
        str | None,
        typer.Option("--assistant", help="The graph or assistant on --server (default: moa)."),
    ] = None,
    generator: Annotated[
        str | None,
        typer.Option("--generator", help="The name AlpacaEval/MT-Bench outputs give the model."),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit",
            help="Run at most N of the remaining items. Not a way to split a run: to run in "
            "parallel, give each process its own part of the input and its own -o.",
        ),
    ] = None,
    mixed_settings: Annotated[
        bool,
        typer.Option(
            "--mixed-settings",
            help="Resume an output whose finished items were made with other settings.",
        ),
    ] = False,
    samples: Annotated[
        int,
        typer.Option("--samples", help="Answers per item, each a distinct seeded run."),
    ] = 1,
    *,
    flags: dict[str, Any],
) -> None:
    with startup():  # LangChain, LangGraph and the SDKs it imports: without the collector
        from langgraph_moa.apps.batch.run import batch as run

    exit_with(
        lambda: run(
            input_path=input_path,
            output=output,
            fmt=fmt,
            flags=flags,
            concurrency=concurrency,
            skip_invalid=skip_invalid,
            retry_failed=retry_failed,
            retry_degraded=retry_degraded,
            cache=cache,
            no_cache=no_cache,
            dry_run=dry_run,
            as_json=as_json,
            replay=replay,
            server=server,
            assistant=assistant,
            generator=generator,
            limit=limit,
            mixed_settings=mixed_settings,
            samples=samples,
            console=err,
        )
    )
