"""HTTP limits (CONTRACT §9): the request deadline, the connection cap, the descriptors kept.

The first tests serve a small aiohttp application through ``start_http`` and talk
raw HTTP/1.1 to it over sockets; the last run pagerd as a process.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import resource
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import structlog
from aiohttp import web

from pagerd.telemetry import metrics
from pagerd.web.limits import (
    MAX_CONNECTIONS,
    HttpLimits,
    connection_budget,
    descriptor_reserve,
    raise_descriptor_limit,
)
from pagerd.web.server import HttpServer, start_http
from tests.conftest import PagerdFactory
from tests.harness import (
    API_TOKEN,
    Monitor,
    Policy,
    SmsStandIn,
    descriptors_exhausted,
    eventually,
    sms,
)

TIMEOUT_S = 0.5
# How late a cut may come on a busy two-core machine; it must never come early.
LATE_S = 0.4
SLOW_HANDLER_S = 1.2  # longer than TIMEOUT_S: pagerd's own time never counts
LIMITS = HttpLimits(request_timeout_s=TIMEOUT_S, max_connections=3)
ONE = "+15550000001"


@dataclass
class Served:
    http: HttpServer
    port: int
    bodies: list[int]  # body sizes /echo read whole
    cut_mid_body: list[str]  # requests whose client went away mid-body

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)


@contextlib.asynccontextmanager
async def served(limits: HttpLimits = LIMITS) -> AsyncIterator[Served]:
    bodies: list[int] = []
    cut: list[str] = []

    async def quick(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(SLOW_HANDLER_S)
        return web.Response(text="done")

    async def echo(request: web.Request) -> web.Response:
        try:
            body = await request.read()
        except ConnectionResetError:
            cut.append(request.path)
            raise
        bodies.append(len(body))
        return web.Response(text=str(len(body)))

    app = web.Application()
    app.router.add_get("/quick", quick)
    app.router.add_get("/slow", slow)
    app.router.add_post("/echo", echo)
    http = await start_http(app, "127.0.0.1", 0, limits=limits)
    try:
        yield Served(http, int(http.addresses[0][1]), bodies, cut)
    finally:
        await http.cleanup()


async def read_until_closed(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    """Everything the server sends until it closes (a reset after data counts as closed)."""
    data = b""
    async with asyncio.timeout(timeout):
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One response with a Content-Length: its head and its body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head, await reader.readexactly(length)


def counted(counter: object) -> float:
    return float(counter._value.get())  # type: ignore[attr-defined]


# --- the request deadline ----------------------------------------------------------------


async def test_a_client_sending_headers_slowly_is_cut_at_the_request_timeout() -> None:
    """Given a client that sends a header line every 50 ms, then it is answered 408 and
    disconnected request_timeout_s after it connected, though it never went quiet."""
    headers_cut = metrics.HTTP_TIMEOUTS.labels(waiting_for="headers")
    before = counted(headers_cut)
    async with served() as site:
        reader, writer = await site.connect()
        connected = time.monotonic()
        writer.write(b"GET /quick HTTP/1.1\r\nHost: test\r\n")

        async def dribble() -> None:
            for n in range(1000):
                await asyncio.sleep(0.05)
                writer.write(f"X-Slow-{n}: 1\r\n".encode())

        dribbling = asyncio.create_task(dribble())
        answer = await read_until_closed(reader)
        cut_after = time.monotonic() - connected
        dribbling.cancel()
        writer.close()

    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
    assert b"within 0.5 s" in answer
    assert TIMEOUT_S <= cut_after < TIMEOUT_S + LATE_S, cut_after
    assert counted(headers_cut) == before + 1


async def test_a_client_sending_its_body_slowly_is_cut_counted_from_the_connection() -> None:
    """Given whole headers after 0.2 s, then a body trickling in, then the client is cut at
    request_timeout_s from the connection (not from its headers), and the handler reading
    the body learns that its client is gone."""
    async with served() as site:
        reader, writer = await site.connect()
        connected = time.monotonic()
        await asyncio.sleep(0.2)
        writer.write(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n")

        async def dribble() -> None:
            for _ in range(100):
                writer.write(b"x")
                await asyncio.sleep(0.05)

        dribbling = asyncio.create_task(dribble())
        answer = await read_until_closed(reader)
        cut_after = time.monotonic() - connected
        dribbling.cancel()
        writer.close()
        await eventually(lambda: site.cut_mid_body == ["/echo"], what="the handler told")

    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
    assert TIMEOUT_S <= cut_after < TIMEOUT_S + LATE_S, cut_after
    assert site.bodies == []


async def test_an_idle_kept_alive_connection_is_cut_request_timeout_after_its_last_response() -> (
    None
):
    """Given a request sent 0.3 s after connecting and answered, then the connection is
    closed request_timeout_s after that response (not after the accept), silently."""
    idle_cut = metrics.HTTP_TIMEOUTS.labels(waiting_for="request")
    before = counted(idle_cut)
    async with served() as site:
        reader, writer = await site.connect()
        connected = time.monotonic()
        await asyncio.sleep(0.3)
        writer.write(b"GET /quick HTTP/1.1\r\nHost: test\r\n\r\n")
        head, body = await read_response(reader)
        answered = time.monotonic()
        rest = await read_until_closed(reader)
        closed = time.monotonic()
        writer.close()

    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert body == b"ok"
    assert rest == b""  # nothing was asked: nothing to answer
    assert TIMEOUT_S <= closed - answered < TIMEOUT_S + LATE_S, closed - answered
    assert closed - connected >= 0.3 + TIMEOUT_S
    assert counted(idle_cut) == before + 1


async def test_a_request_in_hand_is_answered_however_long_pagerd_takes() -> None:
    """Given a whole request whose handler takes longer than request_timeout_s, then it is
    answered in full, and the deadline starts again at the end of the answer."""
    async with served() as site:
        reader, writer = await site.connect()
        writer.write(b"GET /slow HTTP/1.1\r\nHost: test\r\n\r\n")
        head, body = await read_response(reader)
        answered = time.monotonic()
        rest = await read_until_closed(reader)
        idle_for = time.monotonic() - answered
        writer.close()

    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert body == b"done"
    assert rest == b""
    assert TIMEOUT_S <= idle_for < TIMEOUT_S + LATE_S, idle_for


async def test_a_whole_body_in_time_is_read_and_answered() -> None:
    async with served() as site:
        reader, writer = await site.connect()
        writer.write(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n\r\nhello")
        head, body = await read_response(reader)
        writer.close()

    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert (body, site.bodies) == (b"5", [5])


# --- the connection cap ------------------------------------------------------------------


async def test_the_connection_past_max_connections_is_closed_at_once_while_the_first_work() -> None:
    """Given max_connections = 3 connections open and idle, then a fourth is answered 503
    and closed at once; the three still answer requests; and once one of them is closed,
    a new connection is admitted."""
    refused = counted(metrics.HTTP_CONNECTIONS_REFUSED)
    async with served() as site:
        first = [await site.connect() for _ in range(3)]
        await eventually(lambda: site.http.gate.open == 3, what="three admitted")
        reader, writer = await site.connect()
        knocked = time.monotonic()
        answer = await read_until_closed(reader)
        refused_in = time.monotonic() - knocked
        writer.close()
        for first_reader, first_writer in first:
            first_writer.write(b"GET /quick HTTP/1.1\r\nHost: test\r\n\r\n")
            head, body = await read_response(first_reader)
            assert (head[:15], body) == (b"HTTP/1.1 200 OK", b"ok")
        first[0][1].close()
        await eventually(lambda: site.http.gate.open == 2, what="one closed")
        reader, writer = await site.connect()
        writer.write(b"GET /quick HTTP/1.1\r\nHost: test\r\n\r\n")
        head, _ = await read_response(reader)
        for _, other in (*first[1:], (reader, writer)):
            other.close()

    assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), answer
    assert b"Retry-After: 1\r\n" in answer
    assert b"3 connections open" in answer
    assert refused_in < 0.2, refused_in
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert counted(metrics.HTTP_CONNECTIONS_REFUSED) == refused + 1


# --- descriptors -------------------------------------------------------------------------


@contextlib.contextmanager
def soft_descriptor_limit(soft: int) -> Iterator[int]:
    """This process's soft RLIMIT_NOFILE at ``soft`` for the block; yields the hard limit."""
    before, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        yield hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (before, hard))


def test_max_connections_is_lowered_to_keep_the_reserve_within_the_soft_limit() -> None:
    limits = HttpLimits(max_connections=1000, reserved_descriptors=300)
    with structlog.testing.capture_logs() as logs, soft_descriptor_limit(800):
        lowered = connection_budget(limits)
        kept = connection_budget(HttpLimits(max_connections=400, reserved_descriptors=300))

    assert (lowered, kept) == (500, 400)
    (warning,) = logs
    assert warning["event"] == "http.max_connections_lowered"
    assert (warning["configured"], warning["max_connections"]) == (1000, 500)
    assert (warning["soft_limit"], warning["reserved"]) == (800, 300)


def test_the_soft_descriptor_limit_is_raised_to_the_hard_limit() -> None:
    with structlog.testing.capture_logs() as logs, soft_descriptor_limit(512) as hard:
        raised = raise_descriptor_limit()
        now = resource.getrlimit(resource.RLIMIT_NOFILE)

    assert raised == hard
    assert now == (hard, hard)
    assert logs == [
        {
            "event": "pagerd.descriptors",
            "log_level": "info",
            "soft_limit": hard,
            "hard_limit": hard,
            "raised_from": 512,
        }
    ]


def test_the_unit_gives_pagerd_descriptors_for_every_connection_and_send() -> None:
    """systemd's default soft limit is 1,024: pagerd would lower max_connections at once."""
    unit = (Path(__file__).resolve().parents[1] / "pagerd.service").read_text()
    (value,) = re.findall(r"^LimitNOFILE=(\d+)$", unit, flags=re.MULTILINE)
    reserve = descriptor_reserve(outgoing=2 * 100 + 1000)  # two pools, most SMTP workers

    assert int(value) >= MAX_CONNECTIONS + reserve


async def test_failed_accepts_are_counted_and_logged_once_not_per_try() -> None:
    """Given the process out of descriptors while clients connect, then asyncio's failed
    accepts (up to its backlog a turn) are counted and logged once, without a traceback,
    and the clients are served once descriptors are back."""
    limits = HttpLimits(request_timeout_s=30, max_connections=100, reserved_descriptors=0)
    emfile = metrics.HTTP_ACCEPT_ERRORS.labels(errno="EMFILE")
    before = counted(emfile)
    async with served(limits) as site:
        with structlog.testing.capture_logs() as logs:
            # Blocking connects: the loop takes no turn, so nothing is accepted yet.
            clients = [socket.create_connection(("127.0.0.1", site.port)) for _ in range(3)]
            with descriptors_exhausted():
                await eventually(lambda: counted(emfile) > before, what="a failed accept")
                await asyncio.sleep(0.1)  # more turns of the loop, more failed tries
            # asyncio tries again a second later.
            await eventually(lambda: site.http.gate.open == 3, what="accepted after", timeout=5)
        for client in clients:
            client.close()

    failed = [line for line in logs if line["event"] == "http.accept_failed"]
    assert len(failed) == 1, failed
    assert failed[0]["errno"] == "EMFILE"
    assert "exc_info" not in failed[0]


# --- end to end: pagerd as a process ----------------------------------------------------

# Headers that never end: what each of the 1,100 connections of the report sent.
HALF_REQUEST = b"POST /api/v1/alerts HTTP/1.1\r\nHost: pagerd\r\nContent-Length: 100\r\n"


async def scrape(base_url: str, timeout: float = 5.0) -> str:
    """/metrics, once pagerd admits a connection again (the test's own just closed)."""
    async with asyncio.timeout(timeout), aiohttp.ClientSession() as http:
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{base_url}/metrics") as response:
                    if response.status == 200:
                        return await response.text()
            await asyncio.sleep(0.05)


def sample(text: str, name: str) -> float:
    """The value of the sample ``name`` (with its labels, as written) in Prometheus text."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name}")


async def test_half_requests_past_the_descriptor_limit_do_not_delay_a_page(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """The report's scenario, scaled down: pagerd under a 400-descriptor limit (as a unit's
    LimitNOFILE sets it), 500 connections that each sent half a request, then an alert.
    The page arrives at once, no send failed for want of a descriptor, and the log stays
    a few dozen lines (it was 30,000 lines of tracebacks in 14 s)."""
    daemon = make_pagerd([Policy("p", [(60.0, [sms(ONE)])])], {"api": "p"}, descriptor_limit=400)
    await daemon.start()
    held: list[asyncio.StreamWriter] = []
    for _ in range(500):
        try:
            async with asyncio.timeout(1):
                _, writer = await asyncio.open_connection("127.0.0.1", daemon.http_port)
        except TimeoutError:
            break  # the listening queue is full: pagerd accepts nothing any more
        writer.write(HALF_REQUEST)
        held.append(writer)

    published = time.monotonic()
    await monitor.publish("alert", "api", "down")
    await eventually(lambda: len(sms_service.pages) == 1, timeout=10, what="the page")
    page_after = sms_service.pages[0].at - published
    for writer in held:
        writer.close()
    text = await scrape(daemon.base_url)

    assert len(held) == 500
    assert page_after < 1.0, page_after
    assert sample(text, "pagerd_http_connections_refused_total") >= 500 - 400
    log = daemon.log.read_text()
    assert "Too many open files" not in log
    assert "EMFILE" not in log
    events = [line["event"] for line in daemon.log_events()]
    assert "http.max_connections_lowered" in events
    assert not {"notification.retrying", "notification.failed"} & set(events)
    assert len(events) < 40, events


async def test_pagerd_cuts_slow_clients_and_refuses_connections_as_configured(
    make_pagerd: PagerdFactory, sms_service: SmsStandIn
) -> None:
    """Given [http] request_timeout_s = 0.5 and max_connections = 3, then a fourth
    connection is refused at once, and three API requests whose bodies never finish are
    each answered 408 at 0.5 s, counted by what was missing, with no failure logged."""
    daemon = make_pagerd(
        [Policy("p", [(60.0, [sms(ONE)])])],
        {"api": "p"},
        http={"request_timeout_s": TIMEOUT_S, "max_connections": 3},
    )
    await daemon.start()
    first = [await asyncio.open_connection("127.0.0.1", daemon.http_port) for _ in range(3)]
    connected = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", daemon.http_port)
    refusal = await read_until_closed(reader)
    writer.close()
    for _, writer in first:
        writer.write(
            b"POST /api/v1/services/api/alerts HTTP/1.1\r\nHost: pagerd\r\n"
            + f"Authorization: Bearer {API_TOKEN}\r\n".encode()
            + b"Content-Type: application/json\r\n"
            + b'Content-Length: 100\r\n\r\n{"message": "half a'
        )
    answers = [await read_until_closed(reader) for reader, _ in first]
    cut_after = time.monotonic() - connected
    for _, writer in first:
        writer.close()
    text = await scrape(daemon.base_url)

    assert refusal.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), refusal
    assert all(a.startswith(b"HTTP/1.1 408 Request Timeout\r\n") for a in answers), answers
    assert TIMEOUT_S - 0.05 <= cut_after < TIMEOUT_S + LATE_S, cut_after
    assert sample(text, 'pagerd_http_timeouts_total{waiting_for="body"}') == 3
    assert sample(text, "pagerd_http_connections_refused_total") == 1
    assert sample(text, "pagerd_http_max_connections") == 3
    events = [line["event"] for line in daemon.log_events()]
    assert "http.request_timeout" in events
    assert "http.failed" not in events
    assert sms_service.pages == []
