"""The web console: static files served at ``/``, and sign-in and sign-out.

The console is plain ES modules in ``pagerd/web/console/`` (no build step) that use
the JSON API under ``/api/v1`` like any other client; it has no write path of its
own. Signing in with an API token starts a console session (``pagerd.web.auth``):
its random id, never the token, goes in an HttpOnly, SameSite=Strict cookie, which
``auth`` accepts for ``/api/v1`` (see there for the Origin check). Failed sign-ins
are counted per client address, and past a few a minute answered 429.
"""

from __future__ import annotations

import math
import mimetypes
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

import msgspec
from aiohttp import web

from pagerd.config import Config
from pagerd.telemetry import metrics
from pagerd.telemetry.logs import get_logger
from pagerd.web import auth
from pagerd.web.server import problem

log = get_logger(__name__)

STATIC_DIR = Path(__file__).parent / "console"
_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}

# Scripts and styles come from files only (no inline code): an injected string can
# never run, whatever the API gives back.
CONSOLE_HEADERS = {
    "Cache-Control": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self';"
    " img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none';"
    " base-uri 'none'",
}


@dataclass(frozen=True, slots=True)
class StaticFile:
    """A file of the console, read once at start-up."""

    body: bytes
    content_type: str


class SignIn(msgspec.Struct, forbid_unknown_fields=True):
    token: str
    name: str = ""  # who signs in, recorded on acknowledgements and notes


def load_static(directory: Path = STATIC_DIR) -> dict[str, StaticFile]:
    """Every file of the console directory by name (no subdirectories: nothing to traverse)."""
    files: dict[str, StaticFile] = {}
    for path in sorted(directory.iterdir()):
        if not path.is_file():
            continue
        kind = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
        files[path.name] = StaticFile(path.read_bytes(), kind or "application/octet-stream")
    return files


def add_console_routes(app: web.Application, *, config: Config) -> None:
    """Serve the console at ``/`` and ``/console/*``, with sign-in and sign-out; from now
    on the app's auth middleware accepts console sessions."""
    app[auth.CONSOLE_AUTH] = auth.ConsoleAuth.for_public_url(config.http.public_url)
    console = _Console(load_static(), tuple(config.http_tokens()))
    app.router.add_get("/", console.index)
    app.router.add_post("/console/sign-in", console.sign_in)
    app.router.add_post("/console/sign-out", console.sign_out)
    app.router.add_get("/console/{name}", console.static)


class _Console:
    def __init__(self, files: Mapping[str, StaticFile], tokens: Sequence[str]) -> None:
        self.files = files
        self.tokens = tokens

    async def index(self, _: web.Request) -> web.Response:
        return self._file("index.html")

    async def static(self, request: web.Request) -> web.Response:
        return self._file(request.match_info["name"])

    def _file(self, name: str) -> web.Response:
        found = self.files.get(name)
        if found is None:
            raise web.HTTPNotFound
        response = web.Response(body=found.body, headers=CONSOLE_HEADERS)
        response.content_type = found.content_type
        if found.content_type.startswith("text/"):
            response.charset = "utf-8"
        return response

    async def sign_in(self, request: web.Request) -> web.Response:
        """Check the token and start a session in the cookie; 204, or a problem."""
        console = request.app[auth.CONSOLE_AUTH]
        if not console.same_origin(request):
            # Else another site could sign a browser in with a token of its choosing.
            return auth.forbidden(f"sign in from {console.origin} ([http] public_url)")
        client = auth.client_key(request)
        wait = console.limiter.retry_after(client)
        if wait is not None:
            metrics.CONSOLE_SIGN_INS.labels(outcome="limited").inc()
            seconds = str(max(1, math.ceil(wait)))
            detail = f"too many failed sign-ins from your address; try again in {seconds} s"
            return problem(429, "Too Many Requests", detail, headers={"Retry-After": seconds})
        presented = await _presented(request)
        if presented is None:
            return problem(422, "Unprocessable Content", "token: is required")
        token, name = presented
        if len(name) > auth.MAX_PRINCIPAL_CHARS:
            detail = f"name: must be at most {auth.MAX_PRINCIPAL_CHARS} characters"
            return problem(422, "Unprocessable Content", detail)
        if not auth.token_matches(token, self.tokens):
            metrics.CONSOLE_SIGN_INS.labels(outcome="refused").inc()
            limited = console.limiter.failed(client)
            log.warning("console.sign_in_refused", client=client, limited=limited)  # no token
            return problem(401, "Unauthorized", "token: not a token of this pagerd")
        session = console.sessions.create(name or auth.DEFAULT_PRINCIPAL)
        metrics.CONSOLE_SIGN_INS.labels(outcome="signed_in").inc()
        log.info("console.signed_in", client=client, sessions=len(console.sessions), name=name)
        response = web.Response(status=204, headers={"Cache-Control": "no-store"})
        console.set_cookie(response, session)
        return response

    async def sign_out(self, request: web.Request) -> web.Response:
        """End the cookie's session and clear the cookie; 204."""
        console = request.app[auth.CONSOLE_AUTH]
        if not console.same_origin(request):
            return auth.forbidden(f"sign out from {console.origin} ([http] public_url)")
        session = request.cookies.get(auth.SESSION_COOKIE)
        if session:
            console.sessions.revoke(session)
            log.info("console.signed_out", client=auth.client_key(request))
        response = web.Response(status=204, headers={"Cache-Control": "no-store"})
        console.clear_cookie(response)
        return response


async def _presented(request: web.Request) -> tuple[str, str] | None:
    """The token and name (blank if none) of a JSON or form body; None if it has no token."""
    raw = await request.read()  # past [http] max_body_bytes: 413
    if request.content_type == "application/x-www-form-urlencoded":
        form = parse_qs(raw.decode(errors="replace"))
        token = next(iter(form.get("token", [])), "")
        name = next(iter(form.get("name", [])), "")
    else:
        try:
            body = msgspec.json.decode(raw, type=SignIn)
        except msgspec.DecodeError:  # includes ValidationError
            return None
        token, name = body.token, body.name
    token = token.strip()
    return (token, " ".join(name.split())) if token else None
