"""The README, as a newcomer follows it: `make run` in a fresh copy of the repository, then
every command of its marked blocks, in order, each one's output read.

`make run` listens on fixed ports (1883, 8080, 8025, 2525). As root the whole run gets a
network namespace of its own, so nothing else on the machine can be in its way; as
anyone else it runs on the machine's loopback and is skipped if one of those is taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pagerd.cli import build_parser
from tests.harness import REPO, eventually, sqlite_rows
from tests.readme import KINDS, README, blocks_of, shell_blocks

PAGE_WITHIN_S = 1.0  # the promise: a page shows within a second of the alert
READY_WITHIN_S = 60.0
PORTS = (1883, 8080, 8025, 2525)
PAGE_LINE = re.compile(r"^\d\d:\d\d:\d\d  (sms|webhook|email) +(\S+)  (.*)  key=(\S+)$")


# Links the docs/interface/ work writes (issue #14.4): inside the repository, not here yet.
def test_every_shell_block_of_the_readme_is_run_by_a_test() -> None:
    blocks = shell_blocks()
    assert blocks, "no ```sh blocks found"
    unmarked = [block.line for block in blocks if block.kind is None]
    assert unmarked == [], f"README.md: ```sh blocks no test runs, at lines {unmarked}"
    assert {block.kind for block in blocks} <= set(KINDS)
    assert [block.commands for block in blocks_of("start")] == [("make run",)]


def test_the_readme_examples_are_pagerd_commands_its_parser_takes() -> None:
    examples = [command for block in blocks_of("example") for command in block.commands]
    assert examples
    for command in examples:
        program, *args = shlex.split(command)
        assert program == "pagerd", command
        try:
            build_parser().parse_args(args)
        except SystemExit as refused:
            raise AssertionError(f"pagerd refuses the README's example: {command}") from refused


def test_the_readme_links_only_to_files_in_the_repository() -> None:
    text = README.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    assert targets
    for target in targets:
        assert "://" not in target, f"README.md links outside the repository: {target}"
        path = (REPO / target.split("#")[0]).resolve()
        assert path.is_relative_to(REPO), f"README.md links outside the repository: {target}"
        assert path.exists(), f"README.md links to a missing file: {target}"
    assert "../" not in text


# --- make run and the commands ----------------------------------------------------------------


@dataclass
class MakeRun:
    """`make run` in a copy of the repository, and what it printed, line by line."""

    directory: Path
    isolated: bool  # in a network namespace of its own
    lines: list[tuple[float, str]] = field(default_factory=list)
    process: asyncio.subprocess.Process | None = None

    def environment(self) -> dict[str, str]:
        # MAKE*: the suite itself may run under make; this is a make of its own.
        unset = {"PAGERD_CONFIG", "STATE_DIRECTORY", "CREDENTIALS_DIRECTORY"}
        unset |= {"MAKEFLAGS", "MFLAGS", "MAKELEVEL"}
        return {k: v for k, v in os.environ.items() if k not in unset}

    def wrap(self, argv: list[str]) -> list[str]:
        """``argv`` run in make run's network (its own namespace, as root)."""
        if not self.isolated or self.process is None:
            return argv
        return ["nsenter", f"--net=/proc/{self.process.pid}/ns/net", "--", *argv]

    async def start(self) -> None:
        argv = ["make", "run"]
        if self.isolated:
            argv = ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]
            argv += ["make", "run"]
        self.process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=self.directory,
            env=self.environment(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group, ended as one if a test fails
        )
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            self.lines.append((time.monotonic(), raw.decode(errors="replace").rstrip("\n")))

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def pages(self, since: float = 0.0) -> list[tuple[float, re.Match[str]]]:
        """The stand-in's page lines printed after ``since`` (time.monotonic())."""
        found = ((at, PAGE_LINE.match(line)) for at, line in self.lines if at >= since)
        return [(at, match) for at, match in found if match is not None]

    def log_events(self) -> list[dict[str, object]]:
        """pagerd's own log: its stdout is a pipe here, so JSON lines."""
        events = []
        for _, line in self.lines:
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    events.append(json.loads(line))
        return events

    async def run(self, command: str) -> tuple[int, str, str]:
        """One README command, as a shell runs it, in the copy's directory and network."""
        process = await asyncio.create_subprocess_exec(
            *self.wrap(["bash", "-o", "pipefail", "-c", command]),
            cwd=self.directory,
            env=self.environment(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    async def end(self) -> None:
        """Whatever still runs of it (a failed test) ends, its group with it."""
        if self.process is None:
            return
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        await self.process.wait()
        await self._reader


def fresh_copy(destination: Path) -> Path:
    """The repository's tracked files, as a clone has them, sharing this virtualenv."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)  # mtimes kept: make sees .venv up to date
    (destination / ".venv").symlink_to(REPO / ".venv")
    return destination


@pytest.fixture
async def make_run(tmp_path: Path) -> AsyncIterator[MakeRun]:
    installed = REPO / ".venv" / ".runtime"
    newest = max((REPO / f).stat().st_mtime for f in ("pyproject.toml", "constraints.txt"))
    assert installed.exists(), "run make first"
    assert installed.stat().st_mtime >= newest, "run make first"
    isolated = os.geteuid() == 0 and shutil.which("unshare") is not None
    if not isolated:
        taken = [port for port in PORTS[1:] if _listening(port)]  # a broker on 1883 is used
        if taken:
            pytest.skip(f"make run's ports are taken on this machine: {taken}")
    run = MakeRun(fresh_copy(tmp_path / "pagerd"), isolated)
    try:
        yield run
    finally:
        await run.end()


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


async def test_every_readme_command_works_in_order_on_a_fresh_make_run(make_run: MakeRun) -> None:
    """Given a fresh copy and `make run`, then each command of the README's marked blocks
    exits 0 in order, says what it did, and each alert's page shows within a second."""
    await make_run.start()
    await eventually(
        lambda: any(e.get("event") == "pagerd.ready" for e in make_run.log_events()),
        timeout=READY_WITHIN_S,
        what=f"pagerd ready under make run:\n{make_run.text()}",
    )
    token = (make_run.directory / "var" / "api-token").read_text().strip()
    assert len(token) >= 43
    assert f"make run: API token {token}" in make_run.text()
    assert "make run: console   http://127.0.0.1:8080/" in make_run.text()

    reader = Reader(make_run)
    for block in blocks_of("commands"):
        for command in block.commands:
            started = time.monotonic()
            code, out, err = await make_run.run(command)
            assert code == 0, f"README.md line {block.line}: {command}\n{out}{err}"
            assert "Traceback" not in err, err
            await reader.read(command, out, Span(started, time.monotonic()))

    log = make_run.directory / "pagerd-log.jsonl"
    log.write_text("".join(json.dumps(e) + "\n" for e in make_run.log_events()))
    for block in blocks_of("logs"):
        for command in block.commands:
            # The journal of an installed pagerd holds the same lines make run printed.
            local = re.sub(r"^journalctl -u pagerd( -f)? -o cat", f"cat {log}", command)
            assert local != command, command
            code, out, err = await make_run.run(local)
            assert code == 0, f"README.md line {block.line}: {command}\n{err}"
            reader.read_log_filter(command, out)

    # `make stop`, as the quick start says, from another terminal: everything ends.
    code, out, err = await make_run.run("make stop")
    assert code == 0, out + err
    assert make_run.process is not None
    assert await asyncio.wait_for(make_run.process.wait(), 30) == 0, make_run.text()
    stopped = [line for _, line in make_run.lines if line.startswith("make run: stopped")]
    assert [line.split()[3] for line in stopped] == ["pagerd", "standin", "mosquitto"], stopped
    assert not any((make_run.directory / "var" / "run").iterdir())


@dataclass(frozen=True)
class Span:
    """When a command was started, and when it had returned (its event sent)."""

    started: float
    returned: float


@dataclass
class Reader:
    """What each README command should have done, read from its output and the world."""

    make_run: MakeRun

    @property
    def db(self) -> Path:
        return self.make_run.directory / "var" / "pagerd.db"

    async def read(self, command: str, out: str, span: Span) -> None:
        for pattern, check in self.checks():
            if re.search(pattern, command):
                await check(out, span)
                return
        raise AssertionError(f"no check reads the output of this README command: {command}")

    def checks(self) -> list[tuple[str, Callable[[str, Span], Awaitable[None]]]]:
        return [
            (r"pagerd alert payments-api ", self.alert),
            (r"pagerd status ", self.status),
            (r"pagerd ack payments-api ", self.ack),
            (r"pagerd healthy payments-api ", self.healthy),
            (r"/api/v1/teams$", self.team_made),
            (r"/api/v1/alerts$", self.team_alert),
            (r"/integrations/pagerduty/v2/enqueue$", self.pagerduty_trigger),
        ]

    async def page_after(self, span: Span) -> re.Match[str]:
        """The first page line since the command started: within a second of its return."""
        await eventually(
            lambda: bool(self.make_run.pages(span.started)),
            timeout=PAGE_WITHIN_S + 4,
            what="a page in the stand-in's output",
        )
        at, page = self.make_run.pages(span.started)[0]
        late = at - span.returned
        assert late <= PAGE_WITHIN_S, f"the page came {late:.2f} s after the command: {page[0]}"
        return page

    def open_incident(self) -> tuple[str, str] | None:
        rows = sqlite_rows(
            self.db,
            "SELECT id, status FROM incidents WHERE service_id = 'payments-api'"
            " AND status != 'resolved'",
        )
        return (str(rows[0][0]), str(rows[0][1])) if rows else None

    async def alert(self, out: str, span: Span) -> None:
        assert re.fullmatch(r"alert for payments-api taken: opened, incident \w+", out.strip())
        page = await self.page_after(span)
        assert page[1] == "sms", page[0]
        assert page[3].startswith("Payments API: 5xx rate over 10% [#"), page[0]

    async def status(self, out: str, _: Span) -> None:
        rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
        incident = self.open_incident()
        assert incident is not None
        assert rows["payments-api"][:5] == [
            "payments-api",
            "unhealthy",
            incident[0],
            "triggered",
            "1",
        ]
        assert "notifications: 0 pending, 0 held, 0 failed" in out

    async def ack(self, out: str, _: Span) -> None:
        assert re.fullmatch(
            r"ack for payments-api taken: acknowledged, incident \w+", out.strip()
        ), out
        await eventually(
            lambda: (self.open_incident() or ("", ""))[1] == "acknowledged", what="the ack"
        )

    async def healthy(self, out: str, _: Span) -> None:
        assert re.fullmatch(r"healthy for payments-api taken: resolved, incident \w+", out.strip())
        await eventually(lambda: self.open_incident() is None, what="the incident resolved")

    async def team_made(self, out: str, _: Span) -> None:
        body = json.loads(out)
        assert body["team"] == {"id": 2, "name": "platform"}, body
        assert [d["name"] for d in body["developers"]] == ["ana"]

    async def team_alert(self, out: str, span: Span) -> None:
        body = json.loads(out)
        [notified] = body["notified"]
        assert notified["phone_number"] == "+15550002222", body
        page = await self.page_after(span)
        assert (page[1], page[2]) == ("sms", "+15550002222"), page[0]
        assert "Too many 5xx!" in page[3]

    async def pagerduty_trigger(self, out: str, span: Span) -> None:
        body = json.loads(out)
        assert body == {"status": "success", "message": "Event processed", "dedup_key": "disk-db1"}
        page = await self.page_after(span)
        assert page[1] == "sms", page[0]
        assert page[3].startswith("Payments API: disk 91% full on db1 [#"), page[0]

    def read_log_filter(self, command: str, out: str) -> None:
        if "@tsv" in command:  # failures, rejections, timeouts: none in this run
            assert out == "", out
            return
        events = [json.loads(line) for line in out.splitlines()]
        assert events, command
        if "payments-api" in command:
            assert {e["service_id"] for e in events} == {"payments-api"}
            assert "incident.triggered" in {e["event"] for e in events}
        else:
            assert all(e["level"] != "debug" for e in events)
