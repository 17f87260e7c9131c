"""systemd notify protocol (sd_notify) over $NOTIFY_SOCKET, without libsystemd.

Each message is a datagram of newline-separated ``KEY=value`` assignments sent to
the socket systemd names in the environment. When there is no such socket (not
run by systemd, or not Type=notify) every call is a no-op.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Mapping

from pagerd.telemetry.logs import get_logger

log = get_logger(__name__)


def _socket_address(raw: str) -> str | None:
    if raw.startswith("/"):
        return raw
    if raw.startswith("@"):
        # Linux abstract namespace: the address starts with a NUL byte instead of '@'.
        return "\0" + raw[1:]
    return None  # e.g. vsock: addresses, which pagerd is never run under


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get("WATCHDOG_PID")
    # The variable may be inherited from a parent that systemd watches, not us.
    if pid is not None and pid != str(os.getpid()):
        return None
    # Ping twice per period, as sd_watchdog_enabled(3) recommends, so one late ping is not fatal.
    return usec / 1_000_000 / 2


class SystemdNotifier:
    """Sends READY, STATUS, STOPPING and WATCHDOG notifications to systemd."""

    __slots__ = ("_address", "_failing", "_watchdog_interval")

    def __init__(self, address: str | None, watchdog_interval: float | None = None) -> None:
        self._address = address
        self._watchdog_interval = watchdog_interval if address is not None else None
        self._failing = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SystemdNotifier:
        """Build from NOTIFY_SOCKET / WATCHDOG_USEC / WATCHDOG_PID (default: os.environ)."""
        env = os.environ if env is None else env
        address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        return cls(address, _watchdog_interval(env))

    @property
    def enabled(self) -> bool:
        """Whether there is a notify socket to talk to."""
        return self._address is not None

    def ready(self) -> None:
        """Tell systemd start-up is complete (Type=notify)."""
        self._send("READY=1")

    def status(self, text: str) -> None:
        """Set the one-line status shown by ``systemctl status``."""
        # A newline would start a new assignment in the datagram.
        self._send("STATUS=" + " ".join(text.splitlines()))

    def stopping(self) -> None:
        """Tell systemd a clean shutdown has begun."""
        self._send("STOPPING=1")

    def watchdog(self) -> None:
        """Ping the service watchdog."""
        self._send("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings, or None when systemd does not watch us."""
        return self._watchdog_interval

    async def watchdog_loop(self) -> None:
        """Ping the watchdog from the event loop until cancelled: a wedged loop stops pinging."""
        interval = self._watchdog_interval
        if interval is None:
            return
        while True:
            self.watchdog()
            await asyncio.sleep(interval)

    def _send(self, message: str) -> None:
        if self._address is None:
            return
        # A socket per message, as libsystemd does: nothing to keep open or close at shutdown.
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)
                sock.sendto(message.encode(), self._address)
        except OSError as exc:
            # Notification is advisory: never fail the caller, and log a failing streak once.
            if not self._failing:
                self._failing = True
                log.warning("systemd.notify_failed", message=message, error=str(exc))
            return
        self._failing = False
