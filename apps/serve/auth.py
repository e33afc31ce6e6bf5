"""Bearer-key auth: with ``MOA_SERVER_API_KEY`` set, every route but ``GET /health`` needs
``Authorization: Bearer <key>``; the key is compared in constant time.

Pure ASGI middleware, checked on the request's headers before anything reads its body: a client
without the key is answered 401 at once and never has the server read, buffer or wait for the
body it declares (up to ``--max-body`` per connection, for as long as it cares to trickle it).
"""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketClose

from langgraph_moa.apps.serve.errors import OpenAIError
from langgraph_moa.apps.serve.settings import KEY_ENV

CHALLENGE = {"WWW-Authenticate": "Bearer"}
OPEN = {("GET", "/health"), ("HEAD", "/health")}  # what load balancers probe without a key
POLICY_VIOLATION = 1008  # the websocket close code for a client without the key


class RequireKey:
    """401 in OpenAI's shape for a request without ``key`` (None: no auth, every request
    passes)."""

    def __init__(self, app: ASGIApp, key: str | None) -> None:
        self.app = app
        self.expected = key.encode() if key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Only the server's own start and stop go unchecked: a websocket needs the key too.
        if (
            scope["type"] == "lifespan"
            or self.expected is None
            or (scope["type"] == "http" and (scope["method"], scope["path"]) in OPEN)
        ):
            await self.app(scope, receive, send)
            return
        problem = self.problem(Headers(scope=scope).get("authorization", ""))
        if problem is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await WebSocketClose(POLICY_VIOLATION)(scope, receive, send)  # refused unaccepted
        else:
            await problem.response()(scope, receive, send)

    def problem(self, header: str) -> OpenAIError | None:
        assert self.expected is not None
        if not header:
            return OpenAIError(
                401,
                f"missing API key: send 'Authorization: Bearer <key>' (the server's {KEY_ENV})",
                code="missing_api_key",
                headers=CHALLENGE,
            )
        scheme, _, token = header.partition(" ")
        # compare_digest takes as long whatever the first differing byte: no timing oracle.
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), self.expected
        ):
            return OpenAIError(401, "invalid API key", code="invalid_api_key", headers=CHALLENGE)
        return None
