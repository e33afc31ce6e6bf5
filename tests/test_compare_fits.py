"""A prompt one system or the judge cannot hold: every other system would pay for its answer
and that call would then fail, so moa compare refuses it before any call (exit 2), as moa batch
refuses an item no call of its run can hold (apps/compare/fits.py)."""

from __future__ import annotations

import json
from pathlib import Path

from batch_helpers import error_line
from compare_helpers import PRICE, always_a, env
from conftest import run_cli
from fake_openai import FakeOpenAIServer

QWEN = "together:Qwen/Qwen2.5-72B-Instruct-Turbo"  # the catalog knows its window: 32,768 tokens


def big_mixture(path: Path) -> Path:
    """p1, p2 -> agg, each with a window of 200,000 tokens."""

    def spec(name: str) -> str:
        return f'{{ model = "together:{name}", context_window = 200000, {PRICE} }}'

    path.write_text(
        f"layers = 2\nproposers = [{spec('p1')}, {spec('p2')}]\naggregator = {spec('agg')}\n",
        encoding="utf-8",
    )
    return path


def prompts(path: Path, long: str) -> Path:
    lines = [{"id": "short", "prompt": "hi"}, {"id": "long", "prompt": long}]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return path


def test_a_prompt_too_long_for_one_system_is_refused_before_any_call(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    data = prompts(tmp_path / "p.jsonl", "word " * 60_000)  # about 86,000 tokens
    mix = big_mixture(tmp_path / "mix.toml")
    out = tmp_path / "r"
    args = ["compare", str(data), "-s", f"moa={mix}", "-s", f"qwen={QWEN}", "-o", str(out)]
    done = run_cli(*args, "--judge", "together:judge", env=env(server))
    # The mixture held it and was paid for it; Qwen's call then failed unsent.
    assert done.returncode == 2, done.stderr
    line = error_line(done.stderr)
    assert "prompt 'long': system qwen cannot hold it" in line
    assert f"more than {QWEN}'s context window of 32768 tokens" in line
    assert "or leave the prompt out" in line
    assert not server.requests and not out.exists()


def test_a_prompt_the_judge_cannot_hold_with_both_answers_is_refused_before_any_call(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    # About 7,150 tokens: every system holds it, and so would the judge's window (8,192, less
    # its 512 for the verdict) without the answers; with two of up to 512 tokens it cannot.
    data = prompts(tmp_path / "p.jsonl", "word " * 5_000)
    mix = big_mixture(tmp_path / "mix.toml")
    out = tmp_path / "r"
    args = ["compare", str(data), "-c", str(mix), "-o", str(out)]
    done = run_cli(*args, "--judge", "together:judge", env=env(server))
    # Every system answered it (8 calls), then each judgment failed.
    assert done.returncode == 2, done.stderr
    line = error_line(done.stderr)
    assert "prompt 'long': the judge together:judge cannot hold it with the answers of " in line
    assert "moa-mix and agg (up to 512 and 512 tokens a turn" in line
    assert "more than together:judge's context window of 8192 tokens" in line
    assert "or choose another --judge" in line
    assert not server.requests and not out.exists()
    # A judge whose window holds them: the prompt is answered and judged.
    server.script("Qwen/Qwen2.5-72B-Instruct-Turbo", always_a)
    done = run_cli(*args, "--judge", QWEN, env=env(server))
    assert done.returncode == 0, done.stderr
    assert len(server.requests_for("Qwen/Qwen2.5-72B-Instruct-Turbo")) == 2 * 2 * 3
