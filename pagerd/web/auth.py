"""Token authentication for ``/api/v1`` and ``/integrations`` (CONTRACT §4).

Programs send ``Authorization: Bearer``. The console's browser sends the same token
in the ``pagerd_session`` cookie (HttpOnly, SameSite=Strict), accepted for ``/api/v1``
only; a cookie request that changes something must also come from our own origin,
since a cookie is sent by the browser whoever wrote the page that asks.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Sequence

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

from pagerd.telemetry import metrics

log = structlog.get_logger("pagerd.auth")

PROTECTED_PREFIXES = ("/api/v1", "/integrations")
COOKIE_PREFIX = "/api/v1"
SESSION_COOKIE = "pagerd_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
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


def session_token(request: web.Request) -> str | None:
    """The token of the console's session cookie, on the paths that accept it."""
    if request.path != COOKIE_PREFIX and not request.path.startswith(f"{COOKIE_PREFIX}/"):
        return None
    return request.cookies.get(SESSION_COOKIE) or None


def own_origin(request: web.Request) -> str:
    """``scheme://host[:port]`` of this request, as a browser writes it in ``Origin``."""
    return f"{request.scheme}://{request.host}".lower()


def same_origin(request: web.Request) -> bool:
    """Whether the request's ``Origin`` header names this server (absent: no)."""
    origin = request.headers.get("Origin")
    return origin is not None and origin.lower() == own_origin(request)


def forbidden(detail: str) -> web.Response:
    """403 as ``application/problem+json`` (web.problem's shape; web imports this module)."""
    body = {"type": "about:blank", "title": "Forbidden", "status": 403, "detail": detail}
    return web.Response(
        status=403, body=json.dumps(body).encode(), content_type="application/problem+json"
    )


def set_session(response: web.StreamResponse, request: web.Request, token: str) -> None:
    """Keep ``token`` in the session cookie, out of reach of scripts and other sites."""
    response.set_cookie(
        SESSION_COOKIE,
        token,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )


def clear_session(response: web.StreamResponse, request: web.Request) -> None:
    """Make the browser forget the session cookie."""
    response.del_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="Strict", secure=request.secure
    )


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
    """Middleware refusing protected paths without a configured token; 401 as ``unauthorized``.

    The session cookie counts on ``/api/v1``; with it, a method other than GET, HEAD
    or OPTIONS needs ``Origin`` equal to our own origin, else 403.
    """
    configured = tuple(tokens)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not is_protected(request.path):
            return await handler(request)
        presented = presented_token(request)
        by_cookie = False
        if presented is None:
            presented = session_token(request)
            by_cookie = presented is not None
        if presented is None or not token_matches(presented, configured):
            reason = "no token" if presented is None else "unknown token"
            metrics.HTTP_UNAUTHORIZED.inc()
            log.warning("http.unauthorized", path=request.path, reason=reason)  # never the token
            response = unauthorized(reason)
            response.headers["WWW-Authenticate"] = 'Bearer realm="pagerd"'
            return response
        if by_cookie and request.method not in SAFE_METHODS and not same_origin(request):
            log.warning("http.cross_origin", path=request.path, method=request.method)
            return forbidden(
                f"a signed-in console request must come from {own_origin(request)} (Origin header)"
            )
        return await handler(request)

    return middleware
