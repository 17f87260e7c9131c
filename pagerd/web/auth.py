"""Authentication for ``/api/v1`` and ``/integrations`` (CONTRACT §4, §9).

Programs send ``Authorization: Bearer <token>``. On ``/integrations`` a service's
integration key does too, for that service only: as ``?key=`` (or a bearer token) on
the routes that name the service, and as the ``routing_key`` of a PagerDuty event,
which its handler checks, since only the body names the service there.

The console's browser signs in once with a token and from then on carries a session of
its own in the ``pagerd_session`` cookie (HttpOnly, SameSite=Strict, Secure when
``public_url`` is https), accepted for ``/api/v1`` only: a random id, kept in memory,
expiring, revoked at sign-out, never the token itself. A cookie request that changes
something must also come from the console's own origin, that of ``[http] public_url``,
since a cookie is sent by the browser whoever wrote the page that asks.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware
from yarl import URL

from pagerd.telemetry import metrics

log = structlog.get_logger("pagerd.auth")

PROTECTED_PREFIXES = ("/api/v1", "/integrations")
INTEGRATIONS_PREFIX = "/integrations/"
# Its credential may be in the body (routing_key): let through without a token, with
# request[AUTHENTICATED] False, for the handler to check.
PAGERDUTY_ENQUEUE = "/integrations/pagerduty/v2/enqueue"
# Whether the request showed a token or a console session (else: see PAGERDUTY_ENQUEUE).
AUTHENTICATED = web.RequestKey("pagerd.authenticated", bool)
COOKIE_PREFIX = "/api/v1"
SESSION_COOKIE = "pagerd_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# A session ends after this long unused (the console polls every 2 s while open), and
# in any case this long after sign-in; the cookie lives as long at most.
SESSION_IDLE_S = 12 * 3600.0
SESSION_MAX_AGE_S = 7 * 24 * 3600.0
MAX_SESSIONS = 10_000  # past it, the oldest session ends: memory stays bounded
# Failed sign-ins from one client address (an IPv6 /64, which one host may fill): this
# many within the window, and the next sign-in is refused until the oldest ages out.
SIGN_IN_FAILURES = 5
SIGN_IN_WINDOW_S = 60.0
MAX_CLIENTS = 10_000  # addresses whose failures are remembered
# Who a console session is when nobody gave a name at sign-in.
DEFAULT_PRINCIPAL = "console"
MAX_PRINCIPAL_CHARS = 100


def is_protected(path: str) -> bool:
    """Whether ``path`` needs a token."""
    return any(path == p or path.startswith(f"{p}/") for p in PROTECTED_PREFIXES)


def presented_token(request: web.Request) -> str | None:
    """The token the request carries: ``Authorization: Bearer``, or ``?key=`` on integrations
    (webhook senders such as Alertmanager or SNS cannot always set headers)."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if request.path.startswith(INTEGRATIONS_PREFIX):
        return request.query.get("key") or None
    return None


def session_id(request: web.Request) -> str | None:
    """The console session's id in the cookie, on the paths that accept it."""
    if request.path != COOKIE_PREFIX and not request.path.startswith(f"{COOKIE_PREFIX}/"):
        return None
    return request.cookies.get(SESSION_COOKIE) or None


def forbidden(detail: str) -> web.Response:
    """403 as ``application/problem+json`` (web.problem's shape; web imports this module)."""
    body = {"type": "about:blank", "title": "Forbidden", "status": 403, "detail": detail}
    return web.Response(
        status=403, body=json.dumps(body).encode(), content_type="application/problem+json"
    )


def token_matches(presented: str, tokens: Sequence[str]) -> bool:
    """Constant-time comparison against every configured token (no early exit)."""
    given = presented.encode()
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(given, token.encode())
    return matched


def client_key(request: web.Request) -> str:
    """Whom failed sign-ins are counted against: the peer's address, or its IPv6 /64."""
    remote = request.remote or "unknown"
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return remote
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


# --- sessions --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Session:
    started: float
    used: float
    principal: str  # who signed in: what the console's acknowledgements and notes record


class Sessions:
    """Console sessions: random ids kept in memory (a restart signs everyone out), each
    expiring when unused or old, revoked at sign-out.

    Ids are kept as their SHA-256, so a lookup's timing tells nothing of a real id.
    """

    def __init__(
        self,
        *,
        idle_s: float = SESSION_IDLE_S,
        max_age_s: float = SESSION_MAX_AGE_S,
        limit: int = MAX_SESSIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle_s = idle_s
        self.max_age_s = max_age_s
        self._limit = limit
        self._clock = clock
        self._sessions: OrderedDict[bytes, _Session] = OrderedDict()  # oldest first

    def create(self, principal: str = DEFAULT_PRINCIPAL) -> str:
        """A new session of ``principal``; its id, for the cookie."""
        new_id = secrets.token_urlsafe(32)
        now = self._clock()
        self._sessions[_digest(new_id)] = _Session(now, now, principal)
        while len(self._sessions) > self._limit:
            self._sessions.popitem(last=False)
        return new_id

    def valid(self, presented: str) -> bool:
        """Whether ``presented`` is a live session; using it keeps it from idling out."""
        return self.principal(presented) is not None

    def principal(self, presented: str) -> str | None:
        """Who signed in to the live session ``presented``, or None; using it keeps it
        from idling out."""
        key = _digest(presented)
        session = self._sessions.get(key)
        if session is None:
            return None
        now = self._clock()
        if now - session.used > self.idle_s or now - session.started > self.max_age_s:
            del self._sessions[key]
            return None
        session.used = now
        return session.principal

    def revoke(self, presented: str) -> None:
        """End the session (sign-out); an unknown id is no error."""
        self._sessions.pop(_digest(presented), None)

    def __len__(self) -> int:
        return len(self._sessions)


def _digest(session: str) -> bytes:
    return hashlib.sha256(session.encode()).digest()


@dataclass
class SignInLimiter:
    """Failed sign-ins per client: ``failures`` within ``window_s`` and the next is refused."""

    failures: int = SIGN_IN_FAILURES
    window_s: float = SIGN_IN_WINDOW_S
    clock: Callable[[], float] = time.monotonic
    _failed: OrderedDict[str, deque[float]] = field(default_factory=OrderedDict)

    def retry_after(self, client: str) -> float | None:
        """Seconds until ``client`` may try again, or None if it may now."""
        recent = self._recent(client)
        if recent is None or len(recent) < self.failures:
            return None
        return max(0.0, recent[0] + self.window_s - self.clock())

    def failed(self, client: str) -> bool:
        """Count a failure; True if it is the one that reaches the limit."""
        recent = self._recent(client)
        if recent is None:
            recent = self._failed[client] = deque(maxlen=self.failures)
            while len(self._failed) > MAX_CLIENTS:
                self._failed.popitem(last=False)
        recent.append(self.clock())
        return len(recent) == self.failures

    def _recent(self, client: str) -> deque[float] | None:
        recent = self._failed.get(client)
        if recent is None:
            return None
        horizon = self.clock() - self.window_s
        while recent and recent[0] <= horizon:
            recent.popleft()
        if not recent:
            del self._failed[client]
            return None
        return recent


# --- the console's side of authentication ------------------------------------------------------


@dataclass(frozen=True)
class ConsoleAuth:
    """What the console's sign-in and the cookie check share (kept in the app)."""

    origin: str  # of [http] public_url, as a browser writes it in Origin
    secure: bool  # public_url is https: the cookie is sent over TLS only
    sessions: Sessions = field(default_factory=Sessions)
    limiter: SignInLimiter = field(default_factory=SignInLimiter)

    @classmethod
    def for_public_url(cls, public_url: str) -> ConsoleAuth:
        url = URL(public_url)
        return cls(origin=str(url.origin()).lower(), secure=url.scheme == "https")

    def same_origin(self, request: web.Request) -> bool:
        """Whether the request's ``Origin`` header is the console's (absent: no)."""
        origin = request.headers.get("Origin")
        return origin is not None and origin.lower() == self.origin

    def set_cookie(self, response: web.StreamResponse, session: str) -> None:
        """Keep the session's id in the cookie, out of reach of scripts and other sites."""
        response.set_cookie(
            SESSION_COOKIE,
            session,
            path="/",
            httponly=True,
            samesite="Strict",
            secure=self.secure,
            max_age=int(self.sessions.max_age_s),
        )

    def clear_cookie(self, response: web.StreamResponse) -> None:
        """Make the browser forget the session cookie."""
        response.del_cookie(
            SESSION_COOKIE, path="/", httponly=True, samesite="Strict", secure=self.secure
        )


CONSOLE_AUTH = web.AppKey("pagerd.console_auth", ConsoleAuth)
# Who a console request comes from (the session's principal); absent on bearer requests.
PRINCIPAL = web.RequestKey("pagerd.principal", str)


def principal_of(request: web.Request) -> str | None:
    """The signed-in console user a request comes from, or None (a program's token)."""
    return request.get(PRINCIPAL)


# --- the middleware ----------------------------------------------------------------------------


def refuse(
    request: web.Request, reason: str, unauthorized: Callable[[str], web.StreamResponse]
) -> web.StreamResponse:
    """401 for ``reason``: counted, logged (never the credential), with WWW-Authenticate."""
    metrics.HTTP_UNAUTHORIZED.inc()
    log.warning("http.unauthorized", path=request.path, reason=reason)
    response = unauthorized(reason)
    response.headers["WWW-Authenticate"] = 'Bearer realm="pagerd"'
    return response


def bearer_auth(
    tokens: Sequence[str],
    unauthorized: Callable[[str], web.StreamResponse],
    service_of_key: Callable[[str], Awaitable[str | None]] | None = None,
) -> Middleware:
    """Middleware refusing protected paths without a configured token; 401 as ``unauthorized``.

    On ``/integrations`` routes naming a service, that service's integration key counts
    as a token (``service_of_key`` tells whose a key is). On ``/api/v1`` a console
    session's cookie counts too, once the console has put its ``ConsoleAuth`` in the
    app; with it, a method other than GET, HEAD or OPTIONS needs ``Origin`` equal to the
    console's origin, else 403.
    """
    configured = tuple(tokens)

    async def keyed(request: web.Request, presented: str) -> bool:
        service_id = request.match_info.get("service_id")
        if service_id is None or service_of_key is None:
            return False
        return await service_of_key(presented) == service_id

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not is_protected(request.path):
            return await handler(request)
        presented = presented_token(request)
        request[AUTHENTICATED] = True
        if presented is not None:
            if token_matches(presented, configured):
                return await handler(request)
            if not request.path.startswith(INTEGRATIONS_PREFIX):
                return refuse(request, "unknown token", unauthorized)
            if await keyed(request, presented):
                return await handler(request)
            service_id = request.match_info.get("service_id")
            whose = "an" if service_id is None else f"service {service_id!r}'s"
            reason = f"unknown key: neither an API token nor {whose} integration key"
            return refuse(request, reason, unauthorized)
        if request.path == PAGERDUTY_ENQUEUE:
            request[AUTHENTICATED] = False
            return await handler(request)
        session = session_id(request)
        console = request.app.get(CONSOLE_AUTH)
        if session is None or console is None:
            return refuse(request, "no token", unauthorized)
        principal = console.sessions.principal(session)
        if principal is None:
            reason = "the console session has expired or was signed out"
            return refuse(request, reason, unauthorized)
        if request.method not in SAFE_METHODS and not console.same_origin(request):
            log.warning("http.cross_origin", path=request.path, method=request.method)
            return forbidden(
                f"a signed-in console request must come from {console.origin}"
                " ([http] public_url) in its Origin header"
            )
        request[PRINCIPAL] = principal
        return await handler(request)

    return middleware
