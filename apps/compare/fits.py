"""Prompts a system or the judge cannot hold, refused before any call.

Each prompt is answered by every system, then judged: a prompt too long for one system's window
(a single model with a small one) was paid for by the others and then failed, and one too long
for the judge, which reads it with two answers, failed after every answer was paid. So each
prompt is asked, before anything runs, what ``moa batch`` asks of each item
(core/batch/fits.py, ``ContextCheck``) of every system, and of the judge with each pair's two
answers counted at their length limit (the answers do not exist yet; a shorter answer would
have fitted, but whether it will is not known before it is paid for). Like ``moa batch``, which
refuses such an item (exit 2) unless ``--skip-invalid`` records it as failed, and moa compare
has no ``--skip-invalid``: the prompt is refused, naming it.
"""

from __future__ import annotations

from collections.abc import Sequence

from langgraph_moa.apps.compare.judge import judge_messages, render_answer, render_request
from langgraph_moa.apps.compare.systems import System
from langgraph_moa.core.batch.fits import ContextCheck
from langgraph_moa.core.batch.inputs import Item, parse_item
from langgraph_moa.nodes.context import Context
from langgraph_moa.nodes.errors import InputError
from langgraph_moa.nodes.models import settings_for

LEAVE_OUT = "or leave the prompt out"


def answer_limit(ctx: Context) -> int:
    """The longest answer ``ctx`` gives to one turn, in tokens: its aggregator's (or its
    fallback's) ``max_tokens``."""
    writers = [ctx.aggregator, *([ctx.fallback_aggregator] if ctx.fallback_aggregator else [])]
    return max(settings_for(s, ctx).max_tokens for s in writers)


def judged(item: Item) -> Item:
    """The judge's request for ``item``, its two answers left empty (``ContextCheck``'s
    ``added`` counts them)."""
    empty = render_answer([""] * len(item.turns))
    request = judge_messages(render_request(item.history, item.turns), empty, empty)
    return parse_item({"id": item.id, "messages": request}, item.line)


def check_fits(items: Sequence[Item], systems: Sequence[System], judge: Context) -> None:
    """Refuse (``InputError``) the first prompt a system or the judge cannot hold."""
    answering = [(s, ContextCheck(s.ctx)) for s in systems]
    candidate, baselines = systems[0], systems[1:]
    limits = {s.name: answer_limit(s.ctx) for s in systems}
    checks: dict[int, ContextCheck] = {}  # one per answer length the judge reads
    for item in items:
        for system, check in answering:
            if (problem := check.problem(item)) is not None:
                raise InputError(
                    f"prompt {item.id!r}: system {system.name} cannot hold it, and the other "
                    f"systems would pay for it first: {problem}, {LEAVE_OUT}"
                )
        shown = judged(item)
        for base in baselines:
            mine, theirs = limits[candidate.name], limits[base.name]
            added = len(item.turns) * (mine + theirs)
            if added not in checks:
                checks[added] = ContextCheck(judge, added)
            check = checks[added]
            if (problem := check.problem(shown)) is not None:
                raise InputError(
                    f"prompt {item.id!r}: the judge {judge.aggregator.model} cannot hold it with "
                    f"the answers of {candidate.name} and {base.name} (up to {mine} and {theirs} "
                    f"tokens a turn, counted in the prompt), and every system would pay for its "
                    f"answers first: {problem}, {LEAVE_OUT} or choose another --judge"
                )
