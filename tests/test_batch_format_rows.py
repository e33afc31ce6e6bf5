"""What a ``-f alpaca-eval`` or ``-f mt-bench`` file holds, row by row, as the evaluation tool
reads it. AlpacaEval's annotators show the judge each row's ``instruction`` and its outputs (an
``input`` column is not read), and join the model's rows to the reference's on ``instruction``."""

from __future__ import annotations

import json
from pathlib import Path

from batch_helpers import error_line, write_config, write_items
from conftest import run_cli
from fake_openai import FakeOpenAIServer


def test_an_alpaca_row_holds_the_input_its_answer_is_about(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    config = write_config(tmp_path / "c.toml", server)
    items = [
        {"id": "t", "instruction": "Translate to French", "input": "good morning"},
        {"id": "h", "instruction": "Say hi ", "input": ""},  # as given: the eval set's join
        {"id": "p", "prompt": "Name a colour"},
    ]
    data = write_items(tmp_path / "in.jsonl", items)
    out = tmp_path / "model_outputs.json"
    run = run_cli("batch", str(data), "-o", str(out), "-f", "alpaca-eval", "-c", str(config))
    assert run.returncode == 0, run.stderr
    rows = json.loads(out.read_text())
    # The row showed "Translate to French" next to an answer about "good morning".
    assert [r["instruction"] for r in rows] == [
        "Translate to French\n\ngood morning",
        "Say hi ",
        "Name a colour",
    ]
    assert "good morning" in rows[0]["output"]  # what the model was asked is what the row says


def test_two_items_of_one_instruction_are_refused_in_alpaca_eval(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    config = write_config(tmp_path / "c.toml", server)
    out = tmp_path / "model_outputs.json"
    clashes = [
        [{"id": "a", "instruction": "Say hi"}, {"id": "b", "instruction": "Say hi"}],
        [{"id": "a", "prompt": "Say hi"}, {"id": "b", "instruction": "Say hi"}],
        [
            {"id": "a", "instruction": "Say hi", "input": "Bob"},
            {"id": "b", "instruction": "Say hi\n\nBob"},
        ],
    ]
    for items in clashes:
        data = write_items(tmp_path / "in.jsonl", [{"id": "x", "prompt": "other"}, *items])
        args = ["batch", str(data), "-o", str(out), "-f", "alpaca-eval", "-c", str(config)]
        run, dry = run_cli(*args), run_cli(*args, "--dry-run")
        assert (run.returncode, dry.returncode) == (2, 2), (run.stderr, dry.stderr)
        line = error_line(run.stderr)
        assert line == error_line(dry.stderr)
        assert "items 'a' (line 2) and 'b' (line 3) have the same instruction" in line
        assert "write -f jsonl" in line
    assert server.requests == [] and not out.exists()
    # Different inputs make different instructions: both are rows.
    distinct = [
        {"id": "a", "instruction": "Say hi", "input": "Bob"},
        {"id": "b", "instruction": "Say hi", "input": "Ann"},
    ]
    data = write_items(tmp_path / "in.jsonl", distinct)
    run = run_cli("batch", str(data), "-o", str(out), "-f", "alpaca-eval", "-c", str(config))
    assert run.returncode == 0, run.stderr
    assert len(json.loads(out.read_text())) == 2


def test_a_format_holds_only_the_items_of_the_input(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    config = write_config(tmp_path / "c.toml", server)
    both = [{"id": "a", "instruction": "Say hi"}, {"id": "b", "instruction": "Say bye"}]
    mt = [{"question_id": 1, "turns": ["one"]}, {"question_id": 2, "turns": ["two"]}]
    for fmt, items, key in (("alpaca-eval", both, "instruction"), ("mt-bench", mt, "question_id")):
        out = tmp_path / f"out-{fmt}.json"
        args = ["-o", str(out), "-f", fmt, "-c", str(config)]
        full = write_items(tmp_path / "full.jsonl", items)
        assert run_cli("batch", str(full), *args).returncode == 0
        # One item removed from the input since: its record stayed in the output ("1 ok ... of
        # 1 items -> out (2 items ...)").
        less = write_items(tmp_path / "less.jsonl", items[:1])
        run = run_cli("batch", str(less), *args)
        assert run.returncode == 0, run.stderr
        text = out.read_text()
        lines = text.splitlines()
        rows = json.loads(text) if fmt == "alpaca-eval" else [json.loads(x) for x in lines]
        assert [r[key] for r in rows] == [items[0].get(key, 1)], fmt
        assert "1 ok, 0 degraded, 0 failed of 1 items" in run.stderr
        assert f"-> {out} (1 items;" in run.stderr
        assert "1 records are of items no longer in the input: left out of" in run.stderr
        # The input again whole: both rows, nothing paid again.
        paid = len(server.requests)
        assert run_cli("batch", str(full), *args).returncode == 0
        assert len(server.requests) == paid
