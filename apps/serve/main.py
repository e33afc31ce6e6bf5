"""``moa serve``: check the settings, bind the socket, run the app under uvicorn, drain on SIGTERM.

Shutdown: on SIGTERM (or Ctrl-C) uvicorn stops accepting connections, lets the requests in flight
finish for up to ``grace_s`` (its ``timeout_graceful_shutdown``), cancels what is left (which
closes those runs' provider calls) and returns; the process then exits 0. uvicorn re-raises the
signal it caught once it is done, so that the previous handler can act: ours ignores it, which is
what turns a clean drain into exit status 0 rather than death by SIGTERM.
"""

from __future__ import annotations

import copy
import errno
import signal
import socket
import sys
from typing import Any

from langgraph_moa.apps.serve.settings import ServeSettings
from langgraph_moa.nodes.errors import ListenError

# Idle keep-alive connections are closed after this long. Longer than clients keep theirs idle
# (httpx: 5 s, aiohttp: 15 s) and than load balancers' idle timeouts (often 60 s): whoever closes
# an idle connection first must be the client, else a request it sends on that connection just
# as the server closes it fails with a connection error (uvicorn's default of 5 s did that to
# a few requests in a thousand under load).
KEEP_ALIVE_S = 75


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host``:``port``; ``ListenError`` says why there is none."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = None
    try:  # socket() too: no IPv6 in this kernel, or no file descriptor left
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        # Listening already: connections made once the URL is printed wait in the backlog
        # until uvicorn accepts them, rather than being refused.
        sock.listen(2048)
    except OSError as exc:
        if sock is not None:
            sock.close()
        raise ListenError(host, port, exc.strerror or str(exc), _listen_hint(exc, port)) from None
    sock.set_inheritable(True)
    return sock


def _listen_hint(exc: OSError, port: int) -> str:
    """What to do when the system refuses to listen there."""
    if exc.errno == errno.EADDRINUSE:
        return (
            "another process listens there: stop it, or choose another --port (0 picks a free one)"
        )
    if exc.errno == errno.EACCES and 0 < port < 1024:
        return "ports below 1024 need privileges: choose a --port of 1024 or above"
    if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
        return (
            "no interface of this machine has that address: give --host one of its addresses "
            "(127.0.0.1 for this machine only, 0.0.0.0 for every interface)"
        )
    return "choose another --host or --port"


def uvicorn_config(app: Any, settings: ServeSettings, **overrides: Any) -> Any:
    """The ``uvicorn.Config`` ``moa serve`` runs ``app`` with (tests/serving.py runs it so too)."""
    import uvicorn

    from langgraph_moa.apps.serve.headers import with_header_deadline

    options: dict[str, Any] = {
        "log_config": log_config(),
        "timeout_graceful_shutdown": int(settings.grace_s + 0.999),
        "timeout_keep_alive": KEEP_ALIVE_S,
        "server_header": False,
        # The same HTTP stack wherever it is installed: uvicorn would pick httptools and uvloop
        # when they are present (langgraph-cli brings both), and the tests would exercise another
        # server than users run. h11 also carries the headers' deadline and the send deadlines.
        "http": with_header_deadline(
            settings.request_timeout_s, settings.send_timeout_s, settings.max_run_s
        ),
        "loop": "asyncio",
    }
    return uvicorn.Config(app, **(options | overrides))


def log_config() -> dict[str, Any]:
    """uvicorn's logging, plus the server's own logger (one line per error, on stderr)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["moa.serve"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


async def run(settings: ServeSettings, models: Any, sock: socket.socket) -> None:
    import uvicorn

    from langgraph_moa.apps.serve.app import create_app
    from langgraph_moa.apps.serve.warned import log_warnings
    from langgraph_moa.core.settings import preflight

    # The default model's clients, built in the server's loop (the one that reuses them); a key
    # the server lacks stops it here, on one line.
    preflight(models.context(None)[1])
    app = create_app(settings, models)
    server = uvicorn.Server(uvicorn_config(app, settings))
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(
        f"moa serve: http://{shown}:{port}/v1 (models: {', '.join(models.names())}; "
        f"default {models.default}; auth {'on' if settings.api_key else 'off'}; "
        f"at most {settings.max_concurrent} runs in flight)",
        file=sys.stderr,
        flush=True,
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)  # see the module docstring
    log_warnings()  # one line each, as the rest of the log
    await server.serve(sockets=[sock])
