"""Batch: ``moa batch`` under a provider's rate limit, the reference repository's way, and memory.

1. Throughput. The fake provider (its own process) allows ``RATE`` requests per second per model
   and answers each call in ``CALL_S`` (a whole, non-streamed answer of ``REPLY_TOKENS`` tokens);
   above the rate it answers 429 with Retry-After. ``moa batch`` (the real command, a child
   process) runs ``ITEMS`` items of a 1-layer x 3-proposer MoA (Self-MoA: one model, three seeds,
   the same model aggregating, so the one limit covers every call) with ``rpm`` set just under
   the provider's limit (``RPM_SHARE``) and the call cache on. Sustained rate: accepted requests
   per second at the server between 10% and 90% of the run.
2. Baseline: the same items the reference repository's way (its evaluation script): one item at
   a time, its proposers one after another, then the aggregator (the ``together`` SDK, no limit
   needed: it never gets near it). ``BASELINE_ITEMS`` items before the batch run and as many after.
3. Memory: peak RSS of ``run_batch`` over ``MEMORY_ITEMS`` items in a child process (zero-latency
   in-process models, so the size fits the time budget; the call cache, gates, run file and
   progress all run), and its growth from the first 10% of the items to the end.
0. Client cost against the raw asyncio script (run first). No rate limit: the fake provider
   answers every call in ``CALL_S`` with 300-500-token proposals (``PROPOSAL_TOKENS``) and a
   500-token answer from three proposer models and an aggregator. The obvious dataset script
   (benchmarks/baseline.py: a semaphore of N items, an item's proposers gathered, then its
   aggregator, a JSON line appended per item) and ``moa batch -j N`` (journal, call cache and
   ``rpm`` limits on, the limits set far above what the run reaches) run the same items in child
   processes, alternating, at each of ``SIDE_BY_SIDE``. Each child's wall time, CPU
   (``wait4``), peak RSS (VmHWM, sampled) and time from its spawn to the first request the
   server saw. At the first concurrency, ``moa batch --no-cache`` and ``moa batch`` without
   ``rpm`` alternate with them too: what the cache and the limits cost. Each way also runs a
   dataset of one item in the same alternation: its CPU is the start-up's (imports, clients,
   four calls), and the rest of a run's CPU over its other items is what each further item
   costs.
0b. Work per item: the same two ways over one item and over ``INSTRUCTION_ITEMS`` at -j 16 under
   valgrind (callgrind), which counts the instructions each executes: a figure this shared
   machine's load does not move, unlike CPU time (``instructions``).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import PROPOSAL_TOKENS, median, text_of

ROOT = Path(__file__).resolve().parent.parent
RATE = 40.0  # requests per second the provider allows, per model
RPM_SHARE = 0.97  # the config's rpm: just under the provider's limit, as docs/batch.md advises
CALL_S = 0.2
PROPOSERS = 3
REPLY_TOKENS = 400
ITEMS = 2000
CONCURRENCY = 16
BASELINE_ITEMS = 15  # before and after the batch run
MEMORY_ITEMS = 10_000
MODEL = "m"
# (concurrency, items, alternating rounds) of the side-by-side comparison with the raw script.
SIDE_BY_SIDE = ((16, 200, 3), (16, 1000, 2), (64, 1000, 2))
# The CPU-per-item target is judged over runs of this many items or more: a data team's smallest
# real run. In a shorter run the fixed start-up (imports: ~1 s more CPU than the script's) weighs
# several ms per item; the table shows it apart, with its own target (the start-up gap).
TARGET_ITEMS = 1000
# Items of the instruction count (valgrind runs the client ~50x slower: a few minutes each).
INSTRUCTION_ITEMS = 65
ANSWER_TOKENS = 500
AGGREGATOR_MODEL = "aggregator"
UNREACHED_RPM = 100_000  # a limit the run never reaches: its bookkeeping runs, it never waits


def _prompt(i: int) -> str:
    return (
        f"Item {i}: explain, for a newcomer, how a distributed database keeps replicas consistent "
        "when the network splits, and what it gives up to do so."
    )


def _config(base_url: str, rate: float) -> str:
    spec = f'model = "together:{MODEL}", base_url = "{base_url}", rpm = {rate * 60 * RPM_SHARE:g}'
    proposers = ", ".join(f"{{ {spec}, seed = {i} }}" for i in range(PROPOSERS))
    return (
        f"layers = 2\nmax_tokens = {REPLY_TOKENS + 100}\nproposers = [{proposers}]\n"
        f"aggregator = {{ {spec} }}\n"
    )


def _child_usage(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """(wall s, CPU s) of one child process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOGETHER_", "OPENAI_"))}
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    # Drain stderr (progress lines) so the child never blocks on a full pipe.
    tail: list[bytes] = []
    assert proc.stderr is not None
    stderr = proc.stderr
    reader = threading.Thread(target=lambda: tail.extend(stderr.readlines()), daemon=True)
    reader.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join(timeout=5)
    if proc.returncode != 0:
        raise RuntimeError(f"child failed ({proc.returncode}): {b''.join(tail[-20:]).decode()}")
    return wall, usage.ru_utime + usage.ru_stime


async def _baseline(base_url: str, n: int, first: int) -> tuple[float, float]:
    """(wall s, CPU s) of ``n`` items the reference repository's way."""
    from benchmarks.baseline import ask, client, with_references

    sdk = client(base_url)
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(first, first + n):
        messages = [{"role": "user", "content": _prompt(i)}]
        references = [await ask(sdk, MODEL, messages) for _ in range(PROPOSERS)]  # one by one
        await ask(sdk, MODEL, with_references(messages, references))
    await sdk.close()
    return time.perf_counter() - start, time.process_time() - cpu


def _sustained(records: list[dict[str, Any]]) -> tuple[float, int, int]:
    """(accepted requests per second between 10% and 90% of them, accepted, 429s)."""
    accepted = sorted(r["started"] for r in records if r["status"] == 200)
    limited = sum(1 for r in records if r["status"] == 429)
    lo, hi = int(len(accepted) * 0.1), int(len(accepted) * 0.9)
    rate = (hi - lo) / (accepted[hi] - accepted[lo]) if hi > lo else 0.0
    return rate, len(accepted), limited


def _throughput(items: int, baseline_items: int, rate: float) -> dict[str, Any]:
    from benchmarks.server import ServerProcess

    with tempfile.TemporaryDirectory() as tmp, ServerProcess() as server:
        work = Path(tmp)
        server.script(MODEL, text_of(REPLY_TOKENS, "word"), ttft=CALL_S)
        config = work / "batch.toml"
        config.write_text(_config(server.base_url, rate), encoding="utf-8")
        data = _write_items(work / "items.jsonl", items)
        base_walls, base_cpus = [], []
        wall, cpu = asyncio.run(_baseline(server.base_url, baseline_items, 0))
        base_walls.append(wall / baseline_items)
        base_cpus.append(cpu / baseline_items)

        server.reset()
        server.script(MODEL, text_of(REPLY_TOKENS, "word"), ttft=CALL_S)
        server.rate_limit(rate)
        out = work / "out.jsonl"
        cmd = [
            sys.executable, "-m", "langgraph_moa", "batch", str(data),
            "-o", str(out), "-c", str(config), "-j", str(CONCURRENCY),
        ]  # fmt: skip
        batch_wall, batch_cpu = _child_usage(cmd, ROOT)
        sustained, accepted, limited = _sustained(server.requests())
        records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        failed = sum(r["status"] != "ok" for r in records)
        server.rate_limit(None)

        wall, cpu = asyncio.run(_baseline(server.base_url, baseline_items, baseline_items))
        base_walls.append(wall / baseline_items)
        base_cpus.append(cpu / baseline_items)
    base_per_item = median(base_walls)
    return {
        "items": items,
        "rate": rate,
        "sustained_rps": sustained,
        "overall_rps": accepted / batch_wall,
        "accepted": accepted,
        "rate_limited": limited,
        "failed": failed,
        "records": len(records),
        "wall_s": batch_wall,
        "items_per_min": items / batch_wall * 60,
        "cpu_ms_per_item": batch_cpu / items * 1000,
        "baseline_items": 2 * baseline_items,
        "baseline_items_per_min": 60 / base_per_item,
        "baseline_s_per_item": base_walls,
        "baseline_cpu_ms_per_item": median(base_cpus) * 1000,
        "speedup": (items / batch_wall * 60) / (60 / base_per_item),
    }


# ----------------------------------------------------------------- against the raw script
def _proposer_models() -> list[str]:
    return [f"proposer-{i}" for i in range(PROPOSERS)]


def _side_config(base_url: str, limits: bool) -> str:
    rpm = f", rpm = {UNREACHED_RPM}" if limits else ""

    def spec(model: str) -> str:
        return f'{{ model = "together:{model}", base_url = "{base_url}"{rpm} }}'

    proposers = ", ".join(spec(m) for m in _proposer_models())
    return (
        f"layers = 2\nmax_tokens = 512\nproposers = [{proposers}]\n"
        f"aggregator = {spec(AGGREGATOR_MODEL)}\n"
    )


def _vmhwm_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as f:
            line = next((x for x in f if x.startswith("VmHWM:")), None)
    except OSError:
        return None
    return int(line.split()[1]) / 1024 if line else None


def _write_items(path: Path, n: int) -> Path:
    path.write_text(
        "".join(json.dumps({"id": f"i{i}", "prompt": _prompt(i)}) + "\n" for i in range(n)),
        encoding="utf-8",
    )
    return path


def _script_cmd(
    data: Path, out: Path, server: Any, concurrency: int, prompt_file: Path
) -> list[str]:
    """The raw asyncio script over ``data`` (benchmarks/baseline.py)."""
    return [
        sys.executable, "-m", "benchmarks.baseline", str(data), str(out),
        "--base-url", server.base_url, "-j", str(concurrency),
        "--proposers", ",".join(_proposer_models()), "--aggregator", AGGREGATOR_MODEL,
        "--prompt-file", str(prompt_file),
    ]  # fmt: skip


def _moa_cmd(data: Path, out: Path, config: Path, concurrency: int, *extra: str) -> list[str]:
    """``moa batch`` over ``data``."""
    return [
        sys.executable, "-m", "langgraph_moa", "batch", str(data), "-o", str(out),
        "-c", str(config), "-j", str(concurrency), *extra,
    ]  # fmt: skip


def _fresh_provider(server: Any) -> None:
    """The side-by-side's fake provider with no request records: every model scripted again."""
    server.reset()  # records, and scripts
    for i, model in enumerate(_proposer_models()):
        server.script(model, text_of(PROPOSAL_TOKENS[i], "word"), ttft=CALL_S)
    server.script(AGGREGATOR_MODEL, text_of(ANSWER_TOKENS, "answer"), ttft=CALL_S)


def _measure_child(cmd: list[str], server: Any) -> dict[str, float]:
    """Wall s, CPU s, peak RSS MiB and seconds from spawn to the first request of one child."""
    _fresh_provider(server)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOGETHER_", "OPENAI_"))}
    start = time.perf_counter()  # CLOCK_MONOTONIC, the clock of the server's request records
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    tail: list[bytes] = []
    peak = [0.0]
    assert proc.stderr is not None
    stderr = proc.stderr
    reader = threading.Thread(target=lambda: tail.extend(stderr.readlines()), daemon=True)
    reader.start()

    def sample() -> None:
        # VmHWM of the child's own memory, not ru_maxrss (which keeps the forking parent's).
        while proc.returncode is None:
            hwm = _vmhwm_mib(proc.pid)
            if hwm is None:
                return
            peak[0] = max(peak[0], hwm)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join(timeout=5)
    sampler.join(timeout=5)
    if proc.returncode != 0:
        raise RuntimeError(f"child failed ({proc.returncode}): {b''.join(tail[-20:]).decode()}")
    records = server.requests()
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mib": peak[0],
        "first_request_s": min(r["started"] for r in records) - start,
        "requests": len(records),
    }


def _side_by_side(
    concurrency: int, items: int, rounds: int, variants: bool, work: Path, server: Any
) -> dict[str, Any]:
    from langgraph_moa.nodes.prompts import AGGREGATION_PROMPT

    work = work / f"j{concurrency}x{items}"  # each row its own outputs: none resumes another's
    work.mkdir()
    data = _write_items(work / "items.jsonl", items)
    one = _write_items(work / "one.jsonl", 1)  # start-up: a run of one item
    prompt_file = work / "prompt.txt"
    prompt_file.write_text(AGGREGATION_PROMPT, encoding="utf-8")
    configs = {}
    for limits in (True, False):
        configs[limits] = work / f"moa-{'limits' if limits else 'none'}.toml"
        configs[limits].write_text(_side_config(server.base_url, limits), encoding="utf-8")
    runs = 0

    def script(data: Path = data) -> list[str]:
        nonlocal runs
        runs += 1
        return _script_cmd(data, work / f"s{runs}.jsonl", server, concurrency, prompt_file)

    def moa(*extra: str, limits: bool = True, data: Path = data) -> list[str]:
        nonlocal runs
        runs += 1
        return _moa_cmd(data, work / f"m{runs}" / "out.jsonl", configs[limits], concurrency, *extra)

    ways: dict[str, Any] = {"script": script, "moa": moa}
    if variants:
        ways["moa_no_cache"] = lambda: moa("--no-cache")
        ways["moa_no_limits"] = lambda: moa(limits=False)
    # Start-up apart from the rest: each way's run of one item, in the same alternation.
    ways["script_one"] = lambda: script(data=one)
    ways["moa_one"] = lambda: moa(data=one)
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in ways}
    for r in range(rounds):
        order = list(ways) if r % 2 == 0 else list(reversed(ways))  # alternate who goes first
        for name in order:
            run = _measure_child(ways[name](), server)
            n = 1 if name.endswith("_one") else items
            if run["requests"] != n * (PROPOSERS + 1):  # every call made, none twice
                raise RuntimeError(f"{name}: {run['requests']} requests for {n} items")
            samples[name].append(run)
    result: dict[str, Any] = {"concurrency": concurrency, "items": items, "rounds": rounds}
    for name, runs_of in samples.items():
        n = 1 if name.endswith("_one") else items
        result[name] = {
            "wall_s": median([x["wall_s"] for x in runs_of]),
            "cpu_s": median([x["cpu_s"] for x in runs_of]),
            "cpu_ms_per_item": median([x["cpu_s"] for x in runs_of]) / n * 1000,
            "peak_rss_mib": median([x["peak_rss_mib"] for x in runs_of]),
            "first_request_s": median([x["first_request_s"] for x in runs_of]),
            "requests": runs_of[0]["requests"],
            "runs": runs_of,
        }
    return result


def _instructions_of(cmd: list[str], server: Any, items: int) -> int:
    """Instructions the child ``cmd`` executes (valgrind's callgrind, every thread)."""
    import re

    _fresh_provider(server)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOGETHER_", "OPENAI_"))}
    run = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *cmd],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, timeout=1800,
    )  # fmt: skip
    found = re.search(r"Collected : (\d+)", run.stderr)
    if run.returncode != 0 or found is None:
        raise RuntimeError(f"under valgrind ({run.returncode}): {run.stderr[-2000:]}")
    if len(server.requests()) != items * (PROPOSERS + 1):
        raise RuntimeError(f"{len(server.requests())} requests for {items} items")
    return int(found.group(1))


def instructions(concurrency: int = 16, items: int = INSTRUCTION_ITEMS) -> dict[str, Any] | None:
    """Work per item, free of the machine's noise: instructions (valgrind's callgrind) of the
    script and of ``moa batch`` over one item and over ``items``, at ``concurrency``. None
    without valgrind.

    CPU time counts instructions and how fast the CPU ran them; on a shared machine the second
    varies by a third within an hour, and for a process that mostly waits it depends on how warm
    the caches are when a response wakes it. Instruction counts vary by a few percent (how the
    items interleave, the progress display's refreshes), the same whatever else the machine runs.
    """
    import shutil

    if shutil.which("valgrind") is None:
        return None
    from benchmarks.server import ServerProcess
    from langgraph_moa.nodes.prompts import AGGREGATION_PROMPT

    compile_package()
    result: dict[str, Any] = {"concurrency": concurrency, "items": items}
    with tempfile.TemporaryDirectory() as tmp, ServerProcess() as server:
        work = Path(tmp)
        config = work / "moa.toml"
        config.write_text(_side_config(server.base_url, True), encoding="utf-8")
        prompt_file = work / "prompt.txt"
        prompt_file.write_text(AGGREGATION_PROMPT, encoding="utf-8")
        for way in ("script", "moa"):
            counts = {}
            for n in (1, items):
                data = _write_items(work / f"{way}{n}.jsonl", n)
                out = work / f"{way}{n}" / "out.jsonl"
                if way == "script":
                    out.parent.mkdir()
                    cmd = _script_cmd(data, out, server, concurrency, prompt_file)
                else:
                    cmd = _moa_cmd(data, out, config, concurrency)
                counts[n] = _instructions_of(cmd, server, n)
            result[way] = {
                "one_item": counts[1],
                "per_further_item": (counts[items] - counts[1]) / (items - 1),
            }
    return result


def compile_package() -> None:
    """Compile this checkout's modules to bytecode first, as installing does (pip, and ``uv sync
    --compile-bytecode`` for the script's SDK). An editable checkout run under
    PYTHONDONTWRITEBYTECODE (as here) otherwise compiles its ~100 modules from source in every
    child, ~5% of a one-item run's CPU that no installed ``moa`` pays."""
    import compileall

    import langgraph_moa
    from langgraph_moa import apps, core, graphs, nodes

    for package in (langgraph_moa, apps, core, graphs, nodes):
        compileall.compile_dir(package.__path__[0], quiet=1)


def side_by_side(plan: tuple[tuple[int, int, int], ...] = SIDE_BY_SIDE) -> list[dict[str, Any]]:
    from benchmarks.server import ServerProcess

    compile_package()
    with tempfile.TemporaryDirectory() as tmp, ServerProcess() as server:
        return [
            _side_by_side(j, n, rounds, k == 0, Path(tmp), server)
            for k, (j, n, rounds) in enumerate(plan)
        ]


# --------------------------------------------------------------------------------- memory
def _rss_now_mib() -> float:
    with open("/proc/self/statm", encoding="utf-8") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _memory_child(items: int, out: str) -> None:
    import io

    from rich.console import Console

    from benchmarks.common import register_instant_provider
    from langgraph_moa.core.batch import BatchOptions, parse_item, run_batch
    from langgraph_moa.nodes.context import Context, ModelSpec

    register_instant_provider()
    ctx = Context(
        layers=2,
        proposers=[ModelSpec(model="fake:p", seed=i) for i in range(PROPOSERS)],
        aggregator="fake:a",
        stream=False,
    )
    dataset = [parse_item({"id": f"i{i}", "prompt": _prompt(i)}) for i in range(items)]
    samples: list[tuple[float, float, float]] = []  # (unix time, RSS MiB, peak RSS MiB)

    def peak() -> float:
        # VmHWM, not ru_maxrss: a child's ru_maxrss keeps the size of the parent it was forked
        # from (Linux carries it across exec), which here is the benchmark runner.
        with open("/proc/self/status", encoding="utf-8") as f:
            line = next(x for x in f if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024

    async def main(tmp: Path) -> None:
        async def sample() -> None:
            while True:
                samples.append((time.time(), _rss_now_mib(), peak()))
                await asyncio.sleep(0.25)

        sampler = asyncio.create_task(sample())
        options = BatchOptions(concurrency=CONCURRENCY, cache=tmp / "cache.sqlite")
        await run_batch(
            dataset, ctx, tmp / "out.jsonl", options, console=Console(file=io.StringIO())
        )
        sampler.cancel()
        samples.append((time.time(), _rss_now_mib(), peak()))

    with tempfile.TemporaryDirectory() as tmp:
        start = time.process_time()
        asyncio.run(main(Path(tmp)))
        cpu = time.process_time() - start
        finished = sorted(
            json.loads(line)["finished"]
            for line in (Path(tmp) / "out.jsonl").open(encoding="utf-8")
        )
    tenth = finished[len(finished) // 10]
    result = {
        "items": items,
        "peak_rss_at_10pct_mib": max(top for t, _, top in samples if t <= tenth),
        "peak_rss_mib": samples[-1][2],  # when run_batch returned (output in order, closed)
        "rss_at_10pct_mib": max(rss for t, rss, _ in samples if t <= tenth),
        "rss_at_end_mib": samples[-1][1],
        "max_sampled_rss_mib": max(rss for _, rss, _ in samples),
        "cpu_ms_per_item": cpu / items * 1000,
    }
    Path(out).write_text(json.dumps(result), encoding="utf-8")


def _memory(items: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "memory.json")
        subprocess.run(
            [sys.executable, "-m", "benchmarks.batch", "--memory-child", str(items), out],
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=1800,
        )
        result: dict[str, Any] = json.loads(Path(out).read_text(encoding="utf-8"))
    result["growth"] = result["peak_rss_mib"] / result["peak_rss_at_10pct_mib"] - 1
    return result


def run(
    items: int = ITEMS,
    memory_items: int = MEMORY_ITEMS,
    baseline_items: int = BASELINE_ITEMS,
    rate: float = RATE,
    side_plan: tuple[tuple[int, int, int], ...] = SIDE_BY_SIDE,
    instruction_items: int = INSTRUCTION_ITEMS,
) -> dict[str, Any]:
    return {
        "side_by_side": side_by_side(side_plan),
        "instructions": instructions(items=instruction_items),
        "throughput": _throughput(items, baseline_items, rate),
        "memory": _memory(memory_items),
    }


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--memory-child":
        _memory_child(int(sys.argv[2]), sys.argv[3])
    elif len(sys.argv) > 1 and sys.argv[1] == "--side-by-side":
        plan = tuple(tuple(int(x) for x in a.split(":")) for a in sys.argv[2:]) or SIDE_BY_SIDE
        print(json.dumps(side_by_side(plan), indent=2))  # type: ignore[arg-type]
    else:
        sizes = [int(a) for a in sys.argv[1:3]]
        items = sizes[0] if sizes else ITEMS
        memory_items = sizes[1] if len(sizes) > 1 else MEMORY_ITEMS
        print(json.dumps(run(items, memory_items), indent=2))
