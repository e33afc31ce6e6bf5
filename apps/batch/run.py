"""``moa batch``: from the command's flags to a run (or a dry run), a summary and an exit code.

Exit codes: 0 every item ok (or a dry run); 1 the run started and some items failed (rerun with
--retry-failed) or it could not go on; 2 refused before any call was paid (bad input, settings
or paths, an output of other settings or in use: core/command.py); 3 every item answered, but
some degraded: a proposer gave up, the answer has fewer proposals than configured (rerun with
--retry-degraded); 130 interrupted, 143 stopped by SIGTERM (rerun the command to resume).
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console

from langgraph_moa.core.batch.cost import FinishedTokens, estimate
from langgraph_moa.core.batch.fits import ContextCheck
from langgraph_moa.core.batch.formats import (
    FORMATS,
    Format,
    FormatCheck,
    check_items,
    journal_for,
    legacy_run_file,
    run_file_for,
)
from langgraph_moa.core.batch.inputs import Items, check_input, positions_of, stream_items
from langgraph_moa.core.batch.outputs import (
    OutputError,
    RunFile,
    check_cache,
    check_output,
    output_path,
)
from langgraph_moa.core.batch.progress import money
from langgraph_moa.core.batch.runner import (
    BatchOptions,
    BatchResult,
    ResumeCheck,
    default_cache,
    output_lock,
    redo_statuses,
    replay_items,
    resumed_settings,
    run_batch,
)
from langgraph_moa.core.batch.samples import Sampled
from langgraph_moa.core.batch.turns import REPLAYED_SETTINGS, ReplayTurns
from langgraph_moa.core.command import (
    EXIT_DEGRADED,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    Terminated,
    run_stoppable,
    startup,
)
from langgraph_moa.nodes.context import Context, ModelSpec
from langgraph_moa.nodes.errors import ConfigError, InputError


def _context(flags: dict[str, Any], replay: str | None) -> Context:
    from langgraph_moa.core.settings import context_from_flags

    # A replay's proposers, and how they were run, are its run file's.
    taken_from = (
        f"--replay re-aggregates the proposals in the run file {replay}, with the proposers, "
        "layers and settings that made them"
    )
    ctx = context_from_flags(
        **flags, taken=REPLAYED_SETTINGS if replay else (), taken_from=taken_from
    )
    # Nobody reads a batch run's tokens: whole answers cost the client far less CPU.
    return ctx.model_copy(update={"stream": False})


def _replayed_records(replay: str) -> Iterator[dict[str, Any]]:
    """The records of the run file ``--replay`` names; ``InputError`` if it is none."""
    what = "--replay takes the run file of an earlier moa batch run (what it wrote to -o)"
    if Path(replay).is_dir():
        raise InputError(f"--replay {replay}: that is a folder; {what}")
    if not Path(replay).is_file():
        raise InputError(f"--replay: run file {replay!r} not found")
    try:
        yield from RunFile(replay).records()
    except OutputError as exc:
        # Its words are an output's ("give another -o"): say what --replay wants instead.
        problem = str(exc).removeprefix(f"{replay}: ").split(";")[0]
        if problem == str(exc):  # it cannot be read (permissions...): said as it is
            raise
        raise InputError(
            f"--replay {replay}: {problem}; {what}: give that file, or fix the line"
        ) from None


def _generator(flags: dict[str, Any], ctx: Context, replay: bool) -> str:
    source = flags.get("config") or flags.get("preset")
    name = Path(source).stem if source else "moa"
    if replay:
        return f"moa-replay-{ctx.aggregator.name.rsplit('/', 1)[-1]}"
    return name if name.startswith("moa") else f"moa-{name}"


def _preflight(models: list[ModelSpec], ctx: Context) -> None:
    """Build the models now: an unknown provider or a missing key fails before any item."""
    from langgraph_moa.nodes.models import settings_for
    from langgraph_moa.nodes.models.cache import chat_model

    for spec in models:
        chat_model(settings_for(spec, ctx))


def _cache_file(
    cache: str | None, no_cache: bool, server: str | None, output: str | None
) -> Path | None:
    """The call cache a run reads and writes: ``--cache``, else the output's own; none with
    ``--no-cache``, on a ``--server`` (its calls are made there), or with neither a cache nor an
    output (a ``--dry-run`` without ``-o``)."""
    if no_cache or server:
        return None
    if cache:
        return Path(cache)
    return default_cache(Path(output)) if output else None


def batch(
    *,
    input_path: str | None,
    output: str | None,
    fmt: str,
    flags: dict[str, Any],
    concurrency: int,
    skip_invalid: bool,
    retry_failed: bool,
    cache: str | None,
    no_cache: bool,
    dry_run: bool,
    as_json: bool,
    replay: str | None,
    server: str | None,
    assistant: str | None,
    generator: str | None,
    limit: int | None,
    console: Console,
    mixed_settings: bool = False,
    samples: int = 1,
    retry_degraded: bool = False,
) -> int:
    """Run the command; raises MoAError (InputError, ConfigError: bad input) for one-line errors."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if concurrency < 1:
        raise ConfigError("--concurrency must be at least 1")
    if limit is not None and limit < 1:
        raise ConfigError("--limit must be at least 1")
    if samples < 1:
        raise ConfigError("--samples must be at least 1")
    if replay and samples > 1:
        raise ConfigError("--samples cannot go with --replay: a replay keeps the run's samples")
    if replay and input_path:
        raise ConfigError("give either INPUT or --replay RUN.jsonl, not both")
    if replay and server:
        raise ConfigError("--replay runs here: it cannot go with --server")
    if server:
        from langgraph_moa.core.batch.server import check_server_url

        check_server_url(server)
    # Flags that would otherwise be ignored without a word: the run would not do what was asked.
    if as_json and not dry_run:
        raise ConfigError("--json goes with --dry-run; a run's records are JSON already (-o)")
    if cache and no_cache:
        raise ConfigError("give either --cache PATH or --no-cache, not both")
    if cache and server:
        raise ConfigError("--cache: runs on --server use no call cache (it is local only)")
    if assistant is not None and not server:
        raise ConfigError(f"--assistant {assistant!r} names a graph on a server: add --server URL")
    if not replay and not input_path:
        raise ConfigError("give the INPUT file (JSONL or a JSON list; '-' for stdin)")
    if output is None and not dry_run:
        raise ConfigError("give the output file with -o/--output")
    if output == "-":
        raise ConfigError(
            "-o -: the output is a file, read back to resume a run and put in input order at "
            "its end, not stdout; give a file name"
        )
    ctx = _context(flags, replay)
    if output is not None:
        output = str(output_path(output))  # a symlink: its target is the output (one writer)
    cache_path: Path | None = None
    journal: Path | None = None
    if output is not None:
        out_path = Path(output)
        journal = run_file_for(out_path, fmt)
        if fmt != "jsonl" and not journal.exists() and legacy_run_file(out_path).exists():
            journal = legacy_run_file(out_path)  # a run begun before the work folder
    if output is not None and journal is not None and not dry_run:
        out_path = Path(output)
        sources = [p for p in (input_path, replay) if p]
        check_output(out_path, journal, sources, journal_for(out_path))
        cache_path = _cache_file(cache, no_cache, server, output)
        if cache_path is not None:
            files = {"output": out_path, "run": journal, "input": input_path}
            check_cache(
                cache_path, {**files, "replayed run": replay, "config": flags.get("config")}
            )

    stored: dict[str, dict[str, Any]] | None = None
    items: Items
    with contextlib.ExitStack() as stack:
        if not dry_run:
            if input_path and input_path != "-":
                check_input(input_path)  # a mistyped name leaves no lock file behind
            # The output is locked before the input is read: a second process on it is refused
            # at once, not after reading a long input (run_batch holds the same lock after).
            assert output is not None
            stack.enter_context(output_lock(Path(output), fmt, every_format=True))
        the_format: Format = fmt
        if replay:
            items, stored = replay_items(_replayed_records(replay), replay)
            if not items:
                raise InputError(f"--replay: {replay} holds no records")
            check_items(the_format, items)
        else:
            assert input_path is not None
            # A resume compares each finished item's prompt with the input's: only then are the
            # items hashed (a first run's first pass skips it).
            resuming = journal is not None and journal.is_file() and journal.stat().st_size > 0
            # What the format cannot hold is refused as the input is first read: no pass of its own.
            with contextlib.closing(FormatCheck(the_format, samples)) as check:
                dataset = stack.enter_context(
                    contextlib.closing(
                        stream_items(
                            input_path,
                            skip_invalid=skip_invalid,
                            on_first_read=check,
                            digests=resuming,
                            malformed_if=ContextCheck(ctx),  # what no call can hold
                        )
                    )
                )
            # K samples of each item, made as the items are read: the input stays a stream.
            items = Sampled(dataset, samples) if samples > 1 else dataset
        if dry_run:
            redo = redo_statuses(retry_failed, retry_degraded)
            # The call cache the run would read: its calls are counted as if paid.
            would_read = _cache_file(cache, no_cache, server, output)
            return _dry_run(
                items,
                ctx,
                output,
                the_format,
                as_json,
                replay=stored,
                limit=limit,
                redo=redo,
                samples=samples,
                mixed_settings=mixed_settings,
                cache=would_read if would_read is not None and would_read.is_file() else None,
            )

        assert output is not None
        out = Path(output)
        if server:
            # langgraph-sdk warns on stderr each time it reconnects to a run; what happened in
            # the end is said once (core/batch/server.py). The command owns its process's filters.
            warnings.filterwarnings(
                "ignore", message="Request failed, attempting reconnect", category=UserWarning
            )
        options = BatchOptions(
            concurrency=concurrency,
            fmt=the_format,
            generator=generator or _generator(flags, ctx, stored is not None),
            cache=cache_path,
            retry_failed=retry_failed,
            retry_degraded=retry_degraded,
            limit=limit,
            server=server,
            **({"assistant": assistant} if assistant else {}),
            replay=stored,
            mixed_settings=mixed_settings,
            samples=samples,
        )

        async def go() -> BatchResult:
            from langgraph_moa.nodes.models.resources import RESOURCES

            # This run owns the loop: its clients send over aiohttp (far less CPU per request).
            async with RESOURCES.owned_loop():
                if not server:
                    models = [
                        ctx.aggregator,
                        *([ctx.fallback_aggregator] if ctx.fallback_aggregator else []),
                    ]
                    with startup():
                        _preflight(models if stored is not None else ctx.all_models(), ctx)
                        import langgraph_moa.graphs  # noqa: F401  (built now, the collector off)
                return await run_batch(items, ctx, out, options, console=console)

        try:
            result = run_stoppable(go)
        except (KeyboardInterrupt, Terminated) as stop:
            journal = run_file_for(out, the_format)
            sigterm = isinstance(stop, Terminated)
            console.print(
                f"moa batch: {'stopped by SIGTERM' if sigterm else 'interrupted'}; the finished "
                f"items are in {journal}: run the same command again to finish the rest",
                highlight=False,
                markup=False,
            )
            return EXIT_TERMINATED if sigterm else EXIT_INTERRUPTED
        return _report(result, console, cache_path, limited=limit is not None)


def _report(result: BatchResult, console: Console, cache: Path | None, *, limited: bool) -> int:
    def say(text: str) -> None:
        console.print(text, highlight=False, markup=False)

    if result.progress is not None and result.ran:
        say(result.progress.summary())
    if result.skipped:
        say(f"moa batch: {result.skipped} items were already in the output and were skipped")
    if result.other_settings:
        say(
            f"moa batch: {result.other_settings} finished items were made with other settings "
            "than this run's (--mixed-settings); they are kept, and each record's 'settings' "
            "says which made it"
        )
    if cache is not None and result.ran:
        reused = result.progress.cached_calls() if result.progress is not None else 0
        say(
            f"moa batch: call cache {cache}"
            + (f" ({reused:,} calls answered from it, not paid again)" if reused else "")
        )
    unstored = result.cache_unstored
    if unstored.count:
        say(
            f"moa batch: the call cache {cache} could not store {unstored.count:,} answers "
            f"({unstored.why}): they are in the output, but a rerun of their items would ask "
            f"those calls again; {unstored.hint}"
        )
    if result.cache_rejected:
        say(
            f"moa batch: {result.cache_rejected} entries of the call cache {cache} were not model "
            "calls (edited by hand or by someone else: check who can write it); those calls "
            "were made again"
        )
    if result.not_in_input:
        kept = (
            f"left out of {result.output} (kept in {result.run_file})"
            if result.run_file != result.output
            else f"kept in {result.output}"
        )
        say(f"moa batch: {result.not_in_input} records are of items no longer in the input: {kept}")
    if not result.complete:
        left = result.total - result.ok - result.failed - result.degraded
        again = "the same command again" + (" without --limit" if limited else "")
        say(f"moa batch: {left} items left; run {again} for them")
    else:
        where = f"{result.output}"
        if result.written is not None:
            where += f" ({result.written} items; every record in {result.run_file})"
        counts = f"{result.ok} ok, {result.degraded} degraded, {result.failed} failed"
        say(f"moa batch: {counts} of {result.total} items -> {where}")
    if result.degraded:
        say(
            f"moa batch: {result.degraded} items were answered with fewer proposals than "
            f"configured: a proposer gave up (see 'missing_proposals' in {result.run_file}); "
            "rerun with --retry-degraded to run them again"
        )
    if result.failed:
        say(
            f"moa batch: {result.failed} items failed (see 'error' in {result.run_file}); "
            "rerun with --retry-failed to run them again"
        )
        return 1
    return EXIT_DEGRADED if result.degraded else 0


def _dry_run(
    items: Items,
    ctx: Context,
    output: str | None,
    fmt: Format,
    as_json: bool,
    *,
    replay: dict[str, dict[str, Any]] | None,
    limit: int | None = None,
    redo: Collection[str] = (),
    samples: int = 1,
    mixed_settings: bool = False,
    cache: Path | None = None,
) -> int:
    """Estimate what the same command without ``--dry-run`` runs: the items not in the output,
    those ``--retry-failed``/``--retry-degraded`` would run again (``redo``, their statuses),
    the first ``--limit`` of them. An output the run would refuse to resume is refused here
    too, with the run's words (``ResumeCheck``); the output is read once. ``cache``: the call
    cache the run would read, when it exists: the calls it holds are counted as if paid (which
    of them a run asks again depends on the answers of earlier layers), and the text says so."""
    run_file = RunFile(run_file_for(Path(output), fmt)) if output else None
    done: set[str] = set()
    finished = FinishedTokens()
    if run_file is not None and run_file.path.exists():
        replayed = ReplayTurns(ctx, replay) if replay is not None else None
        check = ResumeCheck(
            positions_of(items),
            resumed_settings(ctx, samples, replayed),
            path=run_file.path,
            mixed_settings=mixed_settings,
            redo=redo,
        )
        # Read once (a pass over millions of records takes minutes): checked, counted, measured.
        for record in run_file.records():
            check.add(record)
            finished.add(record)
            if record.get("status") not in redo:
                done.add(str(record["id"]))
        check.finish()
    # A replay calls only the aggregator, on the stored references.
    est = estimate(items, ctx, done=done, finished=finished, replay=replay, limit=limit)
    invalid = est.invalid
    if as_json:
        print(json.dumps({**est.as_json(), "cache": str(cache) if cache else None}, indent=2))
        return 0
    proposer_calls = 0 if replay else sum(len(ctx.proposers_of(n)) for n in range(1, ctx.layers))
    lines = [
        f"moa batch --dry-run: {est.items} items ({est.done} already done, {est.to_run} to run"
        f"{f', {invalid} invalid' if invalid else ''}"
        f"{f', {est.later} left for later runs: --limit {limit}' if est.later else ''}"
        f"), {est.turns} turns",
        f"calls: {est.calls:,} ({proposer_calls + 1} per turn: "
        f"{proposer_calls} proposer calls + the aggregator; retries not counted)",
        f"tokens: {est.input_tokens:,} input + {est.output_tokens:,} output",
        f"cost: {money(est.cost())}" + (" (list prices to check)" if est.cost() else ""),
    ]
    if cache is not None and est.calls:
        lines.append(
            f"call cache: {cache} exists: the calls it already holds are counted and priced "
            "here as if paid, so these figures are an upper bound (a rerun, --retry-* or a "
            "shared --cache pays only for the calls it lacks)"
        )
    if est.measured_from:
        lines.append(
            f"method: the mean tokens per call of each model over the {est.measured_from} "
            "finished items; close when the remaining prompts are like them"
        )
    else:
        lines.append(
            "method: an upper bound: every answer max_tokens long, 3.5 characters per token "
            "(English text takes fewer); real runs usually cost less"
        )
    if est.unpriced:
        lines.append(
            f"no price for {', '.join(est.unpriced)}: set price = {{ input = .., output = .. }} "
            "(USD per million tokens) next to the model in the config"
        )
    if not est.per_model:  # every item is done: nothing to price
        print("\n".join(lines))
        return 0
    lines.append("per model:")
    width = max(len(m) for m in est.per_model)
    for model, row in est.per_model.items():
        lines.append(
            f"  {model:<{width}}  {row.calls:>8,} calls  {row.input_tokens:>12,} in  "
            f"{row.output_tokens:>11,} out  cost {money(est.cost(model))}"
        )
    print("\n".join(lines))
    return 0
