"""Drive ``moa`` through a real pseudo-terminal, as a person at a keyboard does.

The child is a session leader whose controlling terminal is the pty, so writing ``\\x03`` (Ctrl-C)
makes the terminal's line discipline send SIGINT to it, and ``\\x04`` (Ctrl-D) ends its input:
exactly what happens when a user presses the keys. Written with the standard library (``pty``
would fork a process that has the fake server's threads; ``subprocess`` execs at once).
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Self

ROOT = Path(__file__).resolve().parent.parent

# Runs in the child: take the pty (fd 0) as the controlling terminal, then become `moa`.
_BOOT = (
    "import fcntl, os, sys, termios\n"
    "fcntl.ioctl(0, termios.TIOCSCTTY, 0)\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'langgraph_moa', *sys.argv[1:]])"
)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")
CTRL_C = b"\x03"
CTRL_D = b"\x04"


class PtySession:
    """``moa ARGS`` running on a pseudo-terminal; ``expect`` waits for text it prints."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        master, slave = os.openpty()
        full_env = {
            k: v for k, v in os.environ.items() if not k.startswith(("TOGETHER_", "OPENAI_"))
        }
        full_env.update({"TERM": "xterm", "COLUMNS": "200", "LINES": "40", **env})
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT, *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=full_env,
            cwd=ROOT,
            start_new_session=True,
        )
        os.close(slave)
        self.master = master
        self.raw = bytearray()
        self.seen = 0  # how much of the clean text `expect` has consumed
        self.eof = False

    @property
    def text(self) -> str:
        """Everything the terminal showed so far, without escape sequences."""
        return _ANSI.sub("", self.raw.decode("utf-8", "replace"))

    def _read(self, timeout: float) -> None:
        if self.eof:
            time.sleep(min(timeout, 0.05))
            return
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the child closed the terminal (it exited)
            data = b""
        if not data:
            self.eof = True
        self.raw += data

    def expect(self, needle: str, timeout: float = 30.0) -> str:
        """Wait until ``needle`` appears after what was already matched; return the text up to
        and including it."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.text
            at = text.find(needle, self.seen)
            if at >= 0:
                before = text[self.seen : at + len(needle)]
                self.seen = at + len(needle)
                return before
            if time.monotonic() > deadline or (self.eof and self.proc.poll() is not None):
                raise AssertionError(
                    f"{needle!r} not shown within {timeout} s; the terminal shows:\n{text}"
                )
            self._read(0.05)

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def wait(self, timeout: float = 10.0) -> int:
        """The exit status, reading the terminal meanwhile (a full pty would block the child)."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"moa still running {timeout} s later; the terminal shows:\n{self.text}"
                )
            self._read(0.05)
        while not self.eof:
            self._read(0.05)
        return self.proc.returncode

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        os.close(self.master)
