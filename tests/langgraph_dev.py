"""``langgraph dev`` serving this repository's langgraph.json, for tests and benchmarks.

Started from a copy of langgraph.json and graphs/ in a folder of the caller's (so the in-memory
server's .langgraph_api/ lands outside the repository), on 127.0.0.1 and a free port unless one
is given (a restart on the same URL), with ``--n-jobs-per-worker`` as docs/batch.md says:
without it ``langgraph dev`` runs one run at a time. Its log goes to ``langgraph-dev.log`` in
that folder, whose tail is in the error if it does not start.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
START_S = 120.0  # a loaded 2-core machine takes tens of seconds to import the server


def start_langgraph_dev(
    work: Path,
    env: Mapping[str, str],
    *,
    port: int | None = None,
    slots: int = 16,
    reload: bool = False,
) -> tuple[subprocess.Popen[bytes], str]:
    """(the process, its URL) once it answers ``/ok``; the caller stops it (``stop``).

    ``env`` is added to this process's environment, from which every provider key and base URL
    (``TOGETHER_*``, ``OPENAI_*``) is removed first, so only what the caller sets reaches models.
    ``reload``: hot reload on, as ``make studio`` runs it (the process is then a reloader whose
    child serves)."""
    for name in ("langgraph.json", "graphs"):
        src = ROOT / name
        if src.is_dir():
            ignore = shutil.ignore_patterns("__pycache__")
            shutil.copytree(src, work / name, ignore=ignore, dirs_exist_ok=True)
        else:
            shutil.copy(src, work / name)
    full = {k: v for k, v in os.environ.items() if not k.startswith(("TOGETHER_", "OPENAI_"))}
    full.update(LANGGRAPH_NO_ANALYTICS="1", LANGSMITH_TRACING="false")
    full.update(env)
    port = port or _free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["dev", "--no-browser", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--n-jobs-per-worker", str(slots), *([] if reload else ["--no-reload"])]
    log_path = work / "langgraph-dev.log"
    with log_path.open("ab") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "langgraph"), *args],
            cwd=work, env=full, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + START_S
        while True:
            try:
                if httpx.get(f"{url}/ok", timeout=2).status_code == 200:
                    return proc, url
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"langgraph dev did not start at {url}:\n{tail}")
            time.sleep(0.3)
    except BaseException:
        stop(proc)
        raise


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a clean shutdown), then SIGKILL if it takes more than 20 s."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def langgraph_dev(
    work: Path, env: Mapping[str, str], *, slots: int = 16, reload: bool = False
) -> Iterator[tuple[str, int]]:
    """``start_langgraph_dev`` for a block: yields (URL, pid) and stops it at the end."""
    proc, url = start_langgraph_dev(work, env, slots=slots, reload=reload)
    try:
        yield url, proc.pid
    finally:
        stop(proc)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
