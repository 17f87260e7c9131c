"""Slowloris: holds N HTTP connections that each sent half a request, reopening any closed.

Run as its own process (``python -m tests.faults.stall PORT N SECONDS``), so that its
work shares no event loop with the test that measures pages, and as lean as asyncio
allows (a bare protocol per connection, no streams), so that it takes as little of
the machine as it can. It prints ``holding`` once each connection was made once, and
at the end one JSON line: what pagerd answered (``503``, ``408``), and how many
connections were still held when the time was up.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import sys
import time
from collections import Counter

# Headers that never end: the report's half request.
HALF_REQUEST = b"POST /api/v1/alerts HTTP/1.1\r\nHost: pagerd\r\nContent-Length: 100\r\n"
REOPEN_S = 1.0  # a closed connection is opened again after about this long


class Stalled(asyncio.Protocol):
    """One connection: sends half a request, notes pagerd's answer, reopens when closed."""

    def __init__(self, attack: Attack) -> None:
        self.attack = attack
        self.answer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(HALF_REQUEST)
        self.attack.opened(self)

    def data_received(self, data: bytes) -> None:
        self.answer += data

    def connection_lost(self, exc: Exception | None) -> None:
        status = self.answer.split(b" ", 2)[1] if self.answer.startswith(b"HTTP/1.1 ") else b""
        self.attack.live.discard(self)
        self.attack.closed(status.decode(errors="replace") or ("reset" if exc else "closed"))


class Attack:
    def __init__(self, port: int, connections: int, seconds: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.port = port
        self.until = time.monotonic() + seconds
        self.outcomes: Counter[str] = Counter()
        self.left_to_open = connections
        self.holding = asyncio.Event()
        self.live: set[Stalled] = set()

    def opened(self, connection: Stalled) -> None:
        self.live.add(connection)
        self.outcomes["opened"] += 1
        self.left_to_open -= 1
        if self.left_to_open == 0:
            self.holding.set()

    def closed(self, outcome: str) -> None:
        self.outcomes[outcome] += 1
        if time.monotonic() < self.until:
            self.loop.call_later(REOPEN_S * random.uniform(0.5, 1.5), self.open)

    def open(self) -> None:
        task = self.loop.create_task(self._connect())
        task.add_done_callback(self._connected)

    async def _connect(self) -> None:
        await self.loop.create_connection(lambda: Stalled(self), "127.0.0.1", self.port)

    def _connected(self, task: asyncio.Task[None]) -> None:
        if task.exception() is not None:
            self.closed("connect_failed")


async def main(port: int, connections: int, seconds: float) -> None:
    attack = Attack(port, connections, seconds)
    for _ in range(connections):
        attack.open()
    await attack.holding.wait()
    print("holding", flush=True)
    await asyncio.sleep(max(0.0, attack.until - time.monotonic()))
    print(json.dumps({**attack.outcomes, "held_at_the_end": len(attack.live)}), flush=True)


if __name__ == "__main__":
    # A real attacker's CPU is not the pager's: on this shared machine it yields to
    # everything else, so the test measures what pagerd does, not what the attack costs.
    os.nice(19)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])))
