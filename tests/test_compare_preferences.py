"""``preferences.jsonl`` as a DPO trainer reads it: a pair built on a mixture's degraded answer
(a proposer gave up) says so, and what is left out is counted under its own reason."""

from __future__ import annotations

import io
import json
from pathlib import Path

from compare_helpers import prefers
from conftest import spec
from fake_openai import Failure, FakeOpenAIServer
from rich.console import Console
from test_compare import compare, script_answers, systems_for

from langgraph_moa.apps.compare import CompareOptions, run_compare
from langgraph_moa.apps.compare.run import _preferences_line
from langgraph_moa.core.batch.inputs import Item, read_items


async def test_a_pair_from_a_degraded_answer_is_flagged(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    script_answers(server)
    server.fail("p2", *[Failure(status=400)] * 3)  # p2 gives up on the first three prompts
    server.script("judge", prefers("aggregated"))  # the mixture, in both orders
    data, out = await compare(server, tmp_path, 5)
    rows = [json.loads(line) for line in (out / "preferences.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and all(r["chosen_system"] == "moa" for r in rows)
    # They were 5 plain "moa" rows: nothing said 3 came from a mixture missing a proposer.
    flagged = {r["prompt_id"] for r in rows if r["chosen_degraded"]}
    assert len(flagged) == 3 and not any(r["rejected_degraded"] for r in rows)
    assert data["preferences"]["degraded"] == 3
    line = _preferences_line(data, out)
    assert line.startswith(f"5 preference pairs in {out / 'preferences.jsonl'}")
    assert line.endswith(
        "; 3 hold a degraded answer (a proposer gave up): see chosen_degraded and rejected_degraded"
    )


async def test_a_prompt_after_a_system_message_is_not_called_multi_turn(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    script_answers(server, agg=lambda r: "the aggregated answer", solo=lambda r: "solo answers")
    server.script("judge", prefers("aggregated"))
    prompts = tmp_path / "p.jsonl"
    system = {"role": "system", "content": "be brief"}
    prompts.write_text(
        json.dumps({"id": "plain", "prompt": "question number 1"})
        + "\n"
        + json.dumps(
            {"id": "sys", "messages": [system, {"role": "user", "content": "question number 2"}]}
        )
        + "\n"
        + json.dumps({"id": "two", "turns": ["question number 3", "question number 4"]})
        + "\n"
    )
    items = [i for i in read_items(str(prompts)) if isinstance(i, Item)]
    out = tmp_path / "report"
    run = await run_compare(
        items,
        systems_for(server),
        spec(server, "judge"),
        out,
        CompareOptions(concurrency=2),
        source="test prompts",
        console=Console(file=io.StringIO()),
    )
    prefs = run.results["preferences"]
    assert prefs["pairs"] == 1
    assert prefs["left_out"] == {
        "tie": 0,
        "unparsed": 0,
        "missing": 0,
        "multi-turn": 1,
        "earlier-messages": 1,
    }
    assert "(left out: 1 multi-turn, 1 after a system message or earlier messages)" in (
        _preferences_line(run.results, out)
    )
