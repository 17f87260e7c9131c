"""Who is on call: µs per ``on_call`` answer, 1,000 schedules of 10 layers and 100 overrides.

Each schedule is in one of a handful of zones (with and without DST), its layers
start at random times over 2025-2026 with shifts of 8 hours to two weeks and 2 to 8
developers, and its 100 overrides (1 to 48 hours, some overlapping) fall in 2026.
Each round asks every schedule about one random instant of 2026-2027, so the answers
come from all the layers and from inside and outside overrides.

The peer, measured in the same run, is one ``datetime.astimezone(ZoneInfo)``: the
least an answer in local time can cost. Each case is the best of three passes over
the same instants, the cases interleaved. Building the schedules and the override
indexes (what a change of schedule costs) is timed too.

With ``--api``, the same schedules are stored and served by the API in this process
(a real SQLite store, aiohttp on loopback), and ``GET /api/v1/schedules/{id}/oncall?at=``
is asked sequentially, against ``GET /healthz`` on the same server as the peer: what
the API's path adds to an answer.

Run from the repository root: ``.venv/bin/python -m tests.bench.bench_oncall``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from pagerd.core.records import DeveloperRow, OverrideRow, ScheduleRow, TeamRow, WriteBatch
from pagerd.core.schedules import (
    NO_OVERRIDES,
    Override,
    Overrides,
    Rotation,
    Schedule,
    next_handovers,
    on_call,
)
from pagerd.store.sqlite import Store
from tests.apisite import serve_api
from tests.bench.common import report

ZONES = ("Europe/Paris", "America/New_York", "Australia/Sydney", "Asia/Kolkata", "UTC")
SHIFTS_S = (8 * 3600, 12 * 3600, 24 * 3600, 7 * 24 * 3600, 14 * 24 * 3600)
YEAR_S = 365 * 24 * 3600
FROM = datetime(2026, 1, 1, tzinfo=UTC)
PASSES = 3  # each case's best of this many passes over the same instants


def make_schedule(rng: random.Random, layers: int) -> Schedule:
    rotations = tuple(
        Rotation(
            start=datetime(2025, 1, 1) + timedelta(seconds=rng.randrange(2 * YEAR_S)),
            shift_s=rng.choice(SHIFTS_S),
            developer_ids=tuple(rng.sample(range(1, 50), rng.randint(2, 8))),
        )
        for _ in range(layers)
    )
    return Schedule(1, rng.choice(ZONES), rotations)


def make_overrides(rng: random.Random, count: int) -> list[Override]:
    overrides = []
    for override_id in rng.sample(range(1, 10 * count + 1), count):
        start = FROM + timedelta(seconds=rng.randrange(YEAR_S))
        length = timedelta(seconds=rng.randrange(3600, 48 * 3600))
        overrides.append(Override(override_id, rng.randrange(1, 50), start, start + length))
    return overrides


def measure(seed: int, schedules: int, layers: int, overrides: int, rounds: int) -> list[list[str]]:
    rng = random.Random(seed)
    built_at = time.perf_counter()
    plans = [make_schedule(rng, layers) for _ in range(schedules)]
    schedules_s = time.perf_counter() - built_at
    raw = [make_overrides(rng, overrides) for _ in range(schedules)]
    built_at = time.perf_counter()
    indexes = [Overrides(chosen) for chosen in raw]
    overrides_s = time.perf_counter() - built_at
    single = [Schedule(1, plan.time_zone, plan.rotations[-1:]) for plan in plans]
    instants = [
        [FROM + timedelta(seconds=rng.randrange(2 * YEAR_S)) for _ in range(schedules)]
        for _ in range(rounds)
    ]
    zones = [ZoneInfo(plan.time_zone) for plan in plans]
    answers = schedules * rounds

    cases: dict[str, Callable[[int, datetime], object]] = {
        "peer": lambda i, at: at.astimezone(zones[i]),
        "full": lambda i, at: on_call(plans[i], indexes[i], at),
        "bare": lambda i, at: on_call(single[i], NO_OVERRIDES, at),
        "next": lambda i, at: next_handovers(plans[i], indexes[i], at, 3),
    }
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(PASSES):  # interleaved, so that a slow stretch of the machine hits all
        for name, ask in cases.items():
            start = time.perf_counter()
            for round_instants in instants:
                for index, at in enumerate(round_instants):
                    ask(index, at)
            best[name] = min(best[name], time.perf_counter() - start)
    peer_s, full_s, bare_s, next_s = best["peer"], best["full"], best["bare"], best["next"]

    def row(case: str, count: int, seconds: float, peer: bool = True) -> list[str]:
        per = seconds / count * 1e6
        ratio = f"{seconds / peer_s:.1f}" if peer else "-"
        return [case, f"{count:,}", f"{per:.2f}", ratio]

    return [
        row("peer: datetime.astimezone(zone)", answers, peer_s),
        row(f"on_call: {layers} layers, {overrides} overrides", answers, full_s),
        row("on_call: 1 layer, no overrides", answers, bare_s),
        row("next_handovers(count=3)", answers, next_s),
        row(f"Schedule(): {layers} layers, validated", schedules, schedules_s, peer=False),
        row(f"Overrides(): {overrides}, overlaps resolved", schedules, overrides_s, peer=False),
    ]


async def through_api(seed: int, schedules: int, layers: int, overrides: int, asks: int) -> None:
    """µs per ``GET .../oncall?at=`` through the API, against ``GET /healthz``."""
    rng = random.Random(seed)
    plans = [make_schedule(rng, layers) for _ in range(schedules)]
    raw = [make_overrides(rng, overrides) for _ in range(schedules)]
    with tempfile.TemporaryDirectory(prefix="bench-oncall-") as tmp:
        database = Path(tmp) / "pagerd.db"
        store = await Store.open(database)
        next_id = 1
        override_rows = []
        for index, chosen in enumerate(raw):
            for override in chosen:  # ids unique across schedules, as the store hands them out
                renumbered = Override(next_id, override.developer_id, override.start, override.end)
                override_rows.append(OverrideRow(f"s{index}", renumbered))
                next_id += 1
        await store.write(
            WriteBatch(
                teams=(TeamRow(1, "team", managed=False, cursor=0),),
                developers=tuple(
                    DeveloperRow(i, 1, f"d{i}", f"+1555000{i:04d}") for i in range(1, 50)
                ),
                schedules=tuple(ScheduleRow(f"s{i}", p, False, False) for i, p in enumerate(plans)),
                overrides=tuple(override_rows),
            )
        )
        await store.close()
        async with serve_api(database) as site:
            paths = [
                f"/schedules/s{rng.randrange(schedules)}/oncall?at="
                + (FROM + timedelta(seconds=rng.randrange(2 * YEAR_S))).strftime(
                    "%Y-%m-%dT%H:%M:%SZ"
                )
                for _ in range(asks)
            ]
            best = {"peer": float("inf"), "oncall": float("inf")}
            for _ in range(PASSES):
                start = time.perf_counter()
                for _path in paths:
                    async with site.http.get(f"{site.base}/healthz") as response:
                        await response.read()
                best["peer"] = min(best["peer"], time.perf_counter() - start)
                start = time.perf_counter()
                for path in paths:
                    async with site.http.get(site.url(path)) as response:
                        assert response.status == 200, await response.text()
                        await response.read()
                best["oncall"] = min(best["oncall"], time.perf_counter() - start)
    report(
        f"Who is on call through the API: {schedules:,} schedules of {layers} layers and"
        f" {overrides} overrides, {asks:,} requests one after another",
        ["case", "requests", "µs per request", "times the peer (same run)"],
        [
            ["peer: GET /healthz", f"{asks:,}", f"{best['peer'] / asks * 1e6:.0f}", "1.0"],
            [
                "GET /api/v1/schedules/{id}/oncall?at=",
                f"{asks:,}",
                f"{best['oncall'] / asks * 1e6:.0f}",
                f"{best['oncall'] / best['peer']:.2f}",
            ],
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--schedules", type=int, default=1_000)
    parser.add_argument("--layers", type=int, default=10)
    parser.add_argument("--overrides", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=20, help="instants asked per schedule")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--api", action="store_true", help="ask through the API instead")
    args = parser.parse_args()
    if args.api:
        asyncio.run(through_api(1, args.schedules, args.layers, args.overrides, asks=2_000))
        return
    for run in range(1, args.runs + 1):
        rows = measure(run, args.schedules, args.layers, args.overrides, args.rounds)
        report(
            f"Who is on call, run {run}: {args.schedules:,} schedules of {args.layers} layers"
            f" and {args.overrides} overrides, {args.rounds} random instants each",
            ["case", "calls", "µs per call", "times the peer (same run)"],
            rows,
        )


if __name__ == "__main__":
    main()
