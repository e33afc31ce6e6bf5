"""The package as a release ships it: built the way releases are built (``uv build``: the sdist,
then the wheel from the sdist), installed into a fresh venv, used as a user would; and the
editable install, which must expose nothing but ``langgraph_moa``."""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import os
import rlcompleter
import shutil
import subprocess
import sys
import tarfile
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT
from fake_openai import FakeOpenAIServer

import langgraph_moa

# The public API: adding or removing a name is a decision, made here on purpose.
PUBLIC = [
    "AggregatorError",
    "BindOverflowError",
    "CallFailedError",
    "CapabilityError",
    "ChatMoA",
    "ConfigError",
    "Context",
    "ContextOverflowError",
    "EmptyConversationError",
    "InputError",
    "InvalidMessagesError",
    "LayerFailedError",
    "MoAError",
    "ProviderError",
    "ModelSpec",
    "UnpairedToolCallError",
    "UnsupportedContentError",
    "build_moa_graph",
    "cancel_on_interrupt",
    "graph",
    "load_preset",
    "moa_node",
    "moa_tool",
    "preset_names",
]
# Repository folders installed under langgraph_moa (pyproject.toml [tool.setuptools.package-dir]).
MAPPED = {"graphs": "graphs", "nodes": "nodes", "core": "core", "apps": "apps"}


def _uv() -> list[str]:
    # `uv run` names itself in $UV; the Makefile's uv may live in .tools/, off PATH.
    for found in (os.environ.get("UV"), shutil.which("uv"), ROOT / ".tools" / "bin" / "uv"):
        if found and Path(found).is_file():
            return [str(found)]
    pytest.fail("uv not found: run the tests with `make test` (it installs uv)")


OFFLINE = {**os.environ, "UV_OFFLINE": "1"}  # from uv's cache only: tests use no network
# What a working tree holds beyond a fresh clone: environments, caches, earlier builds.
GENERATED = (".git", ".venv", ".tools", "build", "dist", "*.egg-info", "__pycache__", ".*_cache")


def test_the_public_api_is_pinned() -> None:
    assert sorted(langgraph_moa.__all__) == sorted(PUBLIC)
    for name in PUBLIC:
        assert getattr(langgraph_moa, name) is not None
    # The version has one source, pyproject.toml, read from the installed distribution.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert langgraph_moa.__version__ == project["version"] == metadata.version(project["name"])


@pytest.mark.parametrize(
    "package",
    ["langgraph_moa", "langgraph_moa.nodes", "langgraph_moa.graphs", "langgraph_moa.apps.compare"],
)
def test_names_imported_on_first_use_show_in_dir_and_tab_completion(package: str) -> None:
    module = importlib.import_module(package)
    assert set(module.__all__) <= set(dir(module))
    completer = rlcompleter.Completer({"m": module})  # what the REPL's Tab uses
    for name in module.__all__:
        assert completer.complete(f"m.{name[:-1]}", 0).startswith(f"m.{name}"), name


def test_every_kind_of_input_error_is_public() -> None:
    """A caller of the graph or ChatMoA catches a refused conversation by its kind (an image, an
    unpaired tool call, nothing to answer): each InputError the nodes raise is importable."""
    from langgraph_moa import InputError
    from langgraph_moa.nodes import errors

    kinds = {n for n, v in vars(errors).items() if type(v) is type and issubclass(v, InputError)}
    assert kinds - set(PUBLIC) == set()


def test_every_package_folder_is_listed_for_the_build() -> None:
    """A new subpackage folder left out of pyproject.toml would be missing from every release."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {"langgraph_moa"}
    for folder in MAPPED:
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT).parts
            found.add(".".join(("langgraph_moa", *rel)))
    missing = found - listed
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml"


def test_the_repository_holds_no_symlinks() -> None:
    staged = subprocess.run(
        ["git", "ls-files", "-s"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert not [line for line in staged.splitlines() if line.startswith("120000")]


def test_the_readme_is_a_newcomers_five_minutes() -> None:
    # What MoA is, why, how to start, compose and deploy; the depth lives in docs/.
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 200, f"README.md has {lines} lines: move the depth to docs/"


@pytest.mark.parametrize("name", ["nodes", "graphs", "core", "apps", "testing", "benchmarks"])
def test_the_editable_install_exposes_only_langgraph_moa(name: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"import {name}"], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode != 0 and "No module named" in done.stderr


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``uv build`` as a release is made: the sdist, then the wheel built from the sdist."""
    dist = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [*_uv(), "build", "--out-dir", str(dist), str(ROOT)],
        capture_output=True,
        text=True,
        env=OFFLINE,
    )
    assert built.returncode == 0, built.stderr
    (sdist,) = dist.glob("langgraph_moa-*.tar.gz")
    (wheel,) = dist.glob("langgraph_moa-*.whl")
    return sdist, wheel


def _files(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return {n for n in zf.namelist() if not n.startswith("langgraph_moa-")}


def test_the_wheel_from_the_sdist_is_complete(release: tuple[Path, Path]) -> None:
    _, wheel = release
    files = _files(wheel)
    expected = {"langgraph_moa/__init__.py", "langgraph_moa/cli.py"}
    for folder, package in MAPPED.items():
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".toml", ".jsonl") and "__pycache__" not in path.parts:
                expected.add(f"langgraph_moa/{package}/{path.relative_to(ROOT / folder)}")
    assert expected - files == set()
    # No test code ships, and nothing outside langgraph_moa is installed.
    assert not [f for f in files if "fake_openai" in f or not f.startswith("langgraph_moa/")]


def test_the_sdist_is_the_source_with_its_licence(release: tuple[Path, Path]) -> None:
    sdist, wheel = release
    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    assert {"LICENSE", "README.md", "pyproject.toml", "langgraph_moa/__init__.py"} <= names
    # setuptools ships tests/test_*.py by default, without the helpers and servers they import:
    # half a suite that fails at import. The tests live in the repository.
    assert not [n for n in names if n.startswith("tests/")]
    with zipfile.ZipFile(wheel) as zf:
        metadata = zf.read(next(n for n in zf.namelist() if n.endswith("/METADATA"))).decode()
        assert any(n.endswith("/licenses/LICENSE") for n in zf.namelist())  # MIT: it travels
    assert "License-File: LICENSE" in metadata


def test_the_plain_wheel_matches_the_release(release: tuple[Path, Path], tmp_path: Path) -> None:
    """``uv build --wheel`` and ``pip install .`` build from the tree, not from the sdist."""
    # From a copy of the tree as a fresh clone has it: setuptools builds in the tree's build/,
    # which it never empties, so a module renamed since an earlier build there would ship too.
    tree = tmp_path / "tree"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(*GENERATED))
    subprocess.run(
        [*_uv(), "build", "--wheel", "--out-dir", str(tmp_path), str(tree)],
        check=True,
        capture_output=True,
        env=OFFLINE,
    )
    (plain,) = tmp_path.glob("langgraph_moa-*.whl")
    assert _files(plain) == _files(release[1])


def test_the_released_wheel_installs_and_answers(
    release: tuple[Path, Path], tmp_path: Path, server: FakeOpenAIServer
) -> None:
    """In a fresh venv, beside a project with its own ``nodes`` and ``graphs`` packages: the
    ``moa`` command, a question against the fake provider, and every public name."""
    server.script("p", "a proposal")
    server.script("agg", "the answer from the released wheel")
    venv = tmp_path / "venv"
    subprocess.run([*_uv(), "venv", "-q", str(venv)], check=True, capture_output=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [*_uv(), "pip", "install", "-q", "--no-deps", "--python", str(python), str(release[1])],
        check=True,
        capture_output=True,
        env=OFFLINE,
    )
    # The dependencies come from this venv, added as a plain path: a path added by a .pth file
    # is not scanned for .pth files, so the repository's editable install stays out.
    (site,) = (venv / "lib").glob("python3*/site-packages")
    deps = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    (site / "dependencies.pth").write_text(deps + "\n")
    project = tmp_path / "project"
    for package in ("nodes", "graphs", "core", "apps"):
        (project / package).mkdir(parents=True)
        (project / package / "__init__.py").write_text(f"MINE = {package!r}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOGETHER_", "PYTHONPATH"))}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args, cwd=project, capture_output=True, text=True, env=env, timeout=120
        )

    helped = run(str(venv / "bin" / "moa"), "--help")
    assert helped.returncode == 0, helped.stderr
    assert "--preset" in helped.stdout and "batch" in helped.stdout

    env.update({"TOGETHER_API_KEY": "test-key", "TOGETHER_API_BASE": server.base_url})
    asked = run(
        str(venv / "bin" / "moa"),
        *("--proposer", "together:p", "--aggregator", "together:agg", "--layers", "2"),
        "Why?",
    )
    assert asked.returncode == 0, asked.stderr
    assert asked.stdout.strip() == "the answer from the released wheel"

    names = ", ".join(PUBLIC)
    imported = run(
        str(python),
        "-c",
        textwrap.dedent(
            f"""
            import apps, core, graphs, nodes
            import langgraph_moa
            from langgraph_moa import {names}
            assert nodes.MINE == "nodes" and graphs.MINE == "graphs"  # the project's own
            assert core.MINE == "core" and apps.MINE == "apps"
            print(langgraph_moa.__file__)
            print(langgraph_moa.__version__)
            """
        ),
    )
    assert imported.returncode == 0, imported.stderr
    where, version = imported.stdout.splitlines()
    assert str(venv) in where  # the wheel's copy, not the repository's
    assert version == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def _imports(path: Path) -> set[str]:
    import ast

    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_the_layers_import_one_way() -> None:
    """Applications sit on the core and never import each other; the core, graphs and nodes
    never import an application; nodes never import graphs."""
    rules = {
        "nodes": ("langgraph_moa.graphs", "langgraph_moa.core", "langgraph_moa.apps"),
        "graphs": ("langgraph_moa.core", "langgraph_moa.apps"),
        "core": ("langgraph_moa.apps",),
    }
    wrong = []
    for folder, forbidden in rules.items():
        for path in (ROOT / folder).rglob("*.py"):
            wrong += [
                f"{path.relative_to(ROOT)}: {m}" for m in _imports(path) if m.startswith(forbidden)
            ]
    for app in (p for p in (ROOT / "apps").iterdir() if (p / "__init__.py").exists()):
        others = tuple(
            f"langgraph_moa.apps.{o.name}" for o in (ROOT / "apps").iterdir() if o.name != app.name
        )
        for path in app.rglob("*.py"):
            wrong += [
                f"{path.relative_to(ROOT)}: {m}" for m in _imports(path) if m.startswith(others)
            ]
    assert wrong == []
