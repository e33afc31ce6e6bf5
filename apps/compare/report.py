"""The report: the one-line verdict, the notes a reader needs, and ``report.md``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from langgraph_moa.core.batch.outputs import write_atomic

REPORT = "report.md"
RESULTS = "results.json"
PLOT = "plot.png"
SHORT_SAMPLE = 20  # fewer judged prompts than this: say the intervals are wide
LENGTH_GAP = 5.0  # points between raw and length-controlled rates worth pointing out


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _points(value: float) -> str:
    text = f"{value:+.0f}"
    return "+0" if text == "-0" else text


def _plain(value: float) -> str:
    text = f"{value:.0f}"
    return "0" if text == "-0" else text


def _ratio(cand: dict[str, Any], base: dict[str, Any]) -> str | None:
    """``5.8x the cost``, or ``4.1x the tokens`` when the cost is unknown or nil."""
    mine, theirs = cand.get("cost_per_answer"), base.get("cost_per_answer")
    if mine is not None and theirs:
        return f"{mine / theirs:.1f}x the cost"
    mine, theirs = cand.get("tokens_per_answer"), base.get("tokens_per_answer")
    if mine is not None and theirs:
        return f"{mine / theirs:.1f}x the tokens"
    return None


def verdict_line(results: dict[str, Any]) -> str:
    """E.g. "moa beats its best single model (qwen) by 7 points (95% CI 2 to 12) at 5.8x the cost".

    Points are the candidate's win rate minus 50 against its strongest baseline: the one it
    has the lowest win rate against.
    """
    cand = results["candidate"]
    judged = [p for p in results["pairs"] if p["win_rate"] is not None]
    if not judged:
        unparsed = sum(p["unparsed"] for p in results["pairs"])
        missing = sum(p["missing"] for p in results["pairs"])
        return (
            f"No verdict: no pair of answers could be judged ({unparsed} unparsed, "
            f"{missing} missing)."
        )
    best = min(judged, key=lambda p: (p["win_rate"], p["lc_win_rate"]))
    systems = {s["name"]: s for s in results["systems"]}
    base = systems[best["baseline"]]
    what = f"its best single model ({base['name']})" if base["single"] else base["name"]
    if len(judged) == 1:
        what = f"{base['name']} alone" if base["single"] else base["name"]
    points = best["win_rate"] - 50
    if best["ci"] is None:  # every judged pair alike (stats.py): no interval, said plainly
        low = high = points
    else:
        low, high = (c - 50 for c in best["ci"])
    interval = ""
    if best["ci"] is None:
        n = best["judged"]
        interval = (
            "no 95% CI from a single judged pair"
            if n == 1
            else f"no 95% CI: all {n} judged pairs had the same outcome"
        )
    if interval:
        doing = "beats" if points > 0 else "loses to" if points < 0 else "does not beat"
        line = f"{cand} {doing} {what}: {_points(points)} points ({interval})"
    elif low > 0:
        line = (
            f"{cand} beats {what} by {_plain(points)} points "
            f"(95% CI {_plain(low)} to {_plain(high)})"
        )
    elif high < 0:
        line = (
            f"{cand} loses to {what} by {_plain(-points)} points "
            f"(95% CI {_plain(-high)} to {_plain(-low)})"
        )
    else:
        line = (
            f"{cand} does not clearly beat {what}: {_points(points)} points "
            f"(95% CI {_points(low)} to {_points(high)})"
        )
    ratio = _ratio(systems[cand], base)
    if ratio:
        line += f" at {ratio}"
    if best["judged"] < SHORT_SAMPLE:
        line += f", on only {_count(best['judged'], 'judged pair')}"
    line += f"; length-controlled {_points(best['lc_win_rate'] - 50)} points"
    if best["lc_ci"] is not None:
        lc_low, lc_high = (c - 50 for c in best["lc_ci"])
        line += f" ({_points(lc_low)} to {_points(lc_high)})"
    return line + "."


def notes(results: dict[str, Any]) -> list[str]:
    """What a reader must know to trust (or not) this report."""
    out: list[str] = []
    judge = results["judge"]
    systems = results["systems"]
    if judge["model"].startswith("local:"):
        out.append(
            f"The judge is the embedded local model ({judge['model']}). A model this small "
            "cannot reliably tell a better answer from a worse one: its verdicts are close to "
            "noise, often unreadable, and follow position and length more than quality. This "
            "report shows the method working end to end, not whether MoA pays off: rerun it "
            "with a strong judge (--judge) and real models."
        )
    own = [s["name"] for s in systems if judge["model"] in s["model_names"]]
    if own:
        out.append(
            f"The judge ({judge['model']}) also answers in {', '.join(own)}: LLM judges tend "
            "to prefer their own answers. A judge from outside the comparison is fairer."
        )
    if judge["unparsed"]:
        out.append(
            f"{judge['unparsed']} of {judge['judgments']} judgments had no readable verdict "
            "line; their pairs count as unparsed, not as ties (results.json gives each "
            "problem)."
        )
    for s in systems:
        if s.get("degraded"):
            out.append(
                f"{_count(s['degraded'], 'answer')} of {s['name']} had fewer proposals than "
                "configured (a proposer gave up): they are judged as they are; rerun the same "
                "command with --retry-degraded to answer them again."
            )
    missing = sum(p["missing"] for p in results["pairs"])
    if missing:
        out.append(
            f"{_count(missing, 'pair')} missing: a system did not answer or a judge call failed "
            "(rerun the same command with --retry-failed)."
        )
    for p in results["pairs"]:
        if p["win_rate"] is None:
            continue
        gap = p["win_rate"] - p["lc_win_rate"]
        if gap >= LENGTH_GAP:
            out.append(
                f"Against {p['baseline']}, the length-controlled win rate is {gap:.0f} points "
                "below the raw one: part of the wins go with longer answers, which judges favour."
            )
    few = [p["judged"] for p in results["pairs"] if p["win_rate"] is not None]
    if few and min(few) < SHORT_SAMPLE:
        out.append(
            f"Only {_count(min(few), 'pair')} per baseline could be judged: the intervals are "
            f"wide; judge {SHORT_SAMPLE} pairs or more for a firmer answer."
        )
    for s in systems:
        if s["answers"] and s["latency_answers"] < s["answers"]:
            out.append(
                f"Latency of {s['name']} is over {s['latency_answers']} of {s['answers']} "
                "answers: the others were partly answered from the call cache (a resumed run)."
            )
    unpriced = [s["name"] for s in systems if s["answers"] and s["cost_usd"] is None]
    if unpriced:
        out.append(
            f"No price is known for a model of {', '.join(unpriced)}: its cost is n/a (set "
            "price = { input = .., output = .. } next to the model in a config)."
        )
    elif all(not s["cost_usd"] for s in systems):
        out.append(
            "Every model runs locally and costs no money: the plot and the verdict compare "
            "tokens per answer instead."
        )
    else:
        out.append(
            "Costs are list prices (nodes/models/catalog.toml or the config's price): check "
            "them against your provider's."
        )
    return out


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}%"


def _ci(ci: list[float] | None, judged: int = 0) -> str:
    if ci is None:  # with pairs judged: all alike, no interval (stats.py)
        return " (no CI: all alike)" if judged else ""
    return f" ({ci[0]:.0f}–{ci[1]:.0f})"


def _money(usd: float | None) -> str:
    if usd is None:
        return "n/a"
    return f"${usd:,.4f}" if usd < 1 else f"${usd:,.2f}"


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} s"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def pairs_table(results: dict[str, Any]) -> str:
    cand = results["candidate"]
    lines = [
        f"| {cand} against | win rate (95% CI) | length-controlled (95% CI) "
        "| win / tie / loss / unparsed | mean length, chars |",
        "| --- | --- | --- | --- | --- |",
    ]
    systems = {s["name"]: s for s in results["systems"]}
    for p in results["pairs"]:
        counts = f"{p['win']} / {p['tie']} / {p['loss']} / {p['unparsed']}"
        if p["missing"]:
            counts += f" (+{p['missing']} missing)"
        lengths = (
            f"{_num(systems[cand]['mean_length'])} vs {_num(systems[p['baseline']]['mean_length'])}"
        )
        lines.append(
            f"| {p['baseline']} | {_pct(p['win_rate'])}{_ci(p['ci'], p['judged'])} "
            f"| {_pct(p['lc_win_rate'])}{_ci(p['lc_ci'], p['judged'])} | {counts} | {lengths} |"
        )
    return "\n".join(lines)


def systems_table(results: dict[str, Any]) -> str:
    lines = [
        "| system | runs | answers | cost | per answer | tokens (per answer) | calls per answer "
        "| median latency | p95 latency |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in results["systems"]:
        answered = f"{s['answers']}" + "".join(
            f" ({s[k]} {k})" for k in ("degraded", "failed") if s.get(k)
        )
        calls = "n/a" if s["calls_per_answer"] is None else f"{s['calls_per_answer']:.1f}"
        lines.append(
            f"| {s['name']} | {s['models']} | {answered} | {_money(s['cost_usd'])} "
            f"| {_money(s['cost_per_answer'])} | {_num(s['tokens'])} "
            f"({_num(s['tokens_per_answer'])}) | {calls} "
            f"| {_seconds(s['latency_median_s'])} | {_seconds(s['latency_p95_s'])} |"
        )
    return "\n".join(lines)


def render(results: dict[str, Any]) -> str:
    """report.md."""
    judge = results["judge"]
    prompts = results["prompts"]
    parts = [
        f"# Does MoA pay off? {results['candidate']} against its baselines",
        f"**{results['verdict']}**",
        f"{prompts['count']} prompts ({prompts['source']}), judged pairwise by "
        f"`{judge['model']}`; made {results['created']}.",
        pairs_table(results),
        systems_table(results),
        f"![win rate against cost per answer]({PLOT})",
        "## How to read it\n\n"
        "- Each pair of answers is judged twice, with the answers' positions swapped; two "
        "different verdicts count as a tie, which cancels the judge's preference for a position.\n"
        "- Win rate: (wins + ties / 2) / judged pairs, for the first system; 50% means no better "
        "and no worse. The 95% interval is a bootstrap over prompts.\n"
        "- Length-controlled: the judge's preference fitted against the difference in answer "
        "length (a logistic regression, as AlpacaEval 2.0 does), read at equal length. Judges "
        "favour longer answers and mixtures write longer ones, so the raw rate alone misleads.\n"
        "- Unparsed: the judge gave no readable verdict in one of the two orders. Missing: an "
        "answer or a judge call failed. Neither is in the rates.\n"
        "- Cost and tokens count every call of an answer (all proposers and the aggregator). "
        "Latency is seconds per answer, with the run's other answers in flight.",
    ]
    if results["notes"]:
        parts.append("## Notes\n\n" + "\n".join(f"- {n}" for n in results["notes"]))
    cost = _money(judge["cost_usd"])
    parts.append(
        f"Judging: {judge['judgments']} judgments ({judge['failed']} failed, {judge['unparsed']} "
        f"unparsed), {judge['tokens']:,} tokens, {cost}; the judge prompt "
        f"({judge['prompt_version']}) is in docs/compare.md. Every answer and judgment is in "
        "answers/ and judgments/ next to this report; the numbers in results.json."
    )
    return "\n\n".join(parts) + "\n"


def write_report(results: dict[str, Any], folder: Path) -> None:
    """results.json, report.md and plot.png in ``folder``."""
    from langgraph_moa.apps.compare.plot import draw

    write_atomic(folder / RESULTS, json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    write_atomic(folder / REPORT, render(results))
    draw(results, folder / PLOT)
