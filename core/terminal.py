"""Text from models and providers is shown on a terminal, never executed by it.

A proposal, a streamed answer or a provider's error body may hold escape sequences (ESC, CSI as
U+009B, OSC 8 links, a window title, "clear screen") or carriage returns that overwrite what was
printed. ``shown`` replaces every control character but newline and tab with a visible escape
(``\\x1b``), so the text reads as written and the terminal does nothing. Everything on stderr
goes through it (``TextConsole``); stdout does when it is a terminal: ``--json`` output and an
answer redirected to a file keep the exact text.
"""

from __future__ import annotations

import re
import sys
from typing import Any

from rich.console import Console

# C0 controls but \t and \n, DEL, C1 controls; and a CR that does not end a line.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f-\x9f]|\r(?!\n)")


def _escape(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}"


def shown(text: str) -> str:
    """``text`` with its control characters made visible (``\\x1b``) instead of acted on."""
    return _CONTROL.sub(_escape, text)


def to_stdout(text: str) -> str:
    """``text`` as it goes to stdout: made safe on a terminal, exact into a file or a pipe."""
    # sys.__stdout__: while a live display runs, rich puts a proxy that is no tty in sys.stdout.
    real = sys.__stdout__
    return shown(text) if real is not None and real.isatty() else text


class TextConsole(Console):
    """A rich Console whose printed strings are ``shown``: messages quote models and providers.

    Rich's own control codes (a live display moving the cursor) do not go through ``print``'s
    string arguments, so they still work.
    """

    def print(self, *objects: Any, **kwargs: Any) -> None:
        super().print(*(shown(o) if isinstance(o, str) else o for o in objects), **kwargs)


def stderr_console() -> TextConsole:
    """The console every command writes its messages and progress to."""
    # soft_wrap: one message stays one line, whatever the terminal width
    # emoji=False: "together:a: ..." must not print as "together🅰 ..."
    return TextConsole(stderr=True, highlight=False, soft_wrap=True, emoji=False)
