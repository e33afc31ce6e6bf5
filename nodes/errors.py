"""Errors a user can act on. Each carries one line that says what is wrong and what to do next."""

from __future__ import annotations


class MoAError(Exception):
    """Base class: the message is shown to the user as-is (the CLI prints it and exits non-zero)."""


class ConfigError(MoAError, ValueError):
    """A setting (preset, config file, CLI flag or graph context) is invalid.

    A ValueError too: the LangGraph server shows a run's error message to its client only for
    builtin kinds like ValueError ("An internal error occurred" for others)."""


class InputError(MoAError):
    """What the user gave cannot be used: a prompt, a chat line, a dataset or one of its items."""


class ProviderError(MoAError):
    """A model cannot be built: unknown provider, missing package or missing API key."""


class CapabilityError(MoAError, ValueError):
    """A model cannot do what the run asks of it: call tools, or follow a response format (a
    ValueError for the LangGraph server, like ``ConfigError``)."""


class ContextOverflowError(ProviderError):
    """A prompt does not fit the model's context window (never retried: it would fail again)."""


class LayerFailedError(MoAError):
    """Too few proposers of a layer answered to go on."""


class AggregatorError(MoAError):
    """The final aggregator could not produce an answer."""


class InUseError(MoAError):
    """Another process is writing the same batch output, chat thread or compare folder."""


class CallCacheError(MoAError):
    """The model-call cache file cannot be read or written (corrupt, read-only, a full disk)."""

    def __init__(self, path: str, problem: str, hint: str) -> None:
        super().__init__(f"the call cache {path}: {problem}: {hint}")
        self.path, self.problem, self.hint = path, problem, hint
