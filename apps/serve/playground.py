"""What LangServe's playground route serves: its page and assets, asked for by name.

LangServe opens ``/moa/playground/{file_path}`` as a file under its own folder. It keeps a path
inside that folder, but answered 500 to a name it cannot open: a folder (``assets``), a NUL
byte, a name longer than the file system allows. Its page asks only for files named like
``index.html`` or ``assets/index-52e8ab2f.css``: any other name is a 404 here, in OpenAI's shape,
before LangServe touches the file system.
"""

from __future__ import annotations

import re

from fastapi import Request

from langgraph_moa.apps.serve.errors import OpenAIError

# Folders, then a file with an extension; no segment starts with a dot ("..", hidden files).
_SEGMENT = r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}"
FILE = re.compile(rf"(?:{_SEGMENT}/){{0,3}}{_SEGMENT}\.[A-Za-z0-9]{{1,10}}")


async def playground_file(request: Request) -> None:
    """The dependency of the LangServe routes: a 404 for a playground file no page asks for."""
    path = request.path_params.get("file_path")
    if path and not FILE.fullmatch(path):
        raise OpenAIError(404, "no such file in the playground", code="not_found")
