"""A private, throwaway PostgreSQL cluster for tests and benchmarks: Debian's binaries,
``initdb`` in a temporary directory, a server on a free loopback port, a fresh database
per test. Nothing here touches a PostgreSQL the machine may already run."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from pagerd.core.ports import Store
from pagerd.store import open_store
from tests.harness import free_port

INSTALL_HINT = "apt-get install -y postgresql"
SUPERUSER = "pagerd"


def postgres_bin() -> Path:
    """The newest installed server's bin directory; RuntimeError naming the install command."""
    versions = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not versions:
        raise RuntimeError(
            f"PostgreSQL's server binaries are missing (no /usr/lib/postgresql/*/bin/initdb):"
            f" run '{INSTALL_HINT}'"
        )
    return versions[-1]


def _as_server_user(argv: list[str]) -> list[str]:
    # The server refuses to run as root; as anyone else it runs as that user.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


@dataclass
class PostgresCluster:
    """``initdb`` + ``postgres`` on 127.0.0.1 only; ``stop()`` removes everything."""

    port: int = field(default_factory=free_port)
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pagerd-pg-")))
    process: subprocess.Popen[bytes] | None = None
    settings: dict[str, str] = field(default_factory=dict)  # extra ``-c`` server settings

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def log(self) -> Path:
        return self.directory / "postgres.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def start(self, *, timeout: float = 30.0) -> None:
        binaries = postgres_bin()
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.directory, user.pw_uid, user.pw_gid)
        self.directory.chmod(0o700)
        initdb = [
            str(binaries / "initdb"),
            "--pgdata",
            str(self.data),
            "--username",
            SUPERUSER,
            "--auth",
            "trust",  # loopback only, a throwaway cluster
            "--encoding",
            "UTF8",
            "--locale",
            "C.UTF-8",
            "--no-sync",  # initdb's own files; the server keeps fsync and synchronous_commit on
        ]
        done = subprocess.run(_as_server_user(initdb), capture_output=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr.decode(errors='replace')}")
        self._serve(binaries, timeout)

    def _serve(self, binaries: Path, timeout: float) -> None:
        options = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.directory),
            "max_connections": "200",
            "logging_collector": "off",
            **self.settings,
        }
        argv = [str(binaries / "postgres"), "-D", str(self.data)]
        for key, value in options.items():
            argv += ["-c", f"{key}={value}"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                _as_server_user(argv), stdout=log, stderr=subprocess.STDOUT
            )
        self._wait_ready(binaries, timeout)

    def _wait_ready(self, binaries: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        probe = [str(binaries / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"]
        while subprocess.run(probe, check=False).returncode != 0:
            assert self.process is not None
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"PostgreSQL did not start: {self.tail()}")
            time.sleep(0.05)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def restart(self, *, timeout: float = 30.0) -> None:
        """A fast shutdown (sessions ended, as a crash or a failover ends them), then the
        server again on the same data and port."""
        process, self.process = self.process, None
        assert process is not None, "not started"
        pg_ctl = [str(postgres_bin() / "pg_ctl"), "stop", "-D", str(self.data), "-m", "fast"]
        subprocess.run(_as_server_user(pg_ctl), capture_output=True, check=False)
        process.wait(timeout=timeout)
        self._serve(postgres_bin(), timeout)

    def stop(self) -> None:
        """Fast shutdown, then the directory goes."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            # pg_ctl signals the server itself (its pid is in the data directory): runuser,
            # the process started here, does not pass SIGINT on.
            pg_ctl = [str(postgres_bin() / "pg_ctl"), "stop", "-D", str(self.data), "-m", "fast"]
            subprocess.run(_as_server_user(pg_ctl), capture_output=True, check=False)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` with psql; its output (tuples only)."""
        argv = [str(postgres_bin() / "psql"), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1"]
        argv += ["-d", self.url(database), "-c", sql]
        done = subprocess.run(argv, capture_output=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr.decode(errors='replace')}")
        return done.stdout.decode()


class Databases:
    """Fresh databases of one cluster, each made from template0 and dropped after."""

    def __init__(self, cluster: PostgresCluster) -> None:
        self.cluster = cluster
        self._made = 0

    def _name(self) -> str:
        self._made += 1
        return f"test_{os.getpid()}_{self._made}"

    def create(self) -> str:
        """A new empty database; its URL."""
        name = self._name()
        self.cluster.psql(f"CREATE DATABASE {name} TEMPLATE template0")
        return self.cluster.url(name)

    def drop(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with contextlib.suppress(RuntimeError):  # the cluster may be gone already
            self.cluster.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    async def create_async(self) -> str:
        """``create``, without a psql process."""
        name = self._name()
        conn = await asyncpg.connect(self.cluster.url())
        try:
            await conn.execute(f"CREATE DATABASE {name} TEMPLATE template0")
        finally:
            await conn.close()
        return self.cluster.url(name)

    async def drop_async(self, url: str) -> None:
        """``drop``, without a psql process."""
        name = url.rsplit("/", 1)[1]
        conn = await asyncpg.connect(self.cluster.url())
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await conn.close()


@dataclass(frozen=True)
class StoreLocation:
    """A SQLite file (``path``) or a PostgreSQL database (``url``), as ``[database]`` says."""

    path: str = ""
    url: str = ""

    @property
    def kind(self) -> str:
        return "postgres" if self.url else "sqlite"

    async def open(self) -> Store:
        return await open_store(path=self.path, url=self.url)

    def toml(self) -> str:
        """The ``[database]`` table naming this location."""
        if self.url:
            return f'[database]\nurl = "{self.url}"'
        return f'[database]\npath = "{self.path}"'
