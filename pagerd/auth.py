"""Bearer-token authentication for ``/api/v1`` and ``/integrations`` (CONTRACT §4)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

from pagerd import metrics

log = structlog.get_logger("pagerd.auth")

PROTECTED_PREFIXES = ("/api/v1", "/integrations")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_protected(path: str) -> bool:
    """Whether ``path`` needs a token."""
    return any(path == p or path.startswith(f"{p}/") for p in PROTECTED_PREFIXES)


def presented_token(request: web.Request) -> str | None:
    """The token the request carries: ``Authorization: Bearer``, or ``?key=`` on integrations
    (webhook senders such as Alertmanager or SNS cannot always set headers)."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if request.path.startswith("/integrations/"):
        return request.query.get("key") or None
    return None


def token_matches(presented: str, tokens: Sequence[str]) -> bool:
    """Constant-time comparison against every configured token (no early exit)."""
    given = presented.encode()
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(given, token.encode())
    return matched


def bearer_auth(
    tokens: Sequence[str], unauthorized: Callable[[str], web.StreamResponse]
) -> Middleware:
    """Middleware refusing protected paths without a configured token; 401 as ``unauthorized``."""
    configured = tuple(tokens)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not is_protected(request.path):
            return await handler(request)
        presented = presented_token(request)
        if presented is None or not token_matches(presented, configured):
            reason = "no token" if presented is None else "unknown token"
            metrics.HTTP_UNAUTHORIZED.inc()
            log.warning("http.unauthorized", path=request.path, reason=reason)  # never the token
            response = unauthorized(reason)
            response.headers["WWW-Authenticate"] = 'Bearer realm="pagerd"'
            return response
        return await handler(request)

    return middleware
