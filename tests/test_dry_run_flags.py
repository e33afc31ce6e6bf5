"""``--dry-run`` estimates what the same command without it would run: ``--limit``,
``--retry-failed`` and ``--retry-degraded`` change which items run, so they change the estimate
(they were ignored, and the estimate priced another run than the one asked for)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from batch_helpers import prompts, read_records, write_config, write_items
from conftest import run_cli
from fake_openai import Failure, FakeOpenAIServer


def dry_run(*args: str | Path) -> dict[str, Any]:
    result = run_cli("batch", *map(str, args), "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_limit_bounds_the_estimate(server: FakeOpenAIServer, tmp_path: Path) -> None:
    data = write_items(tmp_path / "in.jsonl", prompts(10))
    cfg = write_config(tmp_path / "c.toml", server)
    limited = dry_run(data, "-c", cfg, "--limit", "3")
    assert (limited["to_run"], limited["later"], limited["calls"]) == (3, 7, 3 * 3)
    # K samples are K items each, as --limit counts them in a run.
    sampled = dry_run(data, "-c", cfg, "--limit", "4", "--samples", "2")
    assert (sampled["items"], sampled["to_run"], sampled["later"]) == (20, 4, 16)
    assert sampled["calls"] == 4 * 3
    # The text says it too.
    text = run_cli("batch", str(data), "-c", str(cfg), "--limit", "3", "--dry-run").stdout
    assert "10 items (0 already done, 3 to run, 7 left for later runs: --limit 3)" in text
    # What the estimate said is what the run does.
    out = tmp_path / "out.jsonl"
    run = run_cli("batch", str(data), "-o", str(out), "-c", str(cfg), "--limit", "3")
    assert run.returncode == 0, run.stderr
    assert len(read_records(out)) == 3 and len(server.requests) == 3 * 3


def test_retry_flags_count_the_items_they_run_again(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    data = write_items(tmp_path / "in.jsonl", prompts(4))
    cfg = write_config(tmp_path / "c.toml", server, extra="max_attempts = 1")
    server.fail("agg", Failure(status=400))  # one item fails, for good
    out = tmp_path / "out.jsonl"
    assert run_cli("batch", str(data), "-o", str(out), "-c", str(cfg), "-j", "1").returncode == 1
    assert [r["status"] for r in read_records(out)].count("failed") == 1
    plain = dry_run(data, "-o", out, "-c", cfg)
    assert (plain["done"], plain["to_run"], plain["calls"]) == (4, 0, 0)
    again = dry_run(data, "-o", out, "-c", cfg, "--retry-failed")
    assert (again["done"], again["to_run"], again["calls"]) == (3, 1, 3)
    degraded = dry_run(data, "-o", out, "-c", cfg, "--retry-degraded")
    assert (degraded["done"], degraded["to_run"]) == (4, 0)


def test_a_resume_reads_the_output_once(
    server: FakeOpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An output of millions of records takes minutes a read: the dry run read it three times
    # (to check the resume, to count what is done, to measure the tokens per call), and a run
    # twice before any call (its statuses, then the check).
    from typer.testing import CliRunner

    from langgraph_moa.cli import build_app
    from langgraph_moa.core.batch.outputs import RunFile

    data = write_items(tmp_path / "in.jsonl", prompts(4))
    cfg = write_config(tmp_path / "c.toml", server)
    out = tmp_path / "out.jsonl"
    first = run_cli("batch", str(data), "-o", str(out), "-c", str(cfg), "--limit", "2")
    assert first.returncode == 0, first.stderr
    reads: list[Path] = []
    read = RunFile._read  # every read of the records goes through it

    def counted(self: RunFile) -> Iterator[tuple[int, int, dict[str, Any]]]:
        reads.append(self.path)
        return read(self)

    monkeypatch.setattr(RunFile, "_read", counted)
    command = ["batch", str(data), "-o", str(out), "-c", str(cfg)]
    dry = CliRunner().invoke(build_app(), [*command, "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    estimate = json.loads(dry.stdout)
    assert (estimate["done"], estimate["to_run"], estimate["method"]) == (2, 2, "measured")
    assert reads == [out]
    # A run refused for an edited item has read the output once too, and called nothing.
    reads.clear()
    write_items(data, [{**item, "prompt": "edited"} for item in prompts(4)])
    refused = CliRunner().invoke(build_app(), command)
    assert refused.exit_code == 2, refused.output
    assert "holds answers to 2 items" in refused.output  # q0 and q1, in the order they finished
    assert reads == [out] and len(server.requests) == 2 * 3
