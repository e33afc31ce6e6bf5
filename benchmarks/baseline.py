"""A minimal Mixture-of-Agents in raw asyncio: the 50-line script people copy.

Each layer asks every proposer at once with ``asyncio.gather`` through the ``together`` SDK,
each later layer gets the previous layer's answers in its system prompt, and the aggregator's
answer is streamed (or, with ``on_token=None``, asked for whole: the "nobody streams" case of
benchmarks/streaming.py). No retries, no timeouts per call, no failure handling, no state.

As a dataset script (the baseline of benchmarks/batch.py), the way people write one: a semaphore
of N items, each item's proposers gathered, then its aggregator, one JSON line appended per item::

    python -m benchmarks.baseline INPUT OUTPUT --base-url URL -j N --proposers a,b,c \
        --aggregator m --prompt-file F

It imports nothing of this project (the aggregation prompt comes from ``--prompt-file``), so its
start-up is the script's own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable
from typing import Any

from together import AsyncTogether


def aggregation_prompt() -> str:
    # The same prompt as the graph's, so both send the same text; imported when first used.
    from langgraph_moa.nodes.prompts import AGGREGATION_PROMPT

    return AGGREGATION_PROMPT


def with_references(
    messages: list[dict[str, str]], references: list[str], prompt: str | None = None
) -> list[Any]:
    if not references:
        return messages
    numbered = "\n\n".join(f"{i}. {text}" for i, text in enumerate(references, start=1))
    system = (prompt or aggregation_prompt()).replace("{references}", numbered)
    return [{"role": "system", "content": system}, *messages]


async def ask(client: AsyncTogether, model: str, messages: list[Any]) -> str:
    response = await client.chat.completions.create(
        model=model, messages=messages, temperature=0.7, max_tokens=512
    )
    message = response.choices[0].message
    return message.content or "" if message else ""


async def moa(
    client: AsyncTogether,
    question: str,
    proposers: list[str],
    aggregator: str,
    layers: int,
    on_token: Callable[[str], None] | None,
    prompt: str | None = None,
) -> str:
    messages = [{"role": "user", "content": question}]
    references: list[str] = []
    for _ in range(layers):
        layer_messages = with_references(messages, references, prompt)
        answers = await asyncio.gather(*(ask(client, m, layer_messages) for m in proposers))
        references = list(answers)
    final = with_references(messages, references, prompt)
    if on_token is None:
        return await ask(client, aggregator, final)
    stream = await client.chat.completions.create(
        model=aggregator,
        messages=final,
        temperature=0.7,
        max_tokens=512,
        stream=True,
    )
    answer = []
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            on_token(chunk.choices[0].delta.content)
            answer.append(chunk.choices[0].delta.content)
    return "".join(answer)


def client(base_url: str) -> AsyncTogether:
    # The together SDK (3.x) puts /v1/ in its paths: its base URL is the host alone.
    host = base_url.removesuffix("/").removesuffix("/v1")
    return AsyncTogether(api_key="not-needed", base_url=host, max_retries=0)


async def run_dataset(args: argparse.Namespace) -> None:
    sdk = client(args.base_url)
    with open(args.prompt_file, encoding="utf-8") as f:
        prompt = f.read()
    proposers = args.proposers.split(",")
    gate = asyncio.Semaphore(args.j)
    with open(args.input, encoding="utf-8") as f:
        items = [json.loads(line) for line in f if line.strip()]

    with open(args.output, "a", encoding="utf-8") as out:

        async def one(item: dict[str, Any]) -> None:
            async with gate:
                answer = await moa(sdk, item["prompt"], proposers, args.aggregator, 1, None, prompt)
            out.write(json.dumps({"id": item["id"], "answer": answer}) + "\n")
            out.flush()

        await asyncio.gather(*(one(item) for item in items))
    await sdk.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    for name in ("input", "output"):
        parser.add_argument(name)
    for flag in ("--base-url", "--proposers", "--aggregator", "--prompt-file"):
        parser.add_argument(flag, required=True)
    parser.add_argument("-j", type=int, required=True)
    asyncio.run(run_dataset(parser.parse_args()))
