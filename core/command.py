"""What every ``moa`` command shares: the model flags, one-line errors and their exit codes.

Each application registers its own commands (``register(app)`` in ``apps/<name>/command.py``);
``langgraph_moa/cli.py`` collects them into ``moa``. Exit codes, for every command:
0 done; 1 the run started and failed (a provider, a layer, the aggregator); 2 refused before any
call was paid (bad input, settings or paths, a model that cannot be built here: an unknown
provider, a missing key or package; an output of other settings or held by another run; an
address ``moa serve`` cannot listen on; a ``moa batch --server`` not there at the start); 3 done,
but some answers are degraded (``moa batch``, ``moa compare``: answered with fewer proposals
than configured); 130 interrupted (Ctrl-C); 141 whoever read the output went away; 143 stopped
by SIGTERM (as Ctrl-C, what finished kept; ``moa serve`` drains instead and exits 0). The signal
codes are the status a shell reports for a process the signal ended (128 + its number).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import inspect
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from langgraph_moa.core.terminal import stderr_console, to_stdout
from langgraph_moa.nodes.errors import (
    ConfigError,
    ContextOverflowError,
    InputError,
    MoAError,
    ProviderError,
    RefusedError,
)

err = stderr_console()
EXIT_DEGRADED = 3  # every item answered, some with fewer proposals than configured
EXIT_INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT
EXIT_TERMINATED = 143  # SIGTERM (kill, a service manager, a CI timeout): 128 + SIGTERM

T = TypeVar("T")

# The flags that choose the mixture, shared by ask, chat, batch and compare (``model_flags``).
MODEL_FLAGS: dict[str, tuple[type | Any, Any]] = {
    "preset": (str | None, typer.Option("--preset", "-p", help="Preset name (see 'moa presets').")),
    "config": (str | None, typer.Option("--config", "-c", help="A TOML config file.")),
    "proposers": (
        list[str] | None,
        typer.Option("--proposer", help="Proposer 'provider:model'; repeat for several."),
    ),
    "aggregator": (
        str | None,
        typer.Option("--aggregator", "-a", help="Aggregator 'provider:model'."),
    ),
    "layers": (
        int | None,
        typer.Option(
            "--layers", "-l", help="Layers counting the aggregator (2 = one proposer layer)."
        ),
    ),
    # A model's own setting in the preset or config wins over both (Context.temperature).
    "temperature": (
        float | None,
        typer.Option("--temperature", "-t", help="Sampling temperature of every model (0-2)."),
    ),
    "max_tokens": (
        int | None,
        typer.Option("--max-tokens", "-m", help="Longest answer of every model call, in tokens."),
    ),
}
# The flags of interactive runs (ask, chat): stragglers, and how the answer streams.
QUORUM_FLAGS: dict[str, tuple[type | Any, Any]] = {
    "quorum": (
        int | None,
        typer.Option(
            "--quorum",
            "-q",
            help="Go on once K proposers of a layer answered, cancelling the rest (default: all).",
        ),
    ),
    "quorum_grace": (
        float | None,
        typer.Option("--grace", help="With --quorum: seconds to still wait after the K-th answer."),
    ),
    "staircase": (
        bool | None,
        typer.Option(
            "--staircase/--no-staircase",
            help="Staircase streaming: the answer starts while the proposers still write "
            "(more aggregator requests; docs/performance.md).",
        ),
    ),
}


def model_flags(*, quorum: bool = False) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Give a command the model flags: they reach it as one ``flags`` dict, ready for
    ``context_from_flags(**flags)``. Written once here, so no command lists them by hand."""
    added = {**MODEL_FLAGS, **(QUORUM_FLAGS if quorum else {})}

    def decorate(fn: Callable[..., T]) -> Callable[..., T]:
        own = [p for p in inspect.signature(fn, eval_str=True).parameters.values()]
        own = [p for p in own if p.name != "flags"]
        extra = [
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind, opt]
            )
            for name, (kind, opt) in added.items()
        ]
        # Typer reads the signature: the command's own parameters, then the model flags.
        params = sorted([*own, *extra], key=lambda p: p.kind)

        @functools.wraps(fn)
        def command(*args: Any, **kwargs: Any) -> T:
            flags = {name: kwargs.pop(name, None) for name in added}
            return fn(*args, flags=flags, **kwargs)

        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        del command.__wrapped__  # typer must see the new signature, not fn's
        return command

    return decorate


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr (API keys masked), then exit with ``code``."""
    from langgraph_moa.nodes.models.redact import redact

    _end_line()
    err.print(f"moa: error: {redact(message)}", markup=False)
    raise typer.Exit(code)


def exit_code(exc: MoAError) -> int:
    """2 for a refusal before any call was paid (what the user can fix in the command: its
    settings, input or paths, or the models it names: every command builds them before its first
    call, and a ``ProviderError`` is one that cannot be built), 1 for a run that started and
    failed. A context overflow is a call's failure: the call loop makes it a ``CallFailedError``."""
    refused = ConfigError | InputError | RefusedError | ProviderError
    return 2 if isinstance(exc, refused) and not isinstance(exc, ContextOverflowError) else 1


def guarded(fn: Callable[[], T], *, kept: str = "") -> T:
    """Run a command's body: every error becomes one line and its exit code (module docstring);
    a traceback only with MOA_DEBUG=1. ``kept``: what a stopped run keeps, and how to go on,
    said after "interrupted" or "stopped by SIGTERM"."""
    after = f"; {kept}" if kept else ""
    try:
        return fn()
    except BrokenPipeError:
        reader_gone()
    except MoAError as exc:
        fail(str(exc), exit_code(exc))
    except KeyboardInterrupt:
        fail(f"interrupted{after}", EXIT_INTERRUPTED)
    except Terminated:
        fail(f"stopped by SIGTERM{after}", EXIT_TERMINATED)
    except typer.Exit:
        raise
    except Exception as exc:  # a last resort: one line, the traceback only on request
        if os.environ.get("MOA_DEBUG"):
            raise
        fail(f"unexpected {type(exc).__name__}: {exc} (set MOA_DEBUG=1 for a traceback)")


@contextlib.contextmanager
def startup() -> Iterator[None]:
    """Heavy imports and model building without the cyclic garbage collector, then frozen.

    Importing LangChain, LangGraph and the SDKs makes hundreds of thousands of long-lived
    objects; the collector walked them again and again while they were made (~20% of the import
    CPU, over a second to the first request of ``moa batch`` on a loaded machine) and at every
    full collection afterwards. ``gc.freeze`` moves them out of every later collection.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def run_async(coro: Coroutine[Any, Any, T], *, stoppable: bool = True, kept: str = "") -> T:
    """Run a command's coroutine with the errors of ``guarded`` (``kept``: see there). SIGTERM
    stops it as Ctrl-C does (``run_stoppable``) unless ``stoppable`` is False: ``moa serve``,
    whose server drains on SIGTERM itself (apps/serve/main.py)."""

    async def main() -> T:
        try:
            return await coro
        except BrokenPipeError:
            # Silenced at once: the loop's teardown that follows (tasks cancelled, generators
            # closed) may write warnings, and the reader has gone.
            _to_devnull()
            raise

    if not stoppable:
        return guarded(lambda: asyncio.run(main()), kept=kept)
    return guarded(lambda: run_stoppable(main), kept=kept)


class Terminated(Exception):
    """SIGTERM stopped a run of ``run_stoppable``, as Ctrl-C does (``KeyboardInterrupt``)."""


def run_stoppable(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``asyncio.run(main())``, where SIGTERM stops the run as Ctrl-C does: the main task is
    cancelled (its requests closed, its files closed with what finished), then ``Terminated`` is
    raised where Ctrl-C raises ``KeyboardInterrupt``. A run (``moa batch``, ``moa compare``, and
    through ``run_async`` ``moa ask`` and ``moa chat``) is stopped by ``kill``, a service manager
    or a CI timeout as often as by a key. Where the loop cannot take signals (Windows), SIGTERM
    keeps its default effect."""

    async def stoppable() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        terminated = False

        def stop() -> None:
            nonlocal terminated
            terminated = True
            if task is not None:
                task.cancel()

        watching = False
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGTERM, stop)
            watching = True
        try:
            return await main()
        except asyncio.CancelledError:
            if terminated:
                raise Terminated from None
            raise
        finally:
            if watching:
                loop.remove_signal_handler(signal.SIGTERM)

    return asyncio.run(stoppable())


def exit_with(command: Callable[[], int]) -> NoReturn:
    """Run a command that returns its exit status (batch, compare), and exit with it."""
    raise typer.Exit(guarded(command))


def reader_gone() -> NoReturn:
    """Whoever read our output went away (``moa ... | head``): stop quietly, as Unix tools do."""
    # The status a shell reports for a tool killed by SIGPIPE. Python ignores SIGPIPE (its sockets
    # need that), so the error arrives as BrokenPipeError instead. /dev/null in place of the
    # closed pipe keeps the interpreter's last flush from failing again.
    _to_devnull()
    raise typer.Exit(141)


def _to_devnull(*fds: int) -> None:
    """/dev/null in place of ``fds`` (stdout and stderr by default)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in fds or (1, 2):
        with contextlib.suppress(OSError):
            os.dup2(devnull, fd)


@contextlib.contextmanager
def stdout_may_close() -> Iterator[None]:
    """Output outside the event loop: a closed pipe ends the command quietly there too."""
    try:
        yield
    except BrokenPipeError:
        reader_gone()


class _Stdout:
    """Whether the text ``write`` last put on stdout left its line open (a partial answer)."""

    line_open = False


def write(text: str) -> None:
    """Model text to stdout (escape sequences made visible on a terminal: core/terminal.py)."""
    sys.stdout.write(to_stdout(text))
    sys.stdout.flush()
    if text:
        _Stdout.line_open = not text.endswith("\n")


def _end_line() -> None:
    """End a partial answer's line, so that an error after it (a run stopped mid-answer) starts a
    line of its own on a terminal, where both streams show, and stdout ends with a newline."""
    if not _Stdout.line_open:
        return
    try:
        write("\n")
    except ValueError:  # stdout closed: no line to end
        pass
    except OSError:  # the reader has gone: the interpreter's last flush must not fail again
        _to_devnull(1)
