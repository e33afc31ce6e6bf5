"""moa compare against the fake server: proposers, aggregator, single models and a scripted judge
all answer over real HTTP; answers and judgments go through moa batch's runner."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from compare_helpers import (
    always_a,
    env,
    last_user,
    pair,
    prefers,
    prefers_longer,
    results,
    shown,
    write_mixture,
    write_prompts,
)
from conftest import ROOT, run_cli, spec
from fake_openai import Failure, FakeOpenAIServer, RecordedRequest, continuing
from PIL import Image
from rich.console import Console
from test_staircase import fallback_so_far

from langgraph_moa.apps.compare import CompareOptions, System, run_compare, single_model
from langgraph_moa.apps.compare.run import starter_prompts
from langgraph_moa.core.batch.inputs import Item, read_items
from langgraph_moa.nodes.context import Context
from langgraph_moa.nodes.staircase import UNFINISHED

PRICE = {"input": 1.0, "output": 2.0}


def number(request: RecordedRequest) -> int:
    """The N of the prompt "question number N" a request answers."""
    return int(last_user(request).rsplit(" ", 1)[-1])


def systems_for(server: FakeOpenAIServer) -> list[System]:
    """A mixture (p1, p2 -> agg) and one single model (solo), all priced."""
    ctx = Context(
        proposers=[spec(server, p, price=PRICE) for p in ("p1", "p2")],
        aggregator=spec(server, "agg", price=PRICE),
        max_tokens=600,
    )
    solo = single_model(spec(server, "solo", price=PRICE), ctx)
    return [System("moa", "test mixture", ctx), System("solo", "together:solo", solo)]


def items(tmp_path: Path, n: int) -> list[Item]:
    return [
        i
        for i in read_items(str(write_prompts(tmp_path / "prompts.jsonl", n)))
        if isinstance(i, Item)
    ]


async def compare(
    server: FakeOpenAIServer, tmp_path: Path, n: int, **options: Any
) -> tuple[dict[str, Any], Path]:
    out = tmp_path / "report"
    run = await run_compare(
        items(tmp_path, n),
        systems_for(server),
        spec(server, "judge"),
        out,
        CompareOptions(concurrency=4, **options),
        source="test prompts",
        console=Console(file=io.StringIO()),
    )
    return run.results, out


def script_answers(server: FakeOpenAIServer, agg: Any = None, solo: Any = None) -> None:
    server.script("p1", lambda r: f"p1 says {number(r)}")
    server.script("p2", lambda r: f"p2 says {number(r)} at more length")
    server.script("agg", agg or (lambda r: f"the aggregated answer to {number(r)}"))
    server.script("solo", solo or (lambda r: f"solo answers {number(r)}"))


# --- judging ----------------------------------------------------------------------------------


async def test_a_judge_that_always_prefers_position_a_gives_all_ties(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    script_answers(server)
    server.script("judge", always_a)
    data, _ = await compare(server, tmp_path, 6)
    p = pair(data, "solo")
    assert (p["win"], p["tie"], p["loss"], p["unparsed"], p["missing"]) == (0, 6, 0, 0, 0)
    # Six ties and nothing else: a bootstrap has no spread, so no interval is claimed.
    assert p["win_rate"] == 50.0 and p["ci"] is None and p["lc_ci"] is None
    assert p["no_ci"].startswith("all 6 judged pairs had the same outcome")
    # Each pair was really asked twice, the mixture's answer once in each position.
    judged = server.requests_for("judge")
    assert len(judged) == 12
    moa_first = [r for r in judged if shown(r)["A"].startswith("the aggregated")]
    assert len(moa_first) == 6
    assert all(shown(r)["B"].startswith("solo") for r in moa_first)
    assert (
        "does not beat solo alone: +0 points (no 95% CI: all 6 judged pairs had the same "
        "outcome)" in data["verdict"]
    )


async def test_a_judge_that_prefers_the_longer_answer_is_length_controlled(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    # The mixture is longer on every prompt, by an amount that varies with the prompt.
    script_answers(
        server,
        agg=lambda r: "the aggregated answer " + "and more " * (3 + 7 * number(r) % 50),
        solo=lambda r: f"solo answers {number(r)}",
    )
    server.script("judge", prefers_longer)
    data, out = await compare(server, tmp_path, 30)
    p = pair(data, "solo")
    assert p["win_rate"] >= 95
    assert 45 <= p["lc_win_rate"] <= 56
    moa, solo = data["systems"]
    assert moa["mean_length"] > 5 * solo["mean_length"]
    assert any("length-controlled win rate is" in n for n in data["notes"])
    report = (out / "report.md").read_text()
    assert "| solo | 100% (no CI: all alike) |" in report


async def test_a_judge_that_prefers_quality_keeps_its_length_controlled_win(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    # The mixture is right every time but shorter on a third of the prompts.
    script_answers(
        server,
        agg=lambda r: "correct " + ("x " * (2 + number(r) * 3) if number(r) % 3 else ""),
        solo=lambda r: "wrong " + "y " * (4 + number(r) % 4 * 5),
    )
    server.script("judge", prefers("correct"))
    data, _ = await compare(server, tmp_path, 30)
    p = pair(data, "solo")
    assert p["win_rate"] == 100.0 and p["lc_win_rate"] > 85
    assert data["verdict"].startswith(
        "moa beats solo alone: +50 points (no 95% CI: all 30 judged pairs had the same outcome)"
    )


async def test_unparsable_verdicts_are_counted_apart_never_guessed(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    script_answers(server)

    def judge(request: RecordedRequest) -> str:
        moa_is_a = shown(request)["A"].startswith("the aggregated")
        if "answer to 0" in request.messages[-1]["content"]:
            return "Both are fine, A is a bit better maybe."  # no verdict line
        if "answer to 1" in request.messages[-1]["content"] and not moa_is_a:
            return "Verdict: A, mostly"  # a verdict line that says something else
        return "Verdict: " + ("A" if moa_is_a else "B")  # the mixture, in both orders

    server.script("judge", judge)
    data, out = await compare(server, tmp_path, 6)
    p = pair(data, "solo")
    assert (p["win"], p["tie"], p["loss"], p["unparsed"]) == (4, 0, 0, 2)
    assert p["judged"] == 4 and p["win_rate"] == 100.0
    problems = {e["prompt"]: e for e in p["prompts"] if e["outcome"] == "unparsed"}
    assert set(problems) == {"q0", "q1"}
    q1 = [j.get("problem") for j in problems["q1"]["judgments"]]
    assert q1[0] is None and q1[1].startswith("verdict line not understood")
    assert data["judge"]["unparsed"] == 3
    assert "3 of 12 judgments had no readable verdict" in (out / "report.md").read_text()


# --- the report -------------------------------------------------------------------------------


async def test_the_report_files(server: FakeOpenAIServer, tmp_path: Path) -> None:
    script_answers(server)
    server.script("judge", lambda r: "Verdict: " + ("A" if "aggregated" in shown(r)["A"] else "B"))
    data, out = await compare(server, tmp_path, 8)
    # (and .moa.lock: one run per folder, core/locks.py)
    assert sorted(p.name for p in out.iterdir() if p.name != ".moa.lock") == [
        "answers",
        "judgments",
        "moa-cache.sqlite",
        "plot.png",
        "preferences.jsonl",
        "report.md",
        "results.json",
    ]
    assert sorted(p.name for p in (out / "answers").glob("*.jsonl")) == ["moa.jsonl", "solo.jsonl"]
    assert data == results(out)
    moa, solo = data["systems"]
    # Three calls per mixture answer, one per single-model answer, each priced from its usage.
    assert (moa["calls_per_answer"], solo["calls_per_answer"]) == (3.0, 1.0)
    records = [json.loads(x) for x in (out / "answers" / "moa.jsonl").read_text().splitlines()]
    tokens = [u for r in records for u in r["usage"].values()]
    expected = sum(u["input_tokens"] * 1.0 + u["output_tokens"] * 2.0 for u in tokens) / 1e6
    assert moa["cost_usd"] == pytest.approx(expected)
    assert moa["cost_per_answer"] == pytest.approx(expected / 8)
    assert moa["latency_answers"] == 8 and moa["latency_p95_s"] >= moa["latency_median_s"] > 0
    ratio = moa["cost_per_answer"] / solo["cost_per_answer"]
    assert ratio > 2
    assert data["verdict"].startswith(
        "moa beats solo alone: +50 points (no 95% CI: all 8 judged pairs had the same outcome) "
        f"at {ratio:.1f}x the cost, "
        "on only 8 judged pairs; length-controlled +"
    )
    report = (out / "report.md").read_text()
    assert report.startswith("# Does MoA pay off? moa against its baselines")
    assert f"**{data['verdict']}**" in report
    assert "| solo | 100% (no CI: all alike) |" in report and "| 8 / 0 / 0 / 0 |" in report
    assert "| moa | [p1, p2] -> agg | 8 |" in report
    assert "![win rate against cost per answer](plot.png)" in report
    with Image.open(out / "plot.png") as png:
        assert png.format == "PNG" and png.size == (800, 500)


def test_report_only_redraws_from_the_stored_results_without_any_call(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    script_answers(server)
    server.script("judge", always_a)
    mix = write_mixture(tmp_path / "mix.toml")
    prompts = write_prompts(tmp_path / "p.jsonl", 3)
    out = tmp_path / "report"
    args = ["compare", str(prompts), "--config", str(mix), "--judge", "together:judge"]
    done = run_cli(*args, "-o", str(out), env=env(server))
    assert done.returncode == 0, done.stderr
    report = (out / "report.md").read_text()
    (out / "report.md").unlink()
    (out / "plot.png").unlink()
    server.reset()
    redrawn = run_cli("compare", "--report-only", str(out))  # no key, no server needed
    assert redrawn.returncode == 0, redrawn.stderr
    assert (out / "report.md").read_text() == report
    with Image.open(out / "plot.png") as png:
        assert png.size == (800, 500)
    assert redrawn.stdout.strip() == results(out)["verdict"]
    assert server.requests == []


# --- caching, resuming ------------------------------------------------------------------------


async def test_judge_calls_are_cached_like_any_other_call(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    script_answers(server)
    server.script("judge", prefers_longer)
    first, out = await compare(server, tmp_path, 5)
    asked = len(server.requests)
    # The judgments' journal is lost: the judge is not paid again, the cache answers.
    for path in (out / "judgments").iterdir():
        path.unlink()
    second, _ = await compare(server, tmp_path, 5)
    assert len(server.requests) == asked
    assert second["pairs"] == first["pairs"]
    assert second["judge"]["tokens"] == first["judge"]["tokens"]


async def test_answers_of_other_models_under_a_system_name_are_refused(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    from langgraph_moa.apps.compare.runner import CompareError

    script_answers(server)
    server.script("judge", always_a)
    await compare(server, tmp_path, 2)
    moa, _ = systems_for(server)
    other = System("solo", "together:p1", single_model(spec(server, "p1"), moa.ctx))
    with pytest.raises(CompareError, match="holds answers of solo made with other models"):
        await run_compare(
            items(tmp_path, 2),
            [moa, other],
            spec(server, "judge"),
            tmp_path / "report",
            console=Console(file=io.StringIO()),
        )


def test_a_killed_compare_resumes_without_losing_or_paying_twice(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    for model in ("p1", "p2", "agg"):
        server.script(model, lambda r, m=model: f"{m} on {number(r)}", ttft=0.3)
    server.script("solo", lambda r: f"solo on {number(r)}")
    server.script("judge", always_a)
    mix = write_mixture(tmp_path / "mix.toml")
    prompts = write_prompts(tmp_path / "p.jsonl", 10)
    out = tmp_path / "report"
    args = [
        sys.executable,
        "-m",
        "langgraph_moa",
        "compare",
        str(prompts),
        "--system",
        f"moa={mix}",
        "--system",
        "solo=together:solo",
        "--judge",
        "together:judge",
        "-j",
        "2",
        "-o",
        str(out),
    ]
    full_env = {**os.environ, **env(server)}
    answers = out / "answers" / "moa.jsonl"
    proc = subprocess.Popen(args, env=full_env, cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if answers.exists() and answers.read_bytes().count(b"\n") >= 3:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(10)
    finished = {json.loads(x)["id"] for x in answers.read_text().splitlines() if x.strip()}
    assert 3 <= len(finished) < 10
    before = len(server.requests)

    done = subprocess.run(args, env=full_env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for name in ("moa", "solo"):
        lines = (out / "answers" / f"{name}.jsonl").read_text().splitlines()
        ids = [json.loads(x)["id"] for x in lines]  # every line whole
        assert sorted(ids) == sorted(f"q{i}@{name}" for i in range(10))  # each once
    # No proposer or aggregator of the mixture was asked again for a finished answer.
    again = {
        f"q{number(r)}@moa" for r in server.requests[before:] if r.model in ("p1", "p2", "agg")
    }
    assert not again & finished
    assert pair(results(out), "solo")["tie"] == 10

    # Once everything is done, the same command calls nothing at all.
    server.reset()
    third = subprocess.run(
        args, env=full_env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert third.returncode == 0, third.stderr
    assert server.requests == []


# --- the command ------------------------------------------------------------------------------


def test_a_preset_against_its_own_models_with_the_starter_set(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    server.script("judge", always_a)  # the others give the fake server's default answers
    mix = write_mixture(tmp_path / "mix.toml")
    out = tmp_path / "report"
    done = run_cli(
        "compare", "--config", str(mix), "--judge", "together:judge", "--limit", "2", "-o",
        str(out), env=env(server),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = results(out)
    assert [s["name"] for s in data["systems"]] == ["moa-mix", "agg", "p1", "p2"]
    assert data["candidate"] == "moa-mix" and all(s["single"] for s in data["systems"][1:])
    assert data["prompts"] == {"source": "the starter set, apps/compare/prompts.jsonl, first 2",
                               "count": 2}  # fmt: skip
    starter = [json.loads(x) for x in starter_prompts().read_text().splitlines()]
    asked = {last_user(r) for r in server.requests_for("agg")}
    assert asked == {starter[0]["prompt"], starter[1]["prompt"]}
    # A single model runs through the same graph with layers=1: just the prompt, no references.
    # p1 answered 4 times, each with the prompt alone: twice in the mixture, twice alone.
    assert [[m["role"] for m in r.messages] for r in server.requests_for("p1")] == [["user"]] * 4
    records = [json.loads(x) for x in (out / "answers" / "p1.jsonl").read_text().splitlines()]
    assert all(r["turns"][0]["layers"] == [] for r in records)
    assert {r["turns"][0]["aggregator"]["model"] for r in records} == {"together:p1"}
    assert done.stdout.strip() == data["verdict"]
    assert f"report: {out / 'report.md'}" in done.stderr


def test_a_mixture_against_itself_with_staircase_streaming_in_one_command(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    for name in ("p1", "p2"):  # ~1.3 s each: the staircase aggregator starts long before
        server.script(name, " ".join(f"{name}w{i}" for i in range(60)), ttft=0.05, token_delay=0.02)
    answer = " ".join(f"a{i}" for i in range(80)) + "."
    server.script("agg", continuing(answer, fallback_so_far))
    server.script("judge", always_a)
    mix = write_mixture(tmp_path / "mix.toml")
    out = tmp_path / "report"
    done = run_cli(
        "compare", "--system", f"stair={mix}+staircase", "--system", f"std={mix}",
        "--judge", "together:judge", "--limit", "2", "-o", str(out), env=env(server),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = results(out)
    assert [(s["name"], s["spec"]) for s in data["systems"]] == [
        ("stair", f"{mix}+staircase"),
        ("std", str(mix)),
    ]
    # The candidate ran first, as staircase MoA: its aggregator wrote each answer in several
    # requests while the proposals were still unfinished (so its proposers streamed: moa compare
    # asks for whole answers only where that changes nothing). The baseline: one request each.
    agg = server.requests_for("agg")
    stair, std = agg[:-2], agg[-2:]
    assert len(stair) > 4
    assert any(UNFINISHED.strip() in str(r.messages[0]["content"]) for r in stair)
    assert any(fallback_so_far(r) for r in stair)
    assert not any(fallback_so_far(r) or r.stream for r in std)
    # Every aggregator request counts as a call: 2 proposers + the chunk requests per answer.
    calls = {s["name"]: s["calls_per_answer"] for s in data["systems"]}
    assert calls == {"stair": 2 + len(stair) / 2, "std": 3.0}
    for name in ("stair", "std"):  # the same answer, whole at every seam
        lines = (out / "answers" / f"{name}.jsonl").read_text().splitlines()
        assert [json.loads(x)["answer"] for x in lines] == [answer, answer]


async def test_a_resumed_staircase_system_stays_staircase_when_its_proposals_are_cached(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    """An interrupted staircase answer whose proposals finished is resumed from the call cache:
    the proposals are not paid again, and its aggregator is still asked as in a staircase run:
    over unfinished proposals first, then chunk by chunk (not over whole proposals, once)."""
    proposals = {n: " ".join(f"{n}w{i}" for i in range(40)) for n in ("p1", "p2")}
    for name, text in proposals.items():
        server.script(name, text)
    answer = " ".join(f"a{i}" for i in range(60)) + "."
    server.script("agg", continuing(answer, fallback_so_far))
    # The first run's aggregator fails after the proposals have finished (and been cached).
    server.fail("agg", Failure(hang=1.0, status=400))
    ctx = Context(
        proposers=[spec(server, n) for n in proposals],
        aggregator=spec(server, "agg"),
        staircase=True,
        staircase_chunks=[4, 8],
        max_tokens=200,
    )
    system = System("stair", "test mixture+staircase", ctx)
    out = tmp_path / "report"

    async def compare_once(**options: Any) -> dict[str, Any]:
        await run_compare(
            items(tmp_path, 1),
            [system],
            spec(server, "judge"),
            out,
            CompareOptions(**options),
            source="test prompts",
            console=Console(file=io.StringIO()),
        )
        (line,) = (out / "answers" / "stair.jsonl").read_text().splitlines()[-1:]
        return dict(json.loads(line))

    assert (await compare_once())["status"] == "failed"
    assert [len(server.requests_for(n)) for n in proposals] == [1, 1]
    server.reset()
    server.script("agg", continuing(answer, fallback_so_far))
    record = await compare_once(retry_failed=True)

    assert record["status"] == "ok" and record["answer"] == answer
    assert [r.model for r in server.requests] == ["agg"] * len(server.requests)  # none paid again
    requests = server.requests_for("agg")
    first = str(requests[0].messages[0]["content"])
    assert first.count(UNFINISHED.strip()) == 2  # both proposals, unfinished
    assert all(t.split()[0] in first and t.split()[-1] not in first for t in proposals.values())
    assert all(fallback_so_far(r) for r in requests[1:])  # then the answer, continued
    last = str(requests[-1].messages[0]["content"])
    assert UNFINISHED.strip() not in last and all(t in last for t in proposals.values())
    # Reported as what it was: proposals from the cache, the answer in as many requests as made.
    turn = record["turns"][0]
    assert [p["attempts"] for p in turn["layers"][0]] == [0, 0]
    assert [p["text"] for p in turn["layers"][0]] == list(proposals.values())
    assert turn["aggregator"]["requests"] == len(requests) > 2
    assert record["cached_calls"] == 2 and record["requests"] == len(requests)

    # Its answer lost too: every call comes back from the cache (the replay cuts the proposals
    # where it did before, so each chunk request is one the cache holds), the answer whole.
    (out / "answers" / "stair.jsonl").unlink()
    server.reset()
    again = await compare_once()
    assert server.requests == [] and again["answer"] == answer
    assert again["turns"][0]["aggregator"]["attempts"] == 0 and again["requests"] == 0


def test_the_starter_set_is_varied_and_well_formed() -> None:
    rows = [json.loads(x) for x in starter_prompts().read_text().splitlines()]
    assert 25 <= len(rows) <= 40
    assert len({r["id"] for r in rows}) == len(rows)
    assert {r["category"] for r in rows} == {"reasoning", "writing", "coding", "facts"}
    assert all(len(r["prompt"]) > 30 for r in rows)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--system", "moa"], 2, "--system 'moa': write NAME=SPEC"),
        (["--system", "a=nope", "--system", "b=together:x"], 2, "unknown preset 'nope'"),
        (["--system", "a=moa-lite"], 2, "at least two systems"),
        (["--preset", "seed", "--system", "a=moa-lite", "--system", "b=together:x"], 2,
         "--preset and --system do not go together"),
        (["--system", "a=together:x+staircase", "--system", "b=seed"], 2,
         "together:x is one model alone"),
        (["--preset", "seed", "--judge", "gpt-4o"], 2, "--judge 'gpt-4o': name one model"),
        (["--preset", "seed", "--layers", "1"], 2, "no mixture to compare"),
        (["--preset", "seed", "--concurrency", "0"], 2, "--concurrency must be at least 1"),
        (["nowhere.jsonl", "--preset", "seed"], 2, "input file 'nowhere.jsonl' not found"),
        (["-", "--preset", "seed"], 2, "stdin: line 1: prompt is empty"),
        (["--report-only", "nowhere"], 2, "no results.json there"),
        (["--system", "a=seed", "--system", "b=together:x"], 2, "set TOGETHER_API_KEY"),
    ],
    ids=["system-format", "unknown-preset", "one-system", "mixed-flags", "staircase-model",
         "bad-judge",
         "single-preset", "concurrency", "missing-prompts", "empty-prompt", "report-only",
         "missing-key"],
)  # fmt: skip
def test_bad_input_gives_one_line_and_an_exit_code(
    args: list[str], code: int, message: str, tmp_path: Path
) -> None:
    key = {} if "TOGETHER_API_KEY" in message else {"TOGETHER_API_KEY": "k"}
    done = run_cli("compare", *args, "-o", str(tmp_path / "r"), env=key, stdin='{"prompt": ""}\n')
    assert "--skip-invalid" not in done.stderr
    assert done.returncode == code, done.stderr
    errors = [x for x in done.stderr.splitlines() if x.startswith("moa: error:")]
    assert len(errors) == 1 and message in errors[0], done.stderr
    assert "Traceback" not in done.stderr


async def test_preference_pairs_load_with_datasets(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    script_answers(server)

    def judge(request: RecordedRequest) -> str:
        moa_is_a = shown(request)["A"].startswith("the aggregated")
        text = request.messages[-1]["content"]
        if "answer to 0" in text:
            return "Both are fine."  # no verdict: unparsed
        if "answer to 1" in text:
            return "Verdict: A"  # position A whatever it holds: the orders disagree, a tie
        if "answer to 2" in text:
            return "Verdict: " + ("B" if moa_is_a else "A")  # the single model, in both orders
        return "Verdict: " + ("A" if moa_is_a else "B")  # the mixture, in both orders

    server.script("judge", judge)
    data, out = await compare(server, tmp_path, 6)
    assert data["preferences"] == {
        "file": "preferences.jsonl",
        "pairs": 4,
        "degraded": 0,
        "left_out": {
            "tie": 1,
            "unparsed": 1,
            "missing": 0,
            "multi-turn": 0,
            "earlier-messages": 0,
        },
    }
    # Hugging Face's own JSON loader, as TRL's DPO trainer takes it: prompt/chosen/rejected.
    import datasets  # a dev dependency; imported here, as it takes a second

    pairs = datasets.load_dataset(
        "json", data_files=str(out / "preferences.jsonl"), split="train", cache_dir=str(tmp_path)
    )
    assert {"prompt", "chosen", "rejected"} <= set(pairs.column_names)
    assert pairs.features["chosen"].dtype == "string"
    rows = {r["prompt_id"]: r for r in pairs}
    assert set(rows) == {"q2", "q3", "q4", "q5"}
    assert rows["q2"]["chosen"] == "solo answers 2" and rows["q2"]["rejected_system"] == "moa"
    assert rows["q2"]["verdict"] == "loss"
    assert rows["q3"]["chosen"] == "the aggregated answer to 3"
    assert rows["q3"]["rejected"] == "solo answers 3" and rows["q3"]["judge"] == "together:judge"
    assert rows["q3"]["prompt"] == "question number 3"


def test_the_command_says_what_preferences_jsonl_holds(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    # A judge that names position A in both orders gives ties only: no pair, and an empty
    # preferences.jsonl, on which datasets.load_dataset fails with a bare StopIteration.
    data = write_prompts(tmp_path / "p.jsonl", 2)
    server.script("judge", always_a)
    args = ("compare", str(data), "-c", str(write_mixture(tmp_path / "mix.toml")),
            "--judge", "together:judge", "-o", str(tmp_path / "r"))  # fmt: skip
    done = run_cli(*args, env=env(server))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "r" / "preferences.jsonl").read_bytes() == b""
    assert (
        f"moa compare: no preference pair in {tmp_path / 'r' / 'preferences.jsonl'} (left out: "
        "6 ties): the file is empty, and datasets.load_dataset cannot load an empty file"
    ) in done.stderr
    server.script("judge", prefers("from agg"))  # the mixture, in both orders, against p1, p2
    again = run_cli(*args[:-1], str(tmp_path / "r2"), env=env(server))
    assert again.returncode == 0, again.stderr
    assert f"4 preference pairs in {tmp_path / 'r2' / 'preferences.jsonl'} (left out: 2 ties)" in (
        again.stderr
    )


def test_a_config_file_name_matplotlib_would_read_as_math(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    # The mixture is named after its config file. '$...$' in a plot label is matplotlib's
    # mathtext: 'x$\alpha^{$y' stopped the command at the plot, after every answer and
    # judgment was paid, and again on each rerun.
    data = write_prompts(tmp_path / "p.jsonl", 2)
    server.script("judge", always_a)
    config = tmp_path / "x$\\alpha^{$y.toml"
    config.write_text(write_mixture(tmp_path / "mix.toml").read_text(), encoding="utf-8")
    out = tmp_path / "r"
    done = run_cli("compare", str(data), "-c", str(config), "--judge", "together:judge",
                   "-o", str(out), env=env(server))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert results(out)["candidate"] == "moa-x_alpha_y"
    assert (out / "answers" / "moa-x_alpha_y.jsonl").is_file()
    with Image.open(out / "plot.png") as image:
        assert image.size == (800, 500)
