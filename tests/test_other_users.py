"""Another user of the machine in a folder both can write (``/tmp``, a team's folder): what they
plant is refused before anything is read, written or paid, and what ``moa`` writes keeps the
modes its owner chose. Each test drives ``moa`` as a process on real files, against the fake
provider; ``nobody`` (uid 65534) plants, the victim is root, or ``daemon`` (uid 1) and ``bin``
(uid 2) where root would ignore a file's mode. Users are switched with ``setpriv`` (tests run as
root in CI)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from subprocess import CompletedProcess

import pytest
from batch_helpers import prompts, read_records, write_config, write_items
from compare_helpers import always_a, write_mixture, write_prompts
from compare_helpers import env as compare_env
from conftest import ROOT, run_cli
from fake_openai import FakeOpenAIServer
from test_shared_use import error_line, holds_lock, start_moa, wait_until

NOBODY, DAEMON, BIN = 65534, 1, 2
TEAM = 4242  # a group of daemon, bin and nobody: a team's folder
pytestmark = [
    pytest.mark.skipif(os.name != "posix", reason="POSIX users and modes"),
    pytest.mark.skipif(
        os.name == "posix" and os.geteuid() != 0, reason="switching users needs root"
    ),
    pytest.mark.skipif(shutil.which("setpriv") is None, reason="switching users needs setpriv"),
]


def as_user(uid: int, *groups: int) -> list[str]:
    """The command prefix that runs what follows as ``uid`` (its own group, and ``groups``)."""
    supplementary = f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups"
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", supplementary]


def plant(script: str, uid: int = NOBODY, *groups: int) -> None:
    """What another user does: a shell ``script`` run as ``uid``."""
    subprocess.run([*as_user(uid, *groups), "sh", "-c", script], check=True)


# ``moa`` under a umask: setpriv has no option for it, and a shell between it and this Python
# may not run it (an interpreter under root's home, which setpriv itself still reaches).
UNDER_UMASK = (
    "import os, runpy, sys; os.umask(int(sys.argv[1], 8)); sys.argv = ['moa', *sys.argv[2:]]; "
    "runpy.run_module('langgraph_moa', run_name='__main__')"
)


def moa_as(
    uid: int,
    *args: str | Path,
    groups: tuple[int, ...] = (),
    umask: str = "022",
    env: dict[str, str] | None = None,
) -> CompletedProcess[str]:
    """``moa ARGS`` run by ``uid`` with ``umask``."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("TOGETHER_", "OPENAI_"))}
    full_env.update({"HOME": "/nonexistent", **(env or {})})
    return subprocess.run(
        [*as_user(uid, *groups), sys.executable, "-c", UNDER_UMASK, umask, *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=ROOT,
        timeout=120,
    )


@pytest.fixture
def base() -> Iterator[Path]:
    """A folder every user can reach (pytest's own is root's alone), with the config and the
    input in it, readable by all."""
    folder = Path(tempfile.mkdtemp(prefix="moa-users-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def as_daemon() -> None:
    """Skip where this Python cannot be run as another user (a root-only interpreter)."""
    probe = subprocess.run([*as_user(DAEMON), sys.executable, "-c", "import langgraph_moa"])
    if probe.returncode != 0:
        pytest.skip(f"{sys.executable} cannot be run as uid {DAEMON} here")


def folder(path: Path, mode: int, gid: int = 0) -> Path:
    path.mkdir()
    os.chown(path, 0, gid)
    path.chmod(mode)
    return path


def batch(*args: str | Path, env: dict[str, str] | None = None) -> CompletedProcess[str]:
    return run_cli("batch", *map(str, args), env=env)


# ------------------------------------------------------------------ 1. links and work folders
def test_a_planted_work_folder_is_refused(server: FakeOpenAIServer, base: Path) -> None:
    # -f keeps its journal in .moa-batch/ beside the output: planted there with a link to the
    # victim's .bash_profile, it had the run append JSON records (and their "$(...)") to it.
    cfg = write_config(base / "c.toml", server)
    data = write_items(base / "in.jsonl", prompts(2))
    profile = base / ".bash_profile"
    profile.touch()
    shared = folder(base / "shared", 0o1777)
    journal = shared / ".moa-batch" / "out.json.run.jsonl"
    plant(f"mkdir -m 777 {journal.parent} && ln -s {profile} {journal}")
    result = batch(data, "-o", shared / "out.json", "-f", "alpaca-eval", "-c", cfg)
    assert result.returncode == 2, result.stderr
    assert error_line(result.stderr) == (
        f"moa: error: -o {shared}/out.json: {shared}/.moa-batch belongs to another user (nobody, "
        f"uid 65534) in {shared}, where every user may create files (mode 1777), so whoever put "
        "it there could make moa write into another of your files (a link) or resume from "
        "records you did not write: check what it is, and have its owner or root remove it, or "
        "give another -o"
    )
    # One of root's, but every user may change it: anyone could plant the link in it.
    shutil.rmtree(shared / ".moa-batch")
    (shared / ".moa-batch").mkdir(mode=0o777)
    (shared / ".moa-batch").chmod(0o777)
    result = batch(data, "-o", shared / "out.json", "-f", "alpaca-eval", "-c", cfg)
    assert result.returncode == 2
    assert (
        f"every user of this machine can change the folder {shared}/.moa-batch (mode 0777) and "
        "replace what it holds" in error_line(result.stderr)
    )
    assert "chmod o-w" in result.stderr and "chmod +t" in result.stderr
    assert profile.read_text() == "" and not server.requests


def test_a_planted_output_link_is_refused(server: FakeOpenAIServer, base: Path) -> None:
    # -o a dangling link someone else planted in /tmp: the run wrote where it pointed (and made
    # a .moa-batch and a lock beside it), as if fs.protected_symlinks were not there.
    cfg = write_config(base / "c.toml", server)
    data = write_items(base / "in.jsonl", prompts(2))
    shared = folder(base / "shared", 0o1777)
    home = folder(base / "home", 0o755)
    target = home / "notes.jsonl"
    plant(f"ln -s {target} {shared}/out.jsonl")
    result = batch(data, "-o", shared / "out.jsonl", "-c", cfg)
    assert result.returncode == 2
    line = error_line(result.stderr)
    assert f"-o {shared}/out.jsonl: it (a link to {target}) belongs to another user (nobody" in line
    # Your own link to a file not there yet is not followed either: say the file's own path.
    (shared / "mine.jsonl").symlink_to(target)
    result = batch(data, "-o", shared / "mine.jsonl", "-c", cfg)
    assert error_line(result.stderr) == (
        f"moa: error: -o {shared}/mine.jsonl: a link to {target}, which does not exist: moa "
        "writes through a link only to a file that is there; give the file's own path, or "
        "another -o"
    )
    assert list(home.iterdir()) == [] and not server.requests  # no work folder, no lock
    # A stranger's file there is theirs to change too: never resumed from, never appended to.
    plant(f"touch {shared}/theirs.jsonl")
    result = batch(data, "-o", shared / "theirs.jsonl", "-c", cfg)
    assert result.returncode == 2 and "belongs to another user (nobody" in result.stderr
    assert (shared / "theirs.jsonl").read_text() == "" and not server.requests
    # A hard link there is yours by its owner, whoever made the name (protected_hardlinks off).
    profile = home / ".bash_profile"
    profile.touch()
    os.link(profile, shared / "linked.jsonl")
    result = batch(data, "-o", shared / "linked.jsonl", "-c", cfg)
    assert result.returncode == 2
    assert f"-o {shared}/linked.jsonl: it is a file of 2 names (hard links) in {shared}" in (
        error_line(result.stderr)
    )
    assert profile.read_text() == "" and not server.requests


def test_a_file_planted_as_a_run_starts_is_not_written(base: Path) -> None:
    # Between the look at the output (before any call) and its opening (once the models are
    # built), someone could create it: the file as opened is looked at again.
    from langgraph_moa.core.batch.outputs import RunFile
    from langgraph_moa.nodes.errors import SharedFileError

    shared = folder(base / "shared", 0o1777)
    run = RunFile(shared / "out.jsonl")
    assert run.open() == {}
    plant(f"touch {shared}/out.jsonl")
    with pytest.raises(SharedFileError, match=r"it belongs to another user \(nobody"), run:
        run.append({"id": "q0", "status": "ok"})
    assert (shared / "out.jsonl").read_text() == ""


def test_the_errors_keep_their_data_through_pickle() -> None:
    import pickle

    from langgraph_moa.nodes.errors import LockFileError, SharedFileError

    for error in (
        SharedFileError("-o x", "/tmp/x", "it belongs to another user", "remove it"),
        LockFileError("/tmp/.x.lock", "output x", "belongs to another user", "ask them"),
    ):
        again = pickle.loads(pickle.dumps(error))
        assert (type(again), str(again), vars(again)) == (type(error), str(error), vars(error))


def test_a_planted_report_folder_is_refused(server: FakeOpenAIServer, base: Path) -> None:
    # moa compare's answers files are run files too: a planted one would be judged as yours.
    server.script("judge", always_a)
    data = write_prompts(base / "p.jsonl", 2)
    mix = write_mixture(base / "mix.toml")
    shared = folder(base / "shared", 0o1777)
    plant(f"mkdir -p {shared}/report/answers && touch {shared}/report/answers/mix.jsonl")
    args = ["compare", str(data), "--config", str(mix), "--judge", "together:judge"]
    result = run_cli(*args, "-o", str(shared / "report"), env=compare_env(server))
    assert result.returncode == 2
    assert error_line(result.stderr).startswith(
        f"moa: error: report folder {shared}/report: it belongs to another user (nobody, uid "
        f"65534) in {shared}, where every user may create files (mode 1777)"
    )
    assert not server.requests


def test_every_file_compare_writes_is_checked_and_never_handed_over(
    server: FakeOpenAIServer, base: Path
) -> None:
    # Only results.json and the runs were checked: a preferences.jsonl another user planted
    # 0666 in a sticky REPORT_DIR was rewritten, and as root kept its owner and mode (theirs,
    # writable to all).
    server.script("judge", always_a)
    data = write_prompts(base / "p.jsonl", 2)
    mix = write_mixture(base / "mix.toml")
    args = ["compare", str(data), "--config", str(mix), "--judge", "together:judge"]
    shared = folder(base / "shared", 0o1777)
    for name in ("report.md", "plot.png", "preferences.jsonl"):
        report = folder(shared / name.replace(".", "-"), 0o1777)
        plant(f"touch {report}/{name} && chmod 666 {report}/{name}")
        result = run_cli(*args, "-o", str(report), env=compare_env(server))
        assert result.returncode == 2, result.stderr
        assert error_line(result.stderr) == (
            f"moa: error: {name} in report folder {report}: it belongs to another user (nobody, "
            f"uid 65534) in {report}, where every user may create files (mode 1777), so whoever "
            "put it there could make moa write into another of your files (a link) or resume "
            "from records you did not write: check what it is, and have its owner or root remove "
            "it, or give another -o"
        )
    assert not server.requests
    # Allowed all the same (MOA_ALLOW_SHARED_FILES=1): what moa writes is its user's, not theirs.
    report = shared / "preferences-jsonl"
    allowed = run_cli(
        *args, "-o", str(report), env={**compare_env(server), "MOA_ALLOW_SHARED_FILES": "1"}
    )
    assert allowed.returncode == 0, allowed.stderr
    st = (report / "preferences.jsonl").stat()
    assert st.st_uid == 0 and not st.st_mode & 0o022, oct(st.st_mode)


# ------------------------------------------------------------------ 2. what moa reads there
def _poison(cache: Path) -> None:
    """Every stored answer made "POISON", as the colleague's own copy of the cache."""
    import sqlite3

    from langgraph_moa.nodes.serde import SAFE_SERDE

    with sqlite3.connect(cache) as conn:
        for key, val, enc in conn.execute("SELECT key, val, encoding FROM cache").fetchall():
            value = SAFE_SERDE.loads_typed((enc, val))
            encoding, raw = SAFE_SERDE.dumps_typed({**value, "text": "POISON"})
            conn.execute(
                "UPDATE cache SET val = ?, encoding = ? WHERE key = ?", (raw, encoding, key)
            )
    conn.close()


def test_a_planted_call_cache_is_refused(server: FakeOpenAIServer, base: Path) -> None:
    cfg = write_config(base / "c.toml", server)
    data = write_items(base / "in.jsonl", prompts(2))
    shared = folder(base / "shared", 0o1777)
    out = shared / "out.jsonl"
    assert batch(data, "-o", out, "-c", cfg).returncode == 0
    work = shared / ".moa-batch"
    work.chmod(0o777)  # made under umask 000, or chmod'ed for the team
    poisoned = base / "poisoned.sqlite"
    shutil.copy(work / "out.jsonl.cache.sqlite", poisoned)
    _poison(poisoned)
    poisoned.chmod(0o644)
    # Its owner's 0644 copy, moved over the victim's cache (the folder lets anyone replace it).
    plant(f"cp {poisoned} {work}/new && mv -f {work}/new {work}/out.jsonl.cache.sqlite")
    server.reset()
    result = batch(data, "-o", shared / "out.jsonl", "-c", cfg, "--retry-failed")
    assert result.returncode == 2
    assert f"every user of this machine can change the folder {work} (mode 0777)" in error_line(
        result.stderr
    )
    # moa compare's cache, in a report folder anyone may change.
    report = folder(base / "report", 0o777)
    plant(f"cp {poisoned} {report}/moa-cache.sqlite")
    mix = write_mixture(base / "mix.toml")
    args = ["compare", str(data), "--config", str(mix), "--judge", "together:judge"]
    result = run_cli(*args, "-o", str(report), env=compare_env(server))
    assert result.returncode == 2
    assert f"the folder {report} (mode 0777)" in error_line(result.stderr)
    assert not server.requests
    # The user may allow such files (a mount where modes mean nothing): then it is read.
    allowed = batch(
        data, "-o", out, "-c", cfg, "--retry-failed", env={"MOA_ALLOW_SHARED_FILES": "1"}
    )
    assert allowed.returncode == 0, allowed.stderr


def test_a_config_others_could_change_is_refused(server: FakeOpenAIServer, base: Path) -> None:
    open_folder = folder(base / "open", 0o777)
    cfg = write_config(open_folder / "c.toml", server)
    cfg.chmod(0o644)
    result = run_cli("-c", str(cfg), "hi")
    assert result.returncode == 2
    assert error_line(result.stderr) == (
        f"moa: error: config file '{cfg}': every user of this machine can change the folder "
        f"{open_folder} (mode 0777) and replace what it holds, so anyone could choose the "
        "models your prompts go to and where the keys it names are sent: make that folder "
        f"yours alone (chmod o-w {open_folder}), or let each user replace only their own files "
        f"there (chmod +t {open_folder}); where chmod changes nothing (WSL's /mnt/c, FAT, CIFS), "
        "set MOA_ALLOW_SHARED_FILES=1 to use it all the same"
    )
    shared = folder(base / "shared", 0o1777)
    plant(f"cp {cfg} {shared}/c.toml")
    result = run_cli("-c", str(shared / "c.toml"), "hi")
    assert result.returncode == 2 and "belongs to another user (nobody" in result.stderr
    assert not server.requests
    # A teammate's config in the team's folder (group-writable, the team's only) is read.
    team = folder(base / "team", 0o2775, TEAM)
    plant(f"cp {cfg} {team}/c.toml && chmod 664 {team}/c.toml", NOBODY, TEAM)
    assert run_cli("-c", str(team / "c.toml"), "hi").returncode == 0


# ------------------------------------------------------------------ 3. modes kept
def test_a_rewritten_output_keeps_its_mode_group_and_owner(
    server: FakeOpenAIServer, base: Path
) -> None:
    cfg = write_config(base / "c.toml", server)
    data = write_items(base / "in.jsonl", prompts(3))
    late = write_items(base / "late.jsonl", prompts(1, start=2))
    out = base / "out.jsonl"
    assert batch(late, "-o", out, "-c", cfg).returncode == 0  # q2 first: rewritten in order
    os.chown(out, 0, DAEMON)
    out.chmod(0o600)
    assert batch(data, "-o", out, "-c", cfg).returncode == 0
    assert [r["id"] for r in read_records(out)] == ["q0", "q1", "q2"]
    st = out.stat()
    assert (oct(st.st_mode & 0o7777), st.st_uid, st.st_gid) == (oct(0o600), 0, DAEMON)
    # A -f output, rewritten whole at the end of each run; its owner is kept too.
    formatted = base / "model_outputs.json"
    assert batch(late, "-o", formatted, "-f", "alpaca-eval", "-c", cfg).returncode == 0
    os.chown(formatted, DAEMON, DAEMON)
    formatted.chmod(0o640)
    assert batch(data, "-o", formatted, "-f", "alpaca-eval", "-c", cfg).returncode == 0
    assert len(json.loads(formatted.read_text())) == 3
    st = formatted.stat()
    assert (oct(st.st_mode & 0o7777), st.st_uid, st.st_gid) == (oct(0o640), DAEMON, DAEMON)
    # moa compare's report, redrawn.
    server.script("judge", always_a)
    report = base / "report"
    mix = write_mixture(base / "mix.toml")
    args = ["compare", str(data), "--config", str(mix), "--judge", "together:judge"]
    assert run_cli(*args, "-o", str(report), env=compare_env(server)).returncode == 0
    kept = ["results.json", "report.md", "preferences.jsonl"]
    for name in kept:
        os.chown(report / name, 0, DAEMON)
        (report / name).chmod(0o640)
    assert run_cli(*args, "-o", str(report), env=compare_env(server)).returncode == 0
    for name in kept:
        st = (report / name).stat()
        assert (oct(st.st_mode & 0o7777), st.st_gid) == (oct(0o640), DAEMON), name


# ------------------------------------------------------------------ 4. chat threads
def test_the_thread_store_is_private(server: FakeOpenAIServer, base: Path) -> None:
    cfg = write_config(base / "c.toml", server)
    home = base / "home"
    data = home / ".local" / "share" / "langgraph-moa"
    data.mkdir(parents=True)
    data.chmod(0o755)  # as an earlier version made it
    env = {"HOME": str(home), "XDG_DATA_HOME": ""}
    result = run_cli("chat", "-c", str(cfg), "--thread", "t", stdin="hi\n", env=env)
    assert result.returncode == 0, result.stderr
    modes = {
        p.name: oct(p.stat().st_mode & 0o777)
        for p in [data, *data.iterdir(), *(data / "thread-locks").iterdir()]
        if not p.name.endswith(".lock")
    }
    assert modes.pop("langgraph-moa") == oct(0o700)
    assert modes.pop("thread-locks") == oct(0o700)
    assert set(modes.values()) == {oct(0o600)}, modes  # the store, and its -wal and -shm if left
    assert "chat-threads.sqlite" in modes
    # A data folder of its own (MOA_DATA_DIR) is made private; the store in it too.
    own = base / "elsewhere" / "threads"
    result = run_cli(
        "chat", "-c", str(cfg), "--thread", "t", stdin="hi\n", env={"MOA_DATA_DIR": str(own)}
    )
    assert result.returncode == 0, result.stderr
    assert oct(own.stat().st_mode & 0o777) == oct(0o700)
    assert oct((own / "chat-threads.sqlite").stat().st_mode & 0o777) == oct(0o600)


# ------------------------------------------------------------------ 5. a team's folder
def test_a_teammate_resumes_with_the_cache(
    server: FakeOpenAIServer, base: Path, as_daemon: None
) -> None:
    # A 2775 team folder, umask 002: the output was 0664, its cache 0644 (SQLite's own mode),
    # so a teammate's resume could not store a single answer ("readonly database"), and was told
    # to free some space.
    cfg = write_config(base / "c.toml", server)
    data = write_items(base / "in.jsonl", prompts(2))
    team = folder(base / "team", 0o2775, TEAM)
    out = team / "out.jsonl"
    first = moa_as(
        DAEMON, "batch", data, "-o", out, "-c", cfg, "--limit", "1", groups=(TEAM,), umask="002"
    )
    assert first.returncode == 0, first.stderr
    cache = team / ".moa-batch" / "out.jsonl.cache.sqlite"
    for made in [out, cache, *cache.parent.glob("*.sqlite-*")]:
        assert oct(made.stat().st_mode & 0o777) == oct(0o664), made
    resumed = moa_as(BIN, "batch", data, "-o", out, "-c", cfg, groups=(TEAM,), umask="002")
    assert resumed.returncode == 0, resumed.stderr
    assert "could not store" not in resumed.stderr
    assert [r["id"] for r in read_records(out)] == ["q0", "q1"]
    # A cache the teammate cannot write is refused before any call, naming whose it is.
    cache.chmod(0o644)
    server.reset()
    refused = moa_as(BIN, "batch", data, "-o", out, "-c", cfg, "--retry-failed", groups=(TEAM,))
    assert refused.returncode == 2, refused.stderr
    read_only = (
        f"moa: error: the call cache {cache}: it cannot be written: {cache} belongs to another "
        "user (daemon, uid 1) and you cannot write it (mode 0644): ask them to let you write it "
        f"(chmod g+w {cache}, with you in its group), or choose another --cache, or pass "
        "--no-cache"
    )
    assert error_line(refused.stderr) == read_only
    # The same while another run writes to it (holding SQLite's write lock): read-only all the
    # same, not "locked" (a busy cache is opened: tests/test_shared_use.py).
    import sqlite3

    holder = sqlite3.connect(cache, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        refused = moa_as(BIN, "batch", data, "-o", out, "-c", cfg, "--retry-failed", groups=(TEAM,))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert refused.returncode == 2 and error_line(refused.stderr) == read_only, refused.stderr
    assert not server.requests


# ------------------------------------------------------------------ 6. a read-only folder
def test_a_folder_that_cannot_take_the_rewrite_is_refused_before_any_call(
    server: FakeOpenAIServer, base: Path, as_daemon: None
) -> None:
    cfg = write_config(base / "c.toml", server)
    data = write_items(base / "in.jsonl", prompts(3))
    late = write_items(base / "late.jsonl", prompts(1, start=2))
    mine = folder(base / "mine", 0o755)
    os.chown(mine, DAEMON, DAEMON)
    out = mine / "out.jsonl"
    assert moa_as(DAEMON, "batch", late, "-o", out, "-c", cfg).returncode == 0
    mine.chmod(0o555)  # the output stays writable, its folder takes no new file
    server.reset()
    result = moa_as(DAEMON, "batch", data, "-o", out, "-c", cfg, "--no-cache")
    assert result.returncode == 2, result.stderr
    assert error_line(result.stderr) == (
        f"moa: error: -o {out}: its folder {mine} cannot take new files (moa writes {out} whole "
        "through a new file and a rename there once every item is in, and would fail then, "
        f"after paying for them): make the folder writable (chmod u+w {mine}), or give another -o"
    )
    assert not server.requests


# ------------------------------------------------------------------ 7. --report-only
def test_report_only_waits_for_a_running_compare(server: FakeOpenAIServer, base: Path) -> None:
    server.script("judge", always_a)
    mix = write_mixture(base / "mix.toml")
    report = base / "r"
    args = ["compare", "--config", str(mix), "--judge", "together:judge", "-o", str(report)]
    done = run_cli(
        *args[:1], str(write_prompts(base / "p.jsonl", 1)), *args[1:], env=compare_env(server)
    )
    assert done.returncode == 0, done.stderr
    before = (report / "report.md").read_text()
    # A second run with more prompts, slow until the redraw has been turned away.
    refused = threading.Event()
    server.script("agg", latency=lambda: 0.0 if refused.is_set() else 3.0)
    running = start_moa(
        *args[:1], write_prompts(base / "p.jsonl", 2), *args[1:], env=compare_env(server)
    )
    wait_until(holds_lock(report / ".moa.lock", running))
    redraw = run_cli("compare", "--report-only", str(report))
    refused.set()
    assert redraw.returncode == 2, redraw.stderr
    assert error_line(redraw.stderr) == (
        f"moa: error: report folder {report} is in use by another moa process (pid "
        f"{running.pid}): wait for it to finish, or give another -o (one run per report folder)"
    )
    assert running.wait(120) == 0, running.communicate()
    assert (report / "report.md").read_text() != before  # the newer report, not the older one
    assert run_cli("compare", "--report-only", str(report)).returncode == 0


# ------------------------------------------------------------------ 8. lock files
def test_a_lock_file_of_another_user_is_named(
    server: FakeOpenAIServer, base: Path, as_daemon: None
) -> None:
    cfg = write_config(base / "c.toml", server)
    data = write_items(base / "in.jsonl", prompts(1))
    team = folder(base / "team", 0o2775, TEAM)
    lock = team / ".out.jsonl.lock"
    plant(f"umask 022 && touch {lock}", NOBODY, TEAM)  # 0644: its group may not write it
    result = moa_as(DAEMON, "batch", data, "-o", team / "out.jsonl", "-c", cfg, groups=(TEAM,))
    assert result.returncode == 2, result.stderr
    assert error_line(result.stderr) == (
        f"moa: error: cannot lock output {team}/out.jsonl: its lock file {lock} belongs to "
        "another user (nobody, uid 65534) and you cannot write it (mode 0644): it holds "
        "nothing but the lock: once no moa runs there, ask them to remove it or to let you "
        f"write it (chmod g+w {lock}, with you in its group)"
    )
    # In a folder where anyone may create files, a stranger's lock file is refused as planted.
    shared = folder(base / "shared", 0o1777)
    plant(f"touch {shared}/.out.jsonl.lock")
    result = batch(data, "-o", shared / "out.jsonl", "-c", cfg)
    assert result.returncode == 2
    assert error_line(result.stderr).startswith(
        f"moa: error: the lock file of output {shared}/out.jsonl: it belongs to another user "
        "(nobody, uid 65534)"
    )
    assert not server.requests
