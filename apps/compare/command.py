"""``moa compare``: the command's flags; the run itself is in run.py (imported when used)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from langgraph_moa.core.command import err, exit_with, fail, model_flags, startup

ORDER = 20


def register(app: typer.Typer) -> None:
    app.command(
        help="Does MoA pay off on your prompts? Answer them with the mixture and with each "
        "single model (through moa batch: resumable, cached), judge the mixture against each "
        "pairwise with the positions swapped, and write REPORT_DIR/report.md, results.json and "
        "plot.png: win rates with 95% intervals, length-controlled, cost and latency. "
        "See docs/compare.md."
    )(compare)


@model_flags()
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
    retry_degraded: Annotated[
        bool,
        typer.Option(
            "--retry-degraded",
            help="Answer again the answers made with fewer proposals than configured.",
        ),
    ] = False,
    limit: Annotated[
        int | None, typer.Option("--limit", help="Use only the first N prompts.")
    ] = None,
    *,
    flags: dict[str, Any],
) -> None:
    try:
        with startup():  # LangChain, LangGraph and the SDKs it imports: without the collector
            from langgraph_moa.apps.compare.run import compare as run
    except ImportError as exc:  # numpy / matplotlib come with the extra
        fail(
            f"moa compare needs the 'compare' extra ({exc.name} is missing): "
            "uv sync --extra compare, or pip install 'langgraph-moa[compare]'",
            2,  # a package missing, as for a model: refused before any call
        )
    exit_with(
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
            retry_degraded=retry_degraded,
            limit=limit,
            console=err,
        )
    )
