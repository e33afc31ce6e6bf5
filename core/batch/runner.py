"""Running a dataset: items in flight up to a bound, records as they finish, resumable output.

Two layers, both usable as a library (``moa compare`` builds on them):

- ``run_items(items, turns, ...)``: an async iterator of records, in the order items finish, with
  at most ``concurrency`` items in flight. Knows nothing of files.
- ``run_batch(items, ctx, output, options)``: the command's whole run: resume from the output
  (skip finished items, repair a torn last line, ``retry_failed``,
  ``retry_degraded``), the call cache, the records
  appended as they finish, progress, the output put in input order at the end and written in the
  chosen format. Returns a ``BatchResult``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from langgraph_moa.core.batch.cost import Prices, prices_of, replay_prices
from langgraph_moa.core.batch.formats import (
    Format,
    cache_for,
    journal_for,
    legacy_run_file,
    run_file_for,
    write_format,
)
from langgraph_moa.core.batch.ids import LOOKUP
from langgraph_moa.core.batch.inputs import (
    InvalidItem,
    Item,
    Items,
    Positions,
    parse_item,
    positions_of,
)
from langgraph_moa.core.batch.outputs import RunFile, check_renames, output_path
from langgraph_moa.core.batch.progress import BatchProgress
from langgraph_moa.core.batch.records import (
    ANSWERED,
    ItemErrorKind,
    Turn,
    build_record,
    item_kind,
    settings_changes,
    settings_summary,
)
from langgraph_moa.core.batch.turns import GraphTurns, ReplayError, ReplayTurns, Turns
from langgraph_moa.core.locks import one_writer
from langgraph_moa.core.terminal import stderr_console
from langgraph_moa.nodes.context import Context
from langgraph_moa.nodes.errors import ConfigError, InputError, MoAError, RunStoppedError
from langgraph_moa.nodes.models.callcache import CallCache, Unstored
from langgraph_moa.nodes.models.paid import paid_calls
from langgraph_moa.nodes.models.redact import redact

DEFAULT_CONCURRENCY = 8


@dataclass(frozen=True)
class BatchOptions:
    """How ``run_batch`` runs (the ``moa batch`` flags)."""

    concurrency: int = DEFAULT_CONCURRENCY  # items in flight
    fmt: Format = "jsonl"
    generator: str = "moa"  # the name in AlpacaEval's "generator" / MT-Bench's "model_id"
    cache: Path | None = None  # the call cache file; None = no cache
    retry_failed: bool = False  # run failed items again
    retry_degraded: bool = False  # run degraded items again (answered with missing proposals)
    limit: int | None = None  # run at most this many of the remaining items
    server: str | None = None  # a LangGraph server's URL: items run there
    assistant: str = "moa"  # the graph or assistant on the server
    replay: dict[str, dict[str, Any]] | None = None  # id -> stored record: re-aggregate only
    mixed_settings: bool = False  # resume an output made with other settings (else refused)
    samples: int = 1  # answers per item (the items are given expanded: core/batch/samples.py)


@dataclass
class BatchResult:
    """What a ``run_batch`` call did."""

    total: int  # items in the input
    ran: int  # items run by this call
    ok: int  # items ok in the output, this run's and earlier ones
    failed: int
    degraded: int  # answered, but with fewer proposals than configured (records.py)
    skipped: int  # finished before and left alone
    repaired_bytes: int  # a torn last line cut off the output
    other_settings: int  # finished items made with other models than this run's
    complete: bool  # every item has a record (the output is in input order)
    run_file: Path
    output: Path
    written: int | None = None  # items in the --format output, once complete
    cache_rejected: int = 0  # call cache entries that were not a call's: asked again
    # Answers the cache could not store, why, and what to do.
    cache_unstored: Unstored = field(default_factory=Unstored)
    not_in_input: int = 0  # records of items the input no longer holds: kept, last (jsonl) or
    # in the journal only (a --format output holds the input's items alone)
    progress: BatchProgress | None = field(default=None, repr=False)


# ---------------------------------------------------------------------------------- items
def _error_of(exc: BaseException) -> tuple[ItemErrorKind, str]:
    from langgraph_moa.core.batch.server import ServerRunError

    if isinstance(exc, ServerRunError):
        return exc.kind, redact(str(exc))
    if isinstance(exc, MoAError):
        return item_kind(type(exc)) or "other", redact(str(exc))
    # One item's bug must not end a week-long run: it is recorded, with what it was.
    return "other", redact(f"unexpected {type(exc).__name__}: {exc}")


async def run_item(
    item: Item | InvalidItem, turns: Turns, *, prices: Prices, generator: str
) -> dict[str, Any]:
    """The record of one item: every turn asked after the previous turn's answer."""
    start = time.perf_counter()
    if isinstance(item, InvalidItem):
        return build_record(
            item,
            [],
            error=("invalid", item.error),
            seconds=0.0,
            prices=prices,
            generator=generator,
            settings={},
        )
    done: list[Turn] = []
    messages = [dict(m) for m in item.history]
    error = None
    settings: dict[str, Any] = {}
    paid: list[dict[str, Any]] = []  # the calls of the turn under way (paid_calls)
    try:
        settings = turns.settings_of(item)
        for index, text in enumerate(item.turns):
            messages.append({"role": "user", "content": text})
            began = time.perf_counter()
            with paid_calls() as paid:
                result = await turns.turn(item, list(messages), index)
            done.append(Turn(prompt=text, seconds=round(time.perf_counter() - began, 3), **result))
            messages.append({"role": "assistant", "content": result["answer"]})
    except RunStoppedError:
        raise  # the whole run stops (run_items cancels the rest): no item's failure
    except Exception as exc:
        error = _error_of(exc)
    return build_record(
        item,
        done,
        error=error,
        seconds=time.perf_counter() - start,
        prices=prices,
        generator=generator,
        settings=settings,
        # A failed turn leaves no record of its calls; those that sent requests were paid.
        unrecorded=paid if error is not None else (),
    )


async def run_items(
    items: Iterable[Item | InvalidItem],
    turns: Turns,
    *,
    prices: Prices,
    generator: str = "moa",
    concurrency: int = DEFAULT_CONCURRENCY,
) -> AsyncIterator[dict[str, Any]]:
    """Records of ``items`` as they finish, at most ``concurrency`` items in flight.

    Items are taken from ``items`` only as room frees up, so a generator of items is read
    lazily. Closing the iterator (or cancelling its consumer) cancels the items in flight.
    """
    if concurrency < 1:
        raise ConfigError("concurrency must be at least 1")
    source = iter(items)
    running: set[asyncio.Task[dict[str, Any]]] = set()
    exhausted = False
    try:
        while True:
            while not exhausted and len(running) < concurrency:
                item = next(source, None)
                if item is None:
                    exhausted = True
                    break
                running.add(
                    asyncio.create_task(run_item(item, turns, prices=prices, generator=generator))
                )
            if not running:
                return
            finished, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in finished:
                yield task.result()
    finally:
        for task in running:
            task.cancel()
        if running:
            with contextlib.suppress(BaseException):
                await asyncio.gather(*running, return_exceptions=True)


# ---------------------------------------------------------------------------------- a run
def some_of(ids: list[str], noun: str) -> str:
    """``ids`` counted and the first few named, for a message: "2 items (q2, q5)"."""
    shown = ", ".join(ids[:3]) + (", ..." if len(ids) > 3 else "")
    return f"{len(ids)} {noun}{'' if len(ids) == 1 else 's'} ({shown})"


def redo_statuses(retry_failed: bool, retry_degraded: bool) -> set[str]:
    """The statuses of the records a run answers again (``--retry-failed``/``--retry-degraded``)."""
    return {s for s, wanted in (("failed", retry_failed), ("degraded", retry_degraded)) if wanted}


class ResumeCheck:
    """Refuse, before any call, to resume the run file ``path`` where it holds what this run
    must not keep: ``add`` each of its records, then ``finish``. Its callers read the records
    for more (a run their statuses, the dry run what is done and the tokens): they read them
    once, and a pass over millions of records takes minutes.

    - Finished items made with other settings than this run would give them (``settings_of`` an
      id; None: not compared): refused (a mixed output), unless ``mixed_settings``; then kept and
      counted (each record's ``settings`` says which made it).
    - Answers to an item edited since (its ``input_digest`` is not the input's, ``order``):
      refused, always: kept, they would answer the old prompt under the new one's id. Records
      written before the digest existed are not compared. The input's digests are looked up
      ``LOOKUP`` records at a time (a resume of millions of records).

    ``redo``: the statuses this run answers again (``--retry-failed``...): those records are
    dropped, not kept, so neither check concerns them.
    """

    def __init__(
        self,
        order: Positions,
        settings_of: Callable[[str], dict[str, Any] | None],
        *,
        path: Path,
        mixed_settings: bool = False,
        redo: Collection[str] = (),
    ) -> None:
        self._order, self._settings_of, self._path = order, settings_of, path
        self._mixed, self._redo = mixed_settings, redo
        self._other, self._changes = 0, set[str]()
        self._edited: dict[str, None] = {}  # item ids, in file order
        self._answered: list[tuple[str, str, str]] = []  # (id, item id, digest): to look up

    def add(self, record: dict[str, Any]) -> None:
        if record.get("status") in self._redo:
            return
        item_id = str(record["id"])
        settings: dict[str, Any] = record.get("settings") or {}
        mine = self._settings_of(item_id) if settings else None
        # The same settings (the common case) compare equal at once: no difference to name.
        found = settings_changes(settings, mine) if mine is not None and mine != settings else []
        self._other += bool(found)
        self._changes.update(found)
        digest = record.get("input_digest")
        if digest and record.get("status") in ANSWERED:
            self._answered.append((item_id, str(record.get("item_id", item_id)), digest))
            if len(self._answered) == LOOKUP:
                self._look_up()

    def _look_up(self) -> None:
        now = self._order.digests([item_id for item_id, _, _ in self._answered])
        for item_id, name, digest in self._answered:
            if now.get(item_id, digest) != digest:
                self._edited[name] = None
        self._answered.clear()

    def finish(self) -> int:
        """Raise what the records added hold; else how many finished items of other settings
        are kept."""
        self._look_up()
        if self._other and not self._mixed:
            raise ConfigError(
                f"{self._path} holds {self._other} finished items made with other settings "
                f"({'; '.join(sorted(self._changes))}): give another -o, or pass --mixed-settings "
                "to keep them and run the rest with these settings"
            )
        if self._edited:
            raise InputError(
                f"{self._path} holds answers to {some_of(list(self._edited), 'item')} whose "
                "prompt changed in the input since they were answered: give the changed items new "
                f"ids, remove their lines from {self._path} to answer them again, or give "
                "another -o"
            )
        return self._other


def _replayed_settings(turns: ReplayTurns, samples: int) -> Callable[[str], dict[str, Any] | None]:
    """What a replay records for an id: its stored proposers, this run's aggregator. A replay
    resumed with another aggregator would otherwise mix two aggregators' answers in one file."""

    def of(item_id: str) -> dict[str, Any] | None:
        try:
            return {**turns.settings_for(item_id), "samples": samples}
        except (KeyError, ReplayError):  # not in the replayed run (any more): nothing to compare
            return None

    return of


def resumed_settings(
    ctx: Context, samples: int, replay: ReplayTurns | None = None
) -> Callable[[str], dict[str, Any] | None]:
    """What this run records as the settings of an id (``ResumeCheck`` compares them)."""
    if replay is not None:
        return _replayed_settings(replay, samples)
    mine = {**settings_summary(ctx), "samples": samples}
    return lambda _: mine


def default_cache(output: Path) -> Path:
    return cache_for(output)


def replay_items(
    records: Iterable[dict[str, Any]], name: str = "the replayed run"
) -> tuple[list[Item | InvalidItem], dict[str, dict[str, Any]]]:
    """The items of a run file to re-aggregate, and their stored records by id.

    A record written twice for one id (outputs joined with ``cat``) counts once, in its last
    version, as the run file's own rewrite keeps it (core/batch/outputs.py). A record whose
    ``input`` is not an item was not written by ``moa batch``: ``InputError`` names its line.
    """
    last: dict[str, tuple[int, dict[str, Any]]] = {}
    for n, record in enumerate(records, 1):
        last[str(record["id"])] = (last.get(str(record["id"]), (n, {}))[0], record)
    items: list[Item | InvalidItem] = []
    stored: dict[str, dict[str, Any]] = {}
    for rid, (n, record) in last.items():
        if record.get("status") not in ANSWERED:
            items.append(
                InvalidItem(rid, f"item {rid} failed in the replayed run", record.get("input"), n)
            )
            continue
        try:
            item = parse_item(record.get("input"), n)
        except ValueError as exc:
            raise InputError(f"--replay {name}: record {n} (id {rid!r}): input: {exc}") from None
        items.append(Item(rid, item.kind, item.turns, item.history, item.source, n))
        stored[rid] = record
    return items, stored


async def run_batch(
    items: Items,
    ctx: Context,
    output: str | Path,
    options: BatchOptions | None = None,
    *,
    console: Console | None = None,
) -> BatchResult:
    """Run ``items`` into ``output`` (resuming it if it holds finished items); one process at a
    time per output (core/locks.py)."""
    options = options or BatchOptions()
    output = output_path(output)
    with output_lock(output, options.fmt):
        return await _run_batch(items, ctx, output, options, console=console)


@contextlib.contextmanager
def output_lock(output: Path, fmt: Format, *, every_format: bool = False) -> Iterator[None]:
    """The lock of a run's output (its run file): one process at a time (core/locks.py). Taken
    by ``run_batch``; a caller that takes it first (before reading a long input) holds it for
    the run too.

    ``every_format`` (the command's runs): runs of every format on one ``-o`` also share a lock
    on its name, in the work folder (a -f output's folder holds nothing of ours). A jsonl run
    writes ``-o`` as it goes, a -f run at its end, and with only its own lock each, the last to
    finish replaced the other's file. (moa compare's runs share their report folder's lock.)"""
    guarded = run_file_for(output, fmt)
    hint = (
        "wait for it to finish, or, to run in parallel, give each process its own part of the "
        "input and its own -o"
    )
    with contextlib.ExitStack() as held:
        held.enter_context(one_writer(guarded, f"output {guarded}", hint))
        if every_format:
            held.enter_context(one_writer(journal_for(output), f"output {output}", hint))
        yield


async def _run_batch(
    items: Items,
    ctx: Context,
    output: str | Path,
    options: BatchOptions,
    *,
    console: Console | None = None,
) -> BatchResult:
    console = console or stderr_console()
    output = Path(output)
    run_file = RunFile(run_file_for(output, options.fmt))
    legacy = legacy_run_file(output)
    if options.fmt != "jsonl" and legacy.is_file() and not run_file.path.exists():
        # A run begun before the work folder: its journal moves there (out of the answer
        # folder, where FastChat would read it as a model's answers).
        run_file.path.parent.mkdir(parents=True, exist_ok=True)
        legacy.replace(run_file.path)
        console.print(
            f"moa batch: moved the run's journal {legacy} to {run_file.path}",
            highlight=False,
            markup=False,
        )
    order = positions_of(items)
    redo = redo_statuses(options.retry_failed, options.retry_degraded)
    # The records are checked in the read that takes their statuses (one read of the output);
    # what they hold is refused below, where it was (after the cache and the server).
    replayed = ReplayTurns(ctx, options.replay) if options.replay is not None else None
    check = ResumeCheck(
        order,
        resumed_settings(ctx, options.samples, replayed),
        path=run_file.path,
        mixed_settings=options.mixed_settings,
        redo=redo,
    )
    status = run_file.open(check.add)
    if run_file.repaired:
        console.print(
            f"moa batch: cut off a torn last line ({run_file.repaired} bytes) of {run_file.path}; "
            "that item runs again",
            highlight=False,
            markup=False,
        )
    prices = prices_of(ctx) if options.replay is None else replay_prices(ctx, options.replay)
    cache = CallCache(options.cache) if options.cache is not None and not options.server else None
    # Closed on every way out, a refusal below included: a library caller's process goes on.
    with cache or contextlib.nullcontext():
        turns: Turns
        if options.server:
            from langgraph_moa.core.batch.server import ServerTurns

            remote = ServerTurns(options.server, ctx, options.assistant, samples=options.samples)
            await remote.check()
            turns = remote
        elif options.replay is not None:
            turns = ReplayTurns(ctx, options.replay, cache)
        else:
            turns = GraphTurns(ctx, cache, samples=options.samples)

        # Refused before the output is changed (the records --retry-* drops).
        other = check.finish()
        again = {i for i, s in status.items() if s in redo}
        if again:
            run_file.drop(again)
            status = {i: s for i, s in status.items() if i not in again}
        # Lazily: with --limit only that many items are read (a streamed input stays on disk).
        # What is counted per id is counted over the output's records (they are in memory
        # already), never over the input's ids, which may be tens of millions (core/batch/ids.py).
        skipped = sum(1 for i in status if order.position(i) is not None)
        to_run = len(order) - skipped
        if options.limit is not None:
            to_run = min(to_run, options.limit)
        if to_run:  # what it pays for must be written in the end
            for folder in dict.fromkeys((run_file.path.parent, output.parent)):
                check_renames(folder, output)
        todo = itertools.islice((i for i in items if i.id not in status), to_run)

        progress = BatchProgress(console, total=len(items), to_run=to_run, prices=prices)
        with run_file, progress:
            async for record in run_items(
                todo,
                turns,
                prices=prices,
                generator=options.generator,
                concurrency=options.concurrency,
            ):
                if record["settings"]:  # K changes each sample's seeds: a resume compares it
                    record["settings"] = {**record["settings"], "samples": options.samples}
                run_file.append(record)
                progress.record(record)

    final = run_file.statuses()  # as written: the file is not read for them
    counts = collections.Counter(s for i, s in final.items() if order.position(i) is not None)
    not_in_input = len(final) - counts.total()
    complete = counts.total() == len(order)
    result = BatchResult(
        total=len(items),
        ran=progress.done,
        ok=counts["ok"],
        failed=counts["failed"],
        degraded=counts["degraded"],
        skipped=skipped,
        repaired_bytes=run_file.repaired,
        other_settings=other,
        complete=complete,
        run_file=run_file.path,
        output=output,
        progress=progress,
        cache_rejected=cache.rejected if cache is not None else 0,
        cache_unstored=cache.unstored if cache is not None else Unstored(),
        not_in_input=not_in_input,
    )
    if complete:
        if options.fmt == "jsonl":
            run_file.finish(order.position)
        else:
            # One read puts the run file in order and gives the -f output its records (the run
            # file is replaced once all are read, before the -f output is written). The input's
            # items only: an item removed from it since it was answered is no question of this
            # evaluation (its record stays in the journal, last).
            with contextlib.closing(run_file.finished(order.position)) as ordered:
                records = (r for r in ordered if order.position(str(r["id"])) is not None)
                result.written = write_format(options.fmt, records, output, options.generator)
    return result
