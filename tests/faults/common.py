"""Shared checks of the fault suite: what was recorded, what was paged, and the figures."""

from __future__ import annotations

import bisect
from collections import Counter
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


def repeats_by_kill(pages: list[Page], kills: list[float]) -> tuple[int, float]:
    """Repeated pages that no kill explains, and the longest a page was out before its kill.

    A page repeats rightly only when pagerd was killed after sending it and before
    committing its outcome: a kill must come between the first arrival and the repeat.
    The second figure says how wide that window was (ms from first arrival to the kill).
    """
    first: dict[str, float] = {}
    unexplained, window_ms = 0, 0.0
    for page in sorted(pages, key=lambda p: p.at):
        if page.key not in first:
            first[page.key] = page.at
            continue
        index = bisect.bisect_left(kills, first[page.key])
        if index == len(kills) or kills[index] > page.at:
            unexplained += 1
        else:
            window_ms = max(window_ms, (kills[index] - first[page.key]) * 1000)
    return unexplained, window_ms


def report(name: str, **figures: object) -> None:
    """Print one line of figures for the fault run's log."""
    print(f"\n[fault] {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
