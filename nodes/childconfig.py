"""The config LangChain hands the runnables a block calls: the one place the project sets it.

LangChain has no public way to change the config every runnable called in a block inherits
(``ensure_config()`` reads it), so this sets langchain-core's ``var_child_runnable_config``:
nodes/staircase.py adds a callback to its task's model calls, graphs/compose.py drops the
caller's limits from the mixture's steps. tests/test_private_apis.py fails when it changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import var_child_runnable_config


def child_config() -> RunnableConfig | None:
    """The config runnables called here inherit (None outside any run)."""
    return var_child_runnable_config.get()


@contextmanager
def calls_with(config: RunnableConfig | None) -> Iterator[None]:
    """Runnables called in this block (and tasks it starts) inherit ``config``."""
    token = var_child_runnable_config.set(config)
    try:
        yield
    finally:
        var_child_runnable_config.reset(token)
