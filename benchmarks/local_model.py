"""The embedded model's two concurrency strategies, side by side (needs the local extra).

python -m benchmarks.local_model [max_tokens] [repeats]

One llama.cpp model behind a lock (pool_size=1) against two one-thread copies (pool_size=2),
interleaved (a shared machine drifts); median wall time per layer of 4, 3 and 1 calls. The
figures behind DEFAULT_POOL_SIZE are in docs/local-model-measurements.md.
"""

from __future__ import annotations

import asyncio
import time

from langchain_core.language_models import BaseChatModel

from langgraph_moa.nodes.models.local import ChatLocalGGUF, available_cores, resolve_model_path


async def _bench_layer(model: BaseChatModel, calls: int, prompt: str) -> tuple[float, int]:
    start = time.perf_counter()
    results = await asyncio.gather(*(model.ainvoke(prompt, seed=i) for i in range(calls)))
    wall = time.perf_counter() - start
    tokens = sum(r.usage_metadata["output_tokens"] if r.usage_metadata else 0 for r in results)
    return wall, tokens


async def _bench(max_tokens: int, repeats: int) -> None:
    """Both strategies, interleaved (a shared machine drifts): median wall time per layer."""
    prompt = "Explain in a few sentences why the sky is blue."
    cores = available_cores()
    path = str(resolve_model_path("smollm2"))
    models = {
        size: ChatLocalGGUF(
            model_path=path, model_name="smollm2", max_tokens=max_tokens, pool_size=size
        )
        for size in (1, 2)
    }
    runs: dict[tuple[int, int], list[tuple[float, int]]] = {}
    for size, model in models.items():  # cold: the first layer loads the model copies
        runs[size, 0] = [await _bench_layer(model, 4, prompt)]
    for _ in range(repeats):
        for calls in (4, 3, 1):
            for size, model in models.items():
                runs.setdefault((size, calls), []).append(await _bench_layer(model, calls, prompt))
    print(f"SmolLM2-135M Q4_1, {cores} cores, max_tokens={max_tokens}, median of {repeats}")
    print("| strategy | concurrent calls | wall time per layer | output tokens | tokens/s |")
    print("|---|---|---|---|---|")
    for (size, calls), results in sorted(runs.items()):
        wall, tokens = sorted(results)[len(results) // 2]
        strategy = f"pool_size={size} ({max(1, cores // size)} threads each)"
        what = "4, cold (incl. loading)" if calls == 0 else str(calls)
        print(f"| {strategy} | {what} | {wall:.2f} s | {tokens} | {tokens / wall:.0f} |")


if __name__ == "__main__":
    import sys

    argv = [int(a) for a in sys.argv[1:]]
    asyncio.run(_bench(argv[0] if argv else 64, argv[1] if len(argv) > 1 else 5))
