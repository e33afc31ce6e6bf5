"""Errors a user can act on. Each carries one line that says what is wrong and what to do next,
and the data behind it as attributes, so an application answers from the data (an exit code, an
HTTP status) instead of parsing the message.

Every error keeps its attributes through ``pickle`` (``__reduce__``): LangGraph and process pools
may pickle an exception on its way to the caller.

An error that can end a graph run is also a builtin kind: a ValueError for what the caller got
wrong (``ConfigError``, ``CapabilityError``), a RuntimeError for what went wrong while running
(a layer, the aggregator, a provider). The LangGraph server shows a run's error to its clients
(langgraph-sdk, ``moa batch --server``) by class name and message only for builtin kinds, and
"An internal error occurred" for any other; the messages hold no key (``redact``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from langgraph_moa.nodes.keys import ALLOW_ENV, SERVER_KEY_ENVS
from langgraph_moa.nodes.records import CallFailure, ErrorInfo, ErrorKind, Proposal, failure_note


class MoAError(Exception):
    """Base class: the message is shown to the user as-is (the CLI prints it and exits non-zero)."""


class ConfigError(MoAError, ValueError):
    """A setting (preset, config file, CLI flag or graph context) is invalid."""


class RefusedError(MoAError):
    """Refused before any model call was paid: a file, folder or address the command was given
    cannot be used as it is (an output that would lose data or is held by another run, a call
    cache in the way, a full temporary folder, an address ``moa serve`` cannot listen on, a
    ``moa batch --server`` that cannot be used at the start). The user's to change, as a
    ``ConfigError`` or an ``InputError`` is; then the same command runs. What stops a run before
    any call (a cache that breaks mid-run fails the call that met it, recorded as that item's
    failure; a server that goes away mid-run stops it: ``ServerGoneError``)."""


class ClientSettingError(ConfigError):
    """A server's client asked for a setting only the server may choose (nodes/untrusted.py).

    ``field``: where in the client's settings, e.g. ``proposers[0]``; ``problem``: what it may
    not do there.
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field, self.problem = field, problem

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), (self.field, self.problem), {}))


class ProxyError(ConfigError):
    """A proxy variable (``OPENAI_PROXY``, ``HTTPS_PROXY``...) holds what the HTTP client cannot
    send through (nodes/models/http.py ``check_proxy``). ``variable``: its name; ``problem``:
    what is wrong and what to do; ``value``: the variable's, without any ``user:password@`` (all
    before the last ``@``: a password may hold ``/`` or ``@``)."""

    def __init__(self, variable: str, value: str, problem: str) -> None:
        value = re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)?.*@", r"\1***@", value, flags=re.DOTALL)
        super().__init__(f"{variable} = {value!r}: {problem}")
        self.variable, self.value, self.problem = variable, value, problem

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), (self.variable, self.value, self.problem), {}))


class CostCapError(ConfigError):
    """A run asks for more than a server lets one request cost (nodes/caps.py), refused before
    any model is called.

    ``cap``: the ``Caps`` field (``"calls"``); ``what``: its name for people (``model calls per
    run``); ``value``: what the run asks for; ``limit``: the cap; ``raised_by``: how the
    server's operator raises it (``moa serve --max-calls``, an environment variable);
    ``remedy``: what the client can do.
    """

    def __init__(
        self, cap: str, what: str, value: float, limit: float, raised_by: str, remedy: str
    ) -> None:
        super().__init__(
            f"{what} is {value:g}, above this server's cap of {limit:g} per request "
            f"({raised_by}); {remedy}"
        )
        self.cap, self.what, self.value, self.limit = cap, what, value, limit
        self.raised_by, self.remedy = raised_by, remedy

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            type(self),
            (self.cap, self.what, self.value, self.limit, self.raised_by, self.remedy),
        )


class InputError(MoAError):
    """What the user gave cannot be used: a prompt, a chat line, a dataset or one of its items.

    ``problem``: what is wrong; ``hint``: what the command that raised it offers to do about it
    (e.g. a flag), shown in parentheses after the problem. Another command reuses ``problem``.
    """

    def __init__(self, problem: str, *, hint: str | None = None) -> None:
        super().__init__(f"{problem} ({hint})" if hint else problem)
        self.problem, self.hint = problem, hint

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), (self.problem,), {"hint": self.hint}))


class InvalidMessagesError(InputError, ValueError):
    """A run's input ``messages`` is not a conversation: null, or an item LangChain cannot read as
    a message (a number, a dict without ``content``...). Refused as the input enters the graph's
    state (graphs/state.py), before any node runs.

    ``index``: the item at fault, None for the value itself; ``reason``: what is wrong with it.
    """

    def __init__(self, index: int | None, reason: str) -> None:
        super().__init__(f"{'messages' if index is None else f'messages[{index}]'} {reason}")
        self.index, self.reason = index, reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.index, self.reason))


class EmptyConversationError(InputError, ValueError):
    """A run's conversation gives the models nothing to answer: no user (or system) message
    once its text turns are taken (nodes/history.py ``answerable``); providers refuse an empty one.

    ``dropped``: how many messages the conversation held (every one was left out);
    ``tool_history``: the policy its text turns were taken by (``Context.tool_history``);
    ``tool_results``: how many of them were tool results that policy left out ("drop"), which
    ``"as_text"`` would have shown the models as user turns.
    """

    def __init__(self, dropped: int, tool_history: str, tool_results: int = 0) -> None:
        also = ""
        if tool_results:
            also = (
                f"; tool_history={tool_history!r} left out its {tool_results} tool "
                f"result{'s' if tool_results > 1 else ''}, which 'as_text' would show"
            )
        super().__init__(
            "the conversation has no user message for the mixture to answer "
            f"(assistant turns after the last user message are left out{also})"
        )
        self.dropped, self.tool_history, self.tool_results = dropped, tool_history, tool_results

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.dropped, self.tool_history, self.tool_results))


class UnsupportedContentError(InputError, ValueError):
    """A message of a run's conversation holds a content part the models are not sent (they get
    text only: nodes/history.py): an image, audio, a file... An answer written without it would
    read as if they had seen it, so the run is refused before any model is paid.

    ``message``: the message's index in the conversation; ``part``: the part's index in its
    content; ``kind``: the part's ``type``.
    """

    def __init__(self, message: int, part: int, kind: str) -> None:
        super().__init__(
            f"messages[{message}].content[{part}] is a content part of type {kind!r}, which the "
            "mixture's models are not sent (they read text only): send it as text, or leave it out"
        )
        self.message, self.part, self.kind = message, part, kind

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message, self.part, self.kind))


class UnpairedToolCallError(InputError, ValueError):
    """A run with tools bound whose conversation pairs a tool call and its result otherwise than
    providers take it: every tool call of an assistant message answered by a tool message right
    after it, and every tool message answering one. The aggregator of such a run is sent the
    conversation as it is (nodes/models/tools.py), so its provider would refuse the step after
    the proposers were paid.

    ``message``: the index of the message at fault (the assistant message whose calls have no
    result, or the tool message that answers no call); ``ids``: the tool call ids concerned;
    ``between``: the index of a message that stands between the calls and their results, which
    come later (None: no result comes).
    """

    def __init__(
        self,
        message: int,
        ids: Sequence[str],
        *,
        result: bool = False,
        between: int | None = None,
    ) -> None:
        quoted = ", ".join(map(repr, ids))
        self.message, self.ids, self.result, self.between = message, list(ids), result, between
        if between is not None:
            super().__init__(
                f"messages[{between}] comes between the tool calls of messages[{message}] and "
                f"their results ({quoted}): providers refuse such a conversation when tools are "
                "bound; move it before the calls or after the results"
            )
            return
        if result:
            problem = (
                f"messages[{message}] is a tool result for {quoted}, which no tool call of the "
                "assistant message before it has"
            )
        else:
            problem = (
                f"messages[{message}] calls tools that no tool message right after it answers "
                f"({quoted})"
            )
        left_out = "the result" if result else "the call"
        super().__init__(
            f"{problem}: providers refuse such a conversation when tools are bound; give each "
            f"call a ToolMessage with its tool_call_id (a refused call too), or leave {left_out} "
            "out"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        keywords = {"result": self.result, "between": self.between}
        return (_rebuild, (type(self), (self.message, self.ids), keywords))


class ProviderError(MoAError, RuntimeError):
    """A model cannot be built: unknown provider, missing package or missing API key."""


class CapabilityError(MoAError, ValueError):
    """A model cannot do what the run asks of it: call tools, or follow a response format."""


class ContextOverflowError(ProviderError):
    """A prompt does not fit the model's context window (never retried: it would fail again)."""


class BindOverflowError(ContextOverflowError):
    """A run's bound tools or response format do not fit its aggregator's context window beside
    the conversation and the answer: the aggregator's requests carry them whole, and providers
    count them as prompt. Refused as the turn begins, before any model is paid
    (nodes/models/bind_fit.py), whatever started the run.

    ``part``: ``"tools"`` or ``"response_format"`` (the larger, when both are bound);
    ``tokens``: its estimate; ``conversation``: the conversation's, as the aggregator is sent it
    (its instructions included); ``max_tokens``: the answer's; ``model``: the aggregator;
    ``window``: its context window.
    """

    def __init__(
        self, part: str, tokens: int, conversation: int, max_tokens: int, model: str, window: int
    ) -> None:
        smaller = "fewer or shorter tools" if part == "tools" else f"a smaller {part}"
        super().__init__(
            f"{part} takes about {tokens} tokens of the aggregator's prompt: with the "
            f"conversation (about {conversation}) and the answer (up to {max_tokens}), more than "
            f"{model}'s context window of {window} tokens; send {smaller}, a shorter "
            "conversation or a lower max_tokens (or set the aggregator's context_window, if its "
            "window is larger)"
        )
        self.part, self.tokens, self.conversation = part, tokens, conversation
        self.max_tokens, self.model, self.window = max_tokens, model, window

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            type(self),
            (self.part, self.tokens, self.conversation, self.max_tokens, self.model, self.window),
        )


class CallFailedError(MoAError, RuntimeError):
    """One model call that failed for good: it failed, was cut by its layer's quorum or straggler
    grace, or answered with empty text. Recorded in a ``Proposal`` or raised as part of an
    ``AggregatorError``; it leaves a graph only when a caller asks a model directly.

    ``kind`` says why (``ErrorKind``), ``message`` how, in one line with any key masked;
    ``attempts`` the requests started (0: none was sent), ``latency_s`` the time spent in all.
    ``shown``: the answer text a call that continues its broken answers had streamed before it
    failed for good (nodes/models/continuation.py), which the next answer (the fallback
    aggregator's) continues; "" otherwise. ``retry_after_s``: the wait the provider asked for
    (``Retry-After``) in its last refusal, if it asked.
    """

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        attempts: int,
        latency_s: float,
        shown: str = "",
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind, self.message, self.attempts, self.latency_s = kind, message, attempts, latency_s
        self.shown, self.retry_after_s = shown, retry_after_s

    def info(self) -> ErrorInfo:
        """The failure as records keep it (``Proposal.error``, ``CallFailure.error``)."""
        info = ErrorInfo(kind=self.kind, message=self.message)
        if self.retry_after_s is not None:
            info["retry_after_s"] = self.retry_after_s
        return info

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            type(self),
            (
                self.kind,
                self.message,
                self.attempts,
                self.latency_s,
                self.shown,
                self.retry_after_s,
            ),
        )


def _one_kind(failures: Sequence[ErrorKind]) -> ErrorKind | None:
    return failures[0] if failures and all(k == failures[0] for k in failures) else None


class LayerFailedError(MoAError, RuntimeError):
    """Too few proposers of a layer answered to go on.

    ``layer``: the 1-based proposer layer; ``proposals``: its records in proposer order, the
    failed ones with their ``error``; ``min_proposals``: how many had to answer.
    """

    def __init__(self, layer: int, proposals: Sequence[Proposal], min_proposals: int) -> None:
        self.layer, self.proposals, self.min_proposals = layer, list(proposals), min_proposals
        failed = "; ".join(
            f"{p['model']}: "
            + failure_note(
                p["error"]["message"] if p["error"] else "no answer", p["attempts"], p["latency_s"]
            )
            for p in self.failures
        )
        answered = len(self.proposals) - len(self.failures)
        super().__init__(
            f"layer {layer}: only {answered} of {len(self.proposals)} proposers answered "
            f"(min_proposals={min_proposals}); {failed}"
        )

    @property
    def failures(self) -> list[Proposal]:
        """The layer's proposals that have no answer."""
        return [p for p in self.proposals if p["text"] is None]

    @property
    def kind(self) -> ErrorKind | None:
        """The kind every failure shares (``"context"``: the conversation fits no proposer),
        None when they differ."""
        return _one_kind([p["error"]["kind"] if p["error"] else "other" for p in self.failures])

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.layer, self.proposals, self.min_proposals))


class AggregatorError(MoAError, RuntimeError):
    """The final aggregator could not produce an answer.

    ``failures``: the aggregator's failed call, then its fallback's when one was configured.
    """

    def __init__(self, message: str, failures: Sequence[CallFailure]) -> None:
        super().__init__(message)
        self.failures = list(failures)

    @property
    def kind(self) -> ErrorKind | None:
        """The kind every failure shares, None when they differ."""
        return _one_kind([f["error"]["kind"] for f in self.failures])

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.failures))


class RetriedRunError(MoAError, RuntimeError):
    """A ``moa batch --server`` run the LangGraph server started again on its own (after a
    restart, or a worker's crash), refused before any model is paid (graphs/retried.py).

    ``item``: the batch item's id; ``attempt``: the server's attempt number of the run.
    """

    def __init__(self, item: str, attempt: int) -> None:
        super().__init__(
            f"item {item}: this batch run was started again by the server (attempt {attempt}, "
            "or queued before the server restarted); refused so the item is not paid twice: "
            "moa batch submits it again"
        )
        self.item, self.attempt = item, attempt

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.item, self.attempt))


def _rebuild(cls: type[MoAError], args: tuple[Any, ...], kwargs: dict[str, Any]) -> MoAError:
    return cls(*args, **kwargs)


class InUseError(RefusedError):
    """Another process is writing the same batch output, chat thread or compare folder."""


class RunStoppedError(MoAError):
    """A dataset run cannot go on (its LangGraph server went away, or refuses its settings): not
    one item's failure, so no item is recorded failed for it; the finished items are kept and a
    rerun resumes."""


class InputChangedError(RunStoppedError):
    """A dataset's file changed while the run read it (``moa batch`` reads it twice: ids first,
    then items as they run): the run stops, mid-run (exit 1, not a refusal); a rerun reads the
    file as it is now and resumes."""


class ServerError(RunStoppedError):
    """The LangGraph server at ``url`` (``moa batch --server``) cannot be used: ``problem`` says
    why. Its kinds say when: at the start, before any item is sent (``ServerUnusableError``), or
    mid-run (``ServerGoneError``)."""

    def __init__(self, url: str, problem: str) -> None:
        super().__init__(problem)
        self.url = url

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.url, str(self)))


class ServerUnusableError(ServerError, RefusedError):
    """The LangGraph server at ``url`` cannot be used at the start of a run (unreachable, no
    such graph, an error answer): refused before any item is sent, so nothing was paid and the
    output is as it was; the same command runs once the server (or the URL) is right."""


class ServerKeyError(ServerUnusableError):
    """The LangGraph server at ``url`` answered ``status`` (401, 403) to this client, which sent
    it the key in ``sent`` (None: no key) and kept ``withheld`` from it (an account key, set but
    not sent over plain http: nodes/keys.py ``server_key``)."""

    def __init__(self, url: str, status: int, sent: str | None, withheld: str | None) -> None:
        key, accounts = SERVER_KEY_ENVS[0], SERVER_KEY_ENVS[1:]
        fix = f"set {key} to a key it accepts"
        if withheld:
            fix += f", or add {withheld} to {ALLOW_ENV} to send it over plain http"
        read = (
            f"moa sends the first set of {', '.join(SERVER_KEY_ENVS)}; "
            f"{' and '.join(accounts)} only over https"
        )
        sent_text = f"with the key in {sent}" if sent else "sent no key"
        super().__init__(
            url,
            f"the LangGraph server at {url} refused this client (HTTP {status}, {sent_text}): "
            f"{fix} ({read})",
        )
        self.status, self.sent, self.withheld = status, sent, withheld

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.url, self.status, self.sent, self.withheld))


class ServerRefusedError(ServerError, ConfigError):
    """The LangGraph server at ``url`` refused a run's settings from a client, as it would every
    item's (their settings differ only in seeds): ``error``, the error it named
    (``ClientSettingError``, ``CostCapError``); ``problem``, its message. It refuses before any
    model is called, so nothing was paid; the settings are the user's to change."""

    def __init__(self, url: str, error: str, problem: str) -> None:
        super().__init__(
            url, f"the LangGraph server at {url} refused the run's settings ({error}): {problem}"
        )
        self.error, self.problem = error, problem

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.url, self.error, self.problem))


class ServerGoneError(ServerError):
    """The LangGraph server at ``url`` went away ``when`` (mid-run, mid-answer) and did not come
    back while the runs waited; ``cause``: what the client saw."""

    def __init__(self, url: str, when: str, cause: str) -> None:
        super().__init__(
            url,
            f"lost the LangGraph server at {url} {when} ({cause}); the finished items are kept: "
            "run the same command again once it is back",
        )
        self.when, self.cause = when, cause

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.url, self.when, self.cause))


class ScratchError(RefusedError):
    """A temporary file a run needs cannot be written (a full or read-only temporary folder):
    ``what`` it holds, the ``folder`` and the system's ``problem``."""

    def __init__(self, folder: str, what: str, problem: str) -> None:
        super().__init__(
            f"cannot write {what} in the temporary folder {folder}: {problem}: free some space "
            "there, or set TMPDIR to a folder with room"
        )
        self.folder, self.what, self.problem = folder, what, problem

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.folder, self.what, self.problem))


class ListenError(RefusedError):
    """``moa serve`` cannot listen on ``host``:``port`` (a port in use or that needs privileges,
    an address of no interface here): refused before the server starts, nothing paid.
    ``problem``: what the system said; ``hint``: what to do about it."""

    def __init__(self, host: str, port: int, problem: str, hint: str) -> None:
        super().__init__(f"cannot listen on {host}:{port}: {problem}: {hint}")
        self.host, self.port, self.problem, self.hint = host, port, problem, hint

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.host, self.port, self.problem, self.hint))


class CallCacheError(RefusedError):
    """The model-call cache file cannot be read or written (corrupt, read-only, a full disk).
    Raised as the cache is opened, before any call; a lookup that fails later fails its call."""

    def __init__(self, path: str, problem: str, hint: str) -> None:
        super().__init__(f"the call cache {path}: {problem}: {hint}")
        self.path, self.problem, self.hint = path, problem, hint

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.problem, self.hint))


class StoredValueError(MoAError, ValueError):
    """A value in one of moa's stores (the call cache, the chat threads) does not deserialise:
    written outside moa (edited, planted). ``encoding``: the type its row names; ``problem``:
    what the deserialiser said. The store's reader turns it into its own answer."""

    def __init__(self, encoding: str, problem: str) -> None:
        super().__init__(f"a stored value ({encoding}) was changed outside moa: {problem}")
        self.encoding, self.problem = encoding, problem

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.encoding, self.problem))


class SharedFileError(RefusedError, ValueError):
    """A file or folder a command would read or write could have been put there, or changed, by
    another user of the machine (nodes/shared_files.py): refused before it is read or written. A
    ValueError as a ``ConfigError`` is: a config file named as a graph run's context is one.

    ``what``: how the user calls it (``config file 'c.toml'``, ``the call cache x.sqlite``);
    ``path``: the file or folder at fault (the file itself, a folder above it, a link on the way);
    ``problem``: who could change it, and what they could do with it; ``hint``: what to do."""

    def __init__(self, what: str, path: str, problem: str, hint: str) -> None:
        super().__init__(f"{what}: {problem}: {hint}")
        self.what, self.path, self.problem, self.hint = what, path, problem, hint

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.what, self.path, self.problem, self.hint))


class LockFileError(RefusedError):
    """The lock file of an output, chat thread or report folder (core/locks.py) cannot be used:
    ``lock``, its path; ``what``, what it guards; ``problem``, why (whose it is, its mode);
    ``hint``, what to do."""

    def __init__(self, lock: str, what: str, problem: str, hint: str) -> None:
        super().__init__(f"cannot lock {what}: its lock file {lock} {problem}: {hint}")
        self.lock, self.what, self.problem, self.hint = lock, what, problem, hint

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.lock, self.what, self.problem, self.hint))
