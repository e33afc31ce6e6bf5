"""A comparison run: every system's answers, then the judgments, then the report.

Answers and judgments are produced by ``moa batch``'s runner (apps/batch), so they get its
concurrency bound, per-model rate limits, model-call cache and resume. REPORT_DIR holds:

    answers/NAME.jsonl      each system's answers: a batch run file (the journal a rerun resumes)
    judgments/JUDGE.jsonl   the judge's replies, one per pair and order: a batch run file too
    moa-cache.sqlite        every finished model call (answers and judgments)
    results.json, report.md, plot.png
    preferences.jsonl       prompt/chosen/rejected pairs the judge decided (preferences.py)

A prompt a system or the judge cannot hold is refused before any call (fits.py). Nothing in
REPORT_DIR is read or written where another user could have put it (a planted answers
file would be judged as the system's, nodes/shared_files.py), and a folder that could not take
the report's files at the end is refused before any call.

Killed at any point, the same command resumes: finished answers and judgments are skipped, and a
call that finished inside an item that did not is answered from the cache, so nothing is paid
twice. Each system's items have ids of their own (``PROMPT@NAME``), so two systems never share
a cached call: each system's answers, cost and latency are its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from langgraph_moa.apps.compare.fits import check_fits
from langgraph_moa.apps.compare.preferences import PREFERENCES, write_preferences
from langgraph_moa.apps.compare.report import PLOT, REPORT, RESULTS, write_report
from langgraph_moa.apps.compare.results import Prompt, Record, build_results, judge_tasks
from langgraph_moa.apps.compare.systems import System, safe_name
from langgraph_moa.core.batch.inputs import Item, input_digest, parse_item
from langgraph_moa.core.batch.outputs import ANOTHER_O, RunFile, check_renames
from langgraph_moa.core.batch.records import ANSWERED, settings_changes, settings_summary
from langgraph_moa.core.batch.runner import (
    DEFAULT_CONCURRENCY,
    BatchOptions,
    redo_statuses,
    run_batch,
    some_of,
)
from langgraph_moa.core.files import os_reason
from langgraph_moa.core.locks import one_writer
from langgraph_moa.core.terminal import stderr_console
from langgraph_moa.nodes import shared_files
from langgraph_moa.nodes.context import Context, ModelSpec, build_context
from langgraph_moa.nodes.errors import ConfigError, RefusedError
from langgraph_moa.nodes.shared_files import OWN_FILES_RISK, check_shared

CACHE_NAME = "moa-cache.sqlite"
# What a run writes in REPORT_DIR besides its runs, its cache and its lock (each checked where
# it is opened).
REPORT_FILES = (RESULTS, REPORT, PLOT, PREFERENCES)
LOCK_HINT = "wait for it to finish, or give another -o (one run per report folder)"
JUDGE_MAX_TOKENS = 512  # room for a few sentences of reasons and the verdict line


class CompareError(RefusedError):
    """REPORT_DIR cannot be used as it is (it holds answers of other settings, or cannot be
    made): refused before any call."""


@dataclass(frozen=True)
class CompareOptions:
    """How ``run_compare`` runs (the ``moa compare`` flags)."""

    concurrency: int = DEFAULT_CONCURRENCY  # items (answers or judgments) in flight
    cache: bool = True  # the model-call cache in REPORT_DIR
    retry_failed: bool = False  # run failed answers and judgments again
    retry_degraded: bool = False  # answer again the answers with missing proposals
    judge_max_tokens: int = JUDGE_MAX_TOKENS


@dataclass
class CompareRun:
    """What ``run_compare`` did."""

    results: dict[str, Any]
    failed_answers: int
    failed_judgments: int
    degraded_answers: int = 0  # answered with fewer proposals than configured


def judge_context(judge: ModelSpec, max_tokens: int) -> Context:
    """The judge: one model through the same graph, temperature 0, whole answers."""
    spec = {**judge.model_dump(exclude_none=True), "temperature": 0.0, "max_tokens": max_tokens}
    return build_context(
        {"layers": 1, "proposers": [], "aggregator": spec, "stream": False}, "--judge"
    )


def prompts_of(items: Sequence[Item]) -> list[Prompt]:
    return [Prompt(i.id, list(i.turns), [dict(m) for m in i.history]) for i in items]


def answers_path(folder: Path, system: System) -> Path:
    return folder / "answers" / f"{system.name}.jsonl"


def judgments_path(folder: Path, judge: ModelSpec) -> Path:
    return folder / "judgments" / f"{safe_name(judge.model)}.jsonl"


def check_answers(folder: Path, systems: Sequence[System]) -> None:
    """Refuse to mix answers of other settings into a system's results."""
    for system in systems:
        path = answers_path(folder, system)
        if not path.exists():
            continue
        changed = _other_settings(path, settings_summary(system.ctx))
        if changed:
            raise CompareError(
                f"{path} holds answers of {system.name} made with other models or settings "
                f"({'; '.join(changed)}); give another REPORT_DIR (-o), another system name, "
                "or delete that file to answer again"
            )


def _other_settings(path: Path, mine: dict[str, Any]) -> list[str]:
    """How the first record of ``path`` made with other settings than ``mine`` differs."""
    for record in RunFile(path).records():
        changed = settings_changes(record["settings"], mine) if record.get("settings") else []
        if changed:
            return changed
    return []


def check_prompts(
    folder: Path, systems: Sequence[System], items: Sequence[Item], redo: Collection[str] = ()
) -> None:
    """Refuse answers made for another text under a prompt's id. Answers are kept by id, so a
    prompt edited under its id kept its old answers: the judge judged them against the new
    text, and preferences.jsonl paired the new prompt with answers to the old one.

    What changed is decided as ``moa batch`` decides it (its ``ResumeCheck``): an answer's
    ``input_digest`` (what the models were asked: its messages and turns) against the prompt's,
    so a field no model is asked (``category``) is no edit; only answers are compared, and not
    those of a status in ``redo`` (``--retry-failed``...: answered again, not kept). A record
    written before records had a digest is compared by the digest of the item it holds
    (``input``)."""
    digests = {i.id: input_digest(i) for i in items}
    for system in systems:
        path = answers_path(folder, system)
        if not path.exists():
            continue
        changed = [
            prompt
            for prompt, record in _by_prompt(path, system).items()
            if prompt in digests
            and record.get("status") in ANSWERED
            and record.get("status") not in redo
            and _answered_digest(record) != digests[prompt]
        ]
        if changed:
            raise CompareError(
                f"{path} holds answers to other prompts under the ids of "
                f"{some_of(changed, 'prompt')}: they changed since they were answered; give the "
                "changed prompts new ids, another REPORT_DIR (-o), or delete that file to answer "
                "again"
            )


def _answered_digest(record: Record) -> str | None:
    """The ``input_digest`` of what ``record`` answered: its own, else (a record written before
    the digest) its stored item's; None when that is no item (then it counts as changed)."""
    if record.get("input_digest"):
        return str(record["input_digest"])
    try:
        return input_digest(parse_item(record.get("input")))
    except ValueError:
        return None


def check_judgments(folder: Path, judge: ModelSpec, max_tokens: int) -> None:
    """Refuse to mix judgments of other judge settings (``--judge-max-tokens``, a config's
    temperature): said here, as compare's own error (run_batch's names --mixed-settings, a flag
    moa compare does not have)."""
    path = judgments_path(folder, judge)
    if not path.exists():
        return
    changed = _other_settings(path, settings_summary(judge_context(judge, max_tokens)))
    if changed:
        raise CompareError(
            f"{path} holds judgments of {judge.model} made with other settings "
            f"({'; '.join(changed)}); give another REPORT_DIR (-o), or delete that file to "
            "judge again"
        )


def _system_items(items: Sequence[Item], system: System) -> list[Item]:
    # Ids of its own: a cache scope of its own (see the module's docstring).
    return [dataclasses.replace(i, id=f"{i.id}@{system.name}") for i in items]


def _by_prompt(path: Path, system: System) -> dict[str, Record]:
    suffix = f"@{system.name}"
    return {
        str(r["id"]).removesuffix(suffix): r
        for r in RunFile(path).records()
        if str(r["id"]).endswith(suffix)
    }


async def run_compare(
    items: Sequence[Item],
    systems: Sequence[System],
    judge: ModelSpec,
    folder: str | Path,
    options: CompareOptions | None = None,
    *,
    source: str = "",
    console: Console | None = None,
) -> CompareRun:
    """Answer ``items`` with every system, judge the candidate (``systems[0]``) against each
    other system, and write the report into ``folder``; resumes what ``folder`` holds."""
    options = options or CompareOptions()
    console = console or stderr_console()
    folder = Path(folder)
    check_fits(items, systems, judge_context(judge, options.judge_max_tokens))
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"-o {str(folder)!r} is a file: give a folder for the report")
    check_folder(
        folder, [answers_path(folder, s) for s in systems] + [judgments_path(folder, judge)]
    )
    check_answers(folder, systems)
    check_prompts(
        folder, systems, items, redo_statuses(options.retry_failed, options.retry_degraded)
    )
    check_judgments(folder, judge, options.judge_max_tokens)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CompareError(
            f"cannot create the report folder {str(folder)!r}: {os_reason(exc)}"
        ) from None
    check_renames(folder, folder / REPORT)
    with one_writer(folder, f"report folder {folder}", LOCK_HINT):
        return await _compare(items, systems, judge, folder, options, source, console)


def check_folder(folder: Path, runs: Sequence[Path] = ()) -> None:
    """Refuse a REPORT_DIR another user could have put there or could change, with every file a
    run reads back or writes: its report files and its ``runs`` (answers and judgments)."""
    what = f"report folder {folder}"
    shared_files.check_folder(folder, what, OWN_FILES_RISK, ANOTHER_O)
    for path in (*(folder / name for name in REPORT_FILES), *runs):
        check_shared(path, f"{path.relative_to(folder)} in {what}", OWN_FILES_RISK, ANOTHER_O)


async def _compare(
    items: Sequence[Item],
    systems: Sequence[System],
    judge: ModelSpec,
    folder: Path,
    options: CompareOptions,
    source: str,
    console: Console,
) -> CompareRun:
    cache = folder / CACHE_NAME if options.cache else None

    def say(text: str) -> None:
        console.print(f"moa compare: {text}", highlight=False, markup=False)

    answers: dict[str, dict[str, Record]] = {}
    failed_answers = degraded_answers = 0
    for n, system in enumerate(systems, 1):
        say(f"answers of {system.name} ({n}/{len(systems)}): {system.models}")
        path = answers_path(folder, system)
        batch = BatchOptions(
            concurrency=options.concurrency,
            generator=system.name,
            cache=cache,
            retry_failed=options.retry_failed,
            retry_degraded=options.retry_degraded,
        )
        # Nobody reads these tokens: whole answers cost the client far less CPU. Not for a
        # staircase mixture: its proposers must stream to its aggregator (without streaming its
        # aggregator would wait for whole proposals: standard MoA under another name).
        ctx = (
            system.ctx if system.ctx.staircase else system.ctx.model_copy(update={"stream": False})
        )
        await run_batch(_system_items(items, system), ctx, path, batch, console=console)
        # Only this run's prompts: a file may hold answers to prompts of an earlier run.
        found = _by_prompt(path, system)
        answers[system.name] = {i.id: found[i.id] for i in items if i.id in found}
        failed_answers += sum(1 for r in answers[system.name].values() if r["status"] == "failed")
        degraded_answers += sum(
            1 for r in answers[system.name].values() if r["status"] == "degraded"
        )

    prompts = prompts_of(items)
    candidate = systems[0].name
    tasks = judge_tasks(prompts, candidate, [s.name for s in systems[1:]], answers)
    judge_ctx = judge_context(judge, options.judge_max_tokens)
    path = judgments_path(folder, judge)
    say(f"judging with {judge.model}: {len(tasks)} judgments ({len(tasks) // 2} pairs x 2 orders)")
    if tasks:
        batch = BatchOptions(
            concurrency=options.concurrency,
            generator="judge",
            cache=cache,
            retry_failed=options.retry_failed,
        )
        judge_items = [parse_item(t.item(), n) for n, t in enumerate(tasks, 1)]
        await run_batch(judge_items, judge_ctx, path, batch, console=console)
    # Only this run's judgments: a judgment of an answer since replaced stays in the file unused.
    by_id = {str(r["id"]): r for r in RunFile(path).records()}
    judge_records = [by_id[t.id] for t in tasks if t.id in by_id]

    results = build_results(
        prompts=prompts,
        source=source,
        systems=systems,
        answers=answers,
        judge=judge.model,
        judge_max_tokens=judge_ctx.aggregator.max_tokens or options.judge_max_tokens,
        judge_records=judge_records,
    )
    write_preferences(results, prompts, answers, folder)
    write_report(results, folder)
    return CompareRun(
        results=results,
        failed_answers=failed_answers,
        failed_judgments=sum(1 for r in judge_records if r["status"] != "ok"),
        degraded_answers=degraded_answers,
    )
