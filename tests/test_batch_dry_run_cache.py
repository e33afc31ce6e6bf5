"""The dry run and the call cache: calls the cache holds are counted as if paid (which a run
asks again depends on earlier layers' answers), and the dry run says so when the cache the run
would read exists, instead of presenting the figure as what the run pays."""

from __future__ import annotations

import json
from pathlib import Path

from batch_helpers import prompts, write_config, write_items
from conftest import run_cli
from fake_openai import FakeOpenAIServer


def test_the_dry_run_says_when_a_cache_makes_its_figures_an_upper_bound(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    config = write_config(tmp_path / "c.toml", server)
    data = write_items(tmp_path / "in.jsonl", prompts(3))
    shared = tmp_path / "shared.sqlite"
    first = run_cli("batch", str(data), "-o", str(tmp_path / "a.jsonl"), "-c", str(config),
                    "--cache", str(shared))  # fmt: skip
    assert first.returncode == 0, first.stderr
    # Another output over the same cache: every call is in it, and the run pays none.
    args = ["batch", str(data), "-o", str(tmp_path / "b.jsonl"), "-c", str(config)]
    dry = run_cli(*args, "--cache", str(shared), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    # It said "calls: 9 ... $..." and nothing more, for a run that paid 0.
    assert "calls: 9 " in dry.stdout
    assert (
        f"call cache: {shared} exists: the calls it already holds are counted and priced here "
        "as if paid, so these figures are an upper bound"
    ) in dry.stdout
    as_json = json.loads(run_cli(*args, "--cache", str(shared), "--dry-run", "--json").stdout)
    assert as_json["cache"] == str(shared) and as_json["calls"] == 9
    run = run_cli(*args, "--cache", str(shared))
    assert run.returncode == 0 and len(server.requests) == 9  # the first run's, only
    # No cache the run would read: no such line.
    for extra in (["--no-cache"], []):
        fresh = ["batch", str(data), "-o", str(tmp_path / "c.jsonl"), "-c", str(config)]
        plain = run_cli(*fresh, *extra, "--dry-run")
        assert plain.returncode == 0 and "call cache:" not in plain.stdout, plain.stdout
