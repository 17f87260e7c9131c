"""Shared checks of the fault suite: what was recorded, what was paged, and the figures."""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tests.harness import Page, SmsStandIn, sqlite_rows


def count(db: Path, sql: str, *args: object) -> int:
    """The single number ``sql`` selects."""
    return int(sqlite_rows(db, sql, *args)[0][0])


def alert_figures(db: Path, acked: set[str]) -> dict[str, int]:
    """Alerts acknowledged by the broker vs recorded: lost and duplicated."""
    recorded = {row[0] for row in sqlite_rows(db, "SELECT alert_id FROM alerts")}
    total = count(db, "SELECT count(*) FROM alerts")
    return {
        "sent": len(acked),
        "recorded": total,
        "lost": len(acked - recorded),
        "duplicated": total - len(recorded),
    }


def page_figures(sms: SmsStandIn) -> dict[str, int]:
    """Pages received by the SMS stand-in: distinct keys, repeats (same key again)."""
    repeats = Counter(page.key for page in sms.pages)
    return {
        "pages": len(sms.pages),
        "distinct_keys": len(repeats),
        "duplicates": sum(n - 1 for n in repeats.values()),
    }


@dataclass(frozen=True)
class Kill:
    """One SIGKILL of pagerd: when it came, and when the restarted pagerd was READY."""

    at: float  # time.monotonic(), the clock of Page.at
    ready_again: float


def repeats_by_kill(pages: list[Page], kills: list[Kill], retried: set[str]) -> tuple[int, float]:
    """Repeated pages that neither a kill nor a recorded retry explains, and the longest a
    page had arrived before the kill that made it repeat (ms).

    A page rightly repeats when pagerd sent it, then died before committing its
    outcome, or when pagerd itself recorded a retry of it (``retried``: a timeout,
    say). A page that arrives before the restarted pagerd is READY may still come
    from the killed one (it sat in a socket), so the kill must come before the
    repeat and the first arrival before that restart's READY.
    """
    first: dict[str, float] = {}
    ready = [kill.ready_again for kill in kills]
    unexplained, window_ms = 0, 0.0
    for page in sorted(pages, key=lambda p: p.at):
        if page.key not in first:
            first[page.key] = page.at
            continue
        index = bisect.bisect_right(ready, first[page.key])  # the first restart after it
        if index < len(kills) and kills[index].at <= page.at:
            window_ms = max(window_ms, (kills[index].at - first[page.key]) * 1000)
        elif page.key not in retried:
            unexplained += 1
    return unexplained, window_ms


def report(name: str, **figures: object) -> None:
    """Print one line of figures for the fault run's log."""
    print(f"\n[fault] {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
