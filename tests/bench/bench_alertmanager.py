"""pagerd beside Prometheus Alertmanager: alert in to webhook notification out, on one machine.

Both run on loopback in the same run and notify the same webhook sink, a process of
its own that notes the arrival time of each notification and the alert it is for.
At each offered rate, a separate process sends alerts on a fixed schedule (open
loop: the n-th alert is due at ``start + n / rate`` whether or not the system keeps
up), each one its own incident (pagerd: its own service; Alertmanager: its own
group), so each one is one notification. Latency is arrival minus scheduled time, on
CLOCK_MONOTONIC, which every process of the host shares: a late sender and a slow
system both count.

- pagerd, three ways in: MQTT (QoS 1, the publisher of ``common.py``), its
  Alertmanager webhook endpoint and its PagerDuty Events v2 endpoint (HTTP, one
  alert per request). Its policy has one level whose target is a webhook to the sink.
  An HTTP 2xx or a PUBACK is sent once the alert is committed to SQLite; the page
  then goes out through the durable outbox.
- Alertmanager (Debian's ``prometheus-alertmanager``): alerts are POSTed to
  ``/api/v2/alerts``, one per request, each with a unique ``bench_key`` label; the
  route groups by that label with ``group_wait: 0s``, so each alert is a new group
  flushed at once. Its latency includes the API, the in-memory alert store, the
  dispatcher and the group's notification pipeline (inhibition, silences, the
  notification log's dedup, retries) and the webhook POST. It keeps alerts in memory
  only: nothing is written to disk before its 200 or its notification.
  ``group_interval`` is long: a group re-runs its pipeline every interval, and with
  thousands of groups left from earlier rates a short one would load the machine
  during later runs (the first notification of a group does not wait for it).

Rates run in turn; at each rate the four ways in run one after another, after an
unreported warm-up of each. Printed: a table per way in and rate, the ratio
pagerd / Alertmanager of throughput and p50/p99, and a PNG of the latency
distributions. "sender lag" is how late the worst send left against its schedule:
an HTTP sender holds at most ``--concurrency`` requests in flight, so a slow system
makes it late (and that lateness is in the latency); a large lag with a fast
system means the sender itself is short of CPU: give it more with ``--senders``.

Run from the repository root: ``.venv/bin/python -m tests.bench.bench_alertmanager``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Literal, assert_never

import aiohttp
from aiohttp import web

from tests.bench.common import (
    CTX,
    HELPER_START_TIMEOUT_S,
    Publisher,
    PublishPlan,
    broker_in,
    create_schema,
    insert_services,
    notify_settings,
    pagerd_in,
    percentile,
    report,
    serve_posts,
    table,
)
from tests.bench.plots import latency_cdfs
from tests.harness import API_TOKEN, Policy, free_port

DEFAULT_RATES = (100, 500, 1_000, 2_000)
DEFAULT_PLOT = Path("tests/bench/results/alertmanager.png")
TOKEN = API_TOKEN  # the harness's pagerd API token
KEY_LABEL = "bench_key"
WEBHOOK_POLICY_ID = "bench-webhook"
WARMUP_RATE = 100
WARMUP_S = 1.0
DRAIN_TIMEOUT_S = 120.0  # after the last send, for the last notification
QUIET_S = 10.0  # nothing new for this long after the last send: the rest is lost
SETTLE_S = 1.0  # between runs: let the last commits and sends finish
HTTP_TIMEOUT_S = 30.0
GO_AHEAD_S = 0.05  # the senders' common start, just ahead of the moment they are told

Way = Literal["mqtt", "pagerd-am", "pagerd-pd", "alertmanager"]
WAYS: tuple[Way, ...] = ("mqtt", "pagerd-am", "pagerd-pd", "alertmanager")
LABELS: dict[Way, str] = {
    "mqtt": "pagerd MQTT",
    "pagerd-am": "pagerd AM webhook",
    "pagerd-pd": "pagerd PD v2",
    "alertmanager": "Alertmanager",
}
PREFIXES: dict[Way, str] = {
    "mqtt": "mq",
    "pagerd-am": "am",
    "pagerd-pd": "pd",
    "alertmanager": "ax",
}


def _expect(
    conn: Connection, process: BaseProcess, what: str, timeout: float = HELPER_START_TIMEOUT_S
) -> Any:
    """The helper's next message; the helper's fate if it sends none."""
    try:
        if conn.poll(timeout):
            return conn.recv()
    except EOFError:
        pass
    process.join(timeout=1)
    raise RuntimeError(f"{process.name}: no {what} (exit code {process.exitcode})")


def keys_for(way: Way, name: str, n: int) -> tuple[str, ...]:
    """The alert keys of one run: pagerd service ids, or Alertmanager ``bench_key`` values."""
    return tuple(f"{PREFIXES[way]}-{name}-{i:06d}" for i in range(n))


# --- the webhook sink, in a process of its own -------------------------------------------------


class SinkProcess:
    """One webhook receiver for both systems: notes (monotonic arrival, alert key) per alert."""

    def __init__(self) -> None:
        self.port = free_port()
        self._count: Any = CTX.Value("q", 0, lock=False)
        self._conn, child = CTX.Pipe()
        self._process = CTX.Process(
            target=_sink_main, args=(self.port, self._count, child), name="bench-sink", daemon=True
        )

    def url(self, who: str) -> str:
        """Where ``who`` posts its notifications."""
        return f"http://127.0.0.1:{self.port}/hook/{who}"

    def __enter__(self) -> SinkProcess:
        self._process.start()
        _expect(self._conn, self._process, "sink ready")
        return self

    def __exit__(self, *_: object) -> None:
        if self._process.is_alive():
            self._conn.send(None)
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.kill()

    @property
    def count(self) -> int:
        """Alerts notified so far (an Alertmanager notification may carry several)."""
        return int(self._count.value)

    def arrivals(self, since: int) -> list[tuple[float, str]]:
        """(arrival time, alert key) from the ``since``-th on."""
        self._conn.send(since)
        arrivals: list[tuple[float, str]] = _expect(self._conn, self._process, "arrivals")
        return arrivals


def notified_keys(body: Any) -> list[str]:
    """The alert keys a notification is for: Alertmanager's (labels) or pagerd's (service)."""
    if "alerts" in body:
        return [str(alert["labels"][KEY_LABEL]) for alert in body["alerts"]]
    return [str(body["service"]["id"])]


def _sink_main(port: int, counter: Any, conn: Connection) -> None:
    asyncio.run(_sink_serve(port, counter, conn))


async def _sink_serve(port: int, counter: Any, conn: Connection) -> None:
    arrivals: list[tuple[float, str]] = []

    async def receive(request: web.Request) -> web.Response:
        at = time.monotonic()  # first thing: the notification has arrived
        for key in notified_keys(await request.json()):
            arrivals.append((at, key))
            counter.value += 1
        return web.json_response({"ok": True})

    runner = await serve_posts(port, "/hook/{who}", receive)
    conn.send("ready")
    loop = asyncio.get_running_loop()
    try:
        while (since := await loop.run_in_executor(None, conn.recv)) is not None:
            conn.send(arrivals[since:])
    finally:
        await runner.cleanup()


# --- HTTP senders, in a process of their own ---------------------------------------------------


@dataclass(frozen=True)
class PostPlan:
    """POST one alert per request, the n-th key at ``start + n / rate``.

    With several senders, sender ``worker`` of ``workers`` takes every ``workers``-th key.
    """

    way: Way
    base_url: str
    keys: tuple[str, ...]
    rate: float
    concurrency: int
    worker: int = 0
    workers: int = 1


@dataclass(frozen=True)
class Posted:
    """What a sender saw: requests sent, answered 2xx, and its worst lateness."""

    sent: int
    accepted: int
    max_lag_s: float


def _rfc3339_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def request_for(way: Way, base_url: str, key: str) -> tuple[str, bytes]:
    """(URL, JSON body) that sends the alert ``key`` in through ``way``."""
    labels = {"alertname": "BenchAlert", KEY_LABEL: key}
    annotations = {"summary": f"bench alert {key}"}
    body: Any
    match way:
        case "alertmanager":
            url = f"{base_url}/api/v2/alerts"
            body = [{"labels": labels, "annotations": annotations}]
        case "pagerd-am":
            # As Alertmanager itself sends it (webhook v4), one alert per group.
            url = f"{base_url}/integrations/alertmanager/{key}"
            alert = {
                "status": "firing",
                "labels": labels,
                "annotations": annotations,
                "startsAt": _rfc3339_now(),
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus.example/graph",
                "fingerprint": key,
            }
            body = {
                "version": "4",
                "groupKey": f'{{}}:{{{KEY_LABEL}="{key}"}}',
                "truncatedAlerts": 0,
                "status": "firing",
                "receiver": "pagerd",
                "groupLabels": {KEY_LABEL: key},
                "commonLabels": labels,
                "commonAnnotations": annotations,
                "externalURL": "http://alertmanager.example",
                "alerts": [alert],
            }
        case "pagerd-pd":
            url = f"{base_url}/integrations/pagerduty/v2/enqueue"
            body = {
                "routing_key": key,
                "event_action": "trigger",
                "dedup_key": key,
                "payload": {
                    "summary": annotations["summary"],
                    "source": "bench",
                    "severity": "critical",
                },
            }
        case "mqtt":
            raise ValueError("MQTT alerts are published, not posted")
        case _:
            assert_never(way)
    return url, json.dumps(body).encode()


class Poster:
    """An open-loop HTTP sender in its own process; ``go()`` starts it, ``result()`` waits."""

    def __init__(self, plan: PostPlan) -> None:
        self._conn, child = CTX.Pipe()
        self._process = CTX.Process(
            target=_post_main, args=(plan, child), name="bench-poster", daemon=True
        )

    def __enter__(self) -> Poster:
        self._process.start()
        _expect(self._conn, self._process, "poster ready")
        return self

    def __exit__(self, *_: object) -> None:
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.kill()

    def go(self, start: float) -> None:
        """Start sending: the first alert is due at ``start`` (monotonic)."""
        self._conn.send(start)

    async def result(self, timeout: float) -> Posted:
        """Wait (without blocking the loop) for the sender's report."""
        deadline = time.monotonic() + timeout
        while not self._conn.poll():
            if time.monotonic() > deadline or not self._process.is_alive():
                raise TimeoutError("the poster did not finish")
            await asyncio.sleep(0.02)
        posted: Posted = self._conn.recv()
        return posted


def _post_main(plan: PostPlan, conn: Connection) -> None:
    asyncio.run(_post_all(plan, conn))


async def _post_all(plan: PostPlan, conn: Connection) -> None:
    # Built before the clock starts: making bodies is not sending them.
    mine = range(plan.worker, len(plan.keys), plan.workers)
    requests = {i: request_for(plan.way, plan.base_url, plan.keys[i]) for i in mine}
    accepted = 0
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    connector = aiohttp.TCPConnector(limit=plan.concurrency)
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
    async with aiohttp.ClientSession(
        connector=connector, headers=headers, timeout=timeout
    ) as session:
        room = asyncio.Semaphore(plan.concurrency)

        async def post(i: int) -> None:
            nonlocal accepted
            url, body = requests[i]
            try:
                async with session.post(url, data=body) as response:
                    await response.read()
                    accepted += 200 <= response.status < 300
            except (aiohttp.ClientError, TimeoutError):
                pass  # no answer: not accepted
            finally:
                room.release()

        conn.send("ready")
        start: float = conn.recv()  # nothing else runs on this loop yet: blocking is fine
        max_lag = 0.0
        tasks: set[asyncio.Task[None]] = set()
        for i in mine:
            scheduled = start + i / plan.rate
            if (delay := scheduled - time.monotonic()) > 0:
                await asyncio.sleep(delay)
            await room.acquire()  # a full window makes this send late: that is counted
            max_lag = max(max_lag, time.monotonic() - scheduled)
            task = asyncio.create_task(post(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    conn.send(Posted(len(requests), accepted, max_lag))


# --- Alertmanager --------------------------------------------------------------------------------


def alertmanager_config(sink_url: str) -> str:
    """Each alert a group of its own, notified at once, never repeated, never resolved."""
    config = {
        "route": {
            "receiver": "sink",
            "group_by": [KEY_LABEL],
            "group_wait": "0s",
            "group_interval": "1h",
            "repeat_interval": "24h",
        },
        "receivers": [
            {
                "name": "sink",
                "webhook_configs": [{"url": sink_url, "send_resolved": False}],
            }
        ],
    }
    return json.dumps(config, indent=2)  # YAML is a superset of JSON


@contextlib.asynccontextmanager
async def alertmanager_in(directory: Path, sink_url: str) -> AsyncIterator[str]:
    """A standalone Alertmanager on a free loopback port; yields its base URL."""
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        raise SystemExit("needs Debian's prometheus-alertmanager (apt-get install it)")
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "alertmanager.yml"
    config.write_text(alertmanager_config(sink_url))
    port = free_port()
    log = directory / "alertmanager.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",  # no gossip: a single, standalone instance
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_ready(f"{url}/-/ready", process, log)
        yield url
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=10)


async def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30.0
    async with aiohttp.ClientSession() as http:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"alertmanager exited:\n{log.read_text()[-2000:]}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url) as response:
                    if response.status == 200:
                        return
            if time.monotonic() > deadline:
                raise TimeoutError(f"alertmanager not ready:\n{log.read_text()[-2000:]}")
            await asyncio.sleep(0.05)


# --- one run -------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Figures:
    way: Way
    rate: int
    sent: int
    accepted: int  # HTTP 2xx (after pagerd's commit), or the broker's PUBACK for MQTT
    delivered: int  # distinct alerts notified
    duplicates: int
    latencies_ms: tuple[float, ...]  # sorted, first notification of each alert
    delivered_per_s: float  # over first scheduled send to last arrival
    sender_lag_ms: float

    @property
    def lost(self) -> int:
        return max(0, self.accepted - self.delivered)

    def p(self, q: float) -> float:
        return percentile(self.latencies_ms, q)


@dataclass(frozen=True)
class Targets:
    """Where each way sends: the broker's port, pagerd's and Alertmanager's base URLs."""

    broker_port: int
    pagerd_url: str
    alertmanager_url: str
    concurrency: int  # HTTP requests in flight per sender
    senders: int  # HTTP sender processes


async def send(
    targets: Targets, way: Way, keys: tuple[str, ...], rate: int, seconds: float
) -> tuple[float, int, float]:
    """Send ``keys`` through ``way`` at ``rate``: (first scheduled time, accepted, lag s)."""
    if way == "mqtt":
        plan = PublishPlan(targets.broker_port, keys, rate=float(rate))
        with Publisher(plan) as publisher:
            publisher.go()
            published = await publisher.result(seconds + DRAIN_TIMEOUT_S)
        return published.first_at, published.acked, published.max_lag_s
    base = targets.alertmanager_url if way == "alertmanager" else targets.pagerd_url
    plans = [
        PostPlan(way, base, keys, float(rate), targets.concurrency, worker, targets.senders)
        for worker in range(targets.senders)
    ]
    with contextlib.ExitStack() as stack:
        posters = [stack.enter_context(Poster(plan)) for plan in plans]
        start = time.monotonic() + GO_AHEAD_S
        for poster in posters:
            poster.go(start)
        posted = [await poster.result(seconds + DRAIN_TIMEOUT_S) for poster in posters]
    accepted = sum(p.accepted for p in posted)
    return start, accepted, max(p.max_lag_s for p in posted)


async def delivered(sink: SinkProcess, since: int, expected: int) -> None:
    """Wait for ``expected`` more notified alerts, or for the sink to stay quiet."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    seen, changed_at = sink.count, time.monotonic()
    while sink.count - since < expected:
        now = time.monotonic()
        if sink.count != seen:
            seen, changed_at = sink.count, now
        if now - changed_at > QUIET_S or now > deadline:
            return  # the rest is lost: the figures say how many
        await asyncio.sleep(0.05)


async def offer(
    sink: SinkProcess, targets: Targets, way: Way, name: str, *, rate: int, seconds: float
) -> Figures:
    """Send at ``rate`` per second for ``seconds`` through ``way``; wait; measure."""
    keys = keys_for(way, name, round(rate * seconds))
    since = sink.count
    first_at, accepted, lag_s = await send(targets, way, keys, rate, seconds)
    await delivered(sink, since, accepted)
    arrivals = sink.arrivals(since)
    index = {key: i for i, key in enumerate(keys)}
    first: dict[str, float] = {}
    for arrived, key in arrivals:
        if key in index:
            first.setdefault(key, arrived)
    latencies = sorted(
        (arrived - (first_at + index[key] / rate)) * 1000 for key, arrived in first.items()
    )
    last_arrival = max(first.values(), default=first_at)
    return Figures(
        way=way,
        rate=rate,
        sent=len(keys),
        accepted=accepted,
        delivered=len(first),
        duplicates=sum(1 for _, key in arrivals if key in index) - len(first),
        latencies_ms=tuple(latencies),
        delivered_per_s=len(first) / (last_arrival - first_at) if last_arrival > first_at else 0.0,
        sender_lag_ms=lag_s * 1000,
    )


# --- the whole run -------------------------------------------------------------------------------


async def run(
    rates: Sequence[int],
    seconds: float,
    plot: Path,
    directory: Path | None,
    *,
    concurrency: int,
    senders: int,
) -> None:
    """Start the sink, mosquitto, pagerd and Alertmanager; offer every rate every way; report."""
    figures: list[Figures] = []
    with tempfile.TemporaryDirectory(dir=directory) as tmp, SinkProcess() as sink:
        root = Path(tmp)
        webhook = Policy(
            WEBHOOK_POLICY_ID, [(900.0, [{"type": "webhook", "url": sink.url("pagerd")}])]
        )
        async with (
            broker_in(root / "broker") as broker,
            pagerd_in(root / "pagerd", broker, sink.port) as daemon,
            alertmanager_in(root / "alertmanager", sink.url("alertmanager")) as am_url,
        ):
            daemon.policies.append(webhook)
            await create_schema(daemon.db)
            for way in WAYS[:3]:
                services = [*keys_for(way, "warm", round(WARMUP_RATE * WARMUP_S))]
                for rate in rates:
                    services += keys_for(way, f"r{rate}", round(rate * seconds))
                insert_services(daemon.db, services, WEBHOOK_POLICY_ID)
            await daemon.start()
            targets = Targets(broker.port, daemon.base_url, am_url, concurrency, senders)
            try:
                # Warm-up, not reported: first connections, first code paths.
                for way in WAYS:
                    await offer(sink, targets, way, "warm", rate=WARMUP_RATE, seconds=WARMUP_S)
                    await asyncio.sleep(SETTLE_S)
                for rate in rates:
                    for way in WAYS:
                        figures.append(
                            await offer(sink, targets, way, f"r{rate}", rate=rate, seconds=seconds)
                        )
                        print(_progress(figures[-1]), flush=True)
                        await asyncio.sleep(SETTLE_S)
            finally:
                await daemon.stop()
    print_figures(figures, seconds)
    latency_cdfs(
        plot,
        {
            f"{rate:,} alerts/s offered": {
                LABELS[f.way]: f.latencies_ms for f in figures if f.rate == rate
            }
            for rate in rates
        },
        title=f"Alert in to webhook received: pagerd and Alertmanager {notify_settings()}".strip(),
    )
    print(f"\nplot: {plot}")


def _progress(f: Figures) -> str:
    return (
        f"{LABELS[f.way]} at {f.rate:,}/s: {f.delivered:,} of {f.sent:,} delivered,"
        f" p99 {f.p(99):,.1f} ms"
    )


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b > 0 else "-"


def print_figures(figures: Sequence[Figures], seconds: float) -> None:
    """The table of every run, then the ratios pagerd / Alertmanager at each rate."""
    report(
        f"Alert in to webhook received, {seconds:g} s per rate, one notification per alert",
        [
            "way in",
            "offered/s",
            "sent",
            "accepted",
            "delivered (dup)",
            "lost",
            "delivered/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "sender lag ms",
        ],
        [
            (
                LABELS[f.way],
                f"{f.rate:,}",
                f"{f.sent:,}",
                f"{f.accepted:,}",
                f"{f.delivered:,} ({f.duplicates})",
                f"{f.lost:,}",
                f"{f.delivered_per_s:,.0f}",
                f"{f.p(50):,.1f}",
                f"{f.p(99):,.1f}",
                f"{f.latencies_ms[-1] if f.latencies_ms else float('nan'):,.1f}",
                f"{f.sender_lag_ms:,.1f}",
            )
            for f in figures
        ],
    )
    baseline = {f.rate: f for f in figures if f.way == "alertmanager"}
    rows = [
        (
            f"{f.rate:,}",
            LABELS[f.way],
            _ratio(f.delivered_per_s, baseline[f.rate].delivered_per_s),
            _ratio(f.p(50), baseline[f.rate].p(50)),
            _ratio(f.p(99), baseline[f.rate].p(99)),
        )
        for f in figures
        if f.way != "alertmanager" and f.rate in baseline
    ]
    print("\npagerd / Alertmanager (throughput: higher is better; latency: lower is better)\n")
    print(table(["offered/s", "way in", "delivered/s", "p50", "p99"], rows))


def rates_arg(text: str) -> list[int]:
    """``100,500`` → [100, 500]."""
    rates = [int(part) for part in text.split(",") if part.strip()]
    if not rates or min(rates) <= 0:
        raise argparse.ArgumentTypeError("rates are positive integers, comma-separated")
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--rates", type=rates_arg, default=list(DEFAULT_RATES), help="default: 100,500,1000,2000"
    )
    parser.add_argument("--seconds", type=float, default=4.0, help="per way in and rate")
    parser.add_argument(
        "--concurrency", type=int, default=256, help="HTTP requests in flight per sender"
    )
    parser.add_argument(
        "--senders", type=int, default=1, help="HTTP sender processes (more cores: more)"
    )
    parser.add_argument("--plot", type=Path, default=DEFAULT_PLOT, help="PNG to write")
    parser.add_argument("--dir", type=Path, default=None, help="where the temporary files go")
    args = parser.parse_args()
    asyncio.run(
        run(
            args.rates,
            args.seconds,
            args.plot,
            args.dir,
            concurrency=args.concurrency,
            senders=args.senders,
        )
    )


if __name__ == "__main__":
    main()
