"""Benchmark 7: where a query's client CPU goes, by package and by function (cProfile).

The workload of benchmarks 1-3 at one shape (1 proposer layer x 4 proposers), the graph as
``moa ask`` runs it and the seed's approach, each profiled over several queries after warm-up.
Time spent waiting in ``epoll`` is idle time and left out. A C function's own time is charged to
the package of the Python function that called it. cProfile's own overhead inflates code that
makes many small calls, so the shares matter more than the absolute figures (which are also
given without the profiler).
"""

from __future__ import annotations

import asyncio
import cProfile
import pstats
import sys
import sysconfig
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from benchmarks import baseline
from benchmarks.common import cli_query, median, script_workload, server_context
from benchmarks.latency import seed_query
from benchmarks.server import ServerProcess

LAYERS, PROPOSERS = 1, 4
ROOT = Path(__file__).resolve().parent.parent
STDLIB = sysconfig.get_paths()["stdlib"]
IDLE = "<method 'poll' of 'select.epoll' objects>"

Func = tuple[str, int, str]


def package(func: Func) -> str:
    """The package a profiled function belongs to."""
    path = func[0]
    if "site-packages/" in path:
        top = path.split("site-packages/", 1)[1].split("/", 1)[0]
        return top.removesuffix(".py")
    if path.startswith(str(ROOT)):
        return "benchmarks" if "/benchmarks/" in path else "langgraph_moa"
    if path.startswith(STDLIB):
        rest = path[len(STDLIB) :].lstrip("/")
        return f"stdlib {rest.split('/', 1)[0].removesuffix('.py')}"
    return "builtins"


def label(func: Func) -> str:
    path, line, name = func
    if path == "~":
        return name
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    elif path.startswith(str(ROOT)):
        path = path[len(str(ROOT)) + 1 :]
    elif path.startswith(STDLIB):
        path = path[len(STDLIB) + 1 :]
    return f"{path}:{line}({name})"


def summarize(stats: pstats.Stats, queries: int, top: int = 12) -> dict[str, Any]:
    """CPU per query by package and the top functions by own time (ms per query)."""
    raw: dict[Func, Any] = stats.stats  # type: ignore[attr-defined]
    by_package: dict[str, float] = {}
    functions: dict[Func, float] = {}
    for func, (_cc, _nc, tottime, _ct, callers) in raw.items():
        if func[0] == "~" and func[2] == IDLE:
            continue
        functions[func] = tottime
        if func[0] == "~" and callers:  # a C function: charge its callers' packages
            for caller, (_c, _n, part, _t) in callers.items():
                by_package[package(caller)] = by_package.get(package(caller), 0.0) + part
        else:
            by_package[package(func)] = by_package.get(package(func), 0.0) + tottime
    total = sum(by_package.values())
    ranked = sorted(functions.items(), key=lambda kv: kv[1], reverse=True)[:top]
    return {
        "total_ms": total / queries * 1000,
        "packages": {
            k: v / queries * 1000
            for k, v in sorted(by_package.items(), key=lambda kv: kv[1], reverse=True)
        },
        "functions": [(label(f), t / queries * 1000) for f, t in ranked],
    }


async def _cpu(query: Callable[[], Awaitable[Any]], n: int) -> float:
    values = []
    for _ in range(n):
        start = time.process_time()
        await query()
        values.append(time.process_time() - start)
    return median(values)


def run(queries: int = 8) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        with ServerProcess() as server:
            script_workload(server, PROPOSERS)
            ctx = server_context(server.base_url, LAYERS, PROPOSERS)
            client = baseline.client(server.base_url)
            sides: dict[str, Callable[[], Awaitable[Any]]] = {
                "graph": lambda: cli_query(ctx),
                "seed": lambda: seed_query(client, LAYERS, PROPOSERS),
            }
            out: dict[str, Any] = {"queries": queries}
            for name, query in sides.items():
                for _ in range(2):
                    await query()
                cpu = await _cpu(query, queries)
                profiler = cProfile.Profile()
                profiler.enable()
                for _ in range(queries):
                    await query()
                profiler.disable()
                out[name] = {"cpu_ms": cpu * 1000, **summarize(pstats.Stats(profiler), queries)}
            await client.close()
            return out

    return asyncio.run(main())


def render(r: dict[str, Any], packages: int = 8) -> list[str]:
    """Markdown tables of one profile run (shared by benchmarks/run.py)."""
    out = [
        "| | graph (`moa ask`) | seed |",
        "|---|---|---|",
        f"| CPU per query, no profiler | {r['graph']['cpu_ms']:.0f} ms "
        f"| {r['seed']['cpu_ms']:.0f} ms |",
        f"| CPU per query, profiled (idle left out) | {r['graph']['total_ms']:.0f} ms "
        f"| {r['seed']['total_ms']:.0f} ms |",
        "",
        "By package (profiled ms per query; a C function counts for its caller's package):",
        "",
        "| graph: package | ms | seed: package | ms |",
        "|---|---|---|---|",
    ]
    g = list(r["graph"]["packages"].items())[:packages]
    s = list(r["seed"]["packages"].items())[:packages]
    for i in range(max(len(g), len(s))):
        left = f"{g[i][0]} | {g[i][1]:.1f}" if i < len(g) else " | "
        right = f"{s[i][0]} | {s[i][1]:.1f}" if i < len(s) else " | "
        out.append(f"| {left} | {right} |")
    out += ["", "Top functions of the graph's query by own time (profiled ms per query):", ""]
    out += ["| function | ms |", "|---|---|"]
    out += [f"| `{name}` | {ms:.1f} |" for name, ms in r["graph"]["functions"]]
    out.append("")
    return out


if __name__ == "__main__":
    print("\n".join(render(run(int(sys.argv[1]) if len(sys.argv) > 1 else 8))))
