"""Dead letters: an event pagerd cannot take is kept in the database, not redelivered forever.

An MQTT message the broker redelivers until it is acknowledged would loop for ever if
pagerd failed on it every time. So a message that fails inside pagerd three times
(an internal error), or that pagerd refuses for a reason of its own making (a service
without a policy), is kept in the database with the reason, published on
``{prefix}/rejected``, acknowledged and counted (CONTRACT §9); nothing else waits on
it. It is acknowledged only once it is kept.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from pagerd.core.ports import Clock, Writer
from pagerd.core.records import DeadLetter, StoreError, WriteBatch
from pagerd.telemetry import metrics

log = structlog.get_logger("pagerd.dead_letters")

FAILURES_BEFORE_DEAD = 3
# Failures are counted per message for this many distinct messages, the oldest forgotten.
TRACKED_MESSAGES = 10_000


@dataclass(frozen=True, slots=True)
class _Keep:
    letter: DeadLetter
    kept: Callable[[], None]  # once committed
    not_kept: Callable[[], None]  # the store failed: leave it for redelivery


class DeadLetters:
    """Counts each message's failures, and keeps the ones that are dead."""

    def __init__(self, store: Writer, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._failures: OrderedDict[tuple[str, bytes], int] = OrderedDict()
        self._queue: asyncio.Queue[_Keep] = asyncio.Queue()

    def failed(self, topic: str, payload: bytes) -> bool:
        """Count one failure of this message; True when it has failed enough to be dead."""
        key = (topic, payload)
        count = self._failures.pop(key, 0) + 1
        if count >= FAILURES_BEFORE_DEAD:
            return True
        self._failures[key] = count
        while len(self._failures) > TRACKED_MESSAGES:
            self._failures.popitem(last=False)
        return False

    def keep(
        self,
        source: str,
        topic: str,
        payload: bytes,
        reason: str,
        *,
        kept: Callable[[], None],
        not_kept: Callable[[], None],
    ) -> None:
        """Keep the message in the store, then call ``kept`` (else ``not_kept``)."""
        text = payload.decode("utf-8", "replace")
        letter = DeadLetter(self._clock.now(), source, topic, text, reason)
        self._queue.put_nowait(_Keep(letter, kept, not_kept))

    async def run(self) -> None:
        """Write what is to be kept, in order, until cancelled."""
        while True:
            item = await self._queue.get()
            try:
                await self._store.write(WriteBatch(dead_letters=(item.letter,)))
            except StoreError as error:
                log.error(  # noqa: TRY400 - the store error says all there is
                    "dead_letter.not_kept", topic=item.letter.topic, error=str(error)
                )
                item.not_kept()
                continue
            metrics.DEAD_LETTERS.labels(source=item.letter.source).inc()
            log.error(
                "dead_letter.kept",
                source=item.letter.source,
                topic=item.letter.topic,
                reason=item.letter.reason,
            )
            item.kept()
