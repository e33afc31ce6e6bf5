"""``moa serve``'s caps on what one request may cost: a request past one is a 400
(``cost_cap_exceeded``) naming the cap and the flag that raises it, before any call.

A request picks a model and may change its settings (LangServe's ``settings``, the OpenAI fields
``max_tokens``...); the caps, what a run asks for and the check are shared with the LangGraph
server's graph (nodes/caps.py). ``check`` runs when the request is read, so nothing has been
called yet.
"""

from __future__ import annotations

from langgraph_moa.apps.serve.command import FLAGS
from langgraph_moa.apps.serve.errors import OpenAIError
from langgraph_moa.nodes import caps
from langgraph_moa.nodes.caps import Caps
from langgraph_moa.nodes.context import Context
from langgraph_moa.nodes.errors import CostCapError

# How the server's operator raises each cap: its flag.
RAISED_BY = {
    field.removeprefix("caps."): f"moa serve {flag}"
    for field, flag in FLAGS.items()
    if field.startswith("caps.")
}


def check(ctx: Context, limits: Caps, param: str | None, remedy: str = "ask for less") -> None:
    """400 (``cost_cap_exceeded``) naming the first cap ``ctx`` exceeds; ``param``: the request
    field that chose the settings (``settings``, ``model``...); ``remedy``: what to do about it."""
    try:
        caps.check(ctx, limits, RAISED_BY, remedy)
    except CostCapError as exc:
        raise OpenAIError(400, str(exc), param=param, code="cost_cap_exceeded") from None
