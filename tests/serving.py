"""Helpers of the serve tests: the app under uvicorn in a thread, or ``moa serve`` as a process.

Both listen on 127.0.0.1 on an ephemeral port and are stopped at the end.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from conftest import ROOT
from fastapi import FastAPI

from langgraph_moa.apps.serve.app import create_app
from langgraph_moa.apps.serve.main import uvicorn_config
from langgraph_moa.apps.serve.registry import ModelRegistry
from langgraph_moa.apps.serve.settings import ServeSettings
from langgraph_moa.nodes.context import Context

URL = re.compile(r"moa serve: (http://127\.0\.0\.1:\d+)/v1")


def app_for(ctx: Context, name: str = "fake", **settings: Any) -> FastAPI:
    """An app offering ``ctx`` as model ``name`` (the default) besides the presets."""
    return create_app(ServeSettings(**settings), ModelRegistry(name, {name: ctx}))


@contextmanager
def running(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread; yields its base URL (``http://127.0.0.1:PORT``)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # As moa serve runs it (its HTTP stack, timeouts), quieter and quicker to stop; an app not
    # of create_app's (a stand-in server) with the default settings.
    config = uvicorn_config(
        app,
        getattr(app.state, "settings", ServeSettings()),
        log_config=None,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the app did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def serve_env(fake_base_url: str, **extra: str) -> dict[str, str]:
    """The environment of a ``moa serve`` whose presets' Together models are the fake server."""
    mine = ("TOGETHER_", "OPENAI_", "MOA_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(mine)}
    env.update(TOGETHER_API_KEY="test-provider-key", TOGETHER_API_BASE=fake_base_url, **extra)
    return env


class ServeProcess:
    """``moa serve ARGS`` in a child process on a free port; ``url`` is its base URL."""

    def __init__(self, *args: str, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "langgraph_moa", "serve", "--port", "0", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stderr is not None
        self.log: list[str] = []
        line = self.proc.stderr.readline()
        self.log.append(line)
        found = URL.search(line)
        if found is None:
            rest = self.proc.communicate(timeout=30)[1]
            raise AssertionError(f"moa serve did not start: {line}{rest}")
        self.url = found.group(1)
        # Keep reading the log so the pipe never fills up (and the test can read it).
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 30) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def text(self) -> str:
        return "".join(self.log)
