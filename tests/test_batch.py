"""``moa batch`` as a user runs it: inputs, outputs and formats, resume after kill -9, the call
cache and replay, against the fake provider server over HTTP."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from batch_helpers import (
    last_user,
    prompts,
    read_records,
    requests_by_prompt,
    write_config,
    write_items,
    write_replay_config,
)
from conftest import ROOT, run_cli
from fake_openai import Failure, FakeOpenAIServer, count_prompt_tokens

from langgraph_moa.core.batch import Item, parse_item, read_items
from langgraph_moa.core.batch.inputs import InputError, InvalidItem, content_id

PROPOSERS = ("p1", "p2")


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("moa: error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


# --------------------------------------------------------------------------------- inputs
def test_each_input_shape_is_read(tmp_path: Path) -> None:
    items = [
        {"prompt": "plain prompt"},
        {
            "id": "m1",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "reply"},
                {"role": "user", "content": "second"},
            ],
        },
        {"instruction": "Translate", "input": "bonjour", "dataset": "helpful_base"},
        {"question_id": 81, "turns": ["turn one", "turn two"], "category": "writing"},
    ]
    jsonl = read_items(str(write_items(tmp_path / "in.jsonl", items)))
    (tmp_path / "in.json").write_text(json.dumps(items))
    as_list = read_items(str(tmp_path / "in.json"))
    assert [i.id for i in jsonl] == [i.id for i in as_list]
    prompt, messages, instruction, mt = jsonl
    assert isinstance(prompt, Item) and prompt.turns == ["plain prompt"]
    assert prompt.id == content_id({"prompt": "plain prompt"})  # no id: a hash of the content
    assert isinstance(messages, Item) and messages.id == "m1" and messages.turns == ["second"]
    assert [m["role"] for m in messages.history] == ["system", "user", "assistant"]
    assert isinstance(instruction, Item) and instruction.turns == ["Translate\n\nbonjour"]
    assert isinstance(mt, Item) and mt.id == "81" and mt.turns == ["turn one", "turn two"]
    assert mt.source["category"] == "writing"  # other fields are kept in the record's input


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("{not json", "line 2: not valid JSON"),
        ('["a list"]', "line 2: an item must be a JSON object"),
        ('{"text": "x"}', "line 2: no prompt: an item needs one of 'prompt'"),
        ('{"prompt": "  "}', "line 2: prompt is empty"),
        ('{"turns": []}', "line 2: turns must be a non-empty list"),
        ('{"messages": [{"role": "assistant", "content": "x"}]}', "line 2: the last of messages"),
        ('{"id": "a", "prompt": "dup"}', "line 2: id 'a' is already the id of line 1"),
        ('{"prompt": "x", "score": NaN}', "line 2: NaN is not valid JSON"),
    ],
)
def test_a_malformed_line_is_named(tmp_path: Path, line: str, expected: str) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": "a", "prompt": "ok"}\n' + line + "\n")
    with pytest.raises(InputError, match=expected):
        read_items(str(path))
    skipped = read_items(str(path), skip_invalid=True)
    assert isinstance(skipped[1], InvalidItem) and expected in skipped[1].error


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, server: FakeOpenAIServer) -> None:
    config = write_config(tmp_path / "c.toml", server)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"prompt": oops}\n')
    out = str(tmp_path / "o.jsonl")  # in the test's folder, never the repository's
    cases = [
        (["batch", str(bad), "-o", out, "-c", str(config)], "bad.jsonl: line 2: not valid"),
        (
            ["batch", "nowhere.jsonl", "-o", str(tmp_path / "new" / "o.jsonl"), "-c", str(config)],
            "'nowhere.jsonl' not found",
        ),
        (
            ["batch", str(tmp_path), "-o", str(tmp_path / "new" / "o.jsonl"), "-c", str(config)],
            "is a folder: name a file of items in it",
        ),
        (["batch", str(bad), "-c", str(config)], "give the output file with -o"),
        (
            ["batch", str(bad), "-o", str(tmp_path / "o.json"), "-f", "csv", "-c", str(config)],
            "choose one of jsonl",
        ),
        (["batch", str(bad), "-o", out, "-j", "0", "-c", str(config)], "--concurrency"),
        # Flags the run would ignore: refused, not run without them.
        (["batch", str(bad), "-o", out, "--json", "-c", str(config)], "--json goes with --dry-run"),
        (
            ["batch", str(bad), "-o", out, "--cache", str(tmp_path / "c.db"), "--no-cache"],
            "either --cache PATH or --no-cache",
        ),
        (
            ["batch", str(bad), "-o", out, "--cache", "c.db", "--server", "http://127.0.0.1:9"],
            "runs on --server use no call cache",
        ),
        (["batch", str(bad), "-o", out, "--assistant", "moa"], "add --server URL"),
        # '-' is stdin as INPUT; as -o it made a file called '-' where stdout was meant.
        (["batch", str(bad), "-o", "-", "-c", str(config)], "-o -: the output is a file"),
    ]
    for args, expected in cases:
        result = run_cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert expected in one_error_line(result.stderr)
    assert not (tmp_path / "o.jsonl").exists()
    assert not (tmp_path / "new").exists()  # a mistyped input leaves nothing behind (no lock)
    assert not (ROOT / "-").exists() and not (ROOT / ".-.lock").exists()


def test_skip_invalid_records_the_line_as_failed(tmp_path: Path, server: FakeOpenAIServer) -> None:
    config = write_config(tmp_path / "c.toml", server)
    data = tmp_path / "in.jsonl"
    data.write_text(
        '{"id": "a", "prompt": "fine"}\n{"prompt": oops}\n{"id": "c", "prompt": "ok"}\n'
    )
    out = tmp_path / "out.jsonl"
    result = run_cli("batch", str(data), "-o", str(out), "-c", str(config), "--skip-invalid")
    assert result.returncode == 1, result.stderr  # an item failed
    records = read_records(out)
    assert [r["status"] for r in records] == ["ok", "failed", "ok"]
    assert records[1]["error"]["kind"] == "invalid"
    assert "line 2: not valid JSON" in records[1]["error"]["message"]
    assert records[1]["input"] == '{"prompt": oops}'  # the line as it was


# --------------------------------------------------------------------------------- outputs
def test_jsonl_record_has_layers_usage_cost_and_timings(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    # The aggregator's price comes from the catalog (list price), p2's from the config.
    agg = "Qwen/Qwen2.5-72B-Instruct-Turbo"
    config = tmp_path / "c.toml"
    url = f'base_url = "{server.base_url}"'
    config.write_text(
        "layers = 2\nproposers = ["
        f'{{ model = "together:p1", {url}, price = {{ input = 0, output = 0 }} }}, '
        f'{{ model = "together:p2", {url}, price = {{ input = 2, output = 4 }} }}]\n'
        f'aggregator = {{ model = "together:{agg}", {url} }}\n'
    )
    data = write_items(tmp_path / "in.jsonl", prompts(3))
    out = tmp_path / "out.jsonl"
    result = run_cli("batch", str(data), "-o", str(out), "-c", str(config))
    assert result.returncode == 0, result.stderr
    records = read_records(out)
    assert [r["id"] for r in records] == ["q0", "q1", "q2"]
    r = records[0]
    assert r["status"] == "ok" and r["error"] is None
    assert r["input"] == {"id": "q0", "prompt": "question number 0"}
    assert r["answer"] == r["answers"][0]
    assert r["answer"].startswith(f'Answer from {agg}: I considered "question number 0"')
    (layer,) = r["turns"][0]["layers"]
    assert [p["model"] for p in layer] == ["together:p1", "together:p2"]
    assert all(p["text"] and p["usage"]["output_tokens"] > 0 and p["error"] is None for p in layer)
    assert all(p["latency_s"] > 0 and p["attempts"] == 1 for p in layer)
    assert r["turns"][0]["aggregator"]["model"] == f"together:{agg}"
    usage = r["usage"]
    assert set(usage) == {"together:p1", "together:p2", f"together:{agg}"}
    expected = (
        usage["together:p2"]["input_tokens"] * 2
        + usage["together:p2"]["output_tokens"] * 4
        + (usage[f"together:{agg}"]["input_tokens"] + usage[f"together:{agg}"]["output_tokens"])
        * 1.20
    ) / 1e6
    assert r["cost_usd"] == pytest.approx(expected)
    assert r["spent_usd"] == pytest.approx(expected)
    assert r["requests"] == 3 and r["cached_calls"] == 0
    assert r["seconds"] > 0 and r["finished"] > 0
    assert r["settings"]["proposers"] == [["together:p1", "together:p2"]]
    # Progress: plain lines on stderr (not a terminal), then the totals per model.
    assert "moa batch: 3/3 items (100%) ·" in result.stderr
    assert "items/min · ETA" in result.stderr and "tokens · spent $" in result.stderr
    assert f"together:{agg}" in result.stderr and "total" in result.stderr


def test_alpaca_eval_and_mt_bench_formats(tmp_path: Path, server: FakeOpenAIServer) -> None:
    config = write_config(tmp_path / "c.toml", server)
    alpaca = write_items(
        tmp_path / "alpaca.jsonl",
        [
            {"instruction": "Name a color", "dataset": "helpful_base"},
            {"instruction": "Name a fruit", "input": "red ones only"},
        ],
    )
    out = tmp_path / "model_outputs.json"
    result = run_cli(
        "batch",
        str(alpaca),
        "-o",
        str(out),
        "-c",
        str(config),
        "-f",
        "alpaca-eval",
        "--generator",
        "my-moa",
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())
    assert [set(r) for r in rows] == [{"instruction", "output", "generator", "dataset"}] * 2
    # What the model was asked: AlpacaEval's judge reads instruction alone (docs/batch.md).
    assert [r["instruction"] for r in rows] == ["Name a color", "Name a fruit\n\nred ones only"]
    assert [r["dataset"] for r in rows] == ["helpful_base", "moa-batch"]
    assert rows[0]["generator"] == "my-moa" and rows[0]["output"].startswith("Answer from agg")
    # Every detail in the journal, in the work folder beside: never a file in the answer folder
    assert len(read_records(tmp_path / ".moa-batch" / "model_outputs.json.run.jsonl")) == 2

    mt = write_items(
        tmp_path / "mt.jsonl",
        [{"question_id": 81, "category": "writing", "turns": ["Write a poem", "Now shorter"]}],
    )
    answers = tmp_path / "moa.jsonl"
    result = run_cli("batch", str(mt), "-o", str(answers), "-c", str(config), "-f", "mt-bench")
    assert result.returncode == 0, result.stderr
    (row,) = [json.loads(line) for line in answers.read_text().splitlines()]
    assert set(row) == {"question_id", "answer_id", "model_id", "choices", "tstamp"}
    assert row["question_id"] == 81 and row["model_id"] == "moa-c"
    (choice,) = row["choices"]
    assert choice["index"] == 0 and len(choice["turns"]) == 2
    # Turn 2 is asked after turn 1's answer: every call of turn 2 carries it.
    first_answer = choice["turns"][0]
    turn2 = [r for r in server.requests if last_user(r) == "Now shorter"]
    assert len(turn2) == 3
    for request in turn2:
        assert {"role": "assistant", "content": first_answer} in request.messages
        assert request.messages[-1] == {"role": "user", "content": "Now shorter"}


def test_order_is_input_order_whatever_order_items_finish_in(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    rng = random.Random(7)
    for name in (*PROPOSERS, "agg"):
        server.script(name, latency=lambda: rng.uniform(0.0, 0.25))
    config = write_config(tmp_path / "c.toml", server)
    data = write_items(tmp_path / "in.jsonl", prompts(24))
    out = tmp_path / "out.jsonl"
    result = run_cli("batch", str(data), "-o", str(out), "-c", str(config), "-j", "8")
    assert result.returncode == 0, result.stderr
    records = read_records(out)
    assert [r["id"] for r in records] == [f"q{i}" for i in range(24)]
    finished = [r["finished"] for r in records]
    assert finished != sorted(finished), "items should have finished out of order"


# --------------------------------------------------------------------------------- resume
def _popen_batch(*args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOGETHER_", "OPENAI_"))}
    return subprocess.Popen(
        [sys.executable, "-m", "langgraph_moa", "batch", *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_an_input_changed_mid_run_stops_it_as_a_failure_and_keeps_what_was_paid(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    # Calls were paid: a failed run (exit 1), not a refusal (exit 2, "nothing was paid").
    for name in PROPOSERS:
        server.script(name, ttft=0.2)
    config = write_config(tmp_path / "c.toml", server)
    pad = " and more" * 400  # lines of 3.6 kB: the run reads them as it goes, not all at once
    items = [{**item, "prompt": item["prompt"] + pad} for item in prompts(40)]
    data = write_items(tmp_path / "in.jsonl", items)
    out = tmp_path / "out.jsonl"
    proc = _popen_batch(str(data), "-o", str(out), "-c", str(config), "-j", "1")
    deadline = time.monotonic() + 60
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.05)
    write_items(data, [{**item, "id": f"other{i}"} for i, item in enumerate(items)])
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr
    assert f"moa: error: {data} changed while the run was reading it: rerun" in stderr
    assert "Traceback" not in stderr
    finished = read_records(out)
    assert 0 < len(finished) < 40 and {r["status"] for r in finished} == {"ok"}


def test_kill_9_then_resume_loses_nothing_and_repeats_no_finished_call(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    for name in PROPOSERS:
        server.script(name, ttft=0.25)
    server.script("agg", ttft=0.1)
    config = write_config(tmp_path / "c.toml", server)
    n = 30
    data = write_items(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "out.jsonl"
    args = [str(data), "-o", str(out), "-c", str(config), "-j", "3"]
    proc = _popen_batch(*args)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if out.exists() and out.read_bytes().count(b"\n") >= 8:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    server.wait_idle()
    before = [json.loads(line) for line in out.read_bytes().split(b"\n")[:-1]]
    done_before = {r["id"] for r in before}
    assert 8 <= len(done_before) < n
    calls_before = len(server.requests)

    result = run_cli("batch", *args)
    assert result.returncode == 0, result.stderr
    assert f"{len(done_before)} items were already in the output" in result.stderr
    records = read_records(out)  # no torn line
    assert [r["id"] for r in records] == [f"q{i}" for i in range(n)]  # each once, in order
    assert all(r["status"] == "ok" for r in records)
    assert len(server.requests) > calls_before
    # The proposer calls of items finished before the kill were not made again; the calls that
    # finished while the process died (cached) were not either.
    for name in PROPOSERS:
        counts = requests_by_prompt(server, name)
        assert len(counts) == n
        for i in range(n):
            if f"q{i}" in done_before:
                assert counts[f"question number {i}"] == 1, (name, i)
    repeated = sum(c - 1 for name in PROPOSERS for c in requests_by_prompt(server, name).values())
    assert repeated <= 3 * len(PROPOSERS)  # at most the calls in flight at the kill (-j 3)


def test_a_torn_last_line_is_repaired(tmp_path: Path, server: FakeOpenAIServer) -> None:
    config = write_config(tmp_path / "c.toml", server)
    data = write_items(tmp_path / "in.jsonl", prompts(4))
    out = tmp_path / "out.jsonl"
    args = ["batch", str(data), "-o", str(out), "-c", str(config), "--limit", "2"]
    assert run_cli(*args).returncode == 0
    with out.open("ab") as f:
        f.write(b'{"id":"q2","status":"ok","input":{"pro')  # what a crash mid-write leaves
    result = run_cli(*args[:-2])
    assert result.returncode == 0, result.stderr
    assert "cut off a torn last line" in result.stderr
    assert [r["id"] for r in read_records(out)] == ["q0", "q1", "q2", "q3"]


def test_retry_failed_runs_failed_items_again(tmp_path: Path, server: FakeOpenAIServer) -> None:
    server.fail("agg", Failure(status=400, message="bad request"))  # not retried: item 1 fails
    config = write_config(tmp_path / "c.toml", server)
    data = write_items(tmp_path / "in.jsonl", prompts(3))
    out = tmp_path / "out.jsonl"
    args = ["batch", str(data), "-o", str(out), "-c", str(config), "-j", "1"]
    first = run_cli(*args)
    assert first.returncode == 1
    assert "1 items failed" in first.stderr and "--retry-failed" in first.stderr
    records = read_records(out)
    assert [r["status"] for r in records] == ["failed", "ok", "ok"]
    assert records[0]["error"]["kind"] == "aggregator"
    assert "HTTP 400" in records[0]["error"]["message"]
    assert records[0]["turns"] == [] and records[0]["answer"] is None

    again = run_cli(*args)  # without the flag: the failed item stays failed, nothing runs
    assert again.returncode == 1 and "3 items were already in the output" in again.stderr
    server.reset()
    fixed = run_cli(*args, "--retry-failed")
    assert fixed.returncode == 0, fixed.stderr
    records = read_records(out)
    assert [(r["id"], r["status"]) for r in records] == [("q0", "ok"), ("q1", "ok"), ("q2", "ok")]
    # The proposers of the retried item had answered: they came from the cache.
    assert {r.model for r in server.requests} == {"agg"}
    assert records[0]["cached_calls"] == 2


def test_a_failed_items_paid_calls_are_in_its_spend(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    # The aggregator fails after both proposers answered: the item has no turn, but its
    # proposers and the aggregator's refused request were paid. They counted nothing.
    server.fail("agg", Failure(status=400, message="bad request"))  # not retried
    price = "price = { input = 1, output = 2 }"
    config = write_config(tmp_path / "c.toml", server, model_extra=price)
    data = write_items(tmp_path / "in.jsonl", prompts(2))
    out = tmp_path / "out.jsonl"
    result = run_cli("batch", str(data), "-o", str(out), "-c", str(config), "-j", "1")
    assert result.returncode == 1
    failed, ok = read_records(out)
    assert failed["status"] == "failed" and failed["turns"] == [] and ok["status"] == "ok"
    # What the provider saw is what the records say was paid, item by item.
    assert failed["requests"] + ok["requests"] == len(server.requests) == 6
    assert failed["requests"] == 3
    assert set(failed["usage"]) == {"together:p1", "together:p2", "together:agg"}
    assert failed["usage"]["together:p1"]["output_tokens"] > 0
    assert failed["usage"]["together:agg"]["output_tokens"] == 0  # refused: no answer
    proposers = [failed["usage"][f"together:{p}"] for p in ("p1", "p2")]
    expected = sum(u["input_tokens"] * 1 + u["output_tokens"] * 2 for u in proposers) / 1e6
    assert failed["spent_usd"] == pytest.approx(expected) and expected > 0
    calls = failed["failed_turn_calls"]
    assert sorted((c["model"], c["attempts"]) for c in calls) == [
        ("together:agg", 1),
        ("together:p1", 1),
        ("together:p2", 1),
    ]
    # The summary counts them too: 2 paid calls of each model, 6 requests, both items' spend.
    total = re.search(r"^  total +(\d+) +(\d+) .* \$(\S+) ", result.stderr, re.MULTILINE)
    assert total is not None, result.stderr
    assert total.group(1, 2) == ("6", "6")
    assert float(total.group(3)) == pytest.approx(failed["spent_usd"] + ok["spent_usd"], abs=1e-4)


@pytest.mark.parametrize("aggregator_fails", [True, False], ids=["failed", "ok"])
def test_a_call_cut_by_the_quorum_is_paid_as_the_provider_saw_it(
    tmp_path: Path, server: FakeOpenAIServer, aggregator_fails: bool
) -> None:
    # The slow proposer's request was sent, then cut by the quorum: paid, whether the item ends
    # failed (its calls noted as they end) or ok (its turn's records). Its tokens are unknown.
    server.script("slow", "late", ttft=5.0)
    if aggregator_fails:
        server.fail("agg", Failure(status=400, message="bad request"))  # not retried
    extra = "quorum = 2\nquorum_grace = 0.2"
    config = write_config(tmp_path / "c.toml", server, ("p1", "p2", "slow"), extra=extra)
    data = write_items(tmp_path / "in.jsonl", prompts(1))
    out = tmp_path / "out.jsonl"
    result = run_cli("batch", str(data), "-o", str(out), "-c", str(config))
    assert result.returncode == (1 if aggregator_fails else 0), result.stderr
    (record,) = read_records(out)
    assert record["status"] == ("failed" if aggregator_fails else "ok")
    assert server.wait_idle(5.0)
    (cut,) = server.requests_for("slow")
    assert cut.disconnected  # cancelled for real, after it was sent
    assert record["requests"] == len(server.requests) == 4
    assert record["usage"]["together:slow"] == {
        "calls": 1,
        "input_tokens": 0,
        "output_tokens": 0,
        "total_tokens": 0,
    }


# --------------------------------------------------------------------------------- cache, replay
def test_another_aggregator_pays_no_proposer_call_again(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    # Self-MoA: the same model twice. Its two samples must stay two (the cache keeps them apart).
    counter = iter(range(1000))
    server.script("p", lambda request: f"sample {next(counter)} for {last_user(request)}")
    data = write_items(tmp_path / "in.jsonl", prompts(3))
    cache = tmp_path / "calls.sqlite"
    first = run_cli(
        "batch",
        str(data),
        "-o",
        str(tmp_path / "a.jsonl"),
        "--cache",
        str(cache),
        "-c",
        str(write_config(tmp_path / "a.toml", server, ("p", "p"), "agg")),
    )
    assert first.returncode == 0, first.stderr
    assert len(server.requests_for("p")) == 6
    server.reset()
    second = run_cli(
        "batch",
        str(data),
        "-o",
        str(tmp_path / "b.jsonl"),
        "--cache",
        str(cache),
        "-c",
        str(write_config(tmp_path / "b.toml", server, ("p", "p"), "agg2")),
    )
    assert second.returncode == 0, second.stderr
    assert server.requests_for("p") == []  # every proposer call came from the cache
    assert len(server.requests_for("agg2")) == 3
    a, b = read_records(tmp_path / "a.jsonl"), read_records(tmp_path / "b.jsonl")
    for old, new in zip(a, b, strict=True):
        texts = [p["text"] for p in new["turns"][0]["layers"][0]]
        assert texts == [p["text"] for p in old["turns"][0]["layers"][0]]
        assert len(set(texts)) == 2  # two samples, not one answer twice
        assert new["cached_calls"] == 2 and new["requests"] == 1
        assert all(p["attempts"] == 0 for p in new["turns"][0]["layers"][0])
        assert new["spent_usd"] is None or new["spent_usd"] <= new["cost_usd"]
    assert "cached" in second.stderr


def test_replay_calls_only_the_aggregator(tmp_path: Path, server: FakeOpenAIServer) -> None:
    data = write_items(
        tmp_path / "in.jsonl",
        [*prompts(2), {"question_id": 7, "turns": ["first turn", "second turn"]}],
    )
    run = tmp_path / "run.jsonl"
    price = "price = { input = 3, output = 7 }"  # USD per million tokens
    source = write_config(tmp_path / "a.toml", server, model_extra=price)
    assert run_cli("batch", str(data), "-o", str(run), "-c", str(source)).returncode == 0
    server.reset()
    new = tmp_path / "new.jsonl"
    args = ["batch", "--replay", str(run), "-o", str(new), "--no-cache", "-c"]
    args.append(
        str(write_replay_config(tmp_path / "b.toml", server, aggregator="agg2", model_extra=price))
    )
    estimate = _dry_run(*args[1:])
    assert estimate["calls"] == 4  # one aggregator call per turn: 1 + 1 + 2
    assert list(estimate["per_model"]) == ["together:agg2"]  # type: ignore[call-overload]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert {r.model for r in server.requests} == {"agg2"}
    assert len(server.requests) == 4  # one call per turn: 1 + 1 + 2
    old_records, new_records = read_records(run), read_records(new)
    assert [r["id"] for r in new_records] == [r["id"] for r in old_records]
    for old, rec in zip(old_records, new_records, strict=True):
        assert rec["status"] == "ok" and rec["answer"].startswith("Answer from agg2")
        for old_turn, turn in zip(old["turns"], rec["turns"], strict=True):
            assert turn["layers"] == old_turn["layers"]  # the stored proposals, untouched
        assert rec["settings"]["aggregator"] == "together:agg2"
        # Paid: the aggregator alone. The stored proposals are counted apart, not as requests.
        assert set(rec["usage"]) == {"together:agg2"}
        assert set(rec["reused_usage"]) == {"together:p1", "together:p2"}
        assert rec["replayed_calls"] == 2 * len(rec["turns"]) and rec["cached_calls"] == 0
    # What the run reports it paid is what the provider served: requests, tokens, dollars.
    served = [r for r in server.requests if r.status == 200]
    served_in = sum(count_prompt_tokens(r.messages) for r in served)
    served_out = sum(r.chunks_sent for r in served)
    assert sum(r["requests"] for r in new_records) == len(server.requests) == 4
    assert sum(r["usage"]["together:agg2"]["input_tokens"] for r in new_records) == served_in
    assert sum(r["usage"]["together:agg2"]["output_tokens"] for r in new_records) == served_out
    spent = sum(r["spent_usd"] for r in new_records)
    assert spent == pytest.approx((served_in * 3 + served_out * 7) / 1e6)
    # The proposals' share, not paid, at the prices the replayed run counted them at.
    assert sum(r["cost_usd"] for r in new_records) > spent
    assert new_records[0]["prices"]["together:p1"] == {"input": 3, "output": 7}
    assert re.search(r"^\s+total\s+4\s+4\s", result.stderr, re.M), result.stderr  # 4 paid
    replayed_input = sum(r["usage"]["together:agg2"]["input_tokens"] for r in new_records)
    assert replayed_input <= estimate["input_tokens"]  # type: ignore[operator]
    # The aggregator got the stored proposals as references.
    (request,) = [r for r in server.requests if last_user(r) == "question number 0"]
    system = request.messages[0]["content"]
    for p in old_records[0]["turns"][0]["layers"][0]:
        assert p["text"] in system


def test_replay_of_a_joined_or_edited_run_file(tmp_path: Path, server: FakeOpenAIServer) -> None:
    cfg = str(write_config(tmp_path / "a.toml", server))
    run = tmp_path / "run.jsonl"
    data = write_items(tmp_path / "in.jsonl", prompts(2))
    assert run_cli("batch", str(data), "-o", str(run), "-c", cfg).returncode == 0
    first, second = read_records(run)
    again = str(write_replay_config(tmp_path / "b.toml", server))

    def replay(name: str, *records: dict[str, object]) -> subprocess.CompletedProcess[str]:
        write_items(tmp_path / name, list(records))
        out = str(tmp_path / f"new-{name}")
        return run_cli("batch", "--replay", str(tmp_path / name), "-o", out, "-c", again)

    # Two outputs joined with cat: each id once, in its last version, counted once.
    server.reset()
    joined = replay("joined.jsonl", first, second, first, second)
    assert joined.returncode == 0, joined.stderr
    assert "2 ok, 0 degraded, 0 failed of 2 items" in joined.stderr
    assert [r["id"] for r in read_records(tmp_path / "new-joined.jsonl")] == ["q0", "q1"]
    assert len(server.requests) == 2  # the aggregator once per item
    # A record whose input is no item: one line naming it, before any call.
    server.reset()
    edited = replay("edited.jsonl", {**first, "input": None}, second)
    assert edited.returncode == 2 and "Traceback" not in edited.stderr
    assert edited.stderr.strip() == (
        f"moa: error: --replay {tmp_path / 'edited.jsonl'}: record 1 (id 'q0'): input: an item "
        "must be a JSON object, not NoneType"
    )
    assert not server.requests
    # Proposals that are not proposals: that item fails as invalid, saying why; the other runs.
    turn = {**first["turns"][0], "layers": "garbage"}
    mangled = replay("mangled.jsonl", {**first, "turns": [turn]}, second)
    assert mangled.returncode == 1, mangled.stderr
    bad, good = read_records(tmp_path / "new-mangled.jsonl")
    assert good["status"] == "ok" and bad["status"] == "failed"
    assert bad["error"] == {
        "kind": "invalid",
        "message": "the replayed record's turn 1 holds no layers of proposals as moa batch "
        "writes them (the file was edited?)",
    }


# --------------------------------------------------------------------------------- dry run
def _dry_run(*args: str) -> dict[str, object]:
    result = run_cli("batch", *args, "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    estimate: dict[str, object] = json.loads(result.stdout)
    return estimate


def _totals(records: list[dict[str, object]]) -> tuple[int, int, int]:
    calls = inputs = outputs = 0
    for r in records:
        for row in r["usage"].values():  # type: ignore[attr-defined]
            calls += row["calls"]
            inputs += row["input_tokens"]
            outputs += row["output_tokens"]
    return calls, inputs, outputs


def test_dry_run_estimate_holds_against_the_real_count(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    words = "the quick brown fox jumps over the lazy dog and keeps running far away " * 8
    for name in (*PROPOSERS, "agg"):
        server.script(name, words)  # longer than max_tokens: every answer is cut at 40 tokens
    config = write_config(tmp_path / "c.toml", server, extra="max_tokens = 40")
    items = [
        {"id": f"q{i}", "prompt": f"Explain topic {i} to a curious student in a few lines"}
        for i in range(12)
    ]
    items.append(
        {"question_id": 99, "turns": ["Tell a story about a lighthouse", "Now make it sad"]}
    )
    data = write_items(tmp_path / "in.jsonl", items)
    out = tmp_path / "out.jsonl"

    # Before anything ran: the upper bound.
    bound = _dry_run(str(data), "-o", str(out), "-c", str(config))
    assert bound["method"] == "upper bound" and bound["to_run"] == 13 and bound["turns"] == 14
    assert (
        run_cli("batch", str(data), "-o", str(out), "-c", str(config), "--limit", "6").returncode
        == 0
    )
    calls, inputs, outputs = _totals(read_records(out))
    # (the first 6 items are 6 of the 13 estimated: compare per call)
    assert bound["calls"] == 14 * 3
    assert outputs == calls * 40  # every answer hit max_tokens: the bound is exact for output
    assert bound["output_tokens"] == 14 * 3 * 40
    per_call_bound = bound["input_tokens"] / bound["calls"]  # type: ignore[operator]
    assert inputs / calls <= per_call_bound  # an upper bound...
    assert inputs / calls >= 0.5 * per_call_bound  # ...that is not wildly loose

    # With finished items: measured means per call, for the remaining items.
    measured = _dry_run(str(data), "-o", str(out), "-c", str(config))
    assert measured["method"] == "measured" and measured["measured_from"] == 6
    assert measured["to_run"] == 7 and measured["calls"] == 8 * 3
    before = _totals(read_records(out))
    assert run_cli("batch", str(data), "-o", str(out), "-c", str(config)).returncode == 0
    after = _totals(read_records(out))
    real_in, real_out = after[1] - before[1], after[2] - before[2]
    assert measured["output_tokens"] == real_out
    assert abs(measured["input_tokens"] - real_in) / real_in <= 0.15  # type: ignore[operator]


def test_dry_run_text_names_items_calls_tokens_and_cost(tmp_path: Path) -> None:
    data = write_items(tmp_path / "in.jsonl", prompts(10))
    result = run_cli(
        "batch", str(data), "--preset", "together", "--dry-run", env={"TOGETHER_API_KEY": "k"}
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "10 items (0 already done, 10 to run), 10 turns" in out
    assert "calls: 50 (5 per turn: 4 proposer calls + the aggregator" in out
    assert "cost: $" in out and "list prices to check" in out
    assert "upper bound" in out
    assert "together:deepseek-ai/DeepSeek-V3" in out
    assert not (tmp_path / "moa-cache.sqlite").exists()


def test_parse_item_accepts_records_input() -> None:
    item = parse_item({"question_id": 3, "turns": ["a"]})
    assert item.kind == "mt-bench" and item.id == "3"
