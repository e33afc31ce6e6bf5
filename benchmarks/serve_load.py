"""``moa serve`` under load: 50 concurrent streaming ``openai`` clients against the same runs
in-process, with zero-latency fake models and then with 200 ms fake models.

Three processes, so that none waits for another's CPU: the fake provider server
(benchmarks/server.py), ``moa serve`` (the real command, its config pointing at the fake), and
this one, which alternates blocks of requests: a block through the server (``openai.AsyncOpenAI``
streaming, 50 in flight) and a block in-process (``graph.astream`` through ``run_events``, the
driver the server uses, 50 in flight). Every request is checked: the full answer, nothing else.

Figures per latency profile: p50/p99 of time to first token and of total time on each side, the
server's CPU per request (``/proc/PID/stat`` over its blocks) against this process's CPU per
in-process run, and the server's RSS after 100 and after all requests.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from benchmarks.common import percentile, text_of
from benchmarks.server import ROOT, ServerProcess

CONCURRENCY = 50
PROPOSERS = 3
PROPOSAL_TOKENS = 200  # "proposals of hundreds of tokens"
ANSWER_TOKENS = 500
# (name, seconds to each call's first token; the rest of the call streams right after)
PROFILES = (("zero-latency", 0.0), ("200 ms", 0.2))
QUESTION = "What are some fun things to do in San Francisco?"
ANSWER = text_of(ANSWER_TOKENS, "answer")


def _config(base_url: str) -> str:
    proposers = ", ".join(
        f'{{ model = "together:p{i}", base_url = "{base_url}" }}' for i in range(PROPOSERS)
    )
    return (
        f"layers = 2\nmax_tokens = {ANSWER_TOKENS + 10}\nproposers = [{proposers}]\n"
        f'aggregator = {{ model = "together:aggregator", base_url = "{base_url}" }}\n'
    )


def _script(fake: ServerProcess, ttft: float) -> None:
    for i in range(PROPOSERS):
        fake.script(f"p{i}", text_of(PROPOSAL_TOKENS, f"p{i}word"), ttft=ttft)
    fake.script("aggregator", ANSWER, ttft=ttft)


class Served:
    """``moa serve --config FILE --port 0`` as a child process."""

    def __init__(self, config: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TOGETHER_", "MOA_"))}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "langgraph_moa",
                "serve",
                "--config",
                config,
                "--port",
                "0",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()
        found = re.search(r"(http://127\.0\.0\.1:\d+)/v1", line)
        if found is None:
            self.proc.kill()
            raise RuntimeError(f"moa serve did not start: {line}")
        self.url = found.group(1)
        self.errors: list[str] = []
        # Drain its log (one access line per request) so the pipe never blocks it.
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if "ERROR" in line or "error" in line.split(":", 1)[0]:
                self.errors.append(line.strip())

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


Timing = tuple[float, float]  # (time to first token, total), seconds


async def _block(n: int, one: Callable[[], Awaitable[Timing]]) -> tuple[list[Timing], int]:
    """``n`` requests, ``CONCURRENCY`` in flight; (timings of the good ones, errors)."""
    timings: list[Timing] = []
    errors = 0
    todo = iter(range(n))

    async def worker() -> None:
        nonlocal errors
        for _ in todo:
            try:
                timings.append(await one())
            except Exception as exc:
                errors += 1
                print(f"serve_load: error: {type(exc).__name__}: {exc}"[:300], file=sys.stderr)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return timings, errors


async def _measure(
    url: str, ctx: Any, served: Served, per_side: int, block: int, rss: dict[str, float]
) -> dict[str, Any]:
    import openai
    from langchain_core.messages import HumanMessage

    from langgraph_moa.core.turns import Finished, Token, run_events
    from langgraph_moa.graphs import graph

    # The SDK's default HTTP client pools up to 1,000 connections: enough for 50 in flight.
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600)

    async def through_server() -> Timing:
        start = time.perf_counter()
        first = None
        parts = []
        stream = await client.chat.completions.create(
            model="serve-load",
            messages=[{"role": "user", "content": QUESTION}],
            stream=True,
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                if first is None:
                    first = time.perf_counter()
                parts.append(chunk.choices[0].delta.content)
        end = time.perf_counter()
        if "".join(parts) != ANSWER:
            raise AssertionError("the streamed answer is not the aggregator's")
        return (first or end) - start, end - start

    async def in_process() -> Timing:
        start = time.perf_counter()
        first = None
        parts = []
        async for event in run_events(graph, [HumanMessage(QUESTION)], ctx):
            if isinstance(event, Token):
                if first is None:
                    first = time.perf_counter()
                parts.append(event.text)
            elif isinstance(event, Finished) and "".join(parts) != ANSWER:
                raise AssertionError("the streamed answer is not the aggregator's")
        end = time.perf_counter()
        return (first or end) - start, end - start

    # Warm-up, both sides: clients built, connections open (counted in the server's requests).
    await _block(CONCURRENCY, through_server)
    rss["served"] += CONCURRENCY
    await _block(CONCURRENCY, in_process)
    server_t: list[Timing] = []
    local_t: list[Timing] = []
    server_cpu = local_cpu = server_wall = local_wall = client_cpu = 0.0
    errors = {"server": 0, "in-process": 0}
    done = 0
    while done < per_side:
        n = min(block, per_side - done)
        cpu0, wall0, mine0 = served.cpu_s(), time.perf_counter(), time.process_time()
        timings, bad = await _block(n, through_server)
        server_cpu += served.cpu_s() - cpu0
        server_wall += time.perf_counter() - wall0
        client_cpu += time.process_time() - mine0
        server_t += timings
        errors["server"] += bad
        rss["served"] += n
        if "after_100" not in rss and rss["served"] >= 100:
            rss["after_100"], rss["first_count"] = served.rss_mib(), rss["served"]
        cpu0, wall0 = time.process_time(), time.perf_counter()
        timings, bad = await _block(n, in_process)
        local_cpu += time.process_time() - cpu0
        local_wall += time.perf_counter() - wall0
        local_t += timings
        errors["in-process"] += bad
        done += n
    await client.close()

    def stats(timings: list[Timing]) -> dict[str, float]:
        ttft, total = [t[0] for t in timings], [t[1] for t in timings]
        return {
            "ttft_p50_s": percentile(ttft, 0.5),
            "ttft_p99_s": percentile(ttft, 0.99),
            "total_p50_s": percentile(total, 0.5),
            "total_p99_s": percentile(total, 0.99),
        }

    server, local = stats(server_t), stats(local_t)
    return {
        "requests_per_side": per_side,
        "errors": errors,
        "server": server,
        "in_process": local,
        "ratios": {k: server[k] / local[k] for k in server},
        "server_cpu_ms": server_cpu / per_side * 1000,
        "in_process_cpu_ms": local_cpu / per_side * 1000,
        "cpu_ratio": server_cpu / local_cpu,
        # The 50 clients' own CPU (this process, over the server's blocks): on 2 cores it
        # competes with the server's, which the in-process side does not have to share.
        "client_cpu_ms": client_cpu / per_side * 1000,
        "server_rps": per_side / server_wall,
        "in_process_rps": per_side / local_wall,
    }


def run(requests: int = 2000, block: int = CONCURRENCY) -> dict[str, Any]:
    """``requests`` through the server in all (half per latency profile), as many in-process."""
    from langgraph_moa.nodes.context import load_preset

    per_side = requests // len(PROFILES)
    results: dict[str, Any] = {"profiles": {}, "requests": requests}
    with tempfile.TemporaryDirectory() as tmp, ServerProcess() as fake:
        config = str(Path(tmp) / "serve-load.toml")
        Path(config).write_text(_config(fake.base_url), encoding="utf-8")
        ctx = load_preset(config)
        served = Served(config)
        rss: dict[str, float] = {"served": 0}
        try:
            rss["start"] = served.rss_mib()
            for name, ttft in PROFILES:
                _script(fake, ttft)
                print(f"serve_load: {name}, {per_side} requests per side...", file=sys.stderr)
                results["profiles"][name] = asyncio.run(
                    _measure(served.url, ctx, served, per_side, block, rss)
                )
                fake.reset()
            rss["after_all"] = served.rss_mib()
        finally:
            served.stop()
        results["rss"] = rss
        results["rss_growth"] = rss["after_all"] / rss["after_100"] - 1
        results["server_log_errors"] = served.errors[:5]
    return results


def _ok(met: bool) -> str:
    return "met" if met else "**not met**"


def render(r: dict[str, Any]) -> list[str]:
    out = [
        "## Serving: `moa serve` under load",
        "",
        f"{CONCURRENCY} concurrent streaming `openai` clients (`AsyncOpenAI`, one process) "
        f"against `moa serve` (its own process), {r['requests']:,} requests in all: "
        f"{r['requests'] // len(PROFILES):,} with zero-latency fake models, then as many with "
        "200 ms fake models (every call's first token after 200 ms, the rest right after). "
        f"Each run: {PROPOSERS} proposers of {PROPOSAL_TOKENS} tokens, a {ANSWER_TOKENS}-token "
        "streamed answer; the fake provider server runs in a third process. Each request is "
        "matched by the same run in-process (`graph.astream` through `run_events`, "
        f"{CONCURRENCY} in flight), in alternating blocks of {CONCURRENCY}, after a warm-up "
        "block on each side. Server CPU: its process's user + system time over its blocks; "
        "in-process CPU: this process's over its blocks; clients' CPU: this process's over the "
        "server's blocks. The fake models send a call's tokens in one burst; the server sends "
        "the answer's tokens that have queued up by the time it writes as one chunk "
        "(`RunStream.ready_text`), so its clients parse a few chunks per answer, not 500.",
        "",
        "| models | side | errors | TTFT p50 | TTFT p99 | total p50 | total p99 | CPU / request "
        "| clients' CPU / request | requests / s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, p in r["profiles"].items():
        for side, key in (("server", "server"), ("in-process", "in_process")):
            s = p[key]
            clients = f"{p['client_cpu_ms']:.0f} ms" if side == "server" else "none"
            out.append(
                f"| {name} | {side} | {p['errors'][side]} | {s['ttft_p50_s'] * 1000:.0f} ms "
                f"| {s['ttft_p99_s'] * 1000:.0f} ms | {s['total_p50_s'] * 1000:.0f} ms "
                f"| {s['total_p99_s'] * 1000:.0f} ms | {p[key + '_cpu_ms']:.0f} ms "
                f"| {clients} | {p[key + '_rps']:.1f} |"
            )
    slow = r["profiles"]["200 ms"]
    zero = r["profiles"]["zero-latency"]
    errors = sum(sum(p["errors"].values()) for p in r["profiles"].values())
    rss = r["rss"]
    out += [
        "",
        "| figure | value | target | |",
        "|---|---|---|---|",
        f"| errors (both sides, both profiles) | {errors} | 0 | {_ok(errors == 0)} |",
    ]
    for name, p in (("200 ms", slow), ("zero-latency", zero)):
        target = name == "200 ms"
        for k, label in (("ttft", "TTFT"), ("total", "total time")):
            for q in ("p50", "p99"):
                ratio = p["ratios"][f"{k}_{q}_s"]
                verdict = _ok(ratio <= 1.10) if target and q == "p50" else ""
                out.append(
                    f"| {label} {q}, server / in-process, {name} | {ratio:.2f}x "
                    f"| {'<= 1.10x' if verdict else ''} | {verdict} |"
                )
    for name, p in (("zero-latency", zero), ("200 ms", slow)):
        out.append(
            f"| CPU per request, server / in-process, {name} | {p['cpu_ratio']:.2f}x "
            f"({p['server_cpu_ms']:.0f} / {p['in_process_cpu_ms']:.0f} ms) | <= 1.5x "
            f"| {_ok(p['cpu_ratio'] <= 1.5)} |"
        )
    out += [
        f"| server RSS after {rss['first_count']:,.0f} requests / after {rss['served']:,.0f} "
        f"(warm-ups included) | {rss['after_100']:.1f} / "
        f"{rss['after_all']:.1f} MiB ({r['rss_growth'] * 100:+.1f}%) | <= +10% "
        f"| {_ok(r['rss_growth'] <= 0.10)} |",
        "",
    ]
    if r["server_log_errors"]:
        out += ["Server log errors: " + "; ".join(r["server_log_errors"]), ""]
    return out


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    print("\n".join(render(run(n))))
