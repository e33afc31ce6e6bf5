"""``moa batch``: answer a whole dataset with Mixture-of-Agents.

Resumable (the output is the journal), rate-limited per model, cached per model call, in
AlpacaEval and MT-Bench formats, with the cost estimated up front, locally or on a LangGraph
server. One concern per module:

- inputs.py: reading items (JSONL, a JSON list, stdin; prompt/messages/instruction/MT-Bench)
- ids.py: the ids of a streamed input, on disk (repeats, positions)
- records.py: the record of one item (one output line)
- outputs.py: the run file (append + flush, torn-line repair, input order at the end)
- formats.py: AlpacaEval's model_outputs.json and FastChat's MT-Bench answers
- cost.py: prices, record costs and the dry-run estimate
- turns.py / server.py: where a turn runs (the graph here, a re-aggregation, a LangGraph server)
- runner.py: ``run_items`` (records as items finish) and ``run_batch`` (a whole resumable run)
- progress.py: the progress bar or lines, and the summary
- cli.py: the ``moa batch`` command

As a library::

    from langgraph_moa.core.batch import BatchOptions, read_items, run_batch, run_items
    items = read_items("questions.jsonl")
    result = await run_batch(items, ctx, "answers.jsonl", BatchOptions(concurrency=16))
"""

from langgraph_moa.core.batch.inputs import InvalidItem, Item, parse_item, read_items
from langgraph_moa.core.batch.runner import (
    BatchOptions,
    BatchResult,
    run_batch,
    run_item,
    run_items,
)
from langgraph_moa.core.batch.turns import GraphTurns, ReplayTurns, Turns
from langgraph_moa.nodes.errors import InputError

__all__ = [
    "BatchOptions",
    "BatchResult",
    "GraphTurns",
    "InputError",
    "InvalidItem",
    "Item",
    "ReplayTurns",
    "Turns",
    "parse_item",
    "read_items",
    "run_batch",
    "run_item",
    "run_items",
]
