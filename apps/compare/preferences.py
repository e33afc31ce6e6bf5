"""Preference pairs from a comparison: ``REPORT_DIR/preferences.jsonl``.

One row per prompt and baseline the judge decided (the same verdict in both orders), in the
column layout TRL's DPO trainer and Hugging Face ``datasets`` read (``prompt``, ``chosen``,
``rejected``, plain strings), with what decided it::

    {"prompt", "chosen", "rejected", "chosen_system", "rejected_system",
     "verdict": "win" | "loss" (the candidate's side), "judge", "prompt_id",
     "chosen_degraded", "rejected_degraded"}

``*_degraded``: that answer is a mixture's made from fewer proposals than configured (a proposer
gave up: ``status: "degraded"`` in its record), not what the system named gives when whole; the
report's ``preferences`` entry counts the pairs holding one (``degraded``).

Left out, and counted in the report's ``preferences`` entry: ties (the two orders disagree or
the judge said tie), unparsed verdicts, missing answers or judgments, prompts of several turns
(``multi-turn``: each system's later turns answer its own earlier answers, so there is no one
prompt) and prompts of one turn after a system message or earlier messages
(``earlier-messages``: the prompt is not one string, and ``datasets`` cannot hold a column of
strings and message lists at once).
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
    left_out: dict[str, int] = {
        "tie": 0,
        "unparsed": 0,
        "missing": 0,
        "multi-turn": 0,
        "earlier-messages": 0,
    }
    candidate = str(results["candidate"])
    for pair in results["pairs"]:
        baseline = str(pair["baseline"])
        for entry in pair["prompts"]:
            outcome = entry["outcome"]
            if outcome not in ("win", "loss"):
                left_out[outcome] += 1
                continue
            prompt = by_id[entry["prompt"]]
            if len(prompt.turns) != 1:
                left_out["multi-turn"] += 1
                continue
            if prompt.history:
                left_out["earlier-messages"] += 1
                continue
            my_record = answers[candidate].get(prompt.id)
            their_record = answers[baseline].get(prompt.id)
            mine, theirs = answers_of(my_record), answers_of(their_record)
            if not mine or not theirs:
                left_out["missing"] += 1
                continue
            win = outcome == "win"
            degraded = [
                r is not None and r.get("status") == "degraded" for r in (my_record, their_record)
            ]
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
                    "chosen_degraded": degraded[0 if win else 1],
                    "rejected_degraded": degraded[1 if win else 0],
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
    degraded = sum(1 for r in rows if r["chosen_degraded"] or r["rejected_degraded"])
    results["preferences"] = {
        "file": PREFERENCES,
        "pairs": len(rows),
        "degraded": degraded,
        "left_out": left_out,
    }
