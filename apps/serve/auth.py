"""Bearer-key auth: with ``MOA_SERVER_API_KEY`` set, every route but ``GET /health`` needs
``Authorization: Bearer <key>``. A FastAPI dependency, added to each router (OpenAI routes,
LangServe routes); the key is compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from fastapi import Request

from langgraph_moa.apps.serve.errors import OpenAIError

KEY_ENV = "MOA_SERVER_API_KEY"
CHALLENGE = {"WWW-Authenticate": "Bearer"}


def bearer_auth(key: str | None) -> Callable[[Request], Awaitable[None]]:
    """The dependency for ``key`` (None: no auth, every request passes)."""
    expected = key.encode() if key else None

    async def check(request: Request) -> None:
        if expected is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            raise OpenAIError(
                401,
                f"missing API key: send 'Authorization: Bearer <key>' (the server's {KEY_ENV})",
                code="missing_api_key",
                headers=CHALLENGE,
            )
        # compare_digest takes as long whatever the first differing byte: no timing oracle.
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
            raise OpenAIError(401, "invalid API key", code="invalid_api_key", headers=CHALLENGE)

    return check
