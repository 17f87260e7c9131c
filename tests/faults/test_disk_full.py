"""Fault suite: the database's disk fills up, then space comes back."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp

from tests.faults.common import count, report
from tests.harness import Monitor, Mosquitto, Pagerd, Policy, SmsStandIn, eventually, sms

ONE = "+15550000001"


class DiskPagerd(Pagerd):
    """pagerd with its database alone on its own (small) file system."""

    @property
    def db(self) -> Path:
        return self.directory / "disk" / "pagerd.db"


@contextlib.contextmanager
def tmpfs(directory: Path, size: str = "2m") -> Iterator[Path]:
    """A small tmpfs mounted at ``directory`` for the duration."""
    directory.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(
            f"this test needs to mount a tmpfs (run as root): mount said {done.stderr.strip()}"
        )
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def fill(path: Path) -> int:
    """Write zeros to ``path`` until the file system is full; return the bytes written."""
    written = 0
    chunk = bytes(16 * 1024)
    with path.open("wb", buffering=0) as filler:
        while True:
            try:
                written += filler.write(chunk) or 0
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
                return written


async def readyz(base_url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(f"{base_url}/readyz") as reply:
        return reply.status, await reply.text()


async def test_disk_full_holds_alerts_with_the_broker_then_resumes(
    tmp_path: Path, broker: Mosquitto, sms_service: SmsStandIn, monitor: Monitor
) -> None:
    """Given the database's disk full, when alerts come, then pagerd does not acknowledge
    them, logs commit.failed and /readyz names the database; when space comes back, the
    alerts still held by the broker are processed."""
    services = [f"svc-{i}" for i in range(400)]
    directory = tmp_path / "pagerd"
    directory.mkdir()
    daemon = DiskPagerd(
        directory, broker, sms_service, [Policy("p", [(600.0, [sms(ONE)])])], {}, "p"
    )
    with tmpfs(directory / "disk") as disk:
        try:
            await daemon.start()
            await monitor.publish("alert", "before", {"message": "m", "alert_id": "before"})
            await eventually(
                lambda: count(daemon.db, "SELECT count(*) FROM alerts") == 1, what="first alert"
            )
            filler = disk / "filler"
            filled = fill(filler)

            published = 0

            def failed() -> bool:
                return any(e["event"] == "commit.failed" for e in daemon.log_events())

            # The WAL may still have room for a few commits: publish until one fails.
            for service in services:
                await monitor.publish("alert", service, {"message": "m", "alert_id": service})
                published += 1
                if published % 20 == 0:
                    await asyncio.sleep(0.2)
                    if failed():
                        break
            await eventually(failed, timeout=10, what="commit.failed in the log")
            status, body = await readyz(daemon.base_url)
            held_at_full = published + 1 - count(daemon.db, "SELECT count(*) FROM alerts")
            events = [e["event"] for e in daemon.log_events()]

            filler.unlink()
            await eventually(
                lambda: count(daemon.db, "SELECT count(*) FROM alerts") == published + 1,
                timeout=30,
                what="held alerts processed once space is back",
            )
            status_after, _ = await readyz(daemon.base_url)
            report(
                "disk full",
                filler_bytes=filled,
                sent=published + 1,
                held_while_full=held_at_full,
                recorded=count(daemon.db, "SELECT count(*) FROM alerts"),
                duplicated=count(
                    daemon.db, "SELECT count(*) - count(DISTINCT alert_id) FROM alerts"
                ),
                readyz_when_full=status,
                readyz_after=status_after,
            )
            assert held_at_full > 0
            assert "mqtt.not_acknowledged" in events
            assert status == 503
            assert "database" in body, body
            assert status_after == 200
            assert count(daemon.db, "SELECT count(DISTINCT alert_id) FROM alerts") == published + 1
        finally:
            if daemon.process is not None:
                await daemon.stop()
