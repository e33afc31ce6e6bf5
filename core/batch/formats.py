"""Output formats. ``jsonl`` is the run file itself (core/batch/outputs.py); the others are made
from it once the run is over, in input order, with the items that have an answer (``ok`` or
``degraded``, core/batch/records.py):

- ``alpaca-eval``: AlpacaEval 2.0's ``model_outputs.json``, a JSON list of
  ``{"instruction", "output", "generator", "dataset"}``;
- ``mt-bench``: FastChat's answer JSONL (``data/mt_bench/model_answer/MODEL.jsonl``), one
  ``{"question_id", "answer_id", "model_id", "choices": [{"index": 0, "turns": [...]}],
  "tstamp"}`` per question, a turn's answer per turn (with ``--samples K``, K choices).

The run's own files (the journal of a non-jsonl run, the call cache) live in a work folder,
``.moa-batch/`` beside the output, never as files in the output's folder: evaluation tools read
folders whole (FastChat's ``load_model_answers`` loads every ``*.jsonl`` of ``model_answer/`` and
indexes each line by ``question_id``; a journal there breaks it). Python's ``glob("*.jsonl")``
matches neither a folder nor a hidden name.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from langgraph_moa.core.batch.ids import Firsts
from langgraph_moa.core.batch.inputs import InvalidItem, Item, parse_item
from langgraph_moa.core.batch.outputs import write_atomic
from langgraph_moa.core.batch.records import ANSWERED
from langgraph_moa.core.batch.samples import base_id
from langgraph_moa.nodes.errors import InputError

Format = Literal["jsonl", "alpaca-eval", "mt-bench"]
FORMATS: tuple[Format, ...] = ("jsonl", "alpaca-eval", "mt-bench")
DEFAULT_DATASET = "moa-batch"  # AlpacaEval's "dataset" when the item names none


WORK_DIR = ".moa-batch"  # beside the output: the journal of a non-jsonl run, the call cache


def work_dir(output: Path) -> Path:
    return output.parent / WORK_DIR


def journal_for(output: Path) -> Path:
    """The journal a -f run of ``output`` keeps in the work folder."""
    return work_dir(output) / f"{output.name}.run.jsonl"


def run_file_for(output: Path, fmt: Format) -> Path:
    """Where the run's records go: the output itself for jsonl, else in the work folder."""
    if fmt == "jsonl":
        return output
    return journal_for(output)


def legacy_run_file(output: Path) -> Path:
    """Where runs before the work folder kept the journal of a non-jsonl output."""
    return output.with_name(f"{output.stem}.run.jsonl")


def cache_for(output: Path) -> Path:
    """The default call cache: one per output, so a new output asks the models again (a rerun
    of the same output, resumed or retried, gets its finished calls back). Share one across
    outputs on purpose with ``--cache PATH``."""
    return work_dir(output) / f"{output.name}.cache.sqlite"


class FormatCheck:
    """Refuse what a format cannot hold, item by item, before anything runs: called on each item
    as the input's first pass reads it (core/batch/inputs.py), so the check costs no pass of its
    own over a long input. ``close`` frees what it keeps.

    AlpacaEval's ``model_outputs.json`` has one instruction and one output per row: an item of
    several turns (MT-Bench) or with an earlier conversation would lose all but its last turn
    (a row pairing turn 1's question with turn 2's answer), and K samples would be K rows of
    one instruction. AlpacaEval pairs each row with the reference output of the same
    instruction (a join on ``instruction``): two items of one instruction would be merged.
    MT-Bench's answer file holds any number of turns and K choices, but one row per
    ``question_id``.
    """

    def __init__(self, fmt: Format, samples: int = 1) -> None:
        if fmt == "alpaca-eval" and samples > 1:  # said before the input is read
            raise InputError(
                "--samples with -f alpaca-eval: AlpacaEval takes one output per instruction; "
                "write -f jsonl (a record per sample) or -f mt-bench (the samples as choices)"
            )
        self._fmt = fmt
        self._firsts = Firsts() if fmt in ("mt-bench", "alpaca-eval") else None

    def __call__(self, item: Item) -> None:
        if self._fmt == "mt-bench":
            assert self._firsts is not None
            _same_question(self._firsts, item)
        if self._fmt != "alpaca-eval":
            return
        if len(item.turns) > 1 or item.history:
            what = f"{len(item.turns)} turns" if len(item.turns) > 1 else "earlier messages"
            raise InputError(
                f"item {item.id!r} (line {item.line}) has {what}: AlpacaEval's format holds one "
                "instruction and one output, so the other turns would be lost; write it with "
                "-f mt-bench (every turn) or -f jsonl"
            )
        assert self._firsts is not None
        _same_instruction(self._firsts, item)

    def close(self) -> None:
        if self._firsts is not None:
            self._firsts.close()


def check_items(fmt: Format, items: Iterable[Item | InvalidItem]) -> None:
    """``FormatCheck`` over items already read (a replay's, which takes no --samples)."""
    check = FormatCheck(fmt)
    try:
        for item in items:
            if isinstance(item, Item):
                check(item)
    finally:
        check.close()


def question_of(source: Any, item_id: str) -> Any:
    """The ``question_id`` an item's answers go under in MT-Bench's file (its id when none)."""
    return source.get("question_id", item_id) if isinstance(source, dict) else item_id


def _same_question(seen: Firsts, item: Item) -> None:
    """Refuse two items under one ``question_id`` (an explicit ``id`` each): FastChat's file holds
    one row per question, so their answers would be merged as choices of one question. The
    samples of one item (``--samples``) are its choices on purpose."""
    base = base_id(item)
    question = str(question_of(item.source, base))
    first = seen.setdefault(question, base, item.line)
    if first[0] != base:
        raise InputError(
            f"items {first[0]!r} (line {first[1]}) and {base!r} (line {item.line}) have the "
            f"same question_id {question}: MT-Bench's answer file holds one answer per "
            "question, so theirs would be merged; give each its own question_id, or write "
            "-f jsonl"
        )


def _same_instruction(seen: Firsts, item: Item) -> None:
    """Refuse two items of one instruction (as the row writes it, ``instruction``): AlpacaEval
    joins model outputs to reference outputs on ``instruction``, so both rows would meet both
    references (a cartesian product it warns of), and its annotators keep one row of each."""
    key = hashlib.sha256(item.turns[0].encode()).hexdigest()  # instructions may be long
    first = seen.setdefault(key, item.id, item.line)
    if first[0] != item.id:
        raise InputError(
            f"items {first[0]!r} (line {first[1]}) and {item.id!r} (line {item.line}) have the "
            "same instruction: AlpacaEval pairs each output with the reference output of its "
            "instruction, so their outputs would be merged; make the instructions differ, or "
            "write -f jsonl"
        )


def _instruction(record: dict[str, Any]) -> str:
    """What the model was asked: the instruction as given, with Alpaca's ``input`` after a
    blank line when the item has one. AlpacaEval's annotators show the judge ``instruction``
    alone (an ``input`` column is not read), so an instruction without its input would be
    judged against an answer about a text the judge never sees."""
    return parse_item(record["input"]).turns[0]


def alpaca_eval(
    records: Iterable[dict[str, Any]], generator: str | None = None
) -> list[dict[str, Any]]:
    return [
        {
            "instruction": _instruction(r),
            "output": r["answer"],
            "generator": generator or r["generator"],
            "dataset": (r["input"].get("dataset") if isinstance(r["input"], dict) else None)
            or DEFAULT_DATASET,
        }
        for r in records
        if r["status"] in ANSWERED  # a degraded answer is an answer (the run's summary says so)
    ]


def mt_bench(
    records: Iterable[dict[str, Any]], generator: str | None = None
) -> list[dict[str, Any]]:
    """One answer per question; the samples of a question (``--samples``) are its choices, as
    FastChat's ``gen_model_answer --num-choices`` writes them."""
    rows: dict[Any, dict[str, Any]] = {}
    for r in records:
        if r["status"] not in ANSWERED:
            continue
        r = {**r, "generator": generator or r["generator"]}
        base = r.get("item_id", r["id"])  # the item's id, whatever its sample
        question_id = question_of(r["input"], base)
        # Stable across reruns (FastChat draws a random one; any unique string will do).
        answer_id = hashlib.sha256(f"{r['generator']}:{base}".encode()).hexdigest()[:22]
        row = rows.setdefault(
            str(question_id),
            {
                "question_id": question_id,
                "answer_id": answer_id,
                "model_id": r["generator"],
                "choices": [],
                "tstamp": r["finished"],
            },
        )
        row["choices"].append({"index": len(row["choices"]), "turns": r["answers"]})
        row["tstamp"] = max(row["tstamp"], r["finished"])
    return list(rows.values())


def write_format(
    fmt: Format, records: Iterable[dict[str, Any]], output: Path, generator: str | None = None
) -> int:
    """Write ``output`` in ``fmt`` from the run's records (in order); how many items it holds.

    ``generator`` names every row (the run's ``--generator``): records of a run resumed under
    another name carry the old one, and AlpacaEval names a file by its generator only when
    every row has the same one (else "Current model")."""
    if fmt == "alpaca-eval":
        rows = alpaca_eval(records, generator)
        write_atomic(output, json.dumps(rows, ensure_ascii=False, indent=2) + "\n")
    elif fmt == "mt-bench":
        rows = mt_bench(records, generator)
        write_atomic(output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    else:
        raise ValueError(f"{fmt} is the run file itself")
    return len(rows)
