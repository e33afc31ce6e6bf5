"""Python warnings in ``moa serve``'s log: one line each, once.

Python writes a warning to stderr on two lines (where it was raised, then that source line),
between the server's one-line records. The first request to LangServe's ``/stream_log`` raises
one: LangServe calls ``astream_log``, which langchain_core deprecates (``warn_deprecated``, a
``LangChainDeprecationWarning`` that langchain_core makes shown by default). Nothing in the
request is wrong and the operator cannot change LangServe's call, so the warning is said once, as
the server's other notices are, rather than hidden; every other warning goes the same way.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TextIO

from langgraph_moa.apps.serve.errors import log
from langgraph_moa.nodes.models.redact import redact

# Warnings already logged (by kind, place and text); past this many, each is logged as it
# comes: a warning whose text holds request data must not grow the set without end.
REMEMBERED = 256


def log_warnings() -> None:
    """From now on, the warnings Python's filters let through go to the server's logger."""
    shown: set[tuple[type[Warning], str, int, str]] = set()
    default = warnings.showwarning

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        if file is not None:  # a caller that chose where it goes
            default(message, category, filename, lineno, file, line)
            return
        key = (category, filename, lineno, str(message))
        if key in shown:
            return
        if len(shown) < REMEMBERED:
            shown.add(key)
        where = f"{Path(filename).parent.name}/{Path(filename).name}:{lineno}"
        log.warning("moa serve: %s: %s (from %s)", category.__name__, redact(str(message)), where)

    warnings.showwarning = show
