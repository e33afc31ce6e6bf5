"""Preference pairs from a comparison: ``REPORT_DIR/preferences.jsonl``.

One row per prompt and baseline the judge decided (the same verdict in both orders), in the
column layout TRL's DPO trainer and Hugging Face ``datasets`` read (``prompt``, ``chosen``,
``rejected``, plain strings), with what decided it::

    {"prompt", "chosen", "rejected", "chosen_system", "rejected_system",
     "verdict": "win" | "loss" (the candidate's side), "judge", "prompt_id"}

Left out, and counted in the report's ``preferences`` entry: ties (the two orders disagree or
the judge said tie), unparsed verdicts, missing answers or judgments, and prompts of several
turns or with earlier messages (their prompt is not one string).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from langgraph_moa.apps.compare.results import Prompt, Record, answers_of
from langgraph_moa.core.batch.outputs import write_atomic

PREFERENCES = "preferences.jsonl"


def preference_rows(
    results: Mapping[str, Any],
    prompts: Sequence[Prompt],
    answers: Mapping[str, Mapping[str, Record]],
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The rows, and how many pairs were left out, by reason."""
    by_id = {p.id: p for p in prompts}
    rows: list[dict[str, Any]] = []
    left_out: dict[str, int] = {"tie": 0, "unparsed": 0, "missing": 0, "multi-turn": 0}
    candidate = str(results["candidate"])
    for pair in results["pairs"]:
        baseline = str(pair["baseline"])
        for entry in pair["prompts"]:
            outcome = entry["outcome"]
            if outcome not in ("win", "loss"):
                left_out[outcome] += 1
                continue
            prompt = by_id[entry["prompt"]]
            if len(prompt.turns) != 1 or prompt.history:
                left_out["multi-turn"] += 1
                continue
            mine = answers_of(answers[candidate].get(prompt.id))
            theirs = answers_of(answers[baseline].get(prompt.id))
            if not mine or not theirs:
                left_out["missing"] += 1
                continue
            win = outcome == "win"
            rows.append(
                {
                    "prompt": prompt.turns[0],
                    "chosen": (mine if win else theirs)[-1],
                    "rejected": (theirs if win else mine)[-1],
                    "chosen_system": candidate if win else baseline,
                    "rejected_system": baseline if win else candidate,
                    "verdict": outcome,
                    "judge": results["judge"]["model"],
                    "prompt_id": prompt.id,
                }
            )
    return rows, left_out


def write_preferences(
    results: dict[str, Any],
    prompts: Sequence[Prompt],
    answers: Mapping[str, Mapping[str, Record]],
    folder: Path,
) -> None:
    """Write ``preferences.jsonl`` and note what it holds in ``results["preferences"]``."""
    rows, left_out = preference_rows(results, prompts, answers)
    write_atomic(
        folder / PREFERENCES, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    )
    results["preferences"] = {"file": PREFERENCES, "pairs": len(rows), "left_out": left_out}
