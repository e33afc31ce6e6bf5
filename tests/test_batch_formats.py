"""What evaluation tools read from ``moa batch``, read with their own code, and ``--samples``.

FastChat's judge reads a model_answer folder with ``fastchat.llm_judge.common.load_model_answers``
(every ``*.jsonl`` in the folder, each line indexed by ``question_id``). That module imports
torch and transformers at the top (through ``fastchat.model.model_adapter``), so it cannot be
imported without a GPU-sized stack; fschat itself installs without them. The test runs FastChat's
own function: its source, taken from the installed fschat, compiled alone. It fails when fschat
moves or renames it.
"""

from __future__ import annotations

import ast
import glob
import importlib.util
import json
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batch_helpers import prompts, read_records, write_config, write_items
from conftest import run_cli
from fake_openai import FakeOpenAIServer


def fastchat_load_model_answers() -> Callable[[str], dict[str, dict[Any, dict[str, Any]]]]:
    """FastChat's ``load_model_answers``, from the installed fschat's source."""
    spec = importlib.util.find_spec("fastchat")
    assert spec is not None and spec.origin is not None, "fschat is a dev dependency"
    source = Path(spec.origin).parent / "llm_judge" / "common.py"
    with warnings.catch_warnings():  # its regular expressions elsewhere warn on parsing
        warnings.simplefilter("ignore", DeprecationWarning)
        tree = ast.parse(source.read_text(encoding="utf-8"))
    (func,) = [
        n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "load_model_answers"
    ]
    namespace: dict[str, Any] = {"glob": glob, "os": os, "json": json}
    exec(compile(ast.Module([func], []), str(source), "exec"), namespace)
    loader: Callable[[str], dict[str, dict[Any, dict[str, Any]]]] = namespace[func.name]
    return loader


MT_BENCH = [
    {"question_id": 81, "category": "writing", "turns": ["Write a poem", "Now shorter"]},
    {"question_id": 82, "category": "roleplay", "turns": ["Be a pirate", "Say goodbye"]},
]


def test_the_documented_mt_bench_command_gives_a_folder_fastchat_loads(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    config = write_config(tmp_path / "c.toml", server)
    questions = write_items(tmp_path / "question.jsonl", MT_BENCH)
    answers = tmp_path / "data" / "mt_bench" / "model_answer"
    # docs/batch.md's command, for two models into one folder, as FastChat's judge expects.
    for name in ("my-moa", "other-moa"):
        out = answers / f"{name}.jsonl"
        args = ["batch", str(questions), "-o", str(out), "-f", "mt-bench", "--generator", name]
        result = run_cli(*args, "-c", str(config))
        assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in answers.iterdir()) == [
        ".moa-batch",
        "my-moa.jsonl",
        "other-moa.jsonl",
    ]
    loaded = fastchat_load_model_answers()(str(answers))
    assert set(loaded) == {"my-moa", "other-moa"}
    for model, by_question in loaded.items():
        assert set(by_question) == {81, 82}
        for row in by_question.values():
            assert row["model_id"] == model
            (choice,) = row["choices"]
            assert len(choice["turns"]) == 2 and all(choice["turns"])
    # The journal a rerun resumes from is in the work folder: a rerun skips every item.
    again = run_cli(*args, "-c", str(config))
    assert again.returncode == 0 and "2 items were already in the output" in again.stderr


def test_multi_turn_items_are_refused_in_alpaca_eval(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    config = write_config(tmp_path / "c.toml", server)
    data = write_items(tmp_path / "mt.jsonl", [*prompts(1), MT_BENCH[0]])
    out = tmp_path / "model_outputs.json"
    result = run_cli("batch", str(data), "-o", str(out), "-f", "alpaca-eval", "-c", str(config))
    assert result.returncode == 2, result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("moa: error:")]
    assert "item '81' (line 2) has 2 turns" in line and "-f mt-bench" in line
    assert server.requests == [] and not out.exists()


def test_two_items_of_one_question_are_refused_in_mt_bench(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    # Their answers were written as two "choices" of one question: FastChat judges choice 0.
    config = write_config(tmp_path / "c.toml", server)
    out = tmp_path / "answers.jsonl"
    clashes = [
        [
            {"id": "a", "question_id": 3, "turns": ["x"]},
            {"id": "b", "question_id": 3, "turns": ["y"]},
        ],
        [{"id": "3", "turns": ["x"]}, {"question_id": 3, "id": "q3", "turns": ["y"]}],
    ]
    for items, (first, second) in zip(clashes, [("a", "b"), ("3", "q3")], strict=True):
        data = write_items(tmp_path / "mt.jsonl", items)
        result = run_cli("batch", str(data), "-o", str(out), "-f", "mt-bench", "-c", str(config))
        assert result.returncode == 2, result.stderr
        (line,) = [x for x in result.stderr.splitlines() if x.startswith("moa: error:")]
        assert f"items {first!r} (line 1) and {second!r} (line 2) have the same question_id 3" in (
            line
        )
    assert server.requests == [] and not out.exists()
    # The samples of one question are its choices, as before.
    data = write_items(tmp_path / "mt.jsonl", MT_BENCH[:1])
    args = ["batch", str(data), "-o", str(out), "-f", "mt-bench", "-c", str(config)]
    assert run_cli(*args, "--samples", "2").returncode == 0
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(row["choices"]) == 2
    # Nothing left: the dry run says so (it failed on an empty table of models).
    dry = run_cli(*args, "--samples", "2", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "2 items (2 already done, 0 to run)" in dry.stdout and "cost: $0.0000" in dry.stdout


def test_samples_are_distinct_seeded_runs_cached_apart(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    config = write_config(tmp_path / "c.toml", server)
    data = write_items(tmp_path / "in.jsonl", [*prompts(2), MT_BENCH[0]])
    out = tmp_path / "out.jsonl"
    args = ["batch", str(data), "-c", str(config), "--samples", "3", "-j", "4"]
    result = run_cli(*args, "-o", str(out))
    assert result.returncode == 0, result.stderr
    records = read_records(out)
    assert [r["id"] for r in records] == [f"{i}#s{k}" for i in ("q0", "q1", "81") for k in range(3)]
    assert [(r["item_id"], r["sample"]) for r in records[:3]] == [("q0", 0), ("q0", 1), ("q0", 2)]
    # Each sample asked each proposer with its own seed: 3 samples x 2 proposers, 6 seeds.
    seeds = {
        (r.model, r.body.get("seed"))
        for r in server.requests
        if r.messages[-1]["content"] == "question number 0"
    }
    assert len({s for m, s in seeds if m in ("p1", "p2")}) == 6
    assert len(server.requests) == 3 * 3 * 4  # 3 samples of 4 turns, 3 calls a turn

    # Rerunning the same output reuses its cache; a new output asks again (the stated default);
    # --cache shares one on purpose and says what it reused.
    server.reset()
    again = run_cli(*args, "-o", str(out), "--retry-failed")
    assert again.returncode == 0 and server.requests == []
    fresh = run_cli(*args, "-o", str(tmp_path / "new.jsonl"))
    assert fresh.returncode == 0 and len(server.requests) == 36
    server.reset()
    shared = tmp_path / "shared.sqlite"
    run_cli(*args, "-o", str(tmp_path / "s1.jsonl"), "--cache", str(shared))
    assert len(server.requests) == 36
    server.reset()
    reused = run_cli(*args, "-o", str(tmp_path / "s2.jsonl"), "--cache", str(shared))
    assert reused.returncode == 0 and server.requests == []
    assert "(36 calls answered from it, not paid again)" in reused.stderr

    # MT-Bench: the samples of a question are its choices, as FastChat's --num-choices writes.
    answers = tmp_path / "model_answer"
    mt = run_cli(*args, "-o", str(answers / "moa.jsonl"), "-f", "mt-bench")
    assert mt.returncode == 0, mt.stderr
    rows = fastchat_load_model_answers()(str(answers))["moa"]
    assert [c["index"] for c in rows[81]["choices"]] == [0, 1, 2]
    assert len(rows) == 3 and all(len(c["turns"]) == 2 for c in rows[81]["choices"])


def test_a_resume_with_another_samples_count_is_refused(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    # K is in every sample's seeds: a resume with another K (or none: a forgotten --samples)
    # ran the items again as new ones, beside the samples, paid again.
    config = write_config(tmp_path / "c.toml", server)
    data = write_items(tmp_path / "in.jsonl", prompts(1))
    out = tmp_path / "out.jsonl"
    args = ["batch", str(data), "-o", str(out), "-c", str(config)]
    assert run_cli(*args, "--samples", "2").returncode == 0
    server.reset()
    for again, change in [(["--samples", "3"], "samples: 2 -> 3"), ([], "samples: 2 -> 1")]:
        result = run_cli(*args, *again)
        assert result.returncode == 2, result.stderr
        assert f"holds 2 finished items made with other settings ({change})" in result.stderr
    assert not server.requests
    assert [r["id"] for r in read_records(out)] == ["q0#s0", "q0#s1"]
    assert run_cli(*args, "--samples", "2").returncode == 0 and not server.requests


# ``moa`` with the rest of its arguments, saying on stderr how often it opened the input (its
# first argument) to read it: an audit hook sees every open, whoever makes it.
COUNTING_OPENS = """
import atexit, runpy, sys
path, sys.argv = sys.argv[1], ["moa", *sys.argv[2:]]
opened = []
sys.addaudithook(lambda event, args: event == "open" and args[0] == path and args[1] is not None
                 and opened.append(args))
atexit.register(lambda: print(f"opened the input {len(opened)} times", file=sys.stderr))
runpy.run_module("langgraph_moa", run_name="__main__")
"""


def test_a_format_reads_the_input_as_often_as_jsonl(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    # The first pass over a 2 GB input takes minutes (docs/batch.md): -f alpaca-eval and
    # -f mt-bench checked their items on a pass of their own, before the run's.
    config = write_config(tmp_path / "c.toml", server)
    data = write_items(tmp_path / "in.jsonl", prompts(2))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOGETHER_", "OPENAI_"))}

    def opens(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-c", COUNTING_OPENS, str(data), "batch", str(data), *args],
            capture_output=True,
            text=True,
            env=env,
            stdin=subprocess.DEVNULL,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return result.stderr.splitlines()[-1]

    counts = {
        fmt: [
            opens("-o", str(tmp_path / fmt / "out"), "-f", fmt, "-c", str(config), *dry)
            for dry in ([], ["--dry-run"])
        ]
        for fmt in ("jsonl", "alpaca-eval", "mt-bench")
    }
    assert counts["alpaca-eval"] == counts["mt-bench"] == counts["jsonl"], counts
    # Stdin, which can be read only once, still gives every row.
    out = tmp_path / "stdin" / "model_outputs.json"
    args = ["batch", "-", "-o", str(out), "-f", "alpaca-eval", "-c", str(config)]
    result = run_cli(*args, stdin=data.read_text())
    assert result.returncode == 0, result.stderr
    assert [row["instruction"] for row in json.loads(out.read_text())] == [
        item["prompt"] for item in prompts(2)
    ]
