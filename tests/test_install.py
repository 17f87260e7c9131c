"""Installing pagerd: the Debian packages step, the unit's syntax, and the README's systemd
install run as written in a container booted with a real systemd.

The container is this machine's own root file system under an overlay (nothing here
changes), booted by systemd-nspawn with a network of its own: the README's install
block runs in it, then its start block, against a mosquitto and `pagerd standin` that
listen in the container's network on the example config's ports. It needs root; as
anyone else that test is skipped, and the syntax check still runs.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.harness import REPO, Mosquitto, eventually
from tests.readme import blocks_of
from tests.test_readme import PAGE_LINE, fresh_copy

UNIT = REPO / "pagerd.service"
SOURCE = "/srv/pagerd-src"  # where the container has its clone
BOOT_WITHIN_S = 60.0
INSTALL_WITHIN_S = 600.0  # pip install from the index
SUDO = 'sudo() { "$@"; }\n'  # the container's root runs the README's sudo lines itself


# --- the Debian packages step -----------------------------------------------------------------


def test_system_packages_as_a_user_names_the_one_command_to_run() -> None:
    """Given commands missing from PATH and a user who is not root, then the step installs
    nothing, prints the apt-get command for exactly what is missing, and exits 2."""
    # Not pytest's tmp_path: a user other than its owner could not reach it.
    with tempfile.TemporaryDirectory(prefix="pagerd-packages-") as directory:
        Path(directory).chmod(0o755)
        done = _system_packages_with_little_on_path(Path(directory))

    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    # mosquitto is found in /usr/sbin, which the step adds; postgresql by its files.
    missing = (
        "curl mosquitto-clients chromium prometheus-alertmanager systemd systemd-container"
        " openssl jq"
    )
    assert done.stderr.splitlines() == [
        f"pagerd needs these Debian packages: {missing}",
        "Install them, then run make again:",
        f"  sudo apt-get update && sudo apt-get install -y --no-install-recommends {missing}",
    ]


def _system_packages_with_little_on_path(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "env", "id", "cat"):
        (bin_dir / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    fake_python = bin_dir / "python3"  # "has venv": the probe runs it
    fake_python.write_text("#!/bin/sh\nexit 0\n")
    fake_python.chmod(0o755)
    script = tmp_path / "system-packages"
    shutil.copy(REPO / ".ci" / "system-packages", script)
    setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
    as_user = [] if os.geteuid() else [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]

    return subprocess.run(
        [*as_user, str(script), "test"],
        env={"PATH": str(bin_dir), "PYTHON": str(fake_python)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_system_packages_finds_everything_here() -> None:
    done = subprocess.run(
        [REPO / ".ci" / "system-packages", "test"],
        env=os.environ | {"PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


# --- the unit ---------------------------------------------------------------------------------


def test_the_unit_loads_its_config_and_tokens_as_credentials(tmp_path: Path) -> None:
    """systemd-analyze verify, on the unit as shipped but for where pagerd is installed."""
    text = UNIT.read_text()
    assert "ExecStart=/usr/local/bin/pagerd run --config %d/pagerd.toml\n" in text
    assert "LoadCredential=pagerd.toml:/etc/pagerd/pagerd.toml\n" in text
    assert "LoadCredential=api-tokens:/etc/pagerd/api-tokens\n" in text
    assert "LimitNOFILE=65536\n" in text
    unit = tmp_path / "pagerd.service"
    unit.write_text(text.replace("/usr/local/bin/pagerd", str(REPO / ".venv" / "bin" / "pagerd")))
    exe = shutil.which("systemd-analyze")
    assert exe is not None, "systemd-analyze not found: make system-packages"

    done = subprocess.run(
        [exe, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )

    assert (done.returncode, done.stderr) == (0, "")


# --- the README's install, under a real systemd -----------------------------------------------


@dataclass
class Container:
    """This machine's root, under an overlay, booted by systemd-nspawn."""

    directory: Path
    boot: asyncio.subprocess.Process | None = None
    leader: int = 0  # the container's systemd, as the host sees it
    helpers: list[asyncio.subprocess.Process] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return self.directory / "root"

    def mount(self) -> None:
        for name in ("upper", "work", "root"):
            (self.directory / name).mkdir()
        layers = f"lowerdir=/,upperdir={self.directory / 'upper'},workdir={self.directory / 'work'}"
        subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", layers, str(self.root)], check=True
        )
        # Services this machine has enabled that the test does not want in the way.
        for unit in ("mosquitto", "postgresql", "prometheus-alertmanager"):
            masked = self.root / "etc" / "systemd" / "system" / f"{unit}.service"
            masked.unlink(missing_ok=True)
            masked.symlink_to("/dev/null")

    async def run_once(self, script: str, cwd: str) -> subprocess.CompletedProcess[str]:
        """``script`` in the container's file system, not booted, with this machine's network."""
        argv = ["systemd-nspawn", "-q", "-D", str(self.root), "--register=no", "--keep-unit"]
        argv += ["--pipe", f"--chdir={cwd}", "--", "bash", "-euo", "pipefail", "-c", script]
        return await asyncio.to_thread(
            subprocess.run, argv, capture_output=True, text=True, timeout=INSTALL_WITHIN_S
        )

    async def start(self) -> None:
        self.boot = await asyncio.create_subprocess_exec(
            "systemd-nspawn", "-q", "-D", str(self.root), "--register=no", "--keep-unit",
            "--private-network", "--boot", "--console=pipe",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip

        def booted() -> bool:
            assert self.boot is not None
            assert self.boot.returncode is None, "systemd-nspawn exited"
            children = Path(f"/proc/{self.boot.pid}/task/{self.boot.pid}/children")
            self.leader = int((children.read_text().split() or ["0"])[0])
            if not self.leader:
                return False
            state = subprocess.run(
                self.enter(["systemctl", "is-system-running"]),
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
            return state in ("running", "degraded")

        await eventually(booted, timeout=BOOT_WITHIN_S, what="the container booted")

    def enter(self, argv: list[str]) -> list[str]:
        """``argv`` inside the booted container: its files, processes and network."""
        return ["nsenter", "-t", str(self.leader), "-a", "--", *argv]

    def in_network(self, argv: list[str]) -> list[str]:
        """``argv`` from this machine's files, in the container's network."""
        return ["nsenter", f"--net=/proc/{self.leader}/ns/net", "--", *argv]

    async def sh(self, script: str, cwd: str = "/") -> subprocess.CompletedProcess[str]:
        argv = self.enter(["bash", "-euo", "pipefail", "-c", f"cd {cwd}\n{script}"])
        return await asyncio.to_thread(
            subprocess.run, argv, capture_output=True, text=True, timeout=120
        )

    async def helper(self, argv: list[str]) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            *self.in_network(argv), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        self.helpers.append(process)
        return process

    async def listening(self, port: int) -> None:
        probe = self.in_network(["bash", "-c", f"</dev/tcp/127.0.0.1/{port}"])
        await eventually(
            lambda: subprocess.run(probe, capture_output=True, check=False).returncode == 0,
            timeout=10,
            what=f"127.0.0.1:{port} in the container",
        )

    async def stop(self) -> None:
        for process in self.helpers:
            if process.returncode is None:
                process.terminate()
            await process.wait()
        if self.boot is not None and self.boot.returncode is None:
            self.boot.terminate()  # nspawn asks the container's systemd to power off
            try:
                await asyncio.wait_for(self.boot.wait(), 60)
            except TimeoutError:
                self.boot.kill()
                await self.boot.wait()
        subprocess.run(["umount", str(self.root)], check=False)


def _cannot_boot() -> str | None:
    if os.geteuid() != 0:
        return "booting a container needs root"
    if shutil.which("systemd-nspawn") is None:
        return "systemd-nspawn not found: make system-packages"
    return None


@pytest.fixture
async def container(tmp_path: Path) -> AsyncIterator[Container]:
    if reason := _cannot_boot():
        pytest.skip(reason)
    made = Container(tmp_path / "container")
    made.directory.mkdir()
    made.mount()
    try:
        yield made
    finally:
        await made.stop()


@pytest.mark.timeout(INSTALL_WITHIN_S + 120)
async def test_the_readme_install_runs_under_systemd_reading_root_only_files(
    container: Container, tmp_path: Path
) -> None:
    """Given the README's install and start blocks run as written (as root, in a clone),
    then the unit's dynamic user starts pagerd from a config and tokens it cannot read
    itself (0640 root:root), READY reaches systemd, an alert is paged, and the README's
    check, restart and status lines work."""
    fresh_copy(container.root / SOURCE.lstrip("/"))
    (container.root / SOURCE.lstrip("/") / ".venv").unlink()  # the install makes its own

    [install] = blocks_of("systemd-install")
    done = await container.run_once(SUDO + "\n".join(install.commands), cwd=SOURCE)
    assert done.returncode == 0, done.stdout + done.stderr

    await container.start()
    broker = Mosquitto(tmp_path / "broker", port=1883)  # the example config's broker
    broker.directory.mkdir()
    await container.helper(
        [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(broker.conf())]
    )
    await container.listening(1883)
    stand_in = await container.helper([sys.executable, "-m", "pagerd", "standin"])
    await container.listening(8025)
    lines: list[str] = []

    async def read_pages() -> None:
        assert stand_in.stdout is not None
        async for raw in stand_in.stdout:  # one at a time: the test reads them as they come
            lines.append(raw.decode().rstrip("\n"))  # noqa: PERF401

    reader = asyncio.create_task(read_pages())

    [start] = blocks_of("systemd-start")
    done = await container.sh(SUDO + "\n".join(start.commands), cwd=SOURCE)
    journal = await container.sh("journalctl -u pagerd --no-pager -o cat | tail -n 40")
    assert done.returncode == 0, done.stdout + done.stderr + journal.stdout

    for name in ("pagerd.toml", "api-tokens"):
        mode = (container.root / "etc" / "pagerd" / name).stat()
        assert (stat.S_IMODE(mode.st_mode), mode.st_uid, mode.st_gid) == (0o640, 0, 0), name
    state = await container.sh("systemctl show pagerd -p ActiveState -p MainPID -p User")
    assert "ActiveState=active" in state.stdout, state.stdout + journal.stdout
    main_pid = next(
        line.split("=")[1] for line in state.stdout.split() if line.startswith("MainPID=")
    )
    uid = await container.sh(f"awk '/^Uid:/ {{print $2}}' /proc/{main_pid}/status")
    assert int(uid.stdout) != 0, "pagerd runs as root"

    sent = time.monotonic()
    published = await asyncio.to_thread(
        subprocess.run,
        container.in_network(
            ["mosquitto_pub", "-q", "1", "-t", "pagerd/alert/payments-api", "-m", "disk full"]
        ),
        capture_output=True,
    )
    assert published.returncode == 0, published.stderr
    await eventually(
        lambda: any(PAGE_LINE.match(line) for line in lines), timeout=10, what="the page"
    )
    [page] = [m for line in lines if (m := PAGE_LINE.match(line))]
    assert (page[1], page[2]) == ("sms", "999999999"), page[0]
    assert time.monotonic() - sent < 5

    [check] = blocks_of("systemd-check")
    done = await container.sh(SUDO + "\n".join(check.commands), cwd=SOURCE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "/etc/pagerd/pagerd.toml" not in done.stderr
    assert "pagerd.toml: ok" in done.stdout
    assert "payments-api  unhealthy" in done.stdout

    stopped = await container.sh(
        "systemctl stop pagerd && systemctl show pagerd -p Result -p ExecMainStatus"
    )
    assert stopped.stdout.split() == ["Result=success", "ExecMainStatus=0"], stopped.stdout
    stand_in.terminate()
    await reader
