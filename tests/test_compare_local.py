"""The slow one: ``moa compare`` end to end on the embedded SmolLM2-135M, nothing faked.

Three prompts of the starter set, short answers: about a minute or two on 2 cores. The verdicts of
a 135M judge mean little (the report says so); this checks that the whole command works with a
real model: answers, judgments, statistics, report and plot.
"""

from __future__ import annotations

from pathlib import Path

from compare_helpers import results
from conftest import run_cli
from PIL import Image

TINY = """\
layers = 2
proposers = [
    { model = "local:smollm2", temperature = 0.5, seed = 1, max_tokens = 32 },
    { model = "local:smollm2", temperature = 0.9, seed = 2, max_tokens = 32 },
]
aggregator = { model = "local:smollm2", temperature = 0.3, seed = 3, max_tokens = 48 }
"""


def test_moa_compare_end_to_end_on_the_local_model(tmp_path: Path) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(TINY, encoding="utf-8")
    out = tmp_path / "report"
    done = run_cli(
        "compare", "--config", str(config), "--limit", "3", "--judge-max-tokens", "48",
        "-o", str(out), timeout=900,
    )  # fmt: skip
    # 1: a judgment or answer failed (an empty reply from the tiny model); the report is written.
    assert done.returncode in (0, 1, 3), done.stderr  # 3: a tiny proposer may give up (degraded)
    data = results(out)
    assert [s["name"] for s in data["systems"]] == ["moa-tiny", "smollm2"]
    assert data["judge"]["model"] == "local:smollm2"
    moa, alone = data["systems"]
    assert moa["answers"] + moa["failed"] == 3 and alone["answers"] + alone["failed"] == 3
    assert moa["calls_per_answer"] == 3.0 and alone["calls_per_answer"] == 1.0
    assert moa["cost_usd"] == 0.0 and moa["tokens_per_answer"] > alone["tokens_per_answer"]
    (p,) = data["pairs"]
    assert p["win"] + p["tie"] + p["loss"] + p["unparsed"] + p["missing"] == 3
    assert any("embedded local model" in n for n in data["notes"])
    assert data["verdict"].startswith(("moa-tiny ", "No verdict"))
    report = (out / "report.md").read_text(encoding="utf-8")
    assert data["verdict"] in report and "A model this small" in report
    with Image.open(out / "plot.png") as png:
        assert png.size == (800, 500)
    assert done.stdout.strip() == data["verdict"]
