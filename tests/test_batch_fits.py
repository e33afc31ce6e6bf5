"""An item longer than its models' context windows: every call of it would fail before being
sent, so it is refused as the input is read (exit 2, the dry run alike), not priced by the dry
run and then failed by the run after its other calls were paid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from batch_helpers import error_line, read_records
from conftest import run_cli, spec
from fake_openai import FakeOpenAIServer

from langgraph_moa.core.batch.fits import ContextCheck
from langgraph_moa.core.batch.inputs import parse_item
from langgraph_moa.nodes.context import Context, ModelSpec

QWEN = "Qwen/Qwen2.5-72B-Instruct-Turbo"  # the catalog knows its window: 32,768 tokens


def test_an_item_longer_than_the_catalogs_window_is_refused_before_any_call(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    model = f'{{ model = "together:{QWEN}", base_url = "{server.base_url}" }}'
    config = tmp_path / "c.toml"
    config.write_text(f"layers = 2\nproposers = [{model}, {model}]\naggregator = {model}\n")
    data = tmp_path / "in.jsonl"
    long = "word " * 60_000  # about 86,000 tokens
    data.write_text(
        json.dumps({"id": "a", "prompt": "short"}) + "\n" + json.dumps({"id": "b", "prompt": long})
    )
    out = tmp_path / "out.jsonl"
    args = ["batch", str(data), "-o", str(out), "-c", str(config)]
    run, dry = run_cli(*args), run_cli(*args, "--dry-run")
    # The dry run priced it, the run paid item a and failed b, exit 1.
    assert (run.returncode, dry.returncode) == (2, 2), (run.stderr, dry.stdout)
    line = error_line(run.stderr)
    assert line == error_line(dry.stderr)
    assert "in.jsonl: line 2: no call of the run can hold it: the prompt needs about" in line
    assert f"more than together:{QWEN}'s context window of 32768 tokens" in line
    assert not server.requests and not out.exists()
    # --skip-invalid: recorded failed, the rest answered.
    skipped = run_cli(*args, "--skip-invalid")
    assert skipped.returncode == 1, skipped.stderr
    assert [r["status"] for r in read_records(out)] == ["ok", "failed"]
    assert len(server.requests) == 3
    # A window set next to the model that holds it: the item runs.
    bigger = model.replace(" }", ", context_window = 200000 }")
    config.write_text(f"layers = 2\nproposers = [{bigger}, {bigger}]\naggregator = {bigger}\n")
    assert run_cli("batch", str(data), "-c", str(config), "--dry-run").returncode == 0


def check(
    server: FakeOpenAIServer,
    windows: dict[str, int] | None = None,
    fallback: str | None = None,
    min_proposals: int = 1,
) -> ContextCheck:
    """The check of a mixture p1, p2 -> agg (answers up to 500 tokens), windows by model."""
    windows = windows or {}

    def model(name: str) -> ModelSpec:
        return spec(server, name, context_window=windows.get(name), max_tokens=500)

    return ContextCheck(
        Context(
            proposers=[model("p1"), model("p2")],
            aggregator=model("agg"),
            fallback_aggregator=model(fallback) if fallback else None,
            min_proposals=min_proposals,
        )
    )


def test_only_an_item_no_call_can_hold_is_refused(server: FakeOpenAIServer) -> None:
    # Unknown models get the default window, 8,192 tokens, in the run as here.
    item = parse_item({"prompt": "x" * 26_000})  # about 7,430 tokens: the proposers hold it
    with pytest.raises(ValueError, match="more than together:agg's context window of 8192"):
        check(server)(item)  # ... but not the aggregator, whose prompt adds the references
    check(server, windows={"agg": 16_000})(item)
    check(server, windows={"big": 16_000}, fallback="big")(item)  # the fallback holds it
    longer = parse_item({"prompt": "x" * 40_000})
    with pytest.raises(ValueError, match="together:p1's context window of 8192"):
        check(server, windows={"agg": 64_000})(longer)
    # One proposer that holds it is enough (min_proposals 1): the answer is degraded, not failed.
    check(server, windows={"p2": 64_000, "agg": 64_000})(longer)
    with pytest.raises(ValueError, match="p1's context window"):
        check(server, windows={"p2": 64_000, "agg": 64_000}, min_proposals=2)(longer)
    # Every turn of a conversation counts, and the system message too.
    turns = parse_item({"turns": ["x" * 15_000, "y" * 15_000]})
    with pytest.raises(ValueError, match="no call of the run can hold it"):
        check(server)(turns)
    short = parse_item({"messages": [{"role": "system", "content": "be brief"},
                                     {"role": "user", "content": "hi"}]})  # fmt: skip
    check(server)(short)
    # max_tokens past the window refuses no item: the settings are at fault, and the run (or a
    # server's caps) says so, not a line of the input.
    settings = ContextCheck(
        Context(
            proposers=[spec(server, "p1", max_tokens=9000)],
            aggregator=spec(server, "agg", context_window=16_000),
        )
    )
    settings(item)
