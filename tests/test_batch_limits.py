"""Throughput under provider limits: the concurrency bound, rpm/tpm kept, a 429 slowing the model
down for every caller, all observed at the fake server; and the fake server's rate limit itself."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from batch_helpers import prompts, read_records, write_config, write_items
from conftest import run_cli, spec
from fake_openai import Failure, FakeOpenAIServer
from rich.console import Console

from langgraph_moa.core.batch import BatchOptions, parse_item, run_batch
from langgraph_moa.nodes.context import Context
from langgraph_moa.nodes.models.limits import ModelGate


def _context(server: FakeOpenAIServer, **model: Any) -> Context:
    return Context(
        proposers=[spec(server, "p1", **model), spec(server, "p2", **model)],
        aggregator=spec(server, "agg", **model),
        stream=False,
        retry_base_s=0.1,
    )


async def _run(ctx: Context, out: Path, n: int, **options: Any) -> list[dict[str, Any]]:
    items = [parse_item(p) for p in prompts(n)]
    quiet = Console(file=io.StringIO())
    result = await run_batch(items, ctx, out, BatchOptions(**options), console=quiet)
    assert result.complete
    return read_records(out)


async def test_concurrency_bounds_the_items_in_flight(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    for name in ("p1", "p2", "agg"):
        server.script(name, ttft=0.2)
    records = await _run(_context(server), tmp_path / "out.jsonl", 12, concurrency=3)
    assert all(r["status"] == "ok" for r in records)
    # 3 items in flight, each with its 2 proposers at once: at most 6 requests.
    assert server.max_concurrency() <= 6
    assert server.max_concurrency() >= 5  # and the bound is used, not undershot


async def test_the_fake_server_answers_429_above_its_rate(server: FakeOpenAIServer) -> None:
    # 5 requests per 3 s: the 8 requests fall in one window even on a loaded machine.
    server.rate_limit(5 / 3, window_s=3)
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        answers = await asyncio.gather(
            *(client.post("/chat/completions", json=body) for _ in range(8))
        )
        codes = sorted(r.status_code for r in answers)
        assert codes == [200] * 5 + [429] * 3
        limited = next(r for r in answers if r.status_code == 429)
        assert limited.json()["error"]["code"] == "rate_limit_exceeded"
        assert 1 <= int(limited.headers["retry-after"]) <= 3
        assert 0 < int(limited.headers["retry-after-ms"]) <= 3000
        assert server.rate_limited == 3
        await asyncio.sleep(3.05)  # the window has passed: accepted again
        assert (await client.post("/chat/completions", json=body)).status_code == 200


async def test_rpm_keeps_the_run_under_the_provider_limit(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    server.rate_limit(10)  # the provider: 10 requests per second per model
    ctx = _context(server, rpm=540)  # configured just under: 9 per second per model
    start = time.perf_counter()
    records = await _run(ctx, tmp_path / "out.jsonl", 15, concurrency=8)
    took = time.perf_counter() - start
    assert all(r["status"] == "ok" for r in records)
    assert server.rate_limited <= 2  # few 429s
    assert len(server.requests) == 45 + server.rate_limited
    assert took >= 14 / 9 * 0.9  # the rate was kept (15 requests per model at 9/s)...
    assert took < 20  # ...without crawling


async def test_without_rpm_429s_are_absorbed_and_nothing_fails(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    server.rate_limit(10)
    ctx = _context(server).model_copy(update={"max_attempts": 6})
    records = await _run(ctx, tmp_path / "out.jsonl", 15, concurrency=8)
    assert all(r["status"] == "ok" for r in records)
    assert server.rate_limited > 0  # it hit the limit, and waited what the server asked
    rate_limited = [p for r in records for p in r["turns"][0]["layers"][0] if p["attempts"] > 1]
    assert rate_limited


async def test_a_429_pauses_the_model_for_every_caller(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    for name in ("p1", "p2", "agg"):
        server.script(name, ttft=0.05)
    server.fail("p1", Failure(status=429, retry_after="1"))
    records = await _run(_context(server), tmp_path / "out.jsonl", 8, concurrency=4)
    assert all(r["status"] == "ok" for r in records)
    p1 = server.requests_for("p1")
    (limited,) = [r for r in p1 if r.status == 429]
    assert limited.finished is not None
    # Requests sent before the 429 came back may still arrive; none after, for 1 s.
    quiet = [r for r in p1 if limited.finished + 0.05 < r.started < limited.finished + 0.95]
    assert quiet == [], [round(r.started - limited.finished, 3) for r in quiet]
    # The other model was not paused.
    p2 = server.requests_for("p2")
    assert any(limited.finished + 0.05 < r.started < limited.finished + 0.95 for r in p2)


async def test_tpm_spreads_calls_over_the_minute() -> None:
    start = time.perf_counter()
    await ModelGate(rpm=None, tpm=600).reserve_tokens(10_000)  # over a minute's worth: capped
    gate = ModelGate(rpm=None, tpm=600)  # 10 tokens per second, a minute's bucket
    await gate.reserve_tokens(600)  # the first minute's worth goes at once
    assert time.perf_counter() - start < 0.2
    await gate.reserve_tokens(5)  # then the bucket drains at 10 per second
    assert 0.4 < time.perf_counter() - start < 2.0
    gate.pause(0.2)
    start = time.perf_counter()
    assert await gate.aacquire()
    assert time.perf_counter() - start >= 0.18


def test_limits_of_a_model_must_agree(server: FakeOpenAIServer) -> None:
    from langgraph_moa.nodes.context import build_context
    from langgraph_moa.nodes.errors import ConfigError

    with pytest.raises(ConfigError, match="rpm is given two values"):
        build_context(
            {
                "proposers": [
                    {"model": "together:a", "rpm": 60},
                    {"model": "together:a", "rpm": 120, "temperature": 0.2},
                ],
                "aggregator": "together:b",
            }
        )
    # One use declaring it is enough: the others share it.
    from langgraph_moa.nodes.models import settings_for

    ctx = build_context(
        {
            "proposers": [{"model": "together:a", "rpm": 60}, {"model": "together:a", "seed": 2}],
            "aggregator": "together:a",
        }
    )
    assert {settings_for(s, ctx).rpm for s in ctx.all_models()} == {60}


def test_an_rpm_no_call_can_meet_is_refused_before_any_call(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    # Such a run waited for ever, its progress saying "ETA 0s".
    cfg = write_config(tmp_path / "c.toml", server, model_extra="rpm = 1e-9")
    said = (
        "together:p1: rpm=1e-09 lets one request through every 694,444.4 days, so the run would "
        "wait for ever; give the provider's requests per minute (at least 0.00069, one a day), "
        "or leave rpm out"
    )
    data = write_items(tmp_path / "in.jsonl", prompts(2))
    for dry in ((), ("--dry-run",)):
        args = ("batch", data, "-o", tmp_path / "out.jsonl", "-c", cfg, *dry)
        result = run_cli(*map(str, args), timeout=60)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip() == f"moa: error: config file '{cfg}': {said}"
    assert not server.requests and not (tmp_path / "out.jsonl").exists()


def test_one_rpm_limit_holds_across_event_loops_and_threads(server: FakeOpenAIServer) -> None:
    """Two threads, each with its own event loop, share the model's one gate (resources.py)."""
    from langchain_core.messages import HumanMessage

    from langgraph_moa.graphs import graph

    rpm, per_thread = 300, 5  # 5 requests a second; the bucket lets 2 go at once
    ctx = Context(proposers=[], layers=1, aggregator=spec(server, "shared", rpm=rpm))

    async def runs() -> None:
        await asyncio.gather(
            *(
                graph.ainvoke({"messages": [HumanMessage(f"q{i}")]}, context=ctx)
                for i in range(per_thread)
            )
        )

    threads = [threading.Thread(target=asyncio.run, args=(runs(),)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    starts = sorted(r.started for r in server.requests_for("shared"))
    assert len(starts) == 2 * per_thread
    # One gate: after the first two, one request every 0.2 s. One gate per loop would have
    # sent all ten within about 0.6 s.
    assert starts[-1] - starts[0] >= (len(starts) - 2) * 60 / rpm * 0.9
    assert max(sum(1 for s in starts if t <= s < t + 1) for t in starts) <= rpm / 60 + 2


def test_gates_stay_bounded_and_one_in_use_is_never_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A server's clients may send a model's rpm (a new value per request): the process keeps the
    # gates bounded, but a gate a call still holds is the one every later call of its model and
    # limits gets, however many others came since: two gates for one limit would double it.
    import dataclasses
    import gc

    from langgraph_moa.nodes.models import resources, settings_for
    from langgraph_moa.nodes.models.resources import RESOURCES

    monkeypatch.setattr(resources, "MAX_GATES", 4)
    base = settings_for(Context().aggregator, Context())

    def gate(rpm: float) -> ModelGate:
        return RESOURCES.gate(dataclasses.replace(base, model="together:gated", rpm=rpm))

    before = RESOURCES.gates()
    held = gate(6)  # one request every 10 s: its bucket starts empty
    held.pause(30)  # and a 429 holds the model back for every caller
    for rpm in range(1000, 1100):
        gate(rpm)
    gc.collect()
    assert RESOURCES.gates() <= before + 4 + 1  # the recent ones and the held one
    again = gate(6)
    assert again is held and not again.acquire(blocking=False) and again.pauses == 1

    # Once nothing holds it and enough others came, it is forgotten: a gate of its own again.
    del held, again
    for rpm in range(1000, 1010):
        gate(rpm)
    gc.collect()
    assert gate(6).pauses == 0
