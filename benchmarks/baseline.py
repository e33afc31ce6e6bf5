"""A minimal Mixture-of-Agents in raw asyncio: the 50-line script people copy.

Each layer asks every proposer at once with ``asyncio.gather`` through the ``together`` SDK,
each later layer gets the previous layer's answers in its system prompt, and the aggregator's
answer is streamed (or, with ``on_token=None``, asked for whole: the "nobody streams" case of
benchmarks/streaming.py). No retries, no timeouts per call, no failure handling, no state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from together import AsyncTogether

from langgraph_moa.nodes.prompts import (
    AGGREGATION_PROMPT,
)  # the same prompt, so both send the same text


def with_references(messages: list[dict[str, str]], references: list[str]) -> list[Any]:
    if not references:
        return messages
    numbered = "\n\n".join(f"{i}. {text}" for i, text in enumerate(references, start=1))
    system = AGGREGATION_PROMPT.replace("{references}", numbered)
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
) -> str:
    messages = [{"role": "user", "content": question}]
    references: list[str] = []
    for _ in range(layers):
        layer_messages = with_references(messages, references)
        answers = await asyncio.gather(*(ask(client, m, layer_messages) for m in proposers))
        references = list(answers)
    final = with_references(messages, references)
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
