"""What the user types or pipes in, checked before any model is called.

Input is read as bytes and decoded as UTF-8 here, whatever the locale: under C.UTF-8 Python would
turn a bad byte into a lone surrogate that every provider then rejects, and under a strict UTF-8
locale it would raise in the middle of reading. One clear line instead says where the first
undecodable byte is.
"""

from __future__ import annotations

import asyncio
import os
import sys

from langgraph_moa.nodes.errors import InputError

# More than any model's context window holds (1M tokens ~ 4 MB): past it, input is a mistake
# (`moa - < /dev/zero`, a binary file), not a prompt, and reading on would only fill memory.
MAX_INPUT_BYTES = 16 * 2**20


def decode(data: bytes, what: str) -> str:
    """``data`` as UTF-8 text; ``InputError`` naming the first undecodable byte otherwise."""
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{what} is not valid UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start} "
            "(convert it first, e.g. with iconv -t utf-8)"
        ) from None


def checked(text: str, what: str) -> str:
    """``text`` from the command line, where Python keeps undecodable bytes as surrogates."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            raw = os.fsencode(text)  # the bytes the user typed
        except UnicodeEncodeError:
            raise InputError(f"{what} holds characters that are not text") from None
        return decode(raw, what)
    return text


def read_prompt() -> str:
    """The whole of stdin, for ``moa -``."""
    if sys.stdin is None:
        raise InputError(
            "stdin is closed: give the prompt as an argument, or pipe it in (moa - < file)"
        )
    if sys.stdin.isatty() and sys.stderr is not None:
        print("moa: reading the prompt from the terminal; end it with Ctrl-D", file=sys.stderr)
    try:
        data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise InputError(f"cannot read stdin: {exc.strerror or exc}") from None
    if len(data) > MAX_INPUT_BYTES:
        raise InputError(f"stdin holds more than {MAX_INPUT_BYTES // 2**20} MiB: not a prompt")
    return decode(data, "stdin")


class ChatInput:
    """The lines of a chat, read from stdin on the event loop.

    Not a thread: a thread blocked in ``readline`` cannot be stopped, and ``asyncio.run`` waits
    for it at exit, so Ctrl-C at the prompt did nothing until Enter was pressed. Here the wait is
    a future the loop can cancel. Files and /dev/null, which the loop cannot watch, never block
    and are read directly.
    """

    def __init__(self) -> None:
        if sys.stdin is None:
            raise InputError("stdin is closed: moa chat reads your messages from it")
        self.fd = sys.stdin.fileno()
        self.buffer = bytearray()
        self.eof = False
        self.skipping = False
        self.lines = 0

    async def readline(self) -> str | None:
        """The next line (without its newline), or None at the end of input.

        Raises ``InputError`` for a line that is not UTF-8 or too long (the line is skipped).
        """
        while True:
            end = self.buffer.find(b"\n")
            if self.skipping:  # the rest of a line that was too long
                if end >= 0:
                    del self.buffer[: end + 1]
                    self.skipping = False
                    continue
                self.buffer.clear()
            elif end < 0 and len(self.buffer) > MAX_INPUT_BYTES:
                self.buffer.clear()
                self.skipping = True
                self.lines += 1
                raise InputError(
                    f"line {self.lines} is longer than {MAX_INPUT_BYTES // 2**20} MiB: skipped"
                )
            elif end >= 0 or (self.eof and self.buffer):
                end = end if end >= 0 else len(self.buffer)
                raw = bytes(self.buffer[:end])
                del self.buffer[: end + 1]
                self.lines += 1
                return decode(raw, f"line {self.lines}")
            if self.eof:
                return None
            chunk = await self._read()
            if chunk == b"":
                self.eof = True
            elif chunk is not None:
                self.buffer += chunk

    async def _read(self) -> bytes | None:
        """What is there to read (b"" at the end of input); None: nothing yet, try again."""
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not ready.done():  # the loop may call again before this task resumes
                ready.set_result(None)

        try:
            loop.add_reader(self.fd, readable)
        except (OSError, ValueError, NotImplementedError):
            # A regular file or a device the loop cannot watch: reading never blocks, but give
            # the loop a turn, so Ctrl-C still works on an endless one (/dev/zero).
            await asyncio.sleep(0)
            return self._os_read()
        try:
            await ready
        finally:
            loop.remove_reader(self.fd)
        return self._os_read()

    def _os_read(self) -> bytes | None:
        try:
            return os.read(self.fd, 65536)
        except BlockingIOError:  # another process made the terminal non-blocking
            return None
        except OSError:  # EIO: the terminal hung up
            return b""
