"""Output formats. ``jsonl`` is the run file itself (core/batch/outputs.py); the others are made
from it once the run is over, in input order, with the items that finished ``ok``:

- ``alpaca-eval``: AlpacaEval 2.0's ``model_outputs.json``, a JSON list of
  ``{"instruction", "output", "generator", "dataset"}``;
- ``mt-bench``: FastChat's answer JSONL (``data/mt_bench/model_answer/MODEL.jsonl``), one
  ``{"question_id", "answer_id", "model_id", "choices": [{"index": 0, "turns": [...]}],
  "tstamp"}`` per question, a turn's answer per turn.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from langgraph_moa.core.batch.inputs import parse_item
from langgraph_moa.core.batch.outputs import write_atomic

Format = Literal["jsonl", "alpaca-eval", "mt-bench"]
FORMATS: tuple[Format, ...] = ("jsonl", "alpaca-eval", "mt-bench")
DEFAULT_DATASET = "moa-batch"  # AlpacaEval's "dataset" when the item names none


def run_file_for(output: Path, fmt: Format) -> Path:
    """Where the run's records go: the output itself for jsonl, else beside it."""
    if fmt == "jsonl":
        return output
    return output.with_name(f"{output.stem}.run.jsonl")


def _instruction(record: dict[str, Any]) -> str:
    source = record["input"]
    if isinstance(source, dict) and isinstance(source.get("instruction"), str):
        return str(source["instruction"])  # as given: AlpacaEval matches on it
    return parse_item(source).turns[0]


def alpaca_eval(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "instruction": _instruction(r),
            "output": r["answer"],
            "generator": r["generator"],
            "dataset": (r["input"].get("dataset") if isinstance(r["input"], dict) else None)
            or DEFAULT_DATASET,
        }
        for r in records
        if r["status"] == "ok"
    ]


def mt_bench(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in records:
        if r["status"] != "ok":
            continue
        source = r["input"] if isinstance(r["input"], dict) else {}
        question_id = source.get("question_id", r["id"])
        # Stable across reruns (FastChat draws a random one; any unique string will do).
        answer_id = hashlib.sha256(f"{r['generator']}:{r['id']}".encode()).hexdigest()[:22]
        out.append(
            {
                "question_id": question_id,
                "answer_id": answer_id,
                "model_id": r["generator"],
                "choices": [{"index": 0, "turns": r["answers"]}],
                "tstamp": r["finished"],
            }
        )
    return out


def write_format(fmt: Format, records: Iterable[dict[str, Any]], output: Path) -> int:
    """Write ``output`` in ``fmt`` from the run's records (in order); how many items it holds."""
    if fmt == "alpaca-eval":
        rows = alpaca_eval(records)
        write_atomic(output, json.dumps(rows, ensure_ascii=False, indent=2) + "\n")
    elif fmt == "mt-bench":
        rows = mt_bench(records)
        write_atomic(output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    else:
        raise ValueError(f"{fmt} is the run file itself")
    return len(rows)
