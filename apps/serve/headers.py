"""A connection must send its request's headers within ``request_timeout_s``, else it is closed.

uvicorn has no such timeout: a connection that sends nothing, or trickles its headers a byte at a
time, is held for ever, and a few thousand of them use up the server's file descriptors (slow
loris). Its keep-alive timer covers only an idle connection between requests, and our ASGI
middleware (``RequireKey``, ``CancelOnDisconnect``) runs only once the headers are complete.

So the server runs uvicorn's h11 protocol with a deadline: from the moment a connection opens, and
from the first byte of each later request on it, until that request's headers are all in. Past
it, a request begun gets a 408 in OpenAI's error shape, a connection that sent nothing is just
closed. The same deadline holds the rest of a body the app answered without reading (the 401 of
a client without the key): uvicorn reads and drops it for as long as it comes, so a client
trickling it would hold the connection for ever; past the deadline it is closed. uvicorn's own
keep-alive timer still decides how long an idle connection stays open between requests. This
is the one place that relies on uvicorn's ``H11Protocol`` internals (its ``conn``, and the
hooks overridden here): tests/test_private_apis.py fails by name if they change.

The same protocol cuts a client that stops reading its response: once the server's write buffer
for the connection is full (the client's socket buffers are full too), the client must take some
of it within ``send_timeout_s``, else the connection is aborted. uvicorn would wait for ever, and
the request with it: a streamed run's slot stayed taken (``--max-concurrent``) for as long as the
client kept its socket open without reading, so three such clients locked everyone out of a
server of three slots. The abort is a disconnect for the app: the route is cancelled, its run
closed, its slot freed (apps/serve/disconnect.py). A client reading slowly but steadily is not cut:
each time it takes enough, the deadline starts again.
"""

from __future__ import annotations

import asyncio
import json
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from langgraph_moa.apps.serve.errors import OpenAIError
from langgraph_moa.apps.serve.settings import DEFAULT_SEND_TIMEOUT_S

log = logging.getLogger("moa.serve")


def _late(timeout_s: float) -> bytes:
    """The raw 408 a request whose headers came too slowly gets (no ASGI app has seen it)."""
    error = OpenAIError(
        408,
        f"the request's headers did not arrive within {timeout_s:g} s",
        code="request_timeout",
    )
    body = json.dumps(error.body()).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


def _peer(transport: asyncio.BaseTransport) -> str:
    # asyncio's public peername (an IP's host and port first; a Unix socket's is a path).
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple | list) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return "a client"


def with_header_deadline(
    timeout_s: float, send_timeout_s: float = DEFAULT_SEND_TIMEOUT_S
) -> type[H11Protocol]:
    """uvicorn's h11 protocol, closing a connection whose request headers take over
    ``timeout_s`` to arrive, or whose unread body (the app answered first) goes on longer; and
    aborting one that reads nothing of its response for ``send_timeout_s`` once the server's
    write buffer is full."""

    class HeaderDeadline(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _draining = False  # the deadline is for a body nobody reads, not for headers
        _stall: asyncio.TimerHandle | None = None  # the client reads nothing of its response

        def pause_writing(self) -> None:
            super().pause_writing()
            if self._stall is None:
                loop = asyncio.get_running_loop()
                self._stall = loop.call_later(send_timeout_s, self._stalled)

        def resume_writing(self) -> None:
            super().resume_writing()
            self._stop_stall()

        def _stop_stall(self) -> None:
            if self._stall is not None:
                self._stall.cancel()
                self._stall = None

        def _stalled(self) -> None:
            self._stall = None
            log.warning(
                "moa serve: %s read nothing of its response for %g s: connection closed",
                _peer(self.transport),
                send_timeout_s,
            )
            # abort, not close: close would wait to send the buffered bytes nobody reads.
            self.transport.abort()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._start()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._watch()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._watch()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop()
            self._stop_stall()
            super().connection_lost(exc)

        def _watch(self) -> None:
            """A deadline while a request has begun and its headers are not all here, or while
            the client still sends a body the app answered without reading."""
            their, ours = self.conn.their_state, self.conn.our_state
            if their is h11.IDLE:
                if self._draining:  # the unread body ended: the connection is idle again
                    self._stop()
                if self._begun():
                    self._start()
            elif their is h11.SEND_BODY and ours in (h11.DONE, h11.MUST_CLOSE):
                self._start(draining=True)  # answered (a 401): the rest is dropped as it comes
            else:
                self._stop()  # headers in (or the connection is done with): the app's turn

        def _begun(self) -> bool:
            return bool(self.conn.trailing_data[0])  # bytes of a request h11 cannot parse yet

        def _start(self, draining: bool = False) -> None:
            if self._deadline is None:
                self._draining = draining
                self._deadline = asyncio.get_running_loop().call_later(timeout_s, self._too_slow)

        def _stop(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            self._draining = False

        def _too_slow(self) -> None:
            draining, self._deadline, self._draining = self._draining, None, False
            if self.transport.is_closing():
                return
            if not draining and self._begun():  # (after an answer, no second one)
                self.transport.write(_late(timeout_s))
            self.transport.close()

    return HeaderDeadline
