"""``python -m langgraph_moa``: the ``moa`` command."""

from langgraph_moa.cli import main

main()
