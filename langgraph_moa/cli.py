"""``moa``: every application's commands under one name.

Each package under ``langgraph_moa.apps`` brings its commands in ``command.py`` (a ``register``
function and an ``ORDER`` for the help listing), so adding an application adds no line here.
``moa PROMPT`` is short for ``moa ask PROMPT``; ``moa --help`` shows that command's flags too.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import pkgutil
import sys
from types import ModuleType
from typing import Annotated

import typer
import typer.main

from langgraph_moa import apps
from langgraph_moa.core.command import err, startup, stdout_may_close

HELP = "Ask several LLMs at once and let an aggregator write one answer (Mixture-of-Agents)."


def _applications() -> list[ModuleType]:
    found = [
        importlib.import_module(f"{apps.__name__}.{info.name}.command")
        for info in pkgutil.iter_modules(apps.__path__)
        if info.ispkg
    ]
    return sorted(found, key=lambda m: (getattr(m, "ORDER", 100), m.__name__))


def build_app() -> typer.Typer:
    app = typer.Typer(
        add_completion=False,
        no_args_is_help=True,
        rich_markup_mode=None,
        help=HELP,
        context_settings={"help_option_names": ["-h", "--help"]},  # `moa batch -h` as `moa -h`
    )

    @app.callback()
    def moa(  # the options of `moa` itself, before a command
        version: Annotated[
            bool,
            typer.Option(
                "--version",
                is_eager=True,
                callback=_show_version,
                help="Show the version and exit.",
            ),
        ] = False,
    ) -> None:
        pass

    for module in _applications():
        module.register(app)
    return app


def _show_version(given: bool) -> None:
    if given:
        from langgraph_moa import __version__

        print(f"moa {__version__}")
        raise typer.Exit()


def main() -> None:
    """Entry point: ``moa PROMPT`` is short for ``moa ask PROMPT``."""
    # Registered first, so it runs last of the exit handlers: with every object frozen, the
    # interpreter's final garbage collection has nothing to walk. That collection went through
    # the hundreds of thousands of objects LangChain, LangGraph and the SDKs create at import,
    # and took 0.5-1.5 s of every run (docs/performance.md).
    atexit.register(gc.freeze)
    if sys.stdout is None:  # `moa ... >&-`: Python starts without a stdout
        err.print("moa: error: stdout is closed: nowhere to write the answer", markup=False)
        sys.exit(2)
    with startup():
        app = build_app()
    args = sys.argv[1:] or ["--help"]
    if args[0] in ("--help", "-h"):
        # The commands, then the flags of `moa PROMPT` (moa ask): what the README leads with.
        group = typer.main.get_group(app)
        with group.make_context("moa", [], resilient_parsing=True) as top:
            ask = group.get_command(top, "ask")
            assert ask is not None
            with ask.make_context("ask", [], parent=top, resilient_parsing=True) as sub:
                text = f"{group.get_help(top)}\n\n{ask.get_help(sub)}\n"
        try:
            with stdout_may_close():  # `moa --help | head`: quietly, status 141
                sys.stdout.write(text)
                sys.stdout.flush()
        except typer.Exit as gone:
            sys.exit(gone.exit_code)
        return
    commands = {c.name or c.callback.__name__ for c in app.registered_commands if c.callback}
    if args[0] not in commands and args[0] != "--version":  # moa's own option, else a prompt
        args = ["ask", *args]
    try:
        code = app(args=args, prog_name="moa", standalone_mode=False)
    except typer.TyperException as exc:  # a bad flag or value: one line, like every other error
        message = " ".join(str(getattr(exc, "format_message", exc.__str__)()).split())
        helps = "moa --help" if args[0] == "ask" else f"moa {args[0]} --help"  # its own flags
        err.print(f"moa: error: {message} (see '{helps}')", markup=False)
        sys.exit(2)
    except typer.Abort:
        err.print("moa: error: interrupted", markup=False)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
