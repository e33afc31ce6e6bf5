"""Every Python code block of the README and docs/ runs, as written, against the fake server.

Each block runs on its own in a fresh interpreter, with Together's and OpenAI's endpoints moved to
the fake OpenAI-compatible server (``TOGETHER_API_BASE``, ``OPENAI_BASE_URL``) and dummy keys, so
a snippet that names real models still answers. A block that cannot run alone is a bug to fix in
the docs, not a block to skip.

The docs' `moa` commands run too, page by page, and the facts the docs repeat from the code (the
module tree, error kinds, defaults, `moa serve`'s flags, the cost table) and their links are
checked against it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from conftest import ROOT
from fake_openai import FakeOpenAIServer

from langgraph_moa.nodes.context import load_preset

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def blocks() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append((f"{page.relative_to(ROOT)}:{line}", match.group(1)))
    return found


BLOCKS = blocks()


def test_the_docs_have_python_examples() -> None:
    assert len(BLOCKS) >= 5, [where for where, _ in BLOCKS]


# Addresses the docs give for servers a user starts first: the test starts them on its own ports.
MOA_SERVE = "http://127.0.0.1:8000"
LANGGRAPH_DEV = "http://127.0.0.1:2024"


@contextmanager
def servers_for(code: str, server: FakeOpenAIServer, tmp: Path) -> Iterator[str]:
    """``code`` pointed at a ``moa serve`` app and a ``langgraph dev`` if it talks to them."""
    with ExitStack() as stack:
        if MOA_SERVE in code:
            from serving import app_for, running

            app = app_for(load_preset("together"), name="together")
            code = code.replace(MOA_SERVE, stack.enter_context(running(app)))
        if LANGGRAPH_DEV in code:
            from test_studio import langgraph_dev

            work = tmp / "studio"
            work.mkdir()
            code = code.replace(LANGGRAPH_DEV, stack.enter_context(langgraph_dev(server, work)))
        yield code


def _env(server: FakeOpenAIServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOGETHER_", "OPENAI_"))}
    env.update(
        TOGETHER_API_KEY="docs-test-key",
        TOGETHER_API_BASE=server.base_url,
        OPENAI_API_KEY="docs-test-key",
        OPENAI_BASE_URL=server.base_url,
        MOA_SERVER_API_KEY="docs-test-server-key",
    )
    return env


@pytest.mark.parametrize(("where", "code"), BLOCKS, ids=[w for w, _ in BLOCKS])
def test_a_python_block_runs(
    where: str,
    code: str,
    server: FakeOpenAIServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = _env(server)
    # A moa serve app runs in this process: its models find the fake server the same way.
    for name in ("TOGETHER_API_KEY", "TOGETHER_API_BASE"):
        monkeypatch.setenv(name, env[name])
    with servers_for(code, server, tmp_path) as code:
        done = _run(code, env, tmp_path)
    assert done.returncode == 0, f"{where} failed:\n{done.stderr[-3000:]}"


def _run(code: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_the_cost_table_matches_the_presets() -> None:
    from langgraph_moa.nodes.context import load_preset
    from langgraph_moa.nodes.presets import preset_names

    readme = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    for name in preset_names():
        ctx = load_preset(name)
        layers = [ctx.proposers_of(n) for n in range(1, ctx.layers)]
        calls = sum(len(layer) for layer in layers) + 1
        # Every call after the first layer reads each answer of the layer before it.
        extra, readers = 0, [len(layer) for layer in layers[1:]] + [1]
        for layer, reading in zip(layers, readers, strict=True):
            extra += reading * sum(s.max_tokens or ctx.max_tokens for s in layer)
        assert f"| `{name}` | {calls} | {extra:,} tokens |" in readme, name


def _tree() -> set[str]:
    """The paths docs/architecture.md's tree names, as ``nodes/models/calls.py``."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = re.search(r"^```\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
    assert block, "docs/architecture.md has no tree"
    named: set[str] = set()
    folders: list[str] = []
    for line in block.group(1).splitlines():
        indent = len(line) - len(line.lstrip())
        if not line.strip() or indent > 8:  # a description's continuation
            continue
        folders = folders[: indent // 2]
        entry = re.split(r"\s{2,}", line.strip())[0]
        first, *more = (n.strip() for n in entry.split(","))
        for name in (first, *(Path(first).stem + n if n.startswith(".") else n for n in more)):
            named.add("/".join([*folders, name.rstrip("/")]))
        if first.endswith("/"):
            folders.append(first.rstrip("/"))
    return named


def test_the_architecture_tree_names_every_module() -> None:
    """docs/architecture.md says where everything lives: a module it leaves out is one a newcomer
    cannot place, and a name it keeps after a move sends them nowhere."""
    named = _tree()
    for folder in ("langgraph_moa", "graphs", "nodes", "nodes/models", "core"):
        for module in sorted((ROOT / folder).glob("*.py")):
            if module.name != "__init__.py":
                assert f"{folder}/{module.name}" in named, f"{folder}/{module.name}"
    for path in named:
        assert (ROOT / path).exists(), f"docs/architecture.md names {path}, which does not exist"


def test_reliability_names_every_error_kind() -> None:
    from typing import get_args

    from langgraph_moa.nodes.records import ErrorKind

    text = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    section = text.split("### When proposers fail", 1)[1].split("\n#", 1)[0]
    assert [k for k in get_args(ErrorKind) if f"`{k}`" not in section] == []


LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces as '-'."""
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)
    return {
        re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.*)$", text, re.M)
    }


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_leads_somewhere(page: Path) -> None:
    broken = []
    for link in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", link):
            continue  # https:, mailto:
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists() or (
            anchor and target.suffix == ".md" and anchor not in _anchors(target)
        ):
            broken.append(link)
    assert broken == []


def test_the_defaults_table_matches_context() -> None:
    """reliability.md's Defaults table repeats Context's defaults for readers: keep them equal."""
    from langgraph_moa.nodes.context import Context

    text = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    table = text.split("### Defaults", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| `(\w+)`[^|]* \| ([^|]+) \|", table, re.M)
    assert len(rows) >= 6, table
    for name, shown in rows:
        default = Context.model_fields[name].default
        value = shown.strip().removesuffix(" s")
        assert (None if value == "none" else float(value)) == default, (name, shown)


def test_the_serve_flags_table_matches_moa_serve() -> None:
    """serving.md's table of `moa serve` flags: every flag exists, with the default it shows."""
    import typer.main

    from langgraph_moa.cli import build_app

    serve = typer.main.get_command(build_app()).commands["serve"]  # type: ignore[attr-defined]
    params = {opt: p for p in serve.params for opt in (*p.opts, *p.secondary_opts)}
    text = (ROOT / "docs" / "serving.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(--[\w-]+)[^|]*\| ([^|]+) \|", text, re.M)
    assert len(rows) >= 10
    for flag, shown in rows:
        assert flag in params, f"serving.md documents {flag}, which moa serve does not have"
        number = re.match(r"[\d.]+", shown.strip())
        if number:  # a numeric default, as in `64` or `1048576 (1 MiB)`
            assert float(number.group()) == params[flag].default, (flag, shown)
    documented = {flag for flag, _ in rows}
    for param in serve.params:
        if param.opts[0].startswith("--") and param.opts[0] != "--help":
            assert {*param.opts, *param.secondary_opts} & documented, param.opts


def test_the_langgraph_server_caps_table_matches_caps() -> None:
    """serving.md's table of a LangGraph server's cap variables: one per cap, each beside the
    `moa serve` flag that sets the same cap."""
    from langgraph_moa.apps.serve.command import FLAGS
    from langgraph_moa.nodes.caps import Caps, env_var

    text = (ROOT / "docs" / "serving.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `(MOA_MAX_\w+)` \| `(--[\w-]+)` \|$", text, re.M))
    assert rows == {env_var(cap): FLAGS[f"caps.{cap}"] for cap in Caps.model_fields}


def test_batch_md_names_the_settings_a_replay_takes_from_its_run_file() -> None:
    """docs/batch.md's list of what --replay refuses is core/batch/turns.py's, the one list."""
    from langgraph_moa.core.batch.turns import REPLAYED_SETTINGS

    text = " ".join((ROOT / "docs" / "batch.md").read_text(encoding="utf-8").split())
    listed = re.search(r"a config file that sets (.*?)\. ", text)
    assert listed, "docs/batch.md lost the list of settings --replay refuses"
    assert sorted(re.findall(r"`(\w+)`", listed.group(1))) == sorted(REPLAYED_SETTINGS)


# The files the documented commands read, as a user would have them (one or a few items each).
PROMPT = '{"prompt": "Name three uses of a paperclip."}\n'
ALPACA = '[{"instruction": "Write a haiku.", "dataset": "helpful_base"}]'
DOC_INPUTS = {
    "questions.jsonl": '{"id": "sf", "prompt": "Fun things to do in SF?"}\n'
    '{"question_id": 81, "turns": ["Write about Hawaii.", "Start every sentence with A."]}\n',
    "mt_bench_questions.jsonl": '{"question_id": 1, "turns": ["One?", "Two?"]}\n',
    "alpaca.json": ALPACA,
    "alpaca_eval.json": ALPACA,
    "prompts.jsonl": PROMPT,
    "my-prompts.jsonl": PROMPT,
    "my_prompts.jsonl": PROMPT,
}


def documented_commands(page: Path) -> list[list[str]]:
    """The `moa` command lines of a page's bash blocks, in order, as argument lists."""
    import shlex

    found = []
    for block in re.findall(r"^```bash\n(.*?)^```", page.read_text(encoding="utf-8"), re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            if not re.match(r"\s*([A-Z_]+=\S+\s+)*moa\s", line):
                continue
            words = shlex.split(line, comments=True)
            while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
                words.pop(0)  # VAR=value before the command: the test sets the environment
            if words[:1] == ["moa"]:
                found.append(words[1 : words.index(">")] if ">" in words else words[1:])
    return found


COMMAND_PAGES = [p for p in PAGES if documented_commands(p)]


@pytest.mark.parametrize("page", COMMAND_PAGES, ids=[p.name for p in COMMAND_PAGES])
def test_the_documented_commands_run_as_written(
    page: Path, server: FakeOpenAIServer, tmp_path: Path
) -> None:
    """Every `moa` command of a page's bash blocks runs in order in one folder, as a reader
    following the page would, against the fake provider: none is refused as bad usage (exit 2).
    Left out is only what cannot run here: `serve` and `chat` but `chat --list` (they wait for
    a client or a user) and `--server` (a LangGraph server: tests/test_batch_server.py).
    moa compare answers one prompt (--limit 1) so that a page's runs take seconds."""
    for name, text in DOC_INPUTS.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    env = {**_env(server), "MOA_DATA_DIR": str(tmp_path / "data")}
    for args in documented_commands(page):
        waits = args[:1] == ["serve"] or (args[:1] == ["chat"] and "--list" not in args)
        if waits or "--server" in args:
            continue
        if args[:1] == ["compare"] and "--report-only" not in args:
            args = [*args, "--limit", "1"]
        done = subprocess.run(
            [sys.executable, "-m", "langgraph_moa", *args],
            cwd=tmp_path,
            env=env,
            input="",
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode != 2 and "Traceback" not in done.stderr, (args, done.stderr[-2000:])
        if args[:1] != ["compare"]:  # the fake judge writes no verdict: compare exits 1
            assert done.returncode == 0, (args, done.stderr[-2000:])


def test_the_local_build_flags_for_other_installs_are_pyprojects() -> None:
    # pyproject.toml gives uv llama.cpp's portable flags; a pip install must be told them.
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    flags = config["tool"]["uv"]["extra-build-variables"]["llama-cpp-python"]["CMAKE_ARGS"]
    assert f'CMAKE_ARGS="{flags}"' in (ROOT / "docs" / "local-model.md").read_text()


def test_the_installed_langgraph_json_serves_the_repositorys_graphs() -> None:
    # docs/serving.md's langgraph.json for an installed package names modules, not files: the
    # same graphs under the same names as the repository's own file.
    import importlib
    import json

    text = (ROOT / "docs" / "serving.md").read_text(encoding="utf-8")
    block = re.search(r"```json\n(\{.*?\})\n```", text, re.S)
    assert block, "docs/serving.md lost the installed package's langgraph.json"
    installed = json.loads(block.group(1))["graphs"]
    ours = json.loads((ROOT / "langgraph.json").read_text(encoding="utf-8"))["graphs"]
    assert installed.keys() == ours.keys()
    served = importlib.import_module("langgraph_moa.graphs.served")
    for name, ref in installed.items():
        module, attr = ref.split(":")
        assert getattr(importlib.import_module(module), attr) is getattr(
            served, ours[name].split(":")[1]
        )
