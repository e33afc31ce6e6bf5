"""``moa compare``: does MoA pay off on your prompts? The mixture against each single model,
judged pairwise, with cost, latency and a plot. See docs/compare.md.

One concern per module:

- prompts.jsonl: the starter set (30 prompts written for this project), used without PROMPTS
- systems.py: the systems compared (``--system NAME=SPEC``, or a preset and its own models)
- judge.py: the pairwise judge prompt, the position swap, the parsing of a verdict
- stats.py: win rate, bootstrap intervals, the length-controlled win rate, latency percentiles
- results.py: from answers and judgments to results.json
- report.py: the verdict line, the notes and report.md
- plot.py: plot.png (win rate with its interval against cost per answer)
- runner.py: a whole run: answers and judgments through ``moa batch``'s runner, then the report
- cli.py: the ``moa compare`` command

As a library::

    from langgraph_moa.apps.compare import run_compare
    run = await run_compare(items, systems, judge, "report/")
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from langgraph_moa._lazy import lazy_names

if TYPE_CHECKING:
    from langgraph_moa.apps.compare.runner import CompareOptions, CompareRun, run_compare
    from langgraph_moa.apps.compare.systems import System, default_systems, single_model

# Imported on first use: the CLI imports this package to find ``moa compare`` (command.py), and
# the runner brings numpy and the batch runner, which ``moa batch``'s start-up should not pay for.
_WHERE = {
    "CompareOptions": "langgraph_moa.apps.compare.runner",
    "CompareRun": "langgraph_moa.apps.compare.runner",
    "run_compare": "langgraph_moa.apps.compare.runner",
    "System": "langgraph_moa.apps.compare.systems",
    "default_systems": "langgraph_moa.apps.compare.systems",
    "single_model": "langgraph_moa.apps.compare.systems",
}
__all__ = [
    "CompareOptions",
    "CompareRun",
    "System",
    "default_systems",
    "run_compare",
    "single_model",
]

__getattr__, __dir__ = lazy_names(__name__, _WHERE)
