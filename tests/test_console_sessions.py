"""Console sessions (CONTRACT §9, issue 13 point 5): a real pagerd and a plain HTTP client.

Sign-in starts a session of its own (never the token in the cookie), sign-out revokes
it, failed sign-ins are limited per client address, and the cookie's Secure flag and
the Origin check follow ``[http] public_url``. Expiry is tested on ``Sessions`` with a
clock the test drives.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from typing import Any

import aiohttp
import pytest

from pagerd.web.auth import SIGN_IN_FAILURES, SIGN_IN_WINDOW_S, Sessions, SignInLimiter
from tests.conftest import PagerdFactory
from tests.harness import API_TOKEN, Pagerd

TOKEN = API_TOKEN
PUBLIC_URL = "https://pager.example.com"


def session_of(response: aiohttp.ClientResponse) -> Any:
    cookie: SimpleCookie = SimpleCookie()
    for header in response.headers.getall("Set-Cookie", []):
        cookie.load(header)
    return cookie.get("pagerd_session")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # No cookie jar: each request carries exactly the cookie the test gives it.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client:
        yield client


async def sign_in(
    http: aiohttp.ClientSession, daemon: Pagerd, token: str, origin: str | None = None
) -> tuple[int, Any, aiohttp.ClientResponse]:
    headers = {"Origin": origin or daemon.base_url}
    async with http.post(
        f"{daemon.base_url}/console/sign-in", json={"token": token}, headers=headers
    ) as response:
        body = await response.json(content_type=None) if response.status != 204 else None
        return response.status, body, response


def cookie(value: str) -> dict[str, str]:
    return {"Cookie": f"pagerd_session={value}"}


async def status_of(http: aiohttp.ClientSession, method: str, url: str, **options: Any) -> int:
    async with http.request(method, url, **options) as response:
        return response.status


async def test_sign_in_starts_a_session_of_its_own_and_sign_out_revokes_it(
    make_pagerd: PagerdFactory, http: aiohttp.ClientSession
) -> None:
    """Given two sign-ins, then each cookie holds a new random id, not the token; when one
    signs out, its cookie no longer opens the API while the other's still does."""
    daemon = make_pagerd([], {})
    await daemon.start()
    services = f"{daemon.base_url}/api/v1/services"

    first, second = (await sign_in(http, daemon, TOKEN))[2], (await sign_in(http, daemon, TOKEN))[2]
    one, two = session_of(first).value, session_of(second).value

    assert TOKEN not in (one, two)
    assert one != two
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", one)  # 32 random bytes
    assert session_of(first)["max-age"] == str(7 * 24 * 3600)
    assert await status_of(http, "GET", services, headers=cookie(one)) == 200
    assert await status_of(http, "GET", services, headers=cookie(TOKEN)) == 401  # not a session

    sign_out = f"{daemon.base_url}/console/sign-out"
    headers = cookie(one) | {"Origin": daemon.base_url}
    assert await status_of(http, "POST", sign_out, headers=headers) == 204

    async with http.get(services, headers=cookie(one)) as response:
        assert response.status == 401
        assert "signed out" in (await response.json())["detail"]
    assert await status_of(http, "GET", services, headers=cookie(two)) == 200


async def test_failed_sign_ins_are_limited_per_client_address(
    make_pagerd: PagerdFactory, http: aiohttp.ClientSession
) -> None:
    """Given five wrong tokens from one address within a minute, then the sixth sign-in,
    even with the right token, is a 429 with Retry-After; another address still signs in,
    and the refusals are counted."""
    daemon = make_pagerd([], {})
    await daemon.start()

    for _ in range(SIGN_IN_FAILURES):
        status, body, _ = await sign_in(http, daemon, "guess")
        assert status == 401, body
    status, body, response = await sign_in(http, daemon, TOKEN)

    assert status == 429, body
    assert 1 <= int(response.headers["Retry-After"]) <= SIGN_IN_WINDOW_S
    assert "too many failed sign-ins" in body["detail"]
    # Another client address (any of 127.0.0.0/8 reaches a 127.0.0.1 listener).
    other = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=other) as elsewhere:
        assert (await sign_in(elsewhere, daemon, TOKEN))[0] == 204
    async with http.get(f"{daemon.base_url}/metrics") as metrics:
        text = await metrics.text()
    assert 'pagerd_console_sign_ins_total{outcome="limited"} 1.0' in text
    assert f'pagerd_console_sign_ins_total{{outcome="refused"}} {SIGN_IN_FAILURES}.0' in text
    refused = [e for e in daemon.log_events() if e["event"] == "console.sign_in_refused"]
    assert [e["limited"] for e in refused] == [False] * (SIGN_IN_FAILURES - 1) + [True]


async def test_an_https_public_url_makes_the_cookie_secure_and_is_the_only_origin(
    make_pagerd: PagerdFactory, http: aiohttp.ClientSession
) -> None:
    """Given public_url https://pager.example.com (TLS ended by a proxy in front), then
    the cookie is Secure, and sign-in and cookie writes need that Origin: the request's
    own scheme and host no longer count."""
    daemon = make_pagerd([], {}, public_url=PUBLIC_URL)
    await daemon.start()

    status, body, _ = await sign_in(http, daemon, TOKEN, origin=daemon.base_url)
    assert status == 403, body
    assert PUBLIC_URL in body["detail"]
    status, _, response = await sign_in(http, daemon, TOKEN, origin=PUBLIC_URL)
    assert status == 204
    morsel = session_of(response)
    assert morsel["secure"] is True

    url = f"{daemon.base_url}/api/v1/policies/web"
    policy = {"levels": [{"targets": [{"type": "sms", "phone_number": "+15550000001"}]}]}
    own = cookie(morsel.value) | {"Origin": daemon.base_url}
    public = cookie(morsel.value) | {"Origin": PUBLIC_URL}
    assert await status_of(http, "PUT", url, json=policy, headers=own) == 403
    assert await status_of(http, "PUT", url, json=policy, headers=public) == 201


# --- sessions and the limiter, on a driven clock ---------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_expires_when_unused_and_when_old() -> None:
    clock = Clock()
    sessions = Sessions(idle_s=60, max_age_s=300, clock=clock)
    kept, idle = sessions.create(), sessions.create()

    for _ in range(4):  # used every 50 s: never idle
        clock.now += 50
        assert sessions.valid(kept)
    assert not sessions.valid(idle)  # 200 s unused
    clock.now += 101
    assert not sessions.valid(kept)  # 301 s after sign-in, in use or not
    assert len(sessions) == 0
    assert not sessions.valid("made-up")


def test_past_the_limit_the_oldest_session_ends() -> None:
    sessions = Sessions(limit=2, clock=Clock())
    first, second, third = sessions.create(), sessions.create(), sessions.create()

    assert [sessions.valid(s) for s in (first, second, third)] == [False, True, True]


def test_the_limiter_forgets_failures_as_they_age_out() -> None:
    clock = Clock()
    limiter = SignInLimiter(failures=3, window_s=60, clock=clock)

    assert [limiter.failed("a"), limiter.failed("a")] == [False, False]
    clock.now += 30
    assert limiter.failed("a") is True
    assert limiter.retry_after("a") == pytest.approx(30)
    assert limiter.retry_after("b") is None
    clock.now += 30
    assert limiter.retry_after("a") is None  # the first two aged out
    clock.now += 30
    assert limiter.retry_after("a") is None
