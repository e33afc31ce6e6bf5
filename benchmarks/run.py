"""Run every benchmark and write benchmarks/RESULTS.md.

.venv/bin/python -m benchmarks.run                 (every section; about 20 minutes on 2 cores)
.venv/bin/python -m benchmarks.run latency memory  (those sections only)
.venv/bin/python -m benchmarks.run --quick         (fewer repetitions; prints, writes nothing)
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import (
    AGGREGATOR,
    PROPOSAL_TOKENS,
    PROPOSER_DELAY,
    PROPOSER_TTFT,
    machine,
)

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def _bench(name: str) -> Any:
    """A benchmark module, imported when its section runs: a section measures a process holding
    only what it needs (a module imported for another section, such as the seed's ``together``
    SDK, makes every full garbage collection of the orchestration benchmark walk more objects)."""
    return importlib.import_module(f"benchmarks.{name}")


def _ok(met: bool) -> str:
    return "met" if met else "**not met**"


def _latency_section(rows: list[dict[str, Any]]) -> list[str]:
    reps = rows[0]["reps"]
    sizes = ", ".join(str(n) for n in PROPOSAL_TOKENS)
    out = [
        "## 1-3. The graph against the seed's approach, at real sizes",
        "",
        f"Proposer i writes the i-th of ({sizes}) tokens: the first after "
        f"{PROPOSER_TTFT * 1000:.0f} ms, then one every {PROPOSER_DELAY * 1000:g} ms. The "
        f"aggregator writes {AGGREGATOR.tokens} tokens: the first after "
        f"{AGGREGATOR.ttft * 1000:.0f} ms, then one every {AGGREGATOR.delay * 1000:g} ms "
        f"({AGGREGATOR.total * 1000:.0f} ms in all). A request that is not streamed gets the whole "
        "answer when its last token would have come. The fake server runs in its own process.",
        "",
        "- **graph**: as `moa ask` runs it (graph.astream with the CLI's four stream modes "
        "through run_turn, ChatTogether clients over HTTP); proposers are not streamed, "
        "the answer is;",
        "- **seed**: benchmarks/baseline.py, the seed's own approach: per layer, "
        "`asyncio.gather` of non-streamed proposer calls with the `together` SDK "
        "(`AsyncTogether.chat.completions.create`), each later layer getting the previous "
        "answers in its system prompt, then one streamed aggregator call whose tokens are "
        "handed to a callback.",
        "",
        f"Same process, same server, alternating which goes first; {reps} queries each after 2 "
        "warm-up queries; figures are medians. CPU is `time.process_time` of the client process "
        "around each query. *Layers* are proposer layers (`Context.layers` counts the aggregator "
        "too: (2, 4) is `Context(layers=3)` with 4 proposers).",
        "",
        "| proposer layers, proposers | seed wall | graph wall | graph / seed wall "
        "(target <= 1.05) | graph / seed time to first answer token (target <= 1.05) "
        "| seed CPU | graph CPU | graph / seed CPU per query (target <= 1.5) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        layers, n = r["shape"]
        out.append(
            f"| ({layers}, {n}) | {r['seed_wall_s'] * 1000:.0f} ms "
            f"| {r['graph_wall_s'] * 1000:.0f} ms "
            f"| {r['wall_ratio']:.3f} {_ok(r['wall_ratio'] <= 1.05)} "
            f"| {r['ttft_ratio']:.3f} {_ok(r['ttft_ratio'] <= 1.05)} "
            f"| {r['seed_cpu_s'] * 1000:.0f} ms | {r['graph_cpu_s'] * 1000:.0f} ms "
            f"| {r['cpu_ratio']:.2f} {_ok(r['cpu_ratio'] <= 1.5)} |"
        )
    out += [
        "",
        "Against the latency limit (layers x the slowest proposer's call + the aggregator's "
        "call; TTFT limit: layers x the slowest proposer's call + the aggregator's time to first "
        "token), for both sides:",
        "",
        "| proposer layers, proposers | limit | graph / limit | seed / limit "
        "| graph TTFT / TTFT limit | seed TTFT / TTFT limit |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        layers, n = r["shape"]
        out.append(
            f"| ({layers}, {n}) | {r['limit_s'] * 1000:.0f} ms | {r['limit_ratio']:.3f} "
            f"| {r['seed_limit_ratio']:.3f} | {r['ttft_limit_ratio']:.3f} "
            f"| {r['seed_ttft_limit_ratio']:.3f} |"
        )
    out.append("")
    return out


def _streaming_section(r: dict[str, Any]) -> list[str]:
    out = [
        "## 6. What streaming costs, and nobody pays it when nobody reads the tokens",
        "",
        f"The workload of 1-3 at (2, 4), run five ways in one process, alternating, "
        f"{r['reps']} queries each; CPU per query is the median of `time.process_time`. "
        "Streamed requests are counted by the fake server (its record of each request's "
        '`"stream"` field), for one query.',
        "",
        "| way | CPU per query | proposer requests streamed | aggregator request streamed |",
        "|---|---|---|---|",
    ]
    for label, key in _bench("streaming").WAYS.items():
        row = r["rows"][key]
        out.append(
            f"| {label} | {row['cpu_s'] * 1000:.0f} ms "
            f"| {row['proposer_streamed']} of {row['proposer_requests']} "
            f"| {'yes' if row['aggregator_streamed'] else 'no'} |"
        )
    per = r["per_token_s"]
    out += [
        "",
        f"CPU per streamed answer token (streamed minus whole, over {AGGREGATOR.tokens} tokens): "
        f"graph {per['graph'] * 1e6:.0f} us, seed {per['seed'] * 1e6:.0f} us.",
        "",
    ]
    return out


def _profile_section(r: dict[str, Any]) -> list[str]:
    return [
        "## 7. CPU profile of one query",
        "",
        f"cProfile over {r['queries']} queries of (1, 4) at real sizes after 2 warm-up queries, "
        "divided by the number of queries (benchmarks/profile.py). Idle time (waiting in epoll) "
        "is left out; cProfile inflates code that makes many small calls, so compare shares. "
        "The profile before the changes of issue #10 is kept below this section.",
        "",
        *_bench("profile").render(r),
    ]


def _startup_section(r: dict[str, Any]) -> list[str]:
    share = r["project_share_s"]
    return [
        "## 8. Start-up",
        "",
        "Wall time of a fresh `moa` process answering one question (1 proposer layer x 2 "
        "proposers) to zero-latency models on the fake server, median of "
        f"{r['reps']} runs (benchmarks/startup.py).",
        "",
        "| figure | value | target |",
        "|---|---|---|",
        f"| bytecode cached (`uv sync --compile-bytecode`, the Makefile's install) "
        f"| {r['warm_s']:.2f} s | |",
        f"| no bytecode, none written (an install without compiled bytecode, with "
        f"PYTHONDONTWRITEBYTECODE set) | {r['cold_s']:.2f} s | what the Makefile avoids |",
        f"| of the cached run: the interpreter starting (`python -c pass`) "
        f"| {r['interpreter_s']:.2f} s | |",
        f"| of the cached run: importing other packages (`-X importtime`) "
        f"| {r['third_party_imports_s']:.2f} s | |",
        f"| of the cached run: the project's own share (the rest: its modules, settings, "
        f"clients, graph, query, output, exit) | {share:.2f} s | <= 0.5 s: {_ok(share <= 0.5)} |",
        f"| of which importing the project's own modules | {r['own_imports_s']:.2f} s | |",
        "",
    ]


def _orchestration_section(r: dict[str, Any]) -> list[str]:
    return [
        "## 4. Orchestration cost (zero-latency in-process models)",
        "",
        "CPU (`time.process_time`) per query of 2 proposer layers x 4 proposers with `fake:` "
        "models that answer at once (benchmarks/common.py, registered in "
        "`nodes.providers.PROVIDERS`), against a bare LangGraph graph of the same shape (Send "
        f"fan-out, join, aggregate) whose nodes do nothing. {r['queries']} queries per side in "
        "alternating blocks, `ainvoke`; medians over blocks.",
        "",
        "| figure | value | target |",
        "|---|---|---|",
        f"| MoA graph, CPU per query | {r['moa_ms']:.2f} ms | < 10 ms: {_ok(r['moa_ms'] < 10)} |",
        f"| bare graph, CPU per query | {r['bare_ms']:.2f} ms | |",
        f"| MoA / bare | {r['ratio']:.2f}x | < 2x: {_ok(r['ratio'] < 2)} |",
        f"| MoA as `moa ask` streams it (4 stream modes + progress), CPU per query "
        f"| {r['moa_cli_ms']:.2f} ms | (for information) |",
        "",
    ]


def _stragglers_section(r: dict[str, Any]) -> list[str]:
    stragglers = _bench("stragglers")
    out = [
        "## 5. Stragglers: wait for all against the quorum",
        "",
        f"Every proposer call writes {stragglers.PROPOSER.tokens} tokens "
        f"({stragglers.PROPOSER.total * 1000:.0f} ms), or takes {stragglers.TAIL_X:g}x as "
        f"long with a {stragglers.TAIL_P:.0%} chance (drawn per request by the server, seeded); "
        f"the aggregator's call is a fixed {stragglers.AGGREGATOR_S * 1000:.0f} ms. 2 proposer "
        f"layers x 4 proposers, {r['queries']} queries per policy, the policies' queries "
        f"interleaved and run {r['concurrency']} at a time (to fit the time budget; the shared "
        "CPU adds the same few hundred ms to every policy).",
        "",
        "| policy | p50 | p95 | p95 / wait-all p95 (target <= 0.6) | proposals used per layer "
        "| calls cancelled | of those, seen closed by the server before it had answered |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in r["policies"].items():
        target = "" if row["cancelled_calls"] == 0 else f" {_ok(row['p95_ratio'] <= 0.6)}"
        out.append(
            f"| {name} | {row['p50_s'] * 1000:.0f} ms | {row['p95_s'] * 1000:.0f} ms "
            f"| {row['p95_ratio']:.2f}{target} | {row['mean_proposals_per_layer']:.2f} "
            f"| {row['cancelled_calls']} | {row['server_disconnects']} |"
        )
    base = stragglers.PROPOSER.total
    slow = base * stragglers.TAIL_X
    agg = stragglers.AGGREGATOR_S
    best_ratio = (slow + base + agg) / (2 * slow + agg)
    out += [
        "",
        "What the distribution allows (no overhead): with wait-for-all a layer is slow when any of "
        f"its 4 calls is (p = 1 - 0.8^4 = 59%), so more than 5% of queries have two slow layers "
        f"and p95 = 2 x {slow:.2f} + {agg:g} = {2 * slow + agg:.1f} s. With a quorum of 3 a layer "
        "is slow only when 2+ of its 4 calls are (18%): p95 = one slow layer = "
        f"{slow + base + agg:.1f} s + grace, a ratio of {best_ratio:.2f}: "
        "0.6 is out of reach for 3 of 4 on this distribution, whatever the implementation. "
        "A quorum of 2 is slow only when 3+ of 4 calls are (2.7% a layer, 5.4% a query), so its "
        f"p95 sits right at the edge between {2 * base + agg:.1f} s and "
        f"{slow + base + agg:.1f} s, at the price of fewer references per layer.",
        "",
    ]
    return out


def _memory_section(r: dict[str, Any]) -> list[str]:
    memory = _bench("memory")
    one, many = r["one"], r["many"]
    return [
        "## Memory",
        "",
        "Peak RSS (`ru_maxrss`) of a child process calling the CLI's `ask` command (the function "
        "`moa ask` runs: config file, preflight, a new event loop per query, the graph streamed "
        "with progress). Zero-latency models at real sizes (400-token proposals, a 500-token "
        "answer) through the real clients: ChatTogether over HTTP to the fake server (in a third "
        "process, so its request records do not count); "
        f"{memory.LAYERS} proposer layer x {memory.PROPOSERS} proposers (kept small so that "
        f"1,000 queries fit the time budget), quorum {memory.QUORUM} on.",
        "",
        "| queries in one process | peak RSS | RSS after 1 / 10 / 100 / 1000 queries |",
        "|---|---|---|",
        f"| 1 | {one['peak_rss_mib']:.1f} MiB | |",
        f"| {many['queries']} | {many['peak_rss_mib']:.1f} MiB | "
        + " / ".join(f"{v:.1f}" for v in many["rss_mib_after"].values())
        + " MiB |",
        "",
        f"Growth: {r['growth'] * 100:+.1f}% (target <= +10%: {_ok(r['growth'] <= 0.10)}). "
        f"Left after {many['queries']} queries: {many['quorum_groups_left']} quorum groups; "
        f"{many['model_caches_left']} per-loop cache entries (the last loop's models and HTTP "
        "client: a new loop drops those of closed loops).",
        "",
    ]


def _further_ms(row: dict[str, Any], way: str) -> float:
    """CPU ms per item of ``way``'s run in ``row`` past its run of one item (start-up apart)."""
    cpu_s = float(row[way]["cpu_s"] - row[f"{way}_one"]["cpu_s"])
    return cpu_s / (int(row["items"]) - 1) * 1000


def _instruction_lines(row: dict[str, Any], counts: dict[str, Any] | None) -> list[str]:
    """Work per item in instructions, beside the CPU time of the side-by-side row ``row``."""
    if counts is None:
        return ["", "(Instructions per item: not measured, valgrind is not installed.)"]
    s, m = counts["script"], counts["moa"]
    work = m["per_further_item"] / s["per_further_item"]
    cpu = _further_ms(row, "moa") / _further_ms(row, "script")
    call_ms = _bench("batch").CALL_S * 1000
    return [
        "",
        "Work apart from speed: the same two ways under valgrind (callgrind counts the "
        "instructions a process executes, every thread; the load of this shared machine does "
        f"not move the count), over 1 item and over {counts['items']} items at "
        f"-j {counts['concurrency']}. Valgrind runs the client about 50x slower, so the calls' "
        f"{call_ms:.0f} ms weigh little and the count includes what a slower run adds (the "
        "progress display's refreshes, the limits' polling): if anything it is high for "
        "`moa batch`.",
        "",
        "| way | instructions of a 1-item run | instructions per further item |",
        "|---|---|---|",
        *(
            f"| {label} | {w['one_item'] / 1e9:.2f} G | {w['per_further_item'] / 1e6:.1f} M |"
            for label, w in (("raw asyncio script", s), ("`moa batch`", m))
        ),
        f"| ratio | {m['one_item'] / s['one_item']:.2f}x | {work:.2f}x |",
        "",
        f"Per further item `moa batch` executes {work:.2f}x the script's instructions, but takes "
        f"{cpu:.2f}x its CPU time at -j {row['concurrency']} (the table "
        "above): the rest of the gap is how fast the CPU runs that code, not how much code "
        "runs. A client that mostly waits runs each response's code on cold caches, and "
        "`moa batch` runs more distinct code per call (LangGraph's and LangChain's layers over "
        "the SDK), the likely reason it loses more to them; at -j 64 the loop stays busy and "
        "the gap closes (the tables above).",
    ]


def _side_by_side_lines(
    rows: list[dict[str, Any]], instructions: dict[str, Any] | None = None
) -> list[str]:
    batch = _bench("batch")
    out = [
        "### Against the raw asyncio script",
        "",
        f"The obvious dataset script (benchmarks/baseline.py: a semaphore of N items, an item's "
        f"{batch.PROPOSERS} proposers gathered, then its aggregator, the `together` SDK, a JSON "
        "line appended per item) and `moa batch -j N` (the real command: the journal, the call "
        f"cache and `rpm` limits on, the limits at {batch.UNREACHED_RPM:,} rpm so they never "
        "wait) run the same items in child processes, alternating (who goes first alternates "
        "too), against the fake provider in its own process: every call answers in "
        f"{batch.CALL_S * 1000:.0f} ms, proposals of {min(PROPOSAL_TOKENS)}-"
        f"{max(PROPOSAL_TOKENS)} tokens, a {batch.ANSWER_TOKENS}-token answer, no rate limit. "
        "CPU is the child's own (`wait4`: user + system, start-up included) per item; peak RSS "
        "its VmHWM; start-up the time from spawning it to the first request the server saw. "
        "Both run compiled bytecode, as installed: the checkout's own modules are compiled "
        "first (`compile_package`), as the script's SDK is in site-packages. "
        "Medians over the rounds. The machine is shared and loaded (see the load average "
        "above): absolute times stretch with the load, and only the ratios, measured side by "
        "side and alternating, are meaningful.",
        "",
        "| -j | items x rounds | way | wall | CPU per item | peak RSS | to the first request |",
        "|---|---|---|---|---|---|---|",
    ]
    labels = {
        "script": "raw asyncio script",
        "moa": "`moa batch`",
        "moa_no_cache": "`moa batch --no-cache`",
        "moa_no_limits": "`moa batch`, no `rpm` limits",
    }
    for row in rows:
        for key, label in labels.items():
            if key not in row or key.endswith("_one"):
                continue
            w = row[key]
            out.append(
                f"| {row['concurrency']} | {row['items']} x {row['rounds']} | {label} "
                f"| {w['wall_s']:.1f} s | {w['cpu_ms_per_item']:.1f} ms "
                f"| {w['peak_rss_mib']:.0f} MiB | {w['first_request_s']:.2f} s |"
            )
    out += [
        "",
        f"CPU per item is judged over runs of {batch.TARGET_ITEMS:,} items or more (a data "
        "team's smallest real run); in the shorter run the fixed start-up weighs several ms per "
        "item, and is shown as such. The start-up has its own target, the gap to the first "
        "request.",
        "",
        "| -j x items | wall ratio | CPU per item ratio | peak RSS ratio | start-up gap |",
    ]
    out.append("|---|---|---|---|---|")
    for row in rows:
        s, m = row["script"], row["moa"]
        cpu = m["cpu_ms_per_item"] / s["cpu_ms_per_item"]
        gap = m["first_request_s"] - s["first_request_s"]
        if row["items"] >= batch.TARGET_ITEMS:
            verdict = f"target <= 1.3x: {_ok(cpu <= 1.3)}"
        else:  # a short run: what the start-up adds per item, beside the ratio
            extra = (row["moa_one"]["cpu_s"] - row["script_one"]["cpu_s"]) / row["items"] * 1000
            verdict = f"a short run: start-up adds {extra:.1f} ms per item"
        out.append(
            f"| {row['concurrency']} x {row['items']} | {m['wall_s'] / s['wall_s']:.2f}x "
            f"| {cpu:.2f}x ({verdict}) "
            f"| {m['peak_rss_mib'] / s['peak_rss_mib']:.2f}x "
            f"| {gap:+.2f} s (target <= +1.5 s: {_ok(gap <= 1.5)}) |"
        )
    out += [
        "",
        "Start-up and each further item apart: CPU of a run of one item (imports, clients, "
        "its four calls), and the rest of the run's CPU over its other items.",
        "",
        "| -j x items | way | CPU of a 1-item run | CPU per further item |",
        "|---|---|---|---|",
    ]
    for row in rows:
        further = {}
        for key in ("script", "moa"):
            if f"{key}_one" not in row:
                continue
            one = row[f"{key}_one"]["cpu_s"]
            further[key] = _further_ms(row, key)
            out.append(
                f"| {row['concurrency']} x {row['items']} | {labels[key]} | {one:.2f} s "
                f"| {further[key]:.1f} ms |"
            )
        if len(further) == 2:
            out.append(
                f"| {row['concurrency']} x {row['items']} | ratio | "
                f"{row['moa_one']['cpu_s'] / row['script_one']['cpu_s']:.2f}x "
                f"| {further['moa'] / further['script']:.2f}x |"
            )
    # Beside the largest run at the instruction count's concurrency.
    same = [r for r in rows if instructions and r["concurrency"] == instructions["concurrency"]]
    out += _instruction_lines(max(same or rows, key=lambda r: r["items"]), instructions)
    first = rows[0]
    m = first["moa"]["cpu_ms_per_item"]
    costs = []
    if "moa_no_cache" in first:
        costs.append(
            f"the call cache (a lookup and a store per call, SQLite) "
            f"{m - first['moa_no_cache']['cpu_ms_per_item']:+.1f} ms"
        )
    if "moa_no_limits" in first:
        costs.append(
            f"the `rpm` limits (a token-bucket reservation per call) "
            f"{m - first['moa_no_limits']['cpu_ms_per_item']:+.1f} ms"
        )
    out += [
        "",
        f"What each guarantee costs per item at -j {first['concurrency']} (`moa batch` minus the "
        f"run without it, same alternation): {'; '.join(costs)}. The journal (one JSON line "
        "written and flushed per item, fsync at most once a second) and resume (reading the "
        "journal once at start) cannot be turned off; in a py-spy profile of 400 items at -j 16 "
        "the journal's append was 0.6% of the run's CPU. Differences of a ms or two are within "
        "the noise of this machine.",
        "",
    ]
    return out


def _batch_section(r: dict[str, Any]) -> list[str]:
    batch = _bench("batch")
    t, m = r["throughput"], r["memory"]
    rate = t["rate"]
    return [
        "## Batch: `moa batch` against the raw script, under a provider's rate limit, memory",
        "",
        *_side_by_side_lines(r["side_by_side"], r.get("instructions")),
        "### Under a provider's rate limit",
        "",
        f"The fake provider (its own process) allows R = {rate:g} requests per second per model "
        f"and answers every call in {batch.CALL_S * 1000:.0f} ms with a whole "
        f"{batch.REPLY_TOKENS}-token answer; above R it answers 429 with Retry-After. "
        f"`moa batch` (the real command, a child process) runs {t['items']:,} items of a "
        f"1-layer x {batch.PROPOSERS}-proposer MoA (Self-MoA: one model, three seeds, the same "
        f"model aggregating, so one limit covers every call), `-j {batch.CONCURRENCY}`, `rpm` set "
        f"just under the provider's limit ({batch.RPM_SHARE:g} R), the call cache on. Sustained "
        "rate: requests the server accepted per second between 10% and 90% of the run. The "
        "baseline runs items the reference repository's way (its evaluation script: one item at "
        "a time, its proposers one after another, then the aggregator; the `together` SDK): "
        f"{t['baseline_items'] // 2} items "
        "before the batch run and as many after (median of the two).",
        "",
        "| figure | value | target |",
        "|---|---|---|",
        f"| sustained request rate | {t['sustained_rps']:.1f} req/s = "
        f"{t['sustained_rps'] / rate:.2f} R | >= 0.9 R: {_ok(t['sustained_rps'] >= 0.9 * rate)} |",
        f"| failed items | {t['failed']} of {t['records']:,} | 0: {_ok(t['failed'] == 0)} |",
        f"| 429s answered | {t['rate_limited']} | few |",
        f"| whole run, start-up included | {t['overall_rps']:.1f} req/s, "
        f"{t['items_per_min']:,.0f} items/min, {t['wall_s']:.0f} s | |",
        f"| baseline (reference way) | {t['baseline_items_per_min']:.0f} items/min | |",
        f"| `moa batch` / baseline | {t['speedup']:.1f}x items per minute | |",
        f"| CPU per item, `moa batch` (whole process) | {t['cpu_ms_per_item']:.1f} ms | |",
        f"| CPU per item, baseline | {t['baseline_cpu_ms_per_item']:.1f} ms | |",
        "",
        f"Memory: `run_batch` over {m['items']:,} items in a child process with zero-latency "
        "in-process models (`fake:` models, benchmarks/common.py; real HTTP calls at this count "
        "would not fit the time budget), the call cache, model gates, run file and progress all "
        "on.",
        "",
        "| figure | value | target |",
        "|---|---|---|",
        f"| peak RSS (VmHWM) after 10% of the items | {m['peak_rss_at_10pct_mib']:.1f} MiB | |",
        f"| peak RSS after all {m['items']:,} | {m['peak_rss_mib']:.1f} MiB | |",
        f"| growth of the peak | {m['growth'] * 100:+.1f}% | <= +10%: {_ok(m['growth'] <= 0.10)} |",
        f"| RSS sampled every 0.25 s: after 10% / highest / at the end | "
        f"{m['rss_at_10pct_mib']:.1f} / {m['max_sampled_rss_mib']:.1f} / "
        f"{m['rss_at_end_mib']:.1f} MiB | |",
        f"| CPU per item (orchestration, cache, records) | {m['cpu_ms_per_item']:.2f} ms | |",
        "",
    ]


# name -> (measure, render): each section of RESULTS.md is measured and written on its own, so one
# benchmark can be rerun (python -m benchmarks.run NAME) without redoing the others. A new benchmark
# adds one line here.
Section = tuple[Callable[[bool], Any], Callable[[Any], list[str]]]
SECTIONS: dict[str, Section] = {
    # First: it measures the graph's own CPU, before the other sections import more modules.
    "orchestration": (
        lambda quick: _bench("orchestration").run(blocks=3 if quick else 7),
        _orchestration_section,
    ),
    "latency": (lambda quick: _bench("latency").run(reps=3 if quick else 9), _latency_section),
    "streaming": (
        lambda quick: _bench("streaming").run(reps=3 if quick else 9),
        _streaming_section,
    ),
    "profile": (lambda quick: _bench("profile").run(queries=3 if quick else 8), _profile_section),
    "startup": (lambda quick: _bench("startup").run(reps=2 if quick else 5), _startup_section),
    "stragglers": (
        lambda quick: _bench("stragglers").run(queries=40 if quick else 200),
        _stragglers_section,
    ),
    "memory": (lambda quick: _bench("memory").run(many=100 if quick else 1000), _memory_section),
    "batch": (
        lambda quick: (
            _bench("batch").run(
                items=200,
                memory_items=1000,
                baseline_items=3,
                side_plan=((16, 100, 1),),
                instruction_items=5,
            )
            if quick
            else _bench("batch").run()
        ),
        _batch_section,
    ),
    "batch-server": (
        lambda quick: _bench("batch_server").run(
            items=100 if quick else 200, rounds=1 if quick else 3
        ),
        lambda r: _bench("batch_server").render(r),
    ),
    "batch-input": (
        lambda quick: _bench("batch_input").run(size_mb=64 if quick else 2048),
        lambda r: _bench("batch_input").render(r),
    ),
    "serve": (
        lambda quick: _bench("serve_load").run(requests=200 if quick else 2000),
        lambda r: _bench("serve_load").render(r),
    ),
    "staircase": (
        lambda quick: _bench("staircase").run(reps=1 if quick else 3),
        lambda r: _bench("staircase").render(r),
    ),
    "staircase-local": (
        lambda quick: _bench("staircase").run_local(reps=1 if quick else 3),
        lambda r: _bench("staircase").render_local(r),
    ),
}

HEADER = [
    "# Benchmark results",
    "",
    "Written by `python -m benchmarks.run` (all sections) or `python -m benchmarks.run NAME...` "
    "(those sections only), from the repository root with the project's venv. Each section says "
    "when and where it was measured. Every ratio is measured side by side in one run. Absolute "
    "times drift on shared machines; the ratios are what to compare.",
    "",
]
_MARK = re.compile(r"<!-- section: (\S+) -->\n.*?<!-- end: \1 -->\n", re.DOTALL)


def splice(text: str, name: str, body: list[str]) -> str:
    """``text`` with section ``name`` replaced by ``body`` (appended when it is new)."""
    block = (
        f"<!-- section: {name} -->\n" + "\n".join(body).rstrip("\n") + f"\n<!-- end: {name} -->\n"
    )
    found = {m.group(1): m for m in _MARK.finditer(text)}
    if name in found:
        m = found[name]
        return text[: m.start()] + block + text[m.end() :]
    return text.rstrip("\n") + "\n\n" + block


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help=f"sections to rerun: {', '.join(SECTIONS)}")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke run)")
    args = parser.parse_args()
    unknown = [n for n in args.names if n not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    where = machine()
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else ""
    if not text.startswith(HEADER[0]):
        text = "\n".join(HEADER)
    for name in args.names or list(SECTIONS):
        measure, render = SECTIONS[name]
        t0 = time.perf_counter()
        print(f"benchmarks: {name}...", file=sys.stderr, flush=True)
        result = measure(args.quick)
        took = time.perf_counter() - t0
        when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        body = render(result)
        body[1:1] = ["", f"*Measured {when} on {where}, in {took / 60:.1f} min.*"]
        print(f"benchmarks: {name} done in {took:.0f} s", file=sys.stderr)
        if args.quick:  # a smoke run: its figures are too rough to replace the file
            print("\n".join(body))
            continue
        text = splice(text, name, body)
        RESULTS.write_text(text, encoding="utf-8")  # after each section: a crash keeps the rest
    if not args.quick:
        print(f"benchmarks: wrote {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
