"""Shared parts of the benchmarks: the machine, pagerd set up for load, helper processes.

The SMS stand-in, the publisher and the bare subscriber each run in a process of
their own, so that none of them competes with the measuring process's event loop.
They are started with ``spawn`` (a clean interpreter), and the time they report is
``time.monotonic()``: CLOCK_MONOTONIC is one clock for every process of the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import re
import select
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from asyncio import StreamReader, StreamWriter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import aiomqtt
from aiohttp import web

from pagerd.store.sqlite import Store
from tests.harness import Mosquitto, Pagerd, Policy, SmsStandIn, free_port, sms, sqlite_rows
from tests.mqtt_wire import CONNACK_OK, connect_packet, publish_packet

CTX = multiprocessing.get_context("spawn")
PREFIX = "pagerd"
PHONE = "+15550001111"
POLICY_ID = "bench"
# One level, a timeout far past the run, one SMS target: each incident pages exactly once.
BENCH_POLICY = Policy(POLICY_ID, [(900.0, [sms(PHONE)])])
HELPER_START_TIMEOUT_S = 30.0


# --- what is printed ------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def mosquitto_version() -> str:
    """``mosquitto version 2.0.11`` → ``2.0.11``."""
    binary = "/usr/sbin/mosquitto"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            [binary, "-h"], capture_output=True, text=True, timeout=5, check=False
        ).stdout
        found = re.search(r"mosquitto version (\S+)", out)
        if found:
            return found.group(1)
    return "unknown"


def machine() -> str:
    """One line: cores, CPU model, Python, kernel, broker."""
    return (
        f"{os.cpu_count()} cores ({cpu_model()}), Python {platform.python_version()},"
        f" Linux {platform.release()}, mosquitto {mosquitto_version()}"
    )


# The environment variables that change how the benchmarks configure pagerd.
SETTINGS = {"BENCH_SENDER_WORKERS": "workers", "BENCH_SEND_CONCURRENCY": "concurrency"}


def command_line() -> str:
    """The exact command that is running, as typed from the repository root, with the
    settings given in the environment (``SETTINGS``)."""
    argv = list(sys.orig_argv)
    with contextlib.suppress(ValueError):
        argv[0] = os.path.relpath(argv[0]) if argv[0].startswith("/") else argv[0]
    given = [f"{name}={value}" for name, value in given_settings().items()]
    return shlex.join([*given, *argv])


def given_settings() -> dict[str, str]:
    """Those of ``SETTINGS`` set in the environment, with their values."""
    return {name: os.environ[name] for name in SETTINGS if name in os.environ}


def notify_settings() -> str:
    """``[notify] workers = 1, concurrency = 64`` as given in the environment, or ""."""
    given = [f"{SETTINGS[name]} = {value}" for name, value in given_settings().items()]
    return f"[notify] {', '.join(given)}" if given else ""


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table, columns padded to their widest cell."""
    body = [list(header), *(list(row) for row in rows)]
    widths = [max(len(row[i]) for row in body) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(body[0]), rule, *(line(row) for row in body[1:])])


def report(title: str, header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """Print the figures with the machine and the command that produced them."""
    print(f"\n## {title}\n")
    print(f"machine: {machine()}")
    print(f"command: {command_line()}\n")
    print(table(header, rows))


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}" if seconds > 0 else "-"


# --- pagerd and its database ------------------------------------------------------------------


@dataclass
class BenchPagerd(Pagerd):
    """The harness's pagerd, logging at ``info`` as in production rather than ``debug``.

    With ``mqtt_port`` set, pagerd connects there (an ``AckCounter``) instead of the broker.
    """

    log_level: str = "info"
    mqtt_port: int | None = None

    def write_config(self) -> Path:
        path = super().write_config()
        text = path.read_text().replace('level = "debug"', f'level = "{self.log_level}"')
        if self.mqtt_port is not None:
            text = text.replace(f"\nport = {self.broker.port}\n", f"\nport = {self.mqtt_port}\n")
        path.write_text(text)
        return path

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid


@contextlib.asynccontextmanager
async def pagerd_in(
    directory: Path,
    broker: Mosquitto,
    sms_port: int,
    policy: Policy = BENCH_POLICY,
    *,
    database_url: str = "",
) -> Any:
    """pagerd with one policy; its services are rows in the database, as if made by API.

    A pagerd still running at the end (a run that failed) is killed.
    """
    directory.mkdir(parents=True, exist_ok=True)
    # Only the URL is read from it: the stand-in itself runs in its own process.
    stand_in = SmsStandIn(port=sms_port)
    daemon = BenchPagerd(directory, broker, stand_in, [policy], {}, database_url=database_url)
    # BENCH_SENDER_WORKERS=N and BENCH_SEND_CONCURRENCY=N set [notify] workers and
    # concurrency, for a pair of runs that differ only there.
    for name, value in given_settings().items():
        daemon.notify[SETTINGS[name]] = int(value)
    try:
        yield daemon
    finally:
        if daemon.process is not None:
            daemon.kill()


async def create_schema(db: Path) -> None:
    """Let pagerd's own store create and migrate the database."""
    store = await Store.open(db)
    await store.close()


def insert_services(db: Path, service_ids: Iterable[str], policy_id: str = POLICY_ID) -> None:
    """Register services as the API would (managed = 0), in one transaction."""
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.executemany(
            "INSERT INTO services (id, name, policy_id, managed) VALUES (?, ?, ?, 0)",
            ((sid, sid, policy_id) for sid in service_ids),  # short names: pages stay whole
        )


def alerts_committed(db: Path) -> int:
    """Committed alert rows: ``seq`` only grows, so its max is the count, in O(log n)."""
    return int(sqlite_rows(db, "SELECT coalesce(max(seq), 0) FROM alerts")[0][0])


def count(db: Path, sql: str) -> int:
    return int(sqlite_rows(db, sql)[0][0])


async def wait_until(check: Callable[[], bool], *, timeout: float, every: float = 0.005) -> float:
    """Poll ``check`` until it holds; return the monotonic time it was seen to hold."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not done within {timeout}s")
        await asyncio.sleep(every)
    return time.monotonic()


def proc_status(pid: int) -> dict[str, int]:
    """The kB fields of /proc/PID/status (VmRSS, VmHWM, ...)."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if len(parts) == 2 and parts[1] == "kB":
            fields[key] = int(parts[0])
    return fields


def pid_of(process: subprocess.Popen[bytes] | None) -> int:
    assert process is not None, "the process is not running"
    return process.pid


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far."""
    return _stat_cpu(Path(f"/proc/{pid}/stat"))


def loop_cpu_seconds(pid: int) -> float:
    """CPU time of the process's first thread: pagerd's event loop, without its helpers."""
    return _stat_cpu(Path(f"/proc/{pid}/task/{pid}/stat"))


def _stat_cpu(stat: Path) -> float:
    fields = stat.read_text().rpartition(")")[2].split()
    # utime and stime are fields 14 and 15 of stat(5); [0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    """The processes ``pid`` started that still run (pagerd's sender processes)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def children_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each running child of ``pid``."""
    seconds: dict[int, float] = {}
    for child in child_pids(pid):
        with contextlib.suppress(FileNotFoundError):
            seconds[child] = cpu_seconds(child)
    return seconds


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass
class CpuMeter:
    """CPU used by some processes and by the machine over a stretch of wall time."""

    pids: dict[str, int]
    # name -> a parent whose children are counted together (pagerd's sender processes);
    # a child that ended meanwhile is not counted.
    children: dict[str, int] = field(default_factory=dict)
    _start: dict[str, float] = field(default_factory=dict)
    _start_children: dict[str, dict[int, float]] = field(default_factory=dict)
    _wall: float = 0.0

    def __enter__(self) -> CpuMeter:
        self._wall = time.monotonic()
        self._start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._start_children = {name: children_cpu(pid) for name, pid in self.children.items()}
        self._start["machine"] = machine_busy()
        return self

    def __exit__(self, *_: object) -> None:
        self._wall = time.monotonic() - self._wall
        used = {name: cpu_seconds(pid) - self._start[name] for name, pid in self.pids.items()}
        for name, pid in self.children.items():
            before = self._start_children[name]
            now = children_cpu(pid)
            used[name] = sum(seconds - before.get(child, 0.0) for child, seconds in now.items())
        used["machine"] = machine_busy() - self._start["machine"]
        self.used = used

    def summary(self) -> str:
        """``pagerd 0.93 cores, mosquitto 0.20, machine 1.61 of 2``."""
        parts = [f"{name} {seconds / self._wall:.2f}" for name, seconds in self.used.items()]
        return "CPU cores busy: " + ", ".join(parts) + f" of {os.cpu_count()}"


@dataclass
class BenchMosquitto(Mosquitto):
    """The harness's broker (as the shipped config), publishing its $SYS figures every second."""

    def conf(self) -> Path:
        path = super().conf()
        path.write_text(path.read_text() + "sys_interval 1\n")
        return path


@contextlib.asynccontextmanager
async def broker_in(directory: Path) -> Any:
    """A fresh persistent mosquitto, configured as the harness and the shipped config are."""
    broker = BenchMosquitto(directory)
    directory.mkdir(parents=True, exist_ok=True)
    await broker.start()
    try:
        yield broker
    finally:
        broker.stop()


STORE_COUNT = "$SYS/broker/store/messages/count"
RETAINED_COUNT = "$SYS/broker/retained messages/count"


class BrokerWatch:
    """Follows the broker's message store through $SYS: what it holds beyond retained messages.

    Once every subscriber has acknowledged a message the broker frees it, so with the
    publisher gone, ``held`` is what pagerd has not acknowledged yet (as the broker sees
    it, at one-second ticks).
    """

    def __init__(self, port: int) -> None:
        self._port = port
        self._store = 0
        self._retained = 0
        self.samples: list[tuple[float, int]] = []  # (monotonic time, held)
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def __aenter__(self) -> BrokerWatch:
        self._task = asyncio.create_task(self._follow())
        await asyncio.wait_for(self._subscribed.wait(), HELPER_START_TIMEOUT_S)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await self._task

    async def _follow(self) -> None:
        async with aiomqtt.Client("127.0.0.1", self._port) as client:
            await client.subscribe([(STORE_COUNT, 0), (RETAINED_COUNT, 0)])
            self._subscribed.set()
            async for message in client.messages:
                value = int(message.payload) if isinstance(message.payload, bytes) else 0
                # The two come in either order, and each only when it changed.
                if message.topic.value == RETAINED_COUNT:
                    self._retained = value
                else:
                    self._store = value
                self.samples.append((time.monotonic(), self._store - self._retained))

    async def empty_after(self, since: float, timeout: float) -> float:
        """The time of the first tick after ``since`` at which the broker held nothing."""
        deadline = time.monotonic() + timeout
        while True:
            for at, held in self.samples:
                if at > since and held <= 0:
                    return at
            if time.monotonic() > deadline:
                last = self.samples[-1][1] if self.samples else "?"
                raise TimeoutError(f"the broker still holds {last} messages")
            await asyncio.sleep(0.1)


# --- counting pagerd's PUBACKs ----------------------------------------------------------------


class AckCounter:
    """A TCP relay between pagerd and the broker that counts the PUBACKs pagerd sends.

    pagerd acknowledges a message after its commit, and the database shows the
    commit before pagerd has sent every PUBACK; this shows when it has. A message
    redelivered after a reconnect keeps its packet id, so distinct ids count messages
    (as long as a run stays under 65,535 of them, after which ids are reused).
    """

    def __init__(self, broker_port: int) -> None:
        self.port = free_port()
        self.pubacks = 0
        self.packet_ids: set[int] = set()
        self.connections = 0
        self.last_at = 0.0
        self._broker_port = broker_port
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> AckCounter:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for pump in self._pumps:
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    async def _relay(self, pagerd_in: StreamReader, pagerd_out: StreamWriter) -> None:
        self.connections += 1
        broker_in, broker_out = await asyncio.open_connection("127.0.0.1", self._broker_port)
        pending = bytearray()  # a packet cut between two reads
        for pump in (
            self._pump(pagerd_in, broker_out, lambda data: self._count(data, pending)),
            self._pump(broker_in, pagerd_out, None),
        ):
            task = asyncio.create_task(pump)
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    async def _pump(
        self,
        source: StreamReader,
        sink: StreamWriter,
        inspect: Callable[[bytes], None] | None,
    ) -> None:
        try:
            while data := await source.read(1 << 16):
                sink.write(data)
                if inspect is not None:
                    inspect(data)
                await sink.drain()
        except OSError:
            pass
        finally:
            sink.close()

    def reset(self) -> None:
        self.pubacks, self.packet_ids, self.connections = 0, set(), 0

    def acknowledged(self) -> int:
        """Messages acknowledged, each once however often it was redelivered."""
        return len(self.packet_ids)

    def _count(self, data: bytes, buffer: bytearray) -> None:
        # MQTT packets: a type byte, a varint remaining length, the rest.
        buffer += data
        pos, end = 0, len(buffer)
        while pos + 2 <= end:
            length, shift, i = 0, 0, pos + 1
            while i < end:
                byte = buffer[i]
                length |= (byte & 0x7F) << shift
                shift += 7
                i += 1
                if not byte & 0x80:
                    break
            else:
                break  # the length itself is not all here yet
            if i + length > end:
                break
            if buffer[pos] >> 4 == PUBACK_TYPE:
                self.pubacks += 1
                self.packet_ids.add(int.from_bytes(buffer[i : i + 2], "big"))
                self.last_at = time.monotonic()
            pos = i + length
        del buffer[:pos]


# --- helper processes -------------------------------------------------------------------------


def _expect(conn: Connection, what: str, timeout: float = HELPER_START_TIMEOUT_S) -> Any:
    if not conn.poll(timeout):
        raise TimeoutError(f"helper process: no {what} within {timeout}s")
    return conn.recv()


class SmsProcess:
    """The SMS provider's stand-in in a process of its own: counts pages, notes arrival times."""

    def __init__(self) -> None:
        self.port = free_port()
        self._count: Any = CTX.Value("q", 0, lock=False)
        self._conn, child = CTX.Pipe()
        self._process = CTX.Process(
            target=_sms_main, args=(self.port, self._count, child), name="bench-sms", daemon=True
        )

    def __enter__(self) -> SmsProcess:
        self._process.start()
        _expect(self._conn, "stand-in ready")
        return self

    def __exit__(self, *_: object) -> None:
        if self._process.is_alive():
            self._conn.send("stop")
            with contextlib.suppress(TimeoutError, EOFError):
                _expect(self._conn, "stand-in arrivals", timeout=5)
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.kill()

    @property
    def pages(self) -> int:
        """Pages received so far."""
        return int(self._count.value)

    def arrivals(self) -> list[tuple[float, str, str]]:
        """(monotonic arrival time, message, Idempotency-Key) of every page so far."""
        self._conn.send("arrivals")
        arrivals: list[tuple[float, str, str]] = _expect(self._conn, "arrivals")
        return arrivals

    def distinct_keys(self, since: int = 0) -> int:
        """Distinct notifications among the pages: a resend repeats its Idempotency-Key."""
        return len({key for _, _, key in self.arrivals()[since:]})


async def serve_posts(
    port: int, route: str, receive: Callable[[web.Request], Awaitable[web.Response]]
) -> web.AppRunner:
    """Answer POSTs to ``route`` on 127.0.0.1:``port`` with ``receive``; the caller cleans up."""
    app = web.Application()
    app.router.add_post(route, receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


def _sms_main(port: int, counter: Any, conn: Connection) -> None:
    asyncio.run(_sms_serve(port, counter, conn))


async def _sms_serve(port: int, counter: Any, conn: Connection) -> None:
    arrivals: list[tuple[float, str, str]] = []

    async def receive(request: web.Request) -> web.Response:
        at = time.monotonic()  # first thing: the page has arrived
        body = await request.json()
        arrivals.append((at, str(body["message"]), request.headers.get("Idempotency-Key", "")))
        counter.value += 1
        return web.json_response({"ok": True})

    runner = await serve_posts(port, "/sms", receive)
    conn.send("ready")
    loop = asyncio.get_running_loop()
    try:
        while True:
            request = await loop.run_in_executor(None, conn.recv)
            conn.send(list(arrivals))
            if request == "stop":
                return
    finally:
        await runner.cleanup()


# --- the publisher: a minimal MQTT client in its own process ---------------------------------
#
# paho's Python client tops out near 5,700 QoS 1 messages/s on this kind of machine
# (a thread hand-off per message, and a rescan of its in-flight list on every
# PUBACK), below what is measured here. Publishing is simple enough in MQTT 3.1.1 to
# do on a socket: about 40,000 messages/s, so the publisher is not what is measured.


@dataclass(frozen=True)
class PublishPlan:
    """What a publisher sends: ``per_service`` alerts to each of ``services`` services.

    Alerts go round-robin over the services. With ``rate`` set, the n-th alert is
    scheduled at ``start + n / rate`` (open loop) and carries that time in its
    message as ``t=<monotonic seconds>``; without, they go as fast as the socket takes
    them, at most ``inflight`` unacknowledged.
    """

    port: int
    service_ids: tuple[str, ...]
    per_service: int = 1
    rate: float | None = None
    inflight: int = 1000


@dataclass(frozen=True)
class Published:
    """What the publisher saw: its first send, its last send, the broker's last PUBACK."""

    count: int
    acked: int
    first_at: float
    last_sent_at: float
    last_acked_at: float
    max_lag_s: float  # how late the worst send was against its schedule (paced plans)


def alert_payload(service_index: int, n: int, message: str) -> bytes:
    return json.dumps({"message": message, "alert_id": f"a-{service_index}-{n}"}).encode()


PUBACK_TYPE = 4
PUBACK_BYTES = 4  # the broker sends us nothing else: we subscribe to nothing


class Publisher:
    """A QoS 1 publisher in its own process; ``go()`` starts the sending, ``result()`` waits."""

    def __init__(self, plan: PublishPlan) -> None:
        self.plan = plan
        self._conn, child = CTX.Pipe()
        self._process = CTX.Process(
            target=_publish_main, args=(plan, child), name="bench-publisher", daemon=True
        )

    def __enter__(self) -> Publisher:
        self._process.start()
        _expect(self._conn, "publisher connected")
        return self

    def __exit__(self, *_: object) -> None:
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.kill()

    def go(self) -> None:
        self._conn.send("go")

    async def result(self, timeout: float) -> Published:
        """Wait (without blocking the loop) for the publisher's report."""
        deadline = time.monotonic() + timeout
        while not self._conn.poll():
            if time.monotonic() > deadline or not self._process.is_alive():
                raise TimeoutError("the publisher did not finish")
            await asyncio.sleep(0.02)
        published: Published = self._conn.recv()
        return published


class _Acks:
    """Counts the broker's PUBACKs as they come in on the socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.count = 0
        self.last_at = 0.0
        self._partial = 0

    def read(self, timeout: float | None) -> None:
        """Read what has arrived, waiting up to ``timeout`` (None: until something does)."""
        readable, _, _ = select.select([self.sock], [], [], timeout)
        if not readable:
            return
        data = self.sock.recv(1 << 16)
        if not data:
            raise ConnectionError("the broker closed the connection")
        self._partial += len(data)
        self.count += self._partial // PUBACK_BYTES
        self._partial %= PUBACK_BYTES
        self.last_at = time.monotonic()


def _publish_main(plan: PublishPlan, conn: Connection) -> None:
    total = len(plan.service_ids) * plan.per_service
    sock = socket.create_connection(("127.0.0.1", plan.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(connect_packet(f"bench-pub-{os.getpid()}"))
    if sock.recv(len(CONNACK_OK)) != CONNACK_OK:
        raise ConnectionError("the broker refused the publisher")
    topics = [f"{PREFIX}/alert/{sid}" for sid in plan.service_ids]
    order = [(n, s) for n in range(plan.per_service) for s in range(len(topics))]
    acks = _Acks(sock)
    max_lag = 0.0
    conn.send("connected")
    conn.recv()  # "go"
    first_at = time.monotonic()
    if plan.rate is None:
        # Built before the clock starts: making payloads is not sending them.
        packets = [
            publish_packet(topics[s], alert_payload(s, n, f"bench alert {n}"), i % 0xFFFF + 1)
            for i, (n, s) in enumerate(order)
        ]
        first_at = time.monotonic()
        sent = 0
        while sent < total:
            room = min(total - sent, plan.inflight - (sent - acks.count))
            if room > 0:
                sock.sendall(b"".join(packets[sent : sent + room]))
                sent += room
            acks.read(None)
    else:
        for i, (n, s) in enumerate(order):
            scheduled = first_at + i / plan.rate
            while (delay := scheduled - time.monotonic()) > 0 or i - acks.count >= plan.inflight:
                acks.read(max(delay, 0.0) if i - acks.count < plan.inflight else None)
            max_lag = max(max_lag, -delay)
            payload = alert_payload(s, n, f"t={scheduled:.6f}")
            sock.sendall(publish_packet(topics[s], payload, i % 0xFFFF + 1))
    last_sent_at = time.monotonic()
    while acks.count < total:
        acks.read(None)
    sock.sendall(b"\xe0\x00")  # DISCONNECT
    sock.close()
    conn.send(Published(total, acks.count, first_at, last_sent_at, acks.last_at, max_lag))


# --- a bare subscriber: the ceiling of the broker and the MQTT client ------------------------


@dataclass(frozen=True)
class Received:
    count: int
    subscribed_at: float
    done_at: float


@dataclass
class RawSubscriber:
    """An aiomqtt QoS 1 subscriber with a persistent session that does nothing with messages."""

    port: int
    client_id: str = "bench-raw"
    _runs: list[BaseProcess] = field(default_factory=list)

    def start(self, expected: int) -> Connection:
        """Connect (resuming the session) in a new process; it reports after ``expected``."""
        conn, child = CTX.Pipe()
        process = CTX.Process(
            target=_raw_main,
            args=(self.port, self.client_id, expected, child),
            name="bench-raw-subscriber",
            daemon=True,
        )
        process.start()
        self._runs.append(process)
        _expect(conn, "raw subscriber subscribed")
        return conn

    async def received(self, conn: Connection, timeout: float) -> Received:
        deadline = time.monotonic() + timeout
        while not conn.poll():
            if time.monotonic() > deadline:
                raise TimeoutError("the raw subscriber did not receive everything")
            await asyncio.sleep(0.02)
        received: Received = conn.recv()
        return received

    @property
    def pid(self) -> int:
        """The process of the latest ``start``."""
        pid = self._runs[-1].pid
        assert pid is not None
        return pid

    def close(self) -> None:
        for process in self._runs:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()


def _raw_main(port: int, client_id: str, expected: int, conn: Connection) -> None:
    asyncio.run(_raw_receive(port, client_id, expected, conn))


async def _raw_receive(port: int, client_id: str, expected: int, conn: Connection) -> None:
    async with aiomqtt.Client(
        "127.0.0.1", port, identifier=client_id, clean_session=False
    ) as client:
        await client.subscribe(f"{PREFIX}/alert/+", qos=1)
        subscribed_at = time.monotonic()
        conn.send("subscribed")
        received = 0
        if expected:
            async for _ in client.messages:
                received += 1
                if received >= expected:
                    break
        conn.send(Received(received, subscribed_at, time.monotonic()))


async def drain_session(
    port: int, client_id: str, *, quiet_s: float = 1.0
) -> list[tuple[str, bytes]]:
    """Resume ``client_id``'s session: (topic, payload) of what the broker still had for it.

    The session's owner must be disconnected; whatever comes is acknowledged here.
    """
    received: list[tuple[str, bytes]] = []
    async with aiomqtt.Client(
        "127.0.0.1", port, identifier=client_id, clean_session=False
    ) as client:
        with contextlib.suppress(TimeoutError):
            while True:
                async with asyncio.timeout(quiet_s):
                    message = await anext(client.messages)
                payload = message.payload if isinstance(message.payload, bytes) else b""
                received.append((message.topic.value, payload))
    return received


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already-sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(p / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- profiling on request ---------------------------------------------------------------------


@contextlib.contextmanager
def py_spy(pid: int, output: Path | None, *, gil_only: bool = False) -> Iterator[None]:
    """Sample ``pid`` with py-spy (``pip install py-spy``) while the block runs, if asked to.

    Writes collapsed stacks to ``output`` and prints the top functions by own and
    by inclusive samples. With ``gil_only``, samples only the thread holding the GIL:
    the event loop's CPU, without aiosqlite's thread waiting on SQLite.
    """
    if output is None:
        yield
        return
    binary = Path(sys.executable).parent / "py-spy"
    command = [str(binary), "record", "--pid", str(pid), "--format", "raw", "--rate", "200"]
    command += ["--output", str(output), "--nonblocking", *(["--gil"] if gil_only else [])]
    spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=30)
    print(f"\npy-spy samples of pid {pid}: {output}")
    print(hotspots(output))


def hotspots(collapsed: Path, top: int = 15) -> str:
    """The functions with the most own and the most inclusive samples, from collapsed stacks."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack:
            continue
        n = int(samples)
        total += n
        frames = stack.split(";")
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n

    def ranked(counts: dict[str, int]) -> list[tuple[str, str]]:
        best = sorted(counts.items(), key=lambda item: -item[1])[:top]
        return [(f"{100 * n / max(total, 1):5.1f} %", frame) for frame, n in best]

    return "\n\n".join(
        [
            f"{total} samples",
            table(["own", "function (file:line)"], ranked(own)),
            table(["inclusive", "function (file:line)"], ranked(inclusive)),
        ]
    )
