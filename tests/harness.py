"""Real parts for end-to-end tests: mosquitto, an SMS stand-in, pagerd as a process."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
from aiohttp import web

REPO = Path(__file__).resolve().parent.parent
# The API token of every pagerd the tests start: as long as CONTRACT §9 asks (32+ characters).
API_TOKEN = "pagerd-test-token-kP3vQ9xL2mW7rT5y"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def eventually(
    check: Callable[[], bool], *, timeout: float = 5.0, what: str = "condition"
) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


async def wait_port(port: int, *, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)
        else:
            writer.close()
            await writer.wait_closed()
            return


# --- mosquitto -----------------------------------------------------------------------------


@dataclass
class Mosquitto:
    """A real broker on a free loopback port, persistent like the shipped config."""

    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    extra_conf: str = ""  # more lines: another listener, TLS, passwords, limits

    def conf(self) -> Path:
        data = self.directory / "data"
        data.mkdir(parents=True, exist_ok=True)
        path = self.directory / "mosquitto.conf"
        path.write_text(
            f"listener {self.port} 127.0.0.1\n"
            # Started as root, mosquitto would drop to user "mosquitto" and then could not
            # write its persistence file here; as anyone else this line changes nothing.
            f"user {getpass.getuser()}\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {data}/\n"
            "autosave_interval 1\n"
            "max_queued_messages 1000000\n"
            "max_inflight_messages 1000\n"
            f"log_dest file {self.directory / 'mosquitto.log'}\n" + self.extra_conf
        )
        return path

    async def start(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.process = subprocess.Popen([binary, "-c", str(self.conf())])
        await wait_port(self.port)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=10)
        self.process = None


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path

    def listener(self, port: int) -> str:
        """mosquitto.conf lines for a TLS listener on ``port`` with this certificate."""
        return (
            f"listener {port} 127.0.0.1\n"
            f"cafile {self.ca}\ncertfile {self.cert}\nkeyfile {self.key}\n"
        )


def make_tls_files(directory: Path) -> TlsFiles:
    """A throwaway CA, and a certificate it signed for 127.0.0.1 and localhost (openssl)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key, request = directory / "server.pem", directory / "server.key", directory / "req.pem"
    names = directory / "names.ext"
    names.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for command in (
        ["req", "-x509", *curve, "-keyout", ca_key, "-out", ca, "-subj", "/CN=pagerd test CA"],
        ["req", *curve, "-keyout", key, "-out", request, "-subj", "/CN=localhost"],
        [
            *("x509", "-req", "-in", request, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial"),
            *("-out", cert, "-days", "2", "-extfile", names),
        ],
    ):
        subprocess.run(["openssl", *map(str, command)], check=True, capture_output=True)
    return TlsFiles(ca, cert, key)


def mosquitto_password_file(path: Path, user: str, password: str) -> Path:
    """A mosquitto password file with one user (mosquitto_passwd)."""
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(path), user, password], check=True, capture_output=True
    )
    return path


# --- the SMS service stand-in --------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    phone_number: str
    message: str
    key: str
    at: float  # time.monotonic() on arrival


@dataclass
class SmsStandIn:
    """A real aiohttp server in place of the SMS provider; records every request."""

    port: int = field(default_factory=free_port)
    pages: list[Page] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # answered in order, then 200
    delays: list[float] = field(default_factory=list)  # seconds before answering, in order
    retry_after: str | None = None  # sent with a 429 or 503
    runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/sms", self._receive)
        # A test may leave a request hanging on purpose; do not wait for it at cleanup.
        self.runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/sms"

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.pages.append(
            Page(
                body["phone_number"],
                body["message"],
                request.headers.get("Idempotency-Key", ""),
                time.monotonic(),
            )
        )
        if self.delays:
            await asyncio.sleep(self.delays.pop(0))
        status = self.statuses.pop(0) if self.statuses else 200
        headers = {"Retry-After": self.retry_after} if self.retry_after else None
        return web.json_response({"ok": status < 300}, status=status, headers=headers)

    def to(self, phone: str) -> list[Page]:
        return [page for page in self.pages if page.phone_number == phone]

    def distinct_keys(self) -> set[str]:
        return {page.key for page in self.pages}


# --- pagerd as a real process --------------------------------------------------------------


def toml_value(value: Any) -> str:
    """Enough TOML for test configs: strings, numbers, bools, lists, inline tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def sms(phone: str) -> dict[str, str]:
    return {"type": "sms", "phone_number": phone}


@dataclass
class Policy:
    id: str
    levels: list[tuple[float, list[dict[str, str]]]]
    repeat: int = 0

    def toml(self) -> str:
        lines = ["[[policies]]", f"id = {toml_value(self.id)}", f"repeat = {self.repeat}"]
        for timeout, targets in self.levels:
            lines += [
                "[[policies.levels]]",
                f"ack_timeout_s = {timeout!r}",
                f"targets = {toml_value(targets)}",
            ]
        return "\n".join(lines)


@dataclass
class Pagerd:
    """pagerd run, as systemd would run it: a process, a config file, a notify socket."""

    directory: Path
    broker: Mosquitto
    sms: SmsStandIn
    policies: list[Policy] = field(default_factory=list)
    services: dict[str, str] = field(default_factory=dict)  # service id -> policy id
    fallback_policy: str = ""
    prefix: str = "pagerd"
    notify: dict[str, Any] = field(default_factory=lambda: {"bundle_window_s": 0})
    sms_url: str | None = None  # default: the stand-in's; "" leaves it to pagerd's own default
    # Webhook sinks of tests listen on 127.0.0.1, which the egress rule refuses unless listed.
    webhook_allow_hosts: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    http_port: int = field(default_factory=free_port)
    public_url: str | None = None  # default: base_url
    teams: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # name -> (dev, phone)
    database_url: str = ""  # a PostgreSQL database instead of the SQLite file ``db``
    mqtt: dict[str, Any] = field(default_factory=dict)  # more [mqtt] keys; hosts replaces host
    http: dict[str, Any] = field(default_factory=dict)  # more [http] keys
    # RLIMIT_NOFILE (soft and hard) of the process, as a unit's LimitNOFILE= sets it.
    descriptor_limit: int | None = None
    extra: str = ""  # more of the config file, as TOML, appended to it
    cluster: dict[str, Any] = field(default_factory=dict)  # [cluster] keys (with database_url)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def db(self) -> Path:
        return self.directory / "pagerd.db"

    @property
    def base_url(self) -> str:
        scheme = "https" if self.http.get("tls_cert_file") else "http"
        return f"{scheme}://127.0.0.1:{self.http_port}"

    @property
    def log(self) -> Path:
        return self.directory / "pagerd.log"

    def write_config(self) -> Path:
        path = self.directory / "pagerd.toml"
        parts = [
            (
                f'[database]\nurl = "{self.database_url}"'
                if self.database_url
                else f'[database]\npath = "{self.db}"'
            ),
            *(
                [
                    "[cluster]\n"
                    + "\n".join(f"{k} = {toml_value(v)}" for k, v in self.cluster.items())
                ]
                if self.cluster
                else []
            ),
            "[mqtt]\n"
            + ("" if "hosts" in self.mqtt else f'host = "127.0.0.1"\nport = {self.broker.port}\n')
            + f'client_id = "pagerd-test"\ntopic_prefix = "{self.prefix}"'
            + "".join(f"\n{k} = {toml_value(v)}" for k, v in self.mqtt.items()),
            (
                f'[http]\nlisten = "127.0.0.1:{self.http_port}"\n'
                f'public_url = "{self.public_url or self.base_url}"\ntokens = ["{API_TOKEN}"]\n'
                + "\n".join(f"{k} = {toml_value(v)}" for k, v in self.http.items())
            ),
            f'[routing]\nfallback_policy = "{self.fallback_policy}"',
            "[notify]\n" + "\n".join(f"{k} = {toml_value(v)}" for k, v in self.notify.items()),
            "[notify.sms]\n" + self._sms_url_line() + "timeout_s = 2",
            f"[notify.webhook]\nallow_hosts = {toml_value(self.webhook_allow_hosts)}",
            '[log]\nformat = "json"\nlevel = "debug"',
            *(
                f"[[teams]]\nname = {toml_value(name)}\ndevelopers = "
                + toml_value([{"name": d, "phone_number": p} for d, p in developers])
                for name, developers in self.teams.items()
            ),
            *(policy.toml() for policy in self.policies),
            *(
                f'[[services]]\nid = "{sid}"\nname = "Service {sid}"\npolicy = "{pid}"'
                for sid, pid in self.services.items()
            ),
            self.extra,
        ]
        path.write_text("\n\n".join(parts) + "\n")
        return path

    def _sms_url_line(self) -> str:
        url = self.sms.url if self.sms_url is None else self.sms_url
        return f"url = {toml_value(url)}\n" if url else ""

    async def start(self, *, wait_ready: bool = True) -> None:
        config = self.write_config()
        notify_path = self.directory / f"notify-{self.starts}.sock"
        self.starts += 1
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(notify_path))
        self._notify.setblocking(False)
        self.notifications: list[str] = []
        env = os.environ | {"NOTIFY_SOCKET": str(notify_path), "PYTHONUNBUFFERED": "1"}
        env.pop("WATCHDOG_USEC", None)
        limit = self.descriptor_limit

        def limit_descriptors() -> None:
            if limit is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pagerd", "run", "--config", str(config)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                # setrlimit alone between fork and exec takes no lock a thread could hold.
                preexec_fn=limit_descriptors if limit is not None else None,  # noqa: PLW1509
            )
        if wait_ready:
            await self.ready()

    def _read_notify(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while True:
                self.notifications.append(self._notify.recv(4096).decode())

    async def ready(self, timeout: float = 15.0) -> None:
        def is_ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"pagerd exited {self.process.returncode}:\n{self.tail()}")
            self._read_notify()
            return "READY=1" in self.notifications

        await eventually(is_ready, timeout=timeout, what="READY=1")

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text().splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.log.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                events.append(json.loads(line))
        return events

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal pagerd and wait for it to exit; returns its exit code."""
        process = self.process
        assert process is not None
        if process.poll() is None:
            process.send_signal(sig)
        deadline = time.monotonic() + timeout
        while process.poll() is None:
            if time.monotonic() > deadline:
                process.kill()
                raise AssertionError(f"pagerd did not exit within {timeout}s:\n{self.tail()}")
            await asyncio.sleep(0.02)
        self._notify.close()
        self.process = None
        return process.returncode

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self._notify.close()
        self.process = None

    def pause(self) -> None:
        """SIGSTOP: the process stands still, its sockets stay open."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    async def readyz(self) -> tuple[int, dict[str, Any]]:
        """``GET /readyz``: the status and the JSON body."""
        import aiohttp

        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{self.base_url}/readyz", timeout=aiohttp.ClientTimeout(total=5)) as response,
        ):
            return response.status, await response.json(content_type=None)

    async def role(self) -> str | None:
        """The role /readyz names, or None if pagerd does not answer."""
        try:
            _, body = await self.readyz()
        except (OSError, TimeoutError):
            return None
        role = body.get("role")
        return role if isinstance(role, str) else None

    async def metric(self, name: str) -> float:
        """The value of one sample of ``/metrics`` (``name`` with its labels, if any)."""
        import aiohttp

        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{self.base_url}/metrics") as response,
        ):
            text = await response.text()
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


# --- a monitor: publishes events, watches what pagerd publishes ---------------------------


@dataclass
class Monitor:
    """An MQTT client like a monitor's, plus a watcher of pagerd's own topics."""

    broker: Mosquitto
    prefix: str = "pagerd"
    received: list[tuple[str, bytes]] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def connected(self) -> Any:
        async with aiomqtt.Client("127.0.0.1", self.broker.port) as client:
            self.client = client
            await client.subscribe(
                [
                    (f"{self.prefix}/state/+", 1),
                    (f"{self.prefix}/events/+", 1),
                    (f"{self.prefix}/rejected", 1),
                    (f"{self.prefix}/status", 1),
                    (f"{self.prefix}/nodes/+", 1),
                ]
            )
            listener = asyncio.create_task(self._listen(client))
            try:
                yield self
            finally:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener

    async def _listen(self, client: aiomqtt.Client) -> None:
        # A test that restarts the broker ends this watcher; it uses a new client after.
        with contextlib.suppress(aiomqtt.MqttError):
            async for message in client.messages:
                payload = message.payload if isinstance(message.payload, bytes) else b""
                self.received.append((message.topic.value, payload))

    async def publish(
        self, kind: str, service: str, payload: bytes | str | dict[str, Any], *, qos: int = 1
    ) -> None:
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        if isinstance(payload, str):
            payload = payload.encode()
        await self.client.publish(f"{self.prefix}/{kind}/{service}", payload, qos=qos)

    def on(self, topic_suffix: str) -> list[Any]:
        """Decoded payloads received on ``{prefix}/{topic_suffix}``."""
        topic = f"{self.prefix}/{topic_suffix}"
        out: list[Any] = []
        for received_topic, payload in self.received:
            if received_topic == topic:
                try:
                    out.append(json.loads(payload))
                except json.JSONDecodeError:
                    out.append(payload.decode())
        return out


def sqlite_rows(db: Path, query: str, *args: Any) -> list[tuple[Any, ...]]:
    import sqlite3

    with contextlib.closing(sqlite3.connect(db)) as conn:
        return list(conn.execute(query, args))


@contextlib.contextmanager
def descriptors_exhausted() -> Iterator[None]:
    """No new file descriptor in this process (EMFILE) until the block ends.

    A new descriptor takes the lowest free number, so a soft limit at that number
    leaves none: the process runs short exactly as with every descriptor in use.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    listed = {int(name) for name in os.listdir("/proc/self/fd")}
    in_use = {fd for fd in listed if _is_open(fd)}  # not the listing's own, closed since
    lowest_free = min(set(range(len(in_use) + 1)) - in_use)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True
