"""``moa compare --report-only`` over a results.json that is not one (edited, truncated, of
another shape): one line saying what is wrong in words, exit 2, and nothing rewritten."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from compare_helpers import always_a
from conftest import run_cli
from fake_openai import FakeOpenAIServer
from rich.console import Console
from test_compare import compare, script_answers

from langgraph_moa.apps.compare.run import report_only
from langgraph_moa.nodes.errors import InputError


def broken(results: dict[str, Any], how: str) -> Any:
    if how == "a list":
        return [results]
    if how == "a pair not an object":
        return {**results, "pairs": [["solo"]]}
    if how == "another version":
        return {**results, "version": 2}
    if how == "a missing field":
        return {
            **results,
            "pairs": [{k: v for k, v in results["pairs"][0].items() if k != "win_rate"}],
        }
    if how == "a field of another kind":
        return {
            **results,
            "systems": [
                {**s, "cost_per_answer": "cheap", "cost_usd": "cheap"} for s in results["systems"]
            ],
        }
    raise AssertionError(how)


SAID = {
    "a list": "(a JSON list, not an object)",
    "a pair not an object": "(pairs[0] is not an object with a 'baseline')",
    "another version": "(version 2; this moa compare reads 1)",
    "a missing field": "(a field is missing: 'win_rate')",
    "a field of another kind": "(a field holds a value of another kind than moa compare writes",
}


async def test_a_results_json_of_another_shape_is_named_in_words(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    script_answers(server)
    server.script("judge", always_a)
    _, out = await compare(server, tmp_path, 3)
    stored = json.loads((out / "results.json").read_text())
    report = (out / "report.md").read_bytes()
    for how, said in SAID.items():
        (out / "results.json").write_text(json.dumps(broken(stored, how)))
        with pytest.raises(InputError) as refused:
            report_only(str(out), Console(file=io.StringIO()))
            pytest.fail(how)
        message = str(refused.value)
        # It was Python's own words: "list indices must be integers or slices, not str".
        assert message.startswith(
            f"{out / 'results.json'} is not the results of moa compare {said}"
        )
        assert "indices" not in message and "object has no attribute" not in message
        assert (out / "report.md").read_bytes() == report  # nothing rewritten
    (out / "results.json").write_text('{"version": 1, "pairs": [')
    with pytest.raises(InputError, match=r"results\.json is not JSON: give the REPORT_DIR"):
        report_only(str(out), Console(file=io.StringIO()))
    # As the command says it: one line, exit 2.
    (out / "results.json").write_text(json.dumps([stored]))
    done = run_cli("compare", "--report-only", str(out))
    assert done.returncode == 2, done.stderr
    errors = [x for x in done.stderr.splitlines() if x.startswith("moa: error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr
    assert (
        "(a JSON list, not an object): give the REPORT_DIR of a finished moa compare" in (errors[0])
    )
