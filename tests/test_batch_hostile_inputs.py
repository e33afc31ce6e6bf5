"""Inputs a hostile tester wrote: text no record can hold, nesting Python cannot read. Each is
refused as the input is read, naming its line, before any call is paid (exit 2), the dry run
identically; with ``--skip-invalid`` it is a failed item of its own and the run goes on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from batch_helpers import error_line, read_records, write_config
from conftest import run_cli
from fake_openai import FakeOpenAIServer

from langgraph_moa.core.batch import read_items
from langgraph_moa.core.batch.inputs import MAX_DEPTH, InputError, InvalidItem


def refused_alike(data: Path, config: Path, out: Path) -> str:
    """The run and its dry run refuse ``data`` with one and the same line, exit 2."""
    run = run_cli("batch", str(data), "-o", str(out), "-c", str(config))
    dry = run_cli("batch", str(data), "-o", str(out), "-c", str(config), "--dry-run")
    assert (run.returncode, dry.returncode) == (2, 2), (run.stderr, dry.stderr)
    assert error_line(run.stderr) == error_line(dry.stderr)
    return error_line(run.stderr)


# A JSON escape of half a surrogate pair: Python reads it into a str UTF-8 cannot encode.
LONE = '{"id": "s3", "prompt": "ok", "meta": "\\ud83d"}'


def test_a_lone_surrogate_is_refused_before_any_call(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    config = write_config(tmp_path / "c.toml", server)
    data = tmp_path / "in.jsonl"
    data.write_text('{"id": "a", "prompt": "fine"}\n' + LONE + "\n")
    out = tmp_path / "out.jsonl"
    line = refused_alike(data, config, out)
    # It was "unexpected UnicodeEncodeError" (exit 1) after 3 paid calls, and no line named.
    assert "in.jsonl: line 2: \\ud83d is a lone UTF-16 surrogate" in line
    assert "remove it or write the whole pair" in line
    assert not server.requests and not out.exists()
    # With --skip-invalid it is a failed item; the others are answered, and a rerun is quiet.
    for _ in range(2):
        run = run_cli("batch", str(data), "-o", str(out), "-c", str(config), "--skip-invalid")
        assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    records = read_records(out)
    assert [r["status"] for r in records] == ["ok", "failed"]
    assert records[1]["error"]["kind"] == "invalid" and records[1]["input"] == LONE
    assert len(server.requests) == 3  # the good item, once


def test_a_lone_surrogate_in_the_prompt_or_a_json_list_is_named(tmp_path: Path) -> None:
    listed = tmp_path / "in.json"
    listed.write_text('[{"prompt": "a"}, {"prompt": "half \\udc00 of a pair"}]')
    with pytest.raises(InputError, match=r"item 2: \\udc00 is a lone UTF-16 surrogate"):
        read_items(str(listed))
    # A whole pair is one character, and an escaped backslash before "ud83d" is no escape.
    fine = tmp_path / "fine.jsonl"
    fine.write_text('{"prompt": "smile \\ud83d\\ude00 and \\\\ud83d"}\n')
    (item,) = read_items(str(fine))
    assert not isinstance(item, InvalidItem) and item.turns == ["smile \U0001f600 and \\ud83d"]


def nested(depth: int) -> str:
    """An item whose ``meta`` nests lists so that the item is ``depth`` deep."""
    inner = depth - 1
    return '{"prompt": "x", "meta": ' + "[" * inner + "]" * inner + "}"


def test_nesting_past_the_limit_is_refused_the_same_in_a_dry_run(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    config = write_config(tmp_path / "c.toml", server)
    out = tmp_path / "out.jsonl"
    # 100,000 deep was "unexpected RecursionError" (exit 1, no line named), as a line and in a
    # list; and the dry run read what the run refused (its stack was shallower).
    line = tmp_path / "deep.jsonl"
    line.write_text('{"prompt": "fine"}\n' + nested(100_000) + "\n")
    said = refused_alike(line, config, out)
    assert (
        f"deep.jsonl: line 2: objects and lists nested 100,000 deep, more than the {MAX_DEPTH}"
        in said
    )
    assert said.endswith("(or pass --skip-invalid to record it as failed)")
    listed = tmp_path / "deep.json"
    listed.write_text("[" + nested(100_000) + ', {"prompt": "fine"}]')
    assert "deep.json: item 1: objects and lists nested 100,000 deep" in refused_alike(
        listed, config, out
    )
    assert not server.requests
    # --skip-invalid records it and reads on past it, in a list too.
    run = run_cli("batch", str(listed), "-o", str(out), "-c", str(config), "--skip-invalid")
    assert run.returncode == 1, run.stderr
    assert [r["status"] for r in read_records(out)] == ["failed", "ok"]


@pytest.mark.parametrize("suffix", ["jsonl", "json"])
def test_the_depth_limit_is_one_number(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"in.{suffix}"

    def write(depth: int) -> None:
        text = nested(depth)
        path.write_text(f"[{text}]" if suffix == "json" else text + "\n")

    write(MAX_DEPTH)
    (item,) = read_items(str(path))
    assert not isinstance(item, InvalidItem)
    write(MAX_DEPTH + 1)
    with pytest.raises(InputError, match=f"nested {MAX_DEPTH + 1} deep, more than the"):
        read_items(str(path))
    # Brackets inside strings are text, not nesting.
    path.write_text('{"prompt": "' + "[" * 5000 + '"}' + ("\n" if suffix == "jsonl" else ""))
    if suffix == "json":
        path.write_text('[{"prompt": "' + "{" * 5000 + '"}]')
    (item,) = read_items(str(path))
    assert not isinstance(item, InvalidItem)


def test_a_lone_surrogate_in_an_answer_is_kept_as_a_replacement_character(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    # A provider may answer one (a JSON "\ud83d" escape): the run aborted at writing the paid
    # item ("unexpected UnicodeEncodeError", exit 1), and every rerun paid it again.
    config = tmp_path / "c.toml"
    config.write_text(
        f'layers = 1\naggregator = {{ model = "together:agg", base_url = "{server.base_url}" }}\n'
    )
    server.script("agg", "half \ud83d a smile")
    data = tmp_path / "in.jsonl"
    data.write_text('{"id": "a", "prompt": "smile"}\n{"id": "b", "prompt": "again"}\n')
    out = tmp_path / "out.jsonl"
    for _ in range(2):
        run = run_cli("batch", str(data), "-o", str(out), "-c", str(config))
        assert run.returncode == 0, run.stderr
    assert [r["answer"] for r in read_records(out)] == ["half \ufffd a smile"] * 2
    assert len(server.requests) == 2  # paid once each


def test_a_proposers_lone_surrogate_reaches_the_aggregator_as_a_replacement_character(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    # The aggregator's request could not be encoded: the item failed ("unexpected
    # UnicodeEncodeError") after its proposers were paid, and --retry-failed got the same
    # proposal back from the call cache and failed again, every time.
    config = write_config(tmp_path / "c.toml", server)
    server.script("p1", "half \udc00 a pair")
    data = tmp_path / "in.jsonl"
    data.write_text('{"id": "a", "prompt": "go"}\n')
    out = tmp_path / "out.jsonl"
    run = run_cli("batch", str(data), "-o", str(out), "-c", str(config))
    assert run.returncode == 0, run.stderr
    (record,) = read_records(out)
    assert record["status"] == "ok"
    assert record["turns"][0]["layers"][0][0]["text"] == "half \ufffd a pair"
    (aggregated,) = server.requests_for("agg")
    assert "half \ufffd a pair" in json.dumps(aggregated.messages, ensure_ascii=False)
