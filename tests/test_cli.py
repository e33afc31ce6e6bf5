"""The ``moa`` command as a user runs it: a subprocess talking to the fake server over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli
from fake_openai import FakeOpenAIServer

SEED_PROPOSERS = [
    "Qwen/Qwen2-72B-Instruct",
    "Qwen/Qwen1.5-72B-Chat",
    "mistralai/Mixtral-8x22B-Instruct-v0.1",
    "databricks/dbrx-instruct",
]
SEED_AGGREGATOR = "mistralai/Mixtral-8x22B-Instruct-v0.1"
KEY = {"TOGETHER_API_KEY": "test-key"}


def together_env(server: FakeOpenAIServer) -> dict[str, str]:
    return {**KEY, "TOGETHER_API_BASE": server.base_url}


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("moa: error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["   "], KEY, "prompt is empty"),
        (["--preset", "nope", "hi"], KEY, "unknown preset 'nope'; choose one of: local, moa"),
        (
            ["--preset", "seed", "--proposer", "qwen72b", "hi"],
            KEY,
            "must look like 'provider:model'",
        ),
        (["--preset", "seed", "--proposer", "bogus:m", "hi"], KEY, "unknown provider 'bogus'"),
        (["--preset", "seed", "hi"], {}, "set TOGETHER_API_KEY"),
        (
            ["--preset", "seed", "--layers", "0", "hi"],
            KEY,
            "--layers 0: out of range; allowed: 1 to 10",
        ),
        (
            ["--preset", "seed", "--max-tokens", "-5", "hi"],
            KEY,
            "--max-tokens -5: out of range; allowed: 1 or more",
        ),
        (
            ["--preset", "seed", "--temperature", "9", "hi"],
            KEY,
            "--temperature 9: out of range; allowed: 0 to 2",
        ),
        (["--preset", "seed", "--grace", "2", "hi"], KEY, "--grace 2 applies only with a quorum"),
        (["chat", "--list", "--thread", "work"], KEY, "--list lists the saved threads and exits"),
    ],
    ids=[
        "empty-prompt",
        "unknown-preset",
        "malformed-model",
        "unknown-provider",
        "missing-key",
        "zero-layers",
        "negative-max-tokens",
        "bad-temperature",
        "grace-without-quorum",
        "list-with-a-thread",
    ],
)
def test_bad_input_gives_one_line_and_non_zero_exit(
    args: list[str], env: dict[str, str], expected: str
) -> None:
    result = run_cli(*args, env=env)
    assert result.returncode == 2  # refused before any call (core/command.py)
    assert expected in one_error_line(result.stderr)
    assert result.stdout == ""


def test_no_proposers_in_a_config_file(tmp_path: Path) -> None:
    config = tmp_path / "empty.toml"
    config.write_text('proposers = []\naggregator = "together:x"\n')
    result = run_cli("--config", str(config), "hi", env=KEY)
    assert result.returncode != 0
    assert "proposers" in one_error_line(result.stderr)


def test_missing_config_file_is_named() -> None:
    result = run_cli("--config", "nowhere.toml", "hi", env=KEY)
    assert result.returncode == 2
    assert "config file 'nowhere.toml' not found" in one_error_line(result.stderr)


def test_streams_the_answer_to_stdout_and_progress_to_stderr(server: FakeOpenAIServer) -> None:
    server.script(SEED_AGGREGATOR, "The final synthesized answer.")
    result = run_cli("--preset", "seed", "What is fun in SF?", env=together_env(server))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() != ""
    # Mixtral is both a proposer and the aggregator: the last request is the aggregator's.
    assert server.requests[-1].model == SEED_AGGREGATOR
    assert "<references>" in server.requests[-1].messages[0]["content"]
    assert result.stdout == "The final synthesized answer.\n"
    for model in SEED_PROPOSERS:
        assert f"together:{model} done in" in result.stderr
    assert "4/4" in result.stderr and "elapsed" in result.stderr
    assert "moa:" not in result.stdout


def test_json_reports_layers_usage_and_timings(server: FakeOpenAIServer) -> None:
    result = run_cli("--preset", "seed-advanced", "--json", "Explain MoA", env=together_env(server))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["answer"].startswith(f"Answer from {SEED_AGGREGATOR}")
    assert [[p["model"] for p in layer] for layer in report["layers"]] == [
        [f"together:{m}" for m in SEED_PROPOSERS]
    ] * 2
    assert all(
        p["text"] and p["usage"]["output_tokens"] > 0 for lay in report["layers"] for p in lay
    )
    mixtral = report["usage"][f"together:{SEED_AGGREGATOR}"]
    assert mixtral["calls"] == 3  # proposer in two layers + aggregator
    assert mixtral["input_tokens"] > 0
    assert report["timings"]["total_s"] > 0 and len(report["timings"]["layers_s"]) == 2
    assert report["settings"]["layers"] == 3


def test_flags_override_the_preset(server: FakeOpenAIServer) -> None:
    result = run_cli(
        "--preset",
        "seed",
        "--proposer",
        "together:p1",
        "--proposer",
        "together:p2",
        "--aggregator",
        "together:boss",
        "--layers",
        "3",
        "--max-tokens",
        "7",
        "--temperature",
        "0.1",
        "--json",
        "hi",
        env=together_env(server),
    )
    assert result.returncode == 0, result.stderr
    assert [r.model for r in server.requests][-1] == "boss"
    assert sorted({r.model for r in server.requests}) == ["boss", "p1", "p2"]
    assert len(server.requests) == 5
    assert all(r.body["max_tokens"] == 7 and r.body["temperature"] == 0.1 for r in server.requests)


def test_show_proposals_labels_each_response_by_model(server: FakeOpenAIServer) -> None:
    for m in SEED_PROPOSERS:
        server.script(m, f"proposal from {m}")
    server.script(SEED_AGGREGATOR, "final words")
    result = run_cli("--preset", "seed", "--show-proposals", "hi", env=together_env(server))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for m in SEED_PROPOSERS:
        assert f"layer 1 · together:{m}" in out
    assert out.index("layer 1 · together:Qwen/Qwen2-72B-Instruct") < out.index("final words")


def test_prompt_from_stdin(server: FakeOpenAIServer) -> None:
    result = run_cli("--preset", "seed", "-", env=together_env(server), stdin="from stdin\n")
    assert result.returncode == 0, result.stderr
    assert server.requests[0].messages[-1]["content"] == "from stdin\n"


def test_chat_keeps_history_across_turns(server: FakeOpenAIServer) -> None:
    result = run_cli(
        "chat", "--preset", "seed", env=together_env(server), stdin="first turn\nsecond turn\n"
    )
    assert result.returncode == 0, result.stderr
    answers = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(answers) == 2
    last = server.requests[-1]
    convo = [(m["role"], m["content"]) for m in last.messages if m["role"] != "system"]
    assert convo == [
        ("user", "first turn"),
        ("assistant", answers[0]),
        ("user", "second turn"),
    ]


def test_presets_lists_every_preset() -> None:
    result = run_cli("presets")
    assert result.returncode == 0
    for name in ("seed", "seed-advanced", "moa", "moa-lite", "self-moa", "together", "local"):
        assert f"\n{name}: " in "\n" + result.stdout


def test_a_key_picks_together_and_no_notice(server: FakeOpenAIServer) -> None:
    result = run_cli("--layers", "1", "hi", env=together_env(server))
    assert result.returncode == 0, result.stderr
    assert "no TOGETHER_API_KEY" not in result.stderr
    assert [r.model for r in server.requests] == ["Qwen/Qwen2.5-72B-Instruct-Turbo"]


def test_no_key_runs_the_embedded_local_model_and_says_so() -> None:
    result = run_cli("--max-tokens", "24", "Name a colour.")
    assert result.returncode == 0, result.stderr
    notices = [line for line in result.stderr.splitlines() if "no TOGETHER_API_KEY" in line]
    assert notices == [
        "moa: no TOGETHER_API_KEY: running the embedded local model (SmolLM2-135M); "
        "set it for Together's models, or pick one with --preset"
    ]
    assert "local:smollm2 done in" in result.stderr  # the local preset's proposers ran
    assert result.stdout.strip()
    # Not even at exit, when llama.cpp's models are freed.
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr


def test_an_explicit_preset_wins_over_the_default_choice() -> None:
    result = run_cli("--preset", "seed", "hi")
    assert "no TOGETHER_API_KEY: running" not in result.stderr
    assert "set TOGETHER_API_KEY" in one_error_line(result.stderr)


def test_chat_forgets_a_failed_turn(server: FakeOpenAIServer) -> None:
    from fake_openai import Failure

    for m in SEED_PROPOSERS:
        server.fail(m, Failure(status=401))
    result = run_cli(
        "chat", "--preset", "seed", env=together_env(server), stdin="doomed turn\nsecond turn\n"
    )
    assert result.returncode == 0, result.stderr
    assert "only 0 of 4 proposers answered" in one_error_line(result.stderr)
    convo = [
        (m["role"], m["content"]) for m in server.requests[-1].messages if m["role"] != "system"
    ]
    assert convo == [("user", "second turn")]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--layers", "abc", "hi"], "Invalid value for '--layers'"),
        (["--no-such-flag", "hi"], "No such option: --no-such-flag"),
    ],
)
def test_bad_flags_give_one_line_too(args: list[str], expected: str) -> None:
    result = run_cli(*args, env=KEY)
    assert result.returncode == 2
    assert expected in one_error_line(result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_bad_flag_points_at_its_own_commands_help() -> None:
    result = run_cli("batch", "in.jsonl", "--no-such-flag")
    assert one_error_line(result.stderr).endswith("(see 'moa batch --help')")


def test_help_lists_version_and_version_prints_the_packages() -> None:
    import langgraph_moa

    helped = run_cli("--help")
    assert helped.returncode == 0
    options = helped.stdout.split("Options:", 1)[1].split("Commands:", 1)[0]  # moa's own
    assert "--version" in options and "Show the version and exit." in options
    for args in (["--version"], ["--version", "a prompt"]):  # never asked as a prompt
        shown = run_cli(*args)
        assert shown.returncode == 0 and shown.stdout == f"moa {langgraph_moa.__version__}\n"


def test_every_flag_of_every_command_says_what_it_does() -> None:
    """`moa --help` is where the README sends a user for the flags: none may be a bare name."""
    import typer.main

    from langgraph_moa.cli import build_app

    group = typer.main.get_command(build_app())
    assert isinstance(group, typer.main.TyperGroup)
    bare = [
        f"moa {name} {param.opts[0]}"
        for name, command in group.commands.items()
        for param in command.params
        if isinstance(param, typer.core.TyperOption) and not param.help
    ]
    assert bare == []
