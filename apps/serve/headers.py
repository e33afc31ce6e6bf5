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

That leaves a client that takes just enough, now and then (a trickle reader): it held its slot,
and the server's buffers of its response, for as long as the response took it to read. So each
response must be all taken by the client (out of our buffer and, on Linux, of the socket's send
queue) within ``max_run_s + send_timeout_s`` of its request's arrival (whole, body included: the
run starts then), else the connection is aborted, the same disconnect as above. The run itself
is stopped at ``max_run_s``, so a client that reads as the answer comes is never cut: the send
timeout is the time it has to take the rest. A response complete but not all taken stays on the
clock (a client pipelining requests behind a response it is slow to read has them counted from
the earlier one).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from langgraph_moa.apps.serve.errors import OpenAIError
from langgraph_moa.apps.serve.settings import DEFAULT_MAX_RUN_S, DEFAULT_SEND_TIMEOUT_S

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


def _cut(transport: asyncio.Transport) -> None:
    """Abort the connection, and with it what the system still holds to send: abort, not close,
    which would wait to send our buffer to a client that does not read it; and a reset (linger
    0), else the system goes on sending its socket buffer (megabytes) to that client after us."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):  # gone already: nothing left to send
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _unsent(transport: asyncio.Transport) -> int:
    """Bytes written for the client that it has not taken: in our buffer and, where the system
    says (Linux), in the socket's send queue, which grows to megabytes for a slow reader."""
    unsent = transport.get_write_buffer_size()
    sock = transport.get_extra_info("socket")
    try:
        import fcntl
        import termios
    except ImportError:  # Windows
        return unsent
    if sock is not None and hasattr(termios, "TIOCOUTQ"):
        try:
            queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4)
            unsent += struct.unpack("i", queued)[0]
        except OSError:  # not a TCP socket here (macOS): our buffer is all we know
            pass
    return unsent


def with_header_deadline(
    timeout_s: float,
    send_timeout_s: float = DEFAULT_SEND_TIMEOUT_S,
    max_run_s: float = DEFAULT_MAX_RUN_S,
) -> type[H11Protocol]:
    """uvicorn's h11 protocol, closing a connection whose request headers take over
    ``timeout_s`` to arrive, or whose unread body (the app answered first) goes on longer; and
    aborting one that reads nothing of its response for ``send_timeout_s`` once the server's
    write buffer is full, or has not taken all of a response ``max_run_s + send_timeout_s``
    after its request arrived."""
    response_s = max_run_s + send_timeout_s

    class HeaderDeadline(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _draining = False  # the deadline is for a body nobody reads, not for headers
        _stall: asyncio.TimerHandle | None = None  # the client reads nothing of its response
        _sending: asyncio.TimerHandle | None = None  # the response's whole deadline
        _tail = False  # ``_sending`` is a complete response's, its end not all taken

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
            _cut(self.transport)

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._start()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._watch()
            self._watch_response()

        def on_response_complete(self) -> None:
            if _unsent(self.transport):
                self._tail = True  # the client has yet to take its end
            else:
                self._stop_sending()
            super().on_response_complete()  # may start a pipelined request
            self._watch()
            self._watch_response()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop()
            self._stop_stall()
            self._stop_sending()
            super().connection_lost(exc)

        def _owed(self) -> bool:
            """A request has arrived whole and its response is not complete."""
            # MUST_CLOSE: a whole request that asked to close the connection after its response.
            whole = self.conn.their_state in (h11.DONE, h11.MUST_CLOSE)
            return whole and self.conn.our_state in (h11.SEND_RESPONSE, h11.SEND_BODY)

        def _watch_response(self) -> None:
            if not self._owed():
                return
            # A tail all taken: the client's next request has its own clock.
            if self._sending is None or (self._tail and not _unsent(self.transport)):
                self._stop_sending()
                loop = asyncio.get_running_loop()
                self._sending = loop.call_later(response_s, self._sent_too_long)

        def _stop_sending(self) -> None:
            if self._sending is not None:
                self._sending.cancel()
                self._sending = None
            self._tail = False

        def _sent_too_long(self) -> None:
            self._sending, self._tail = None, False
            if not (self._owed() or _unsent(self.transport)):
                return  # all taken in time (the tail was read, no request since)
            log.warning(
                "moa serve: %s had not taken all of its response %g s after its request: "
                "connection closed",
                _peer(self.transport),
                response_s,
            )
            _cut(self.transport)  # as in _stalled: the disconnect frees the run and its slot

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
