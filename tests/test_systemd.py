"""systemd notify protocol against a real AF_UNIX datagram socket, and the unit's sandbox."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from pagerd.systemd import SystemdNotifier

UNIT = Path(__file__).resolve().parents[1] / "pagerd.service"
MAX_EXPOSURE = 2.0
RECV_DEADLINE_S = 5.0


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket standing in for systemd's, and its path."""
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(RECV_DEADLINE_S)
        yield sock, path


def test_messages_arrive_exactly(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": path})
    assert notifier.enabled

    notifier.ready()
    notifier.status("serving 3 services")
    notifier.status("two\nlines")
    notifier.stopping()
    notifier.watchdog()

    received = [sock.recv(4096) for _ in range(5)]
    assert received == [
        b"READY=1",
        b"STATUS=serving 3 services",
        b"STATUS=two lines",
        b"STOPPING=1",
        b"WATCHDOG=1",
    ]


def test_abstract_socket() -> None:
    name = f"pagerd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(RECV_DEADLINE_S)
        SystemdNotifier.from_env({"NOTIFY_SOCKET": "@" + name}).ready()
        assert sock.recv(4096) == b"READY=1"


def test_without_notify_socket_everything_is_a_noop() -> None:
    notifier = SystemdNotifier.from_env({"WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled
    assert notifier.watchdog_interval() is None
    with structlog.testing.capture_logs() as logs:
        notifier.ready()
        notifier.status("x")
        notifier.stopping()
        notifier.watchdog()
    assert logs == []


def test_failed_send_never_raises_and_is_logged_once(tmp_path: Path) -> None:
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    with structlog.testing.capture_logs() as logs:
        notifier.ready()
        notifier.watchdog()
        notifier.stopping()
    assert [entry["event"] for entry in logs] == ["systemd.notify_failed"]
    assert logs[0]["log_level"] == "warning"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None, tmp_path: Path) -> None:
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "s"), **env})
    assert notifier.watchdog_interval() == expected


def test_from_env_defaults_to_os_environ(
    monkeypatch: pytest.MonkeyPatch, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    notifier = SystemdNotifier.from_env()
    assert notifier.watchdog_interval() == 1.0
    notifier.ready()
    assert sock.recv(4096) == b"READY=1"


async def test_watchdog_loop_pings_until_cancelled(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, path = notify_socket
    sock.setblocking(False)
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"})
    assert notifier.watchdog_interval() == 0.05

    loop = asyncio.get_running_loop()
    task = asyncio.create_task(notifier.watchdog_loop(), name="pagerd[watchdog-test]")
    pings = [await asyncio.wait_for(loop.sock_recv(sock, 4096), RECV_DEADLINE_S) for _ in range(4)]
    assert pings == [b"WATCHDOG=1"] * 4
    assert not task.done()

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_watchdog_loop_returns_at_once_without_watchdog(
    notify_socket: tuple[socket.socket, str],
) -> None:
    _, path = notify_socket
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": path})
    await asyncio.wait_for(notifier.watchdog_loop(), 1.0)


def test_unit_keeps_the_contract() -> None:
    text = UNIT.read_text()
    for line in ("Type=notify", "NotifyAccess=main", "WatchdogSec=30", "TimeoutStopSec=30"):
        assert re.search(rf"^{re.escape(line)}$", text, re.MULTILINE), line
    # pagerd pages through SMS providers, SMTP servers and webhooks anywhere on the network.
    assert not re.search(r"^IPAddress(Deny|Allow)=", text, re.MULTILINE)
    assert not re.search(r"^PrivateNetwork=yes", text, re.MULTILINE)


def test_unit_sandbox_exposure() -> None:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.fail("systemd-analyze not found: install systemd (apt-get install -y systemd)")
    result = subprocess.run(
        [exe, "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        check=False,
        timeout=30,
    )
    output = result.stdout.decode(errors="replace")
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    match = re.search(r"Overall exposure level for pagerd\.service: (\d+(?:\.\d+)?)", output)
    assert match, output
    assert float(match.group(1)) <= MAX_EXPOSURE, output
