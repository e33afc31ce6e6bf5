"""A request whose client goes away is cancelled, on every route.

LangServe's ``/invoke`` and ``/batch`` (and any route that waits without sending) never look at
the connection, so a client that left was noticed only when the answer was sent: its run went on
calling (and paying) providers for minutes. This pure ASGI middleware reads the request body
(bounded by ``BodyLimit``), then runs the route in a task of its own while it listens for the
client's ``http.disconnect``; when it comes before the response is complete, the route's task is
cancelled, which cancels its run (``RunStream.aclose`` closes the open provider requests). The
route still sees the disconnect through ``receive`` (sse-starlette ends its streams on it).
Starlette has no such option and uvicorn only marks the connection as gone, hence our own.

The body must arrive within ``request_timeout_s`` of the headers, else 408: uvicorn waits for a
body for ever, so a client trickling one would hold its connection (and what it sent) as long as
it liked. The headers have their own deadline, in the protocol (apps/serve/headers.py).
"""

from __future__ import annotations

import asyncio
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from langgraph_moa.apps.serve.errors import OpenAIError
from langgraph_moa.apps.serve.limits import BodyTooLargeError
from langgraph_moa.apps.serve.settings import DEFAULT_REQUEST_TIMEOUT_S

log = logging.getLogger("moa.serve")


class CancelOnDisconnect:
    def __init__(self, app: ASGIApp, request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S) -> None:
        self.app = app
        self.request_timeout_s = request_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body: list[Message] = []
        try:
            async with asyncio.timeout(self.request_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return  # gone before its request was complete: nothing to run
                    body.append(message)
                    if not message.get("more_body"):
                        break
        except BodyTooLargeError as exc:
            await OpenAIError(413, exc.detail).response()(scope, receive, send)
            return
        except TimeoutError:
            waited = self.request_timeout_s
            late = OpenAIError(
                408,
                f"the request body did not arrive within {waited:g} s of its headers",
                code="request_timeout",
                headers={"Connection": "close"},  # the rest of the body is never read
            )
            await late.response()(scope, receive, send)
            return
        gone = asyncio.Event()
        complete = False

        async def replay() -> Message:
            if body:
                return body.pop(0)
            await gone.wait()
            return {"type": "http.disconnect"}

        async def tracked(message: Message) -> None:
            nonlocal complete
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                complete = True

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        async def run() -> None:
            await self.app(scope, replay, tracked)

        route = asyncio.create_task(run())
        watcher = asyncio.create_task(watch())
        try:
            await asyncio.wait({route, watcher}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the server cuts this request (shutdown): cut the route
            route.cancel()
            watcher.cancel()
            await asyncio.wait({route})
            raise
        if not route.done() and not complete:
            # uvicorn also says "disconnect" once the response is complete; only a client that
            # left before that cancels the route.
            log.info(
                "moa serve: %s %s: the client went away; run cancelled",
                scope["method"],
                scope["path"],
            )
            route.cancel()
        await asyncio.wait({route})
        watcher.cancel()
        if not route.cancelled():
            route.result()  # a route's exception goes on to ShieldErrors
