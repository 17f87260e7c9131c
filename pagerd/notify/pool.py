"""The sender processes, supervised: the dispatcher's ``Sender`` for every channel.

The dispatcher keeps every rule of CONTRACT §5 (order, bundling, cancellation,
retries, the one Idempotency-Key per page) and awaits ``send(page)`` as it would an
in-process sender; the pool hands the attempt to the sender process with the fewest
in flight (``pagerd.notify.worker``) and resolves it with that process's ``Result``.

- **A process that dies** (killed, crashed, its link broken) is logged, counted and
  started again, after a backoff if it keeps dying. Each attempt it had in flight is
  handed to another process, or to the next one ready: the same ``Page``, so the
  same Idempotency-Key; never a second attempt as far as the dispatcher can tell, as
  the first one's outcome is unknown. An attempt in flight through ``MAX_RESENDS``
  deaths is answered as a retry, so one page that kills every process does not stop
  all the others: the dispatcher's backoff and ``max_attempts`` bound it.
- **Ready** (``ready``) once every process has said so the first time: the daemon sends
  READY=1 only then. Until one process is ready, attempts wait, as in a full queue.
- **Stop** (``close``): the daemon lets the sends in flight end first; the processes
  read the end of their socket and exit; one that does not within
  ``STOP_TIMEOUT_S`` is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from pagerd.core.ports import Attempt, Page, Verdict
from pagerd.notify.ipc import FromWorker, Link, Ready, Result, Send, Settings
from pagerd.telemetry import metrics

log = structlog.get_logger("pagerd.sender")

MAX_RESENDS = 3  # deaths an attempt is carried through before it is answered as a retry
START_TIMEOUT_S = 15.0  # spawn to Ready; a slow host imports aiohttp in ~1 s
STOP_TIMEOUT_S = 3.0
RESTART_MIN_S = 0.1
RESTART_MAX_S = 5.0
HEALTHY_S = 10.0  # a process that lived this long died of something new: restart at once
WORKER_DIED = "sender process died"
# The daemon's own interpreter and its own copy of pagerd, wherever the daemon was started:
# -P keeps the working directory off sys.path, and PYTHONPATH names where pagerd came from.
WORKER_COMMAND = (sys.executable, "-P", "-m", "pagerd.notify.worker")
PAGERD_ROOT = str(Path(__file__).resolve().parents[2])


@dataclass(slots=True)
class _Request:
    """One attempt handed to the pool, until its Result comes or its sender gives up."""

    page: Page
    future: asyncio.Future[Attempt]
    worker: _Worker | None = None
    resends: int = 0


@dataclass(slots=True)
class _Worker:
    slot: int
    process: asyncio.subprocess.Process
    link: Link[FromWorker]
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    in_flight: set[int] = field(default_factory=set)


class SenderPool:
    """Runs ``workers`` sender processes and sends through them (a ``Sender``)."""

    def __init__(
        self,
        settings: Settings,
        workers: int,
        *,
        command: tuple[str, ...] = WORKER_COMMAND,
    ) -> None:
        if workers < 1:
            raise ValueError("a sender pool has at least one process")
        self._settings = settings
        self._slots = workers
        self._command = command
        self._ids = itertools.count()
        self._requests: dict[int, _Request] = {}
        self._waiting: deque[int] = deque()  # request ids for the next process ready
        self._ready: list[_Worker] = []
        self._started: set[int] = set()  # slots whose process was ready at least once
        self.ready = asyncio.Event()  # every slot's process was ready once
        self._closing = asyncio.Event()  # close() was called

    # --- the Sender ---

    async def send(self, page: Page) -> Attempt:
        """One attempt at ``page`` in a sender process; resent there if that one dies."""
        request_id = next(self._ids)
        future: asyncio.Future[Attempt] = asyncio.get_running_loop().create_future()
        request = _Request(page, future)
        self._requests[request_id] = request
        self._hand_over(request_id, request)
        try:
            return await future
        finally:  # answered, or the dispatcher gave up on it (a late Result is dropped)
            del self._requests[request_id]
            if request.worker is not None:
                request.worker.in_flight.discard(request_id)

    def _hand_over(self, request_id: int, request: _Request) -> None:
        if not self._ready:
            request.worker = None
            self._waiting.append(request_id)
            return
        worker = min(self._ready, key=lambda w: len(w.in_flight))
        request.worker = worker
        worker.in_flight.add(request_id)
        worker.link.send(Send(request_id, request.page))

    def _answered(self, worker: _Worker, message: FromWorker) -> None:
        match message:
            case Result():
                if message.refused:
                    metrics.WEBHOOK_ADDRESSES_REFUSED.inc(message.refused)
                worker.in_flight.discard(message.id)
                request = self._requests.get(message.id)
                if request is not None and not request.future.done():
                    request.future.set_result(message.attempt())
            case Ready():
                worker.ready.set()

    def pids(self) -> list[int]:
        """The processes ready now."""
        return [worker.process.pid for worker in self._ready]

    def not_ready(self) -> list[str]:
        """Why sending is not ready, for the health check: [] when it is."""
        up = len(self._ready)
        return [] if up == self._slots else [f"senders: {up} of {self._slots} processes ready"]

    # --- supervision ---

    async def run(self) -> None:
        """Keep every slot's process running until ``close``."""
        async with asyncio.TaskGroup() as group:
            for slot in range(self._slots):
                group.create_task(self._keep(slot), name=f"pagerd[sender-{slot}]")

    async def close(self) -> None:
        """End every process: each reads the end of its socket (killed if it lingers)."""
        self._closing.set()
        for worker in self._ready:
            worker.link.close()

    async def _keep(self, slot: int) -> None:
        delay = RESTART_MIN_S
        while not self._closing.is_set():
            began = time.monotonic()
            worker = await self._start(slot)
            if worker is not None:
                if self._closing.is_set():  # ready as the daemon stops: end it at once
                    worker.link.close()
                try:
                    await worker.lost.wait()
                finally:
                    self._gone(worker)
                    await self._reap(worker)
                if self._closing.is_set():
                    return
                metrics.SENDER_RESTARTS.inc()
                log.error(
                    "sender.died",
                    slot=slot,
                    pid=worker.process.pid,
                    returncode=worker.process.returncode,
                    resent=len(worker.in_flight),
                )
                self._resend(worker)
            if time.monotonic() - began >= HEALTHY_S:
                delay = RESTART_MIN_S
                continue
            await asyncio.sleep(delay)
            delay = min(RESTART_MAX_S, delay * 2)

    async def _start(self, slot: int) -> _Worker | None:
        """A new process for ``slot``, once Ready; None (logged) if it could not start."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = await asyncio.create_subprocess_exec(
                *self._command,
                str(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                env=_worker_environment(),
                stdin=asyncio.subprocess.DEVNULL,  # its logs go where the daemon's go
            )
        except OSError as error:
            ours.close()
            metrics.SENDER_START_FAILURES.inc()
            log.error("sender.start_failed", slot=slot, error=str(error))  # noqa: TRY400 - said
            return None
        finally:
            theirs.close()
        worker: _Worker | None = None

        def received(message: FromWorker) -> None:
            assert worker is not None
            self._answered(worker, message)

        def lost(reason: BaseException | None) -> None:
            assert worker is not None
            if reason is not None and not self._closing.is_set():
                log.error("sender.link_broken", slot=slot, pid=process.pid, error=str(reason))
            worker.lost.set()

        link: Link[FromWorker] = Link(FromWorker, received, lost)
        worker = _Worker(slot, process, link)
        try:
            await asyncio.get_running_loop().create_unix_connection(lambda: link, sock=ours)
            link.send(self._settings)
            ready = await self._started_in_time(worker)
        except BaseException:  # cancelled while starting: the process reads end of stream
            ours.close()
            link.close()
            raise
        if not ready:
            metrics.SENDER_START_FAILURES.inc()
            why = "exited" if worker.lost.is_set() else f"not ready in {START_TIMEOUT_S} s"
            log.error("sender.start_failed", slot=slot, pid=process.pid, error=why)
            link.close()
            await self._reap(worker)
            return None
        self._ready.append(worker)
        self._started.add(slot)
        if len(self._started) == self._slots:
            self.ready.set()
        log.info("sender.started", slot=slot, pid=process.pid)
        while self._waiting and worker in self._ready:
            request_id = self._waiting.popleft()
            request = self._requests.get(request_id)
            if request is not None:
                self._hand_over(request_id, request)
        return worker

    @staticmethod
    async def _started_in_time(worker: _Worker) -> bool:
        """Whether ``worker`` said Ready within START_TIMEOUT_S, before its link was lost."""
        lost = asyncio.ensure_future(worker.lost.wait())
        ready = asyncio.ensure_future(worker.ready.wait())
        try:
            await asyncio.wait(
                (lost, ready), timeout=START_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            lost.cancel()
            ready.cancel()
        return worker.ready.is_set() and not worker.lost.is_set()

    def _gone(self, worker: _Worker) -> None:
        with contextlib.suppress(ValueError):
            self._ready.remove(worker)
        worker.link.close()

    def _resend(self, worker: _Worker) -> None:
        """Hand the dead process's attempts to another, or answer one carried too often."""
        metrics.SENDER_RESENT.inc(len(worker.in_flight))
        for request_id in sorted(worker.in_flight):
            request = self._requests.get(request_id)
            if request is None or request.future.done():
                continue
            request.resends += 1
            if request.resends > MAX_RESENDS:
                request.worker = None
                request.future.set_result(Attempt(Verdict.RETRY, WORKER_DIED))
            else:
                self._hand_over(request_id, request)

    async def _reap(self, worker: _Worker) -> None:
        """Wait for the process to exit; kill it if it lingers."""
        process = worker.process
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await process.wait()
        except TimeoutError:
            log.error(  # noqa: TRY400 - a deadline, not an error with a traceback
                "sender.stop_timeout", slot=worker.slot, pid=process.pid
            )
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


def _worker_environment() -> dict[str, str]:
    """The daemon's environment, with pagerd's own root first on the module search path."""
    paths = [PAGERD_ROOT, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return os.environ | {"PYTHONPATH": os.pathsep.join(paths)}
