"""From answers and judgments to the results of a comparison (``results.json``).

Inputs are the records ``moa batch`` wrote: one run file per system (its answers) and one for
the judge (its judgments). Everything the report and the plot show is computed here, once, and
stored, so ``moa compare --report-only`` redraws them without any model call.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from langgraph_moa.apps.compare import stats
from langgraph_moa.apps.compare.judge import (
    JUDGE_VERSION,
    ORDERS,
    Order,
    Outcome,
    Side,
    combine,
    judge_messages,
    parse_verdict,
    render_answer,
    render_request,
    side,
)
from langgraph_moa.apps.compare.systems import System
from langgraph_moa.core.batch.records import ANSWERED, answer_usage

RESULTS_VERSION = 1
Record = dict[str, Any]


@dataclass(frozen=True)
class Prompt:
    """One prompt of the comparison (a ``moa batch`` item: its turns and earlier messages)."""

    id: str
    turns: list[str]
    history: list[dict[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class JudgeTask:
    """One judgment: the candidate's and a baseline's answer to a prompt, in one order."""

    id: str
    candidate: str
    baseline: str
    prompt: str
    order: Order
    messages: list[dict[str, str]]

    def item(self) -> dict[str, Any]:
        """The judgment as a ``moa batch`` item (its extra fields stay in the record's input)."""
        return {
            "id": self.id,
            "messages": self.messages,
            "candidate": self.candidate,
            "baseline": self.baseline,
            "prompt_id": self.prompt,
            "order": self.order,
        }


def answers_of(record: Record | None) -> list[str] | None:
    """A system's answer to a prompt (one text per turn), None when it has none."""
    if record is None or record.get("status") not in ANSWERED or not record.get("answers"):
        return None
    return [str(a) for a in record["answers"]]


def answer_length(answers: Sequence[str]) -> int:
    """Length in characters (as AlpacaEval measures it): provider-independent."""
    return sum(len(a) for a in answers)


def judge_tasks(
    prompts: Sequence[Prompt],
    candidate: str,
    baselines: Sequence[str],
    answers: Mapping[str, Mapping[str, Record]],
) -> list[JudgeTask]:
    """Two judgments (both orders) per prompt and baseline where both systems answered.

    A judgment's id holds a digest of what the judge sees, so a changed answer (or judge prompt)
    is judged again rather than matched with an old verdict.
    """
    tasks = []
    for base in baselines:
        for p in prompts:
            mine = answers_of(answers[candidate].get(p.id))
            theirs = answers_of(answers[base].get(p.id))
            if mine is None or theirs is None:
                continue
            request = render_request(p.history, p.turns)
            shown = {"ab": (render_answer(mine), render_answer(theirs))}
            shown["ba"] = (shown["ab"][1], shown["ab"][0])
            for order in ORDERS:
                messages = judge_messages(request, *shown[order])
                digest = hashlib.sha256(
                    json.dumps([JUDGE_VERSION, messages], ensure_ascii=False).encode()
                ).hexdigest()[:12]
                tasks.append(
                    JudgeTask(
                        id=f"{candidate}~{base}~{p.id}~{order}~{digest}",
                        candidate=candidate,
                        baseline=base,
                        prompt=p.id,
                        order=order,
                        messages=messages,
                    )
                )
    return tasks


def _sum_or_none(values: Sequence[float | None]) -> float | None:
    return None if any(v is None for v in values) else float(sum(v for v in values if v))


def system_summary(system: System, records: Mapping[str, Record], candidate: str) -> dict[str, Any]:
    """Answers, cost, tokens, latency and length of one system."""
    ok = [r for r in records.values() if r.get("status") in ANSWERED]
    n = len(ok)
    cost = _sum_or_none([r.get("cost_usd") for r in ok])
    tokens = sum(u["total_tokens"] for r in ok for u in answer_usage(r).values())
    calls = sum(u["calls"] for r in ok for u in answer_usage(r).values())
    # An answer partly served from the call cache (a resumed run) did not take its real time.
    timed = [float(r["seconds"]) for r in ok if not r.get("cached_calls")]
    median, p95 = stats.median_and_p95(timed)
    lengths = [answer_length(answers_of(r) or []) for r in ok]
    models = [s.model for s in system.ctx.all_models()]
    return {
        "name": system.name,
        "spec": system.spec,
        "models": system.models,
        "single": system.single,
        "candidate": system.name == candidate,
        "local": any(m.startswith("local:") for m in models),
        "model_names": models,
        "answers": n,
        "failed": sum(1 for r in records.values() if r.get("status") not in ANSWERED),
        # answered with fewer proposals than configured: in the rates, and said so in the notes
        "degraded": sum(1 for r in records.values() if r.get("status") == "degraded"),
        "cost_usd": cost,
        "cost_per_answer": cost / n if cost is not None and n else None,
        "tokens": tokens,
        "tokens_per_answer": tokens / n if n else None,
        "calls_per_answer": calls / n if n else None,
        "latency_median_s": median,
        "latency_p95_s": p95,
        "latency_answers": len(timed),
        "mean_length": sum(lengths) / n if n else None,
    }


def _judgment(record: Record | None, order: Order) -> tuple[Side | None, dict[str, Any]]:
    """The side a judgment gives the candidate, and what is kept of it."""
    if record is None or record.get("status") != "ok":
        message = (record or {}).get("error") or {"message": "no judgment"}
        return None, {"order": order, "verdict": None, "failed": message.get("message")}
    parsed = parse_verdict(record.get("answer"))
    kept: dict[str, Any] = {"order": order, "verdict": parsed.verdict}
    if parsed.verdict is None:
        kept["problem"] = parsed.problem
        return None, kept
    return side(parsed.verdict, order), kept


def pair_results(
    prompts: Sequence[Prompt],
    candidate: str,
    baseline: str,
    answers: Mapping[str, Mapping[str, Record]],
    judgments: Mapping[tuple[str, str, str, Order], Record],
    *,
    resamples: int = stats.RESAMPLES,
) -> dict[str, Any]:
    """The candidate against one baseline: per-prompt outcomes and their statistics."""
    per_prompt = []
    outcomes: list[Outcome] = []
    diffs: list[float] = []
    for p in prompts:
        mine = answers_of(answers[candidate].get(p.id))
        theirs = answers_of(answers[baseline].get(p.id))
        entry: dict[str, Any] = {"prompt": p.id}
        if mine is None or theirs is None:
            outcome: Outcome = "missing"
            entry["why"] = "no answer from " + " and ".join(
                n for n, a in ((candidate, mine), (baseline, theirs)) if a is None
            )
            diff = 0.0
        else:
            sides = []
            kept = []
            for order in ORDERS:
                s, k = _judgment(judgments.get((candidate, baseline, p.id, order)), order)
                sides.append(s)
                kept.append(k)
            failed = any("failed" in k for k in kept)
            outcome = "missing" if failed else combine(sides[0], sides[1])
            if failed:
                entry["why"] = "the judge's call failed"
            entry["judgments"] = kept
            entry["lengths"] = [answer_length(mine), answer_length(theirs)]
            diff = float(answer_length(mine) - answer_length(theirs))
        entry["outcome"] = outcome
        per_prompt.append(entry)
        outcomes.append(outcome)
        diffs.append(diff)
    pair = stats.pair_stats(outcomes, diffs, resamples=resamples)
    return {
        "candidate": candidate,
        "baseline": baseline,
        **pair.as_json(),
        "prompts": per_prompt,
    }


def judge_summary(model: str, max_tokens: int, records: Sequence[Record]) -> dict[str, Any]:
    ok = [r for r in records if r.get("status") == "ok"]
    return {
        "model": model,
        "max_tokens": max_tokens,
        "prompt_version": JUDGE_VERSION,
        "judgments": len(records),
        "failed": len(records) - len(ok),
        "unparsed": sum(1 for r in ok if parse_verdict(r.get("answer")).verdict is None),
        "cost_usd": _sum_or_none([r.get("cost_usd") for r in records]),
        "tokens": sum(u["total_tokens"] for r in records for u in answer_usage(r).values()),
    }


def build_results(
    *,
    prompts: Sequence[Prompt],
    source: str,
    systems: Sequence[System],
    answers: Mapping[str, Mapping[str, Record]],
    judge: str,
    judge_max_tokens: int,
    judge_records: Sequence[Record],
    resamples: int = stats.RESAMPLES,
) -> dict[str, Any]:
    """The whole results.json."""
    from langgraph_moa.apps.compare.report import notes, verdict_line

    candidate = systems[0].name
    found: dict[tuple[str, str, str, Order], Record] = {}
    for r in judge_records:
        src = r.get("input") or {}
        found[(src["candidate"], src["baseline"], str(src["prompt_id"]), src["order"])] = r
    results: dict[str, Any] = {
        "version": RESULTS_VERSION,
        "created": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "prompts": {"source": source, "count": len(prompts)},
        "candidate": candidate,
        "judge": judge_summary(judge, judge_max_tokens, judge_records),
        "systems": [system_summary(s, answers[s.name], candidate) for s in systems],
        "pairs": [
            pair_results(prompts, candidate, s.name, answers, found, resamples=resamples)
            for s in systems[1:]
        ],
        "settings": {
            "confidence": stats.CONFIDENCE,
            "resamples": resamples,
            "seed": stats.SEED,
            "ridge": [stats.RIDGE_A, stats.RIDGE_B],
            "length": "characters",
        },
    }
    results["verdict"] = verdict_line(results)
    results["notes"] = notes(results)
    return results
