"""``moa compare``: from the command's flags to a comparison (or a redrawn report) and an exit code.

Exit codes: 0 the report is written and every answer and judgment succeeded; 1 the report is
written but some answers or judgments failed (rerun with --retry-failed), or no judgment could
be read, or the run could not go on; 2 refused before any call (bad input, settings, models or
REPORT_DIR: core/command.py); 3 the report is written but some
answers are degraded (fewer proposals than configured: rerun with --retry-degraded); 130
interrupted, 143 stopped by SIGTERM (rerun the same command to resume).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console

from langgraph_moa.apps.compare.report import PLOT, REPORT, RESULTS, render, write_report
from langgraph_moa.apps.compare.results import RESULTS_VERSION
from langgraph_moa.apps.compare.runner import LOCK_HINT, CompareOptions, check_folder, run_compare
from langgraph_moa.apps.compare.systems import (
    System,
    check_names,
    default_systems,
    from_spec,
    is_model_name,
    parse_system,
)
from langgraph_moa.core.batch.inputs import InvalidItem, Item, read_items
from langgraph_moa.core.command import (
    EXIT_DEGRADED,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    Terminated,
    run_stoppable,
)
from langgraph_moa.nodes.context import Context, ModelSpec, build_context
from langgraph_moa.nodes.errors import ConfigError, InputError

STARTER = "prompts.jsonl"  # the starter set, shipped in this package
DEFAULT_OUTPUT = "moa-compare"
MIXTURE_FLAGS = {
    "preset": "--preset",
    "config": "--config",
    "proposers": "--proposer",
    "aggregator": "--aggregator",
    "layers": "--layers",
}


def starter_prompts() -> Path:
    return Path(str(resources.files("langgraph_moa.apps.compare") / STARTER))


def _candidate_name(flags: dict[str, Any]) -> str:
    from langgraph_moa.nodes.presets import default_preset_name

    source = flags.get("config") or flags.get("preset") or default_preset_name()
    name = Path(source).stem
    return name if "moa" in name else f"moa-{name}"


def _mixture(name: str, text: str, flags: dict[str, Any]) -> Context:
    """The mixture of ``--system name=text``: a preset or config file, ``+staircase`` or not."""
    from langgraph_moa.core.settings import context_from_flags, split_staircase

    spec, staircase = split_staircase(text)
    if staircase and is_model_name(spec):
        raise ConfigError(
            f"--system {name}={text}: +staircase turns on staircase streaming of a mixture (a "
            f"preset or config file), and {spec} is one model alone, with no proposers to stream"
        )
    path = Path(spec)
    as_file = path.suffix == ".toml" or path.exists()
    return context_from_flags(
        preset=None if as_file else spec,
        config=spec if as_file else None,
        proposers=None,
        aggregator=None,
        layers=None,
        temperature=flags.get("temperature"),
        max_tokens=flags.get("max_tokens"),
        staircase=True if staircase else None,
    )


def build_systems(given: list[str] | None, flags: dict[str, Any]) -> list[System]:
    """``--system NAME=SPEC`` in order, or the chosen mixture and its own models alone."""
    from langgraph_moa.core.settings import context_from_flags, split_staircase

    if not given:
        ctx = context_from_flags(**flags)
        systems = default_systems(ctx, _candidate_name(flags))
    else:
        mixing = [flag for key, flag in MIXTURE_FLAGS.items() if flags.get(key)]
        if mixing:
            raise ConfigError(
                f"{', '.join(mixing)} and --system do not go together: with --system, give "
                "each system as NAME=SPEC (a preset, a config file or provider:model; "
                "PRESET+staircase for a mixture with staircase streaming)"
            )
        run_wide = {k: flags[k] for k in ("temperature", "max_tokens") if flags.get(k) is not None}
        base = build_context(run_wide, "flags")
        systems = []
        for text in given:
            name, spec = parse_system(text)
            alone = is_model_name(spec) and not split_staircase(spec)[1]
            mixture = base if alone else _mixture(name, spec, flags)
            systems.append(from_spec(name, spec, mixture, base))
    check_names(systems)
    return systems


def _judge(given: str | None, systems: list[System]) -> ModelSpec:
    if given is None:  # the candidate's aggregator (the report warns that it is not neutral)
        return systems[0].ctx.aggregator
    if not is_model_name(given):
        raise ConfigError(
            f"--judge {given!r}: name one model as provider:model, e.g. "
            "--judge openai:gpt-4o or --judge together:Qwen/Qwen2.5-72B-Instruct-Turbo"
        )
    try:
        return ModelSpec(model=given)
    except ValueError as exc:
        raise ConfigError(f"--judge {given!r}: {exc}") from None


def _items(prompts: str | None, limit: int | None) -> tuple[list[Item], str]:
    if prompts is None:
        path, source = str(starter_prompts()), "the starter set, apps/compare/prompts.jsonl"
    else:
        path, source = prompts, "stdin" if prompts == "-" else prompts
    try:
        items = read_items(path)
    except InputError as exc:  # its hint names a moa batch flag that moa compare has not
        raise InputError(exc.problem) from None
    checked = [i for i in items if not isinstance(i, InvalidItem)]  # read_items raised for those
    if limit is not None:
        checked = checked[:limit]
        source += f", first {len(checked)}"
    return checked, source


def _preflight(systems: list[System], judge: ModelSpec) -> None:
    """Build every model now: an unknown provider or a missing key fails before any call."""
    from langgraph_moa.core.settings import preflight

    for s in systems:
        preflight(s.ctx)
    preflight(build_context({"layers": 1, "proposers": [], "aggregator": judge}, "--judge"))


def report_only(folder: str, console: Console) -> int:
    """Redraw ``folder``'s report from its results.json, holding the folder's lock: a compare
    running there writes its own report at its end, newer than this one."""
    from langgraph_moa.core.locks import one_writer

    path = Path(folder) / RESULTS
    if not path.is_file():
        raise InputError(  # a folder given by the user, like a missing PROMPTS file: exit 2
            f"--report-only {folder!r}: no {RESULTS} there; give the REPORT_DIR of a finished "
            "moa compare run"
        )
    again = "give the REPORT_DIR of a finished moa compare run, or run moa compare again there"
    check_folder(Path(folder))
    with one_writer(Path(folder), f"report folder {folder}", LOCK_HINT):
        try:
            results = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
        except (ValueError, RecursionError):  # not JSON, not UTF-8, nested past Python's reader
            raise InputError(f"{path} is not JSON: {again}") from None
        if (wrong := _not_results(results)) is not None:
            raise InputError(f"{path} is not the results of moa compare ({wrong}): {again}")
        try:
            render(results)  # before anything is written: a field it cannot read stops it here
            write_report(results, Path(folder))
        except KeyError as exc:
            raise InputError(
                f"{path} is not the results of moa compare (a field is missing: {exc}): {again}"
            ) from None
        except (TypeError, ValueError, AttributeError, IndexError, ArithmeticError):
            raise InputError(
                f"{path} is not the results of moa compare (a field holds a value of another "
                f"kind than moa compare writes: was it edited?): {again}"
            ) from None
    console.print(
        f"moa compare: redrew {Path(folder) / REPORT} and {Path(folder) / PLOT}",
        highlight=False,
        markup=False,
    )
    print(results["verdict"])
    return 0


def _not_results(results: Any) -> str | None:
    """What makes ``results`` no results.json of this version, in words, or None: the fields
    every part of the report reads, with their kinds (deeper ones are read as they come)."""
    if not isinstance(results, dict):
        return f"a JSON {type(results).__name__}, not an object"
    if results.get("version") != RESULTS_VERSION:
        return f"version {results.get('version')!r}; this moa compare reads {RESULTS_VERSION}"
    kinds = {
        "candidate": str,
        "verdict": str,
        "judge": dict,
        "prompts": dict,
        "systems": list,
        "pairs": list,
        "notes": list,
    }
    for field, kind in kinds.items():
        if not isinstance(results.get(field), kind):
            what = "a list" if kind is list else "an object" if kind is dict else "a string"
            return f"'{field}' is not {what}"
    for field, key in (("systems", "name"), ("pairs", "baseline")):
        for n, entry in enumerate(results[field]):
            if not isinstance(entry, dict) or not isinstance(entry.get(key), str):
                return f"{field}[{n}] is not an object with a '{key}'"
    return None


def compare(
    *,
    prompts: str | None,
    system: list[str] | None,
    judge: str | None,
    output: str | None,
    report_only_dir: str | None,
    flags: dict[str, Any],
    concurrency: int,
    judge_max_tokens: int,
    no_cache: bool,
    retry_failed: bool,
    limit: int | None,
    console: Console,
    retry_degraded: bool = False,
) -> int:
    """Run the command; raises MoAError (ConfigError, InputError: bad input) for one-line errors."""
    if report_only_dir is not None:
        if prompts or system or judge:
            raise ConfigError("--report-only redraws a stored report: give only its REPORT_DIR")
        return report_only(report_only_dir, console)
    if concurrency < 1:
        raise ConfigError("--concurrency must be at least 1")
    if judge_max_tokens < 1:
        raise ConfigError("--judge-max-tokens must be at least 1")
    if limit is not None and limit < 1:
        raise ConfigError("--limit must be at least 1")
    items, source = _items(prompts, limit)
    systems = build_systems(system, flags)
    the_judge = _judge(judge, systems)
    folder = Path(output or DEFAULT_OUTPUT)
    options = CompareOptions(
        concurrency=concurrency,
        cache=not no_cache,
        retry_failed=retry_failed,
        retry_degraded=retry_degraded,
        judge_max_tokens=judge_max_tokens,
    )

    async def go() -> Any:
        from langgraph_moa.nodes.models.resources import RESOURCES

        # This run owns the loop: its clients send over aiohttp (far less CPU per request).
        async with RESOURCES.owned_loop():
            _preflight(systems, the_judge)  # inside the loop: the clients built are the ones used
            return await run_compare(
                items, systems, the_judge, folder, options, source=source, console=console
            )

    def say(text: str) -> None:
        console.print(f"moa compare: {text}", highlight=False, markup=False)

    try:
        run = run_stoppable(go)
    except (KeyboardInterrupt, Terminated) as stop:
        sigterm = isinstance(stop, Terminated)
        say(
            f"{'stopped by SIGTERM' if sigterm else 'interrupted'}; what finished is in {folder}: "
            "run the same command again to resume"
        )
        return EXIT_TERMINATED if sigterm else EXIT_INTERRUPTED
    say(f"report: {folder / REPORT} (plot: {folder / PLOT}, numbers: {folder / RESULTS})")
    print(run.results["verdict"])
    say(_preferences_line(run.results, folder))
    judging = run.results["judge"]
    unreadable = judging["unparsed"] and all(p["win_rate"] is None for p in run.results["pairs"])
    if unreadable:
        say(
            f"no verdict could be read from the judge: {judging['unparsed']} of "
            f"{judging['judgments']} judgments have no 'Verdict: A', 'B' or 'tie' line (see "
            f"{folder}/judgments); choose a judge that follows the prompt (--judge; the "
            "answers are kept)"
        )
    if run.failed_answers or run.failed_judgments:
        say(
            f"{run.failed_answers} answers and {run.failed_judgments} judgments failed (see "
            f"'error' in {folder}/answers and {folder}/judgments); rerun the same command with "
            "--retry-failed to run them again"
        )
    if unreadable or run.failed_answers or run.failed_judgments:
        return 1
    if run.degraded_answers:
        say(
            f"{run.degraded_answers} answers were made with fewer proposals than configured (a "
            f"proposer gave up: see 'missing_proposals' in {folder}/answers); rerun the same "
            "command with --retry-degraded to answer them again"
        )
        return EXIT_DEGRADED
    return 0


LEFT_OUT = {
    "tie": "ties",
    "unparsed": "unparsed",
    "missing": "missing",
    "multi-turn": "multi-turn",
    "earlier-messages": "after a system message or earlier messages",
}


def _preferences_line(results: dict[str, Any], folder: Path) -> str:
    """What preferences.jsonl holds. A file with no pair is written too, and ``datasets`` fails
    on it with a bare StopIteration: the user is told before loading it."""
    prefs = results["preferences"]
    left = ", ".join(f"{n} {LEFT_OUT.get(why, why)}" for why, n in prefs["left_out"].items() if n)
    path = folder / prefs["file"]
    why = f" (left out: {left})" if left else ""
    if prefs["pairs"]:
        degraded = prefs.get("degraded")  # a results.json written before it was counted: None
        flagged = (
            f"; {degraded} hold a degraded answer (a proposer gave up): see chosen_degraded and "
            "rejected_degraded"
            if degraded
            else ""
        )
        return f"{prefs['pairs']} preference pairs in {path}{why}{flagged}"
    return (
        f"no preference pair in {path}{why}: the file is empty, and datasets.load_dataset "
        "cannot load an empty file"
    )
