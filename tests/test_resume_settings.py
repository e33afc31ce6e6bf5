"""A resumed run must not silently mix settings: what a data team changes between two runs on
one output (a Self-MoA sample's temperature, a replay's aggregator, the generator's name, the
judge's length limit) is either refused with one line or applied to the whole file. Each test
drives ``moa`` as a process on real files, against the fake provider server."""

from __future__ import annotations

import json
from pathlib import Path
from subprocess import CompletedProcess

import pytest
from batch_helpers import (
    error_line,
    last_user,
    prompts,
    read_records,
    write_config,
    write_items,
    write_replay_config,
)
from compare_helpers import always_a, prefers, write_mixture, write_prompts
from compare_helpers import env as compare_env
from conftest import run_cli
from fake_openai import FakeOpenAIServer


def batch(*args: str | Path) -> CompletedProcess[str]:
    return run_cli("batch", *map(str, args))


def self_moa(path: Path, server: FakeOpenAIServer, first: float) -> Path:
    """Self-MoA on the fake server: one model sampled twice at two temperatures, aggregating."""
    url = server.base_url
    path.write_text(
        "layers = 2\nproposers = [\n"
        f'  {{ model = "together:p1", base_url = "{url}", temperature = {first}, seed = 1 }},\n'
        f'  {{ model = "together:p1", base_url = "{url}", temperature = 0.9, seed = 2 }},\n]\n'
        f'aggregator = {{ model = "together:p1", base_url = "{url}", temperature = 0.3 }}\n',
        encoding="utf-8",
    )
    return path


def test_a_changed_sample_of_self_moa_is_refused(server: FakeOpenAIServer, tmp_path: Path) -> None:
    # The same model at several temperatures (the self-moa preset): changing one sample's
    # temperature changes the answers, so the resume must see it, whichever use it is.
    data = write_items(tmp_path / "in.jsonl", prompts(3))
    out = tmp_path / "out.jsonl"
    first = batch(data, "-o", out, "-c", self_moa(tmp_path / "a.toml", server, 0.3), "--limit", "1")
    assert first.returncode == 0, first.stderr
    before = len(server.requests)
    result = batch(data, "-o", out, "-c", self_moa(tmp_path / "b.toml", server, 0.5))
    assert result.returncode == 2, result.stderr
    line = error_line(result.stderr)
    assert "holds 1 finished items made with other settings" in line
    assert "temperature of together:p1 (layer 1, proposer 1): 0.3 -> 0.5" in line
    assert len(server.requests) == before and len(read_records(out)) == 1
    # The record says what made it: every use of the model, not only the last one's settings.
    (record,) = read_records(out)
    temperatures = [use["temperature"] for use in record["settings"]["uses"].values()]
    assert temperatures == [0.3, 0.9, 0.3]
    # The same settings resume as before.
    again = batch(data, "-o", out, "-c", self_moa(tmp_path / "c.toml", server, 0.3))
    assert again.returncode == 0, again.stderr
    assert len(read_records(out)) == 3


def test_a_dry_run_refuses_what_the_run_refuses(server: FakeOpenAIServer, tmp_path: Path) -> None:
    # The dry run said "0 already done, 3 to run" of an output the run then refused: its
    # estimate priced a run that would not happen.
    data = write_items(tmp_path / "in.jsonl", prompts(3))
    out = tmp_path / "out.jsonl"
    first = batch(data, "-o", out, "-c", self_moa(tmp_path / "a.toml", server, 0.3), "--limit", "1")
    assert first.returncode == 0, first.stderr
    before = len(server.requests)
    other = ("-c", self_moa(tmp_path / "b.toml", server, 0.5))
    run = batch(data, "-o", out, *other)
    for dry in (batch(data, "-o", out, *other, "--dry-run"), batch(data, "-o", out, *other,
                "--dry-run", "--json")):  # fmt: skip
        assert (dry.returncode, error_line(dry.stderr)) == (2, error_line(run.stderr))
        assert run.returncode == 2 and dry.stdout == ""
    assert len(server.requests) == before
    # What the run would then do, the dry run says.
    mixed = batch(data, "-o", out, *other, "--mixed-settings", "--dry-run")
    assert mixed.returncode == 0, mixed.stderr
    assert "3 items (1 already done, 2 to run)" in mixed.stdout


def test_an_item_edited_under_its_id_is_refused_before_any_call(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    # A rerun skips the items already in the output, by id: an item whose prompt was edited
    # since kept the answer to its old prompt, under the new one, without a word.
    cfg = write_config(tmp_path / "c.toml", server)
    data = write_items(tmp_path / "in.jsonl", prompts(6))
    out = tmp_path / "out.jsonl"
    assert batch(data, "-o", out, "-c", cfg).returncode == 0
    before = len(server.requests)
    items = prompts(8)  # two new items too: a run would pay for them
    items[5]["prompt"] = "question number 5, edited"
    items[2]["prompt"] = "question number 2, edited"
    items[4]["category"] = "writing"  # a field the models are not sent: not an edit
    write_items(data, items)
    for dry in ((), ("--dry-run",)):
        result = batch(data, "-o", out, "-c", cfg, *dry)
        assert result.returncode == 2, result.stderr
        assert error_line(result.stderr) == (
            f"moa: error: {out} holds answers to 2 items (q2, q5) whose prompt changed in the "
            f"input since they were answered: give the changed items new ids, remove their lines "
            f"from {out} to answer them again, or give another -o"
        )
    assert len(server.requests) == before and len(read_records(out)) == 6
    # Their lines removed, they are answered again, to their new prompts.
    lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [x for x in lines if not x.startswith(('{"id":"q2"', '{"id":"q5"'))]
    out.write_text("".join(kept), encoding="utf-8")
    again = batch(data, "-o", out, "-c", cfg)
    assert again.returncode == 0, again.stderr
    asked = {last_user(r) for r in server.requests[before:] if r.model == "p1"}
    assert asked == {"question number 2, edited", "question number 5, edited",
                     "question number 6", "question number 7"}  # fmt: skip
    # An output written before records had a digest resumes as before, unchecked.
    records = [{k: v for k, v in r.items() if k != "input_digest"} for r in read_records(out)]
    out.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    items[0]["prompt"] = "question number 0, edited"
    write_items(data, items)
    paid = len(server.requests)
    old = batch(data, "-o", out, "-c", cfg)
    assert old.returncode == 0, old.stderr
    assert len(server.requests) == paid


def test_edited_items_among_many_records_are_refused_by_their_ids(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    # A resume of thousands of records looks the input's digests up in batches: the edits are
    # found in every batch, and named in the output's order (here the reverse of the input's).
    from langgraph_moa.core.batch.inputs import input_digest, parse_item

    cfg = write_config(tmp_path / "c.toml", server)
    items = prompts(1_300)
    # Records as a run writes them for the first 1,200 items (the fields a resume reads).
    records = [
        {"id": i["id"], "status": "ok", "input": i, "input_digest": input_digest(parse_item(i))}
        for i in reversed(items[:1_200])
    ]
    out = write_items(tmp_path / "out.jsonl", records)
    before = out.read_bytes()
    for n in (5, 499, 500, 600, 1_150, 1_250):  # q1250 has no answer yet: no edit of one
        items[n]["prompt"] += ", edited"
    items[700]["category"] = "writing"  # not sent to the models: not an edit
    data = write_items(tmp_path / "in.jsonl", items)
    for dry in ((), ("--dry-run",)):
        result = batch(data, "-o", out, "-c", cfg, *dry)
        assert result.returncode == 2, result.stderr
        assert error_line(result.stderr) == (
            f"moa: error: {out} holds answers to 5 items (q1150, q600, q500, ...) whose prompt "
            f"changed in the input since they were answered: give the changed items new ids, "
            f"remove their lines from {out} to answer them again, or give another -o"
        )
    assert len(server.requests) == 0 and out.read_bytes() == before


def test_a_refused_retry_leaves_the_output_as_it_was(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    # --retry-failed drops the failed records before it runs them again: refused, it must not.
    cfg = write_config(tmp_path / "c.toml", server)
    data = write_items(tmp_path / "in.jsonl", [*prompts(2), {"id": "bad"}])  # no prompt: failed
    out = tmp_path / "out.jsonl"
    assert batch(data, "-o", out, "-c", cfg, "--skip-invalid").returncode == 1
    before = out.read_bytes()
    items = [*prompts(2), {"id": "bad", "prompt": "fixed"}]
    items[1]["prompt"] = "question number 1, edited"
    write_items(data, items)
    result = batch(data, "-o", out, "-c", cfg, "--retry-failed")
    assert result.returncode == 2 and "(q1)" in result.stderr, result.stderr
    assert out.read_bytes() == before


@pytest.mark.parametrize(
    ("args", "output"),
    [(("--samples", "2"), "out.jsonl"), (("-f", "alpaca-eval"), "out.json")],
    ids=["samples", "alpaca-eval"],
)
def test_an_edited_item_is_refused_in_every_layout(
    server: FakeOpenAIServer, tmp_path: Path, args: tuple[str, ...], output: str
) -> None:
    # Samples are recorded under "q1#s0"... and a -f format keeps its records in a journal of
    # its own: the edit is seen through both.
    cfg = write_config(tmp_path / "c.toml", server)
    data = write_items(tmp_path / "in.jsonl", prompts(3))
    out = tmp_path / output
    assert batch(data, "-o", out, "-c", cfg, *args).returncode == 0
    before = len(server.requests)
    items = prompts(3)
    items[1]["prompt"] = "question number 1, edited"
    write_items(data, items)
    result = batch(data, "-o", out, "-c", cfg, *args)
    assert result.returncode == 2, result.stderr
    assert "holds answers to 1 item (q1) whose prompt changed" in result.stderr
    assert len(server.requests) == before


def test_a_compare_system_whose_sample_changed_is_refused(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    data = write_prompts(tmp_path / "p.jsonl", 2)
    server.script("judge", always_a)

    def compare(first: float) -> CompletedProcess[str]:
        system = f"self={self_moa(tmp_path / 's.toml', server, first)}"
        args = ("compare", data, "-s", system, "-s", "one=together:p2",
                "--judge", "together:judge", "-o", tmp_path / "r")  # fmt: skip
        return run_cli(*map(str, args), env=compare_env(server))

    assert compare(0.3).returncode == 0
    before = len(server.requests)
    result = compare(0.5)
    assert result.returncode == 2
    line = error_line(result.stderr)
    assert "holds answers of self made with other models or settings" in line
    assert "temperature of together:p1 (layer 1, proposer 1): 0.3 -> 0.5" in line
    assert len(server.requests) == before


def test_records_written_before_uses_resume_as_before(server: FakeOpenAIServer) -> None:
    # An output begun by an older moa has no "uses": its records compare per model, as then.
    from conftest import fake_context

    from langgraph_moa.core.batch.records import settings_changes, settings_summary

    now = settings_summary(fake_context(server, ["p1", "p2"]))
    old = {k: v for k, v in now.items() if k != "uses"}
    assert settings_changes(old, now) == []
    warmer = settings_summary(fake_context(server, ["p1", "p2"], temperature=0.2))
    assert settings_changes(old, warmer) == [
        "temperature of together:agg: 0.7 -> 0.2",
        "temperature of together:p1: 0.7 -> 0.2",
        "temperature of together:p2: 0.7 -> 0.2",
    ]
    assert settings_changes(now, warmer) == settings_changes(old, warmer)


def test_a_replay_resumed_with_another_aggregator_is_refused(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    url = server.base_url
    data = write_items(tmp_path / "in.jsonl", prompts(3))
    run = tmp_path / "run.jsonl"
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'layers = 2\nproposers = [{{ model = "together:p1", base_url = "{url}" }}]\n'
        f'aggregator = {{ model = "together:agg", base_url = "{url}" }}\n',
        encoding="utf-8",
    )
    assert batch(data, "-o", run, "-c", cfg).returncode == 0
    other = write_replay_config(tmp_path / "other.toml", server, "agg2")
    out = tmp_path / "replayed.jsonl"
    assert batch("--replay", run, "-o", out, "-c", other, "--limit", "1").returncode == 0
    before = len(server.requests)
    result = batch(
        "--replay", run, "-o", out, "-c", write_replay_config(tmp_path / "r.toml", server)
    )
    assert result.returncode == 2, result.stderr
    line = error_line(result.stderr)
    assert "holds 1 finished items made with other settings" in line
    assert "aggregator: together:agg2 -> together:agg" in line
    assert len(server.requests) == before
    # The same aggregator resumes; every record is made by it.
    again = batch("--replay", run, "-o", out, "-c", other)
    assert again.returncode == 0, again.stderr
    assert [r["turns"][0]["aggregator"]["model"] for r in read_records(out)] == [
        "together:agg2"
    ] * 3


def _source_run(tmp_path: Path, server: FakeOpenAIServer, name: str, temperature: float) -> Path:
    """A run of 3 items whose proposers have their own temperature, seed and endpoint."""
    url = server.base_url
    spec = f'base_url = "{url}", temperature = {temperature}, seed = 7'
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(
        f'layers = 2\nproposers = [{{ model = "together:p1", {spec} }}, '
        f'{{ model = "together:p2", {spec} }}]\n'
        f'aggregator = {{ model = "together:agg", base_url = "{url}" }}\n',
        encoding="utf-8",
    )
    run = tmp_path / f"{name}.jsonl"
    result = batch(write_items(tmp_path / "in.jsonl", prompts(3)), "-o", run, "-c", cfg)
    assert result.returncode == 0, result.stderr
    return run


def test_a_replay_records_the_proposers_of_its_run_file(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    url = server.base_url
    t02 = _source_run(tmp_path, server, "t02", 0.2)
    agg2 = write_replay_config(tmp_path / "agg2.toml", server, "agg2")
    out = tmp_path / "r.jsonl"
    assert batch("--replay", t02, "-o", out, "-c", agg2, "--limit", "1").returncode == 0
    (record,) = read_records(out)
    settings = record["settings"]
    assert settings["layers"] == 2 and settings["proposers"] == [["together:p1", "together:p2"]]
    for n, model in ((1, "together:p1"), (2, "together:p2")):
        assert settings["uses"][f"layer 1, proposer {n}"] == {
            "model": model,
            "temperature": 0.2,
            "max_tokens": 512,
            "seed": 7,
            "base_url": url,
        }
        assert settings["sampling"][model]["seed"] == 7
    assert settings["uses"]["aggregator"]["model"] == "together:agg2"
    # Resuming it with the proposals of another run (other settings, or the same settings but
    # other answers) is refused, naming what differs; nothing is called.
    t05 = _source_run(tmp_path, server, "t05", 0.5)
    server.script("p1", "a different proposal")
    again = _source_run(tmp_path, server, "t02-again", 0.2)
    before = len(server.requests)
    for other, said in (
        (t05, "temperature of together:p1: 0.2 -> 0.5"),
        (again, "the proposals replayed (another --replay run file, or one changed)"),
    ):
        result = batch("--replay", other, "-o", out, "-c", agg2)
        assert result.returncode == 2, result.stderr
        line = error_line(result.stderr)
        assert "holds 1 finished items made with other settings" in line and said in line
    assert len(server.requests) == before
    # The same run file resumes.
    resumed = batch("--replay", t02, "-o", out, "-c", agg2)
    assert resumed.returncode == 0, resumed.stderr
    assert len(read_records(out)) == 3


def test_a_replay_refuses_the_proposer_settings_it_would_ignore(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    t02 = _source_run(tmp_path, server, "t02", 0.2)
    server.reset()
    p3 = tmp_path / "p3.toml"
    p3.write_text(
        '[[proposers]]\nmodel = "together:p3"\ntemperature = 0.1\n\n'
        f'[aggregator]\nmodel = "together:agg2"\nbase_url = "{server.base_url}"\n',
        encoding="utf-8",
    )
    agg2 = write_replay_config(tmp_path / "agg2.toml", server, "agg2")
    taken = (
        f"--replay re-aggregates the proposals in the run file {t02}, with the proposers, "
        "layers and settings that made them"
    )
    for args, said in (
        (["-c", p3], f"config file '{p3}' sets proposers: {taken}; give a config without it"),
        (["-c", agg2, "--layers", "3"], f"--layers 3: {taken}; leave out --layers"),
        (
            ["-c", agg2, "--proposer", "together:p3"],
            f"--proposer 'together:p3': {taken}; leave out --proposer",
        ),
    ):
        for dry in ([], ["--dry-run"]):
            result = batch("--replay", t02, "-o", tmp_path / "r.jsonl", *args, *dry)
            assert result.returncode == 2, result.stderr
            assert error_line(result.stderr) == f"moa: error: {said}"
    assert not server.requests and not (tmp_path / "r.jsonl").exists()
    # A file that is not a run file is named as --replay's, not as an output.
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n", encoding="utf-8")
    result = batch("--replay", notes, "-o", tmp_path / "r.jsonl", "-c", agg2)
    assert result.returncode == 2
    assert error_line(result.stderr) == (
        f"moa: error: --replay {notes}: line 1 is not a batch record; --replay takes the run "
        "file of an earlier moa batch run (what it wrote to -o): give that file, or fix the line"
    )


def test_a_replay_takes_none_of_the_replayed_settings_from_its_own_run(
    server: FakeOpenAIServer,
) -> None:
    # A preset may set how proposals are made and gathered (a staircase, deadlines): a replay's
    # proposals were made by the run file's, so its context and records take none of them.
    from conftest import fake_context

    from langgraph_moa.core.batch.turns import REPLAYED_SETTINGS, ReplayTurns
    from langgraph_moa.nodes.context import Context

    ctx = fake_context(
        server, ["x"], staircase=True, layer_deadline=30.0, straggler_grace=5.0, quorum_grace=2.0
    )
    proposal = {"layer": 1, "index": 0, "model": "together:p1", "text": "a proposal"}
    stored = {"q": {"id": "q", "turns": [{"layers": [[proposal]]}], "settings": {"layers": 2}}}
    replay = ReplayTurns(ctx, stored)
    context = replay._shaped([[proposal]])[0]
    assert context.layers == 2 and [s.model for s in context.proposers_of(1)] == ["together:p1"]
    for field in set(REPLAYED_SETTINGS) - {"layers", "proposers", "layer_proposers"}:
        default = Context.model_fields[field].get_default(call_default_factory=True)
        assert getattr(context, field) == default, field
    settings = replay.settings_for("q")
    assert (settings["staircase"], settings["staircase_chunks"]) == (False, None)


def test_a_format_output_names_one_generator(server: FakeOpenAIServer, tmp_path: Path) -> None:
    # AlpacaEval names a model_outputs.json by its generator only when it holds one (else
    # "Current model"); FastChat's model_id likewise. A resume under another --generator
    # renames the whole file, as the last run asked.
    url = server.base_url
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'layers = 2\nproposers = [{{ model = "together:p1", base_url = "{url}" }}]\n'
        f'aggregator = {{ model = "together:agg", base_url = "{url}" }}\n',
        encoding="utf-8",
    )
    items = [{"instruction": f"say {w}"} for w in ("hi", "bye", "yes")]
    data = tmp_path / "alpaca.json"
    data.write_text(json.dumps(items), encoding="utf-8")
    out = tmp_path / "model_outputs.json"
    alpaca = (data, "-o", out, "-f", "alpaca-eval", "-c", cfg)
    first = batch(*alpaca, "--generator", "a", "--limit", "1")
    assert first.returncode == 0, first.stderr
    again = batch(*alpaca, "--generator", "my-moa")
    assert again.returncode == 0, again.stderr
    rows = json.loads(out.read_text())
    assert [r["generator"] for r in rows] == ["my-moa"] * 3
    mt = tmp_path / "answers" / "my-moa.jsonl"
    mt.parent.mkdir()
    questions = [{"question_id": n, "turns": [f"q{n}"]} for n in (1, 2)]
    mt_data = write_items(tmp_path / "mt.jsonl", questions)
    fastchat = (mt_data, "-o", mt, "-f", "mt-bench", "-c", cfg)
    assert batch(*fastchat, "--limit", "1").returncode == 0
    assert batch(*fastchat, "--generator", "m2").returncode == 0
    assert [json.loads(line)["model_id"] for line in mt.read_text().splitlines()] == ["m2"] * 2


def test_a_compare_with_another_judge_length_says_what_to_do(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    data = write_prompts(tmp_path / "p.jsonl", 2)
    server.script("judge", always_a)
    mix = write_mixture(tmp_path / "mix.toml")

    def compare(*more: str) -> CompletedProcess[str]:
        args = ("compare", data, "--config", mix, "--judge", "together:judge",
                "-o", tmp_path / "r", *more)  # fmt: skip
        return run_cli(*map(str, args), env=compare_env(server))

    assert compare().returncode == 0
    before = len(server.requests)
    result = compare("--judge-max-tokens", "100")
    assert result.returncode == 2
    line = error_line(result.stderr)
    # moa compare has no --mixed-settings: the line names what it does have.
    assert "--mixed-settings" not in line
    assert "judgments of together:judge made with other settings" in line
    assert "max_tokens of together:judge: 512 -> 100" in line
    assert "give another REPORT_DIR (-o), or delete that file to judge again" in line
    assert len(server.requests) == before


def test_a_prompt_edited_under_its_id_is_refused_not_judged_with_old_answers(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    # Answers are kept by prompt id. A prompt whose text changed under the same id kept its
    # old answers: the judge judged them against the new text, and preferences.jsonl paired
    # the new prompt with answers to the old one (training data that lies).
    server.script("judge", prefers("from agg"))  # the mixture wins against p1 and p2
    mix = write_mixture(tmp_path / "mix.toml")
    data = tmp_path / "p.jsonl"

    def compare() -> CompletedProcess[str]:
        args = ("compare", data, "--config", mix, "--judge", "together:judge", "-o", tmp_path / "r")
        return run_cli(*map(str, args), env=compare_env(server))

    write_items(data, [{"id": "q1", "prompt": "alpha"}, {"id": "q2", "prompt": "beta"}])
    assert compare().returncode == 0
    before = len(server.requests)
    write_items(data, [{"id": "q1", "prompt": "gamma"}, {"id": "q2", "prompt": "beta"}])
    result = compare()
    assert result.returncode == 2
    line = error_line(result.stderr)
    assert "answers to other prompts under the ids of 1 prompt (q1)" in line
    assert "give the changed prompts new ids, another REPORT_DIR (-o)" in line
    assert len(server.requests) == before
    pairs = [json.loads(x) for x in (tmp_path / "r" / "preferences.jsonl").read_text().splitlines()]
    # The report folder is as the first run left it: q1's pairs are of its first text.
    q1 = [p for p in pairs if p["prompt_id"] == "q1"]
    assert len(q1) == 2 and all(p["prompt"] == "alpha" and "alpha" in p["chosen"] for p in q1)


def test_a_compare_prompt_edited_where_nobody_reads_it_resumes_without_a_call(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    # A prompt's answers depend on what the models are asked, as moa batch decides it: a field
    # no model is asked and no report reads (category) is no edit. moa compare compared the
    # whole item, and refused a REPORT_DIR over a category. An old REPORT_DIR (records without
    # input_digest) is checked by the same rule.
    server.script("judge", always_a)
    mix = write_mixture(tmp_path / "mix.toml")
    data = tmp_path / "p.jsonl"
    report = tmp_path / "r"

    def compare(category: str, first: str = "alpha") -> CompletedProcess[str]:
        items = [{"id": "q1", "category": category, "prompt": first}, {"id": "q2", "prompt": "b"}]
        write_items(data, items)
        args = ("compare", data, "--config", mix, "--judge", "together:judge", "-o", report)
        return run_cli(*map(str, args), env=compare_env(server))

    assert compare("facts").returncode == 0
    before = len(server.requests)
    again = compare("writing")
    assert again.returncode == 0, again.stderr
    assert len(server.requests) == before  # nothing answered or judged again
    for path in (report / "answers").glob("*.jsonl"):
        write_items(path, [{k: v for k, v in r.items() if k != "input_digest"}
                           for r in read_records(path)])  # fmt: skip
    old = compare("coding")
    assert old.returncode == 0, old.stderr
    assert len(server.requests) == before
    edited = compare("coding", "gamma")
    assert edited.returncode == 2
    assert "answers to other prompts under the ids of 1 prompt (q1)" in error_line(edited.stderr)
    assert len(server.requests) == before


def test_staircase_and_quorum_are_settings_a_resume_compares(server: FakeOpenAIServer) -> None:
    # Both change the answers: staircase aggregates unfinished proposals, a quorum leaves the
    # slowest proposals out. A REPORT_DIR or an output must not mix them in under one name.
    from conftest import fake_context

    from langgraph_moa.core.batch.records import settings_changes, settings_summary

    plain = settings_summary(fake_context(server, ["p1", "p2", "p3"]))
    stair = settings_summary(fake_context(server, ["p1", "p2", "p3"], staircase=True))
    quorum = settings_summary(fake_context(server, ["p1", "p2", "p3"], quorum=2))
    assert settings_changes(plain, stair) == ["staircase: False -> True"]
    assert settings_changes(plain, quorum) == ["quorum: None -> 2"]
    chunks = fake_context(server, ["p1", "p2", "p3"], staircase=True, staircase_chunks=[8, 64])
    assert settings_changes(stair, settings_summary(chunks)) == [
        f"staircase_chunks: {stair['staircase_chunks']} -> [8, 64]"
    ]


def test_a_compare_system_turned_staircase_is_refused(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    data = write_prompts(tmp_path / "p.jsonl", 2)
    server.script("judge", always_a)
    mix = write_mixture(tmp_path / "mix.toml")

    def compare(spec: str) -> CompletedProcess[str]:
        args = ("compare", data, "-s", f"moa={spec}", "-s", "one=together:p1",
                "--judge", "together:judge", "-o", tmp_path / "r")  # fmt: skip
        return run_cli(*map(str, args), env=compare_env(server))

    assert compare(str(mix)).returncode == 0
    before = len(server.requests)
    result = compare(f"{mix}+staircase")
    assert result.returncode == 2
    line = error_line(result.stderr)
    assert "holds answers of moa made with other models or settings" in line
    assert "staircase: False -> True" in line
    assert len(server.requests) == before
