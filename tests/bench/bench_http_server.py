"""What the HTTP limits cost a request: pagerd's serving against aiohttp's own, same run.

pagerd serves HTTP through its own accept loop and aiohttp's protocol with a request
deadline (pagerd.web.listener, pagerd.web.limits) instead of aiohttp's ``TCPSite``.
Both serve the same small application from a process of their own, in turns (each
round in the other order), to the same client: requests on kept-alive connections,
and one connection per request.
The figure is the server's CPU time per request (user + system, from /proc), which
other load on the machine disturbs far less than latency; requests/s and latency
are printed beside it. Refused connections, one more way in: past max_connections,
with ``--refused``.

    .venv/bin/python -m tests.bench.bench_http_server [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from multiprocessing.connection import Connection

import aiohttp
from aiohttp import web

from tests.bench.common import CTX, cpu_seconds, percentile, rate, report
from tests.harness import free_port

SERVERS = ("aiohttp", "pagerd")
CONCURRENCY = 8


def _serve_main(kind: str, port: int, conn: Connection) -> None:
    asyncio.run(_serve(kind, port, conn))


async def _serve(kind: str, port: int, conn: Connection) -> None:
    from pagerd.web.limits import HttpLimits
    from pagerd.web.server import start_http

    async def small(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"bytes": len(await request.read())})

    app = web.Application()
    app.router.add_get("/small", small)
    app.router.add_post("/echo", echo)
    if kind == "pagerd":
        http = await start_http(app, "127.0.0.1", port, limits=HttpLimits(max_connections=100))
        stop = http.cleanup
    else:
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        stop = runner.cleanup
    conn.send("ready")
    await asyncio.get_running_loop().run_in_executor(None, conn.recv)
    await stop()


async def _load(port: int, seconds: float, *, keep_alive: bool) -> list[float]:
    """Latencies of CONCURRENCY clients posting to /echo as fast as they are answered."""
    latencies: list[float] = []
    until = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=CONCURRENCY, force_close=not keep_alive)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
            while time.monotonic() < until:
                started = time.monotonic()
                async with session.post(f"http://127.0.0.1:{port}/echo", data=b"x" * 300) as r:
                    await r.read()
                    assert r.status == 200, r.status
                latencies.append(time.monotonic() - started)

        await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
    return latencies


async def _refused(port: int, seconds: float) -> int:
    """Connections refused: the server holds 100, these are each answered 503 and closed."""
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(100)]
    refused = 0
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reader.read()
        writer.close()
        refused += 1
    for _, writer in held:
        writer.close()
    return refused


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per server, way and round")
    parser.add_argument("--rounds", type=int, default=3, help="turns of each server")
    parser.add_argument("--refused", action="store_true", help="also refused connections")
    args = parser.parse_args()

    ways = ["kept alive", "new connection"] + (["refused"] if args.refused else [])
    cpu_per: dict[tuple[str, str], list[float]] = {}
    rows = []
    for n in range(args.rounds):
        # Each round in the other order, so that a machine growing busier or quieter
        # during the run does not favour one server.
        for kind in SERVERS if n % 2 == 0 else SERVERS[::-1]:
            for way in ways:
                if way == "refused" and kind == "aiohttp":
                    continue  # aiohttp alone has no cap: it would hold them all
                port = free_port()
                parent, child = CTX.Pipe()
                process = CTX.Process(target=_serve_main, args=(kind, port, child))
                process.start()
                assert parent.poll(30), "the server did not start"
                parent.recv()
                assert process.pid is not None
                cpu_before, wall = cpu_seconds(process.pid), time.monotonic()
                if way == "refused":
                    latencies: list[float] = []
                    done = await _refused(port, args.seconds)
                else:
                    latencies = sorted(
                        await _load(port, args.seconds, keep_alive=way == "kept alive")
                    )
                    done = len(latencies)
                cpu = cpu_seconds(process.pid) - cpu_before
                wall = time.monotonic() - wall
                parent.send("stop")
                process.join(30)
                cpu_per.setdefault((kind, way), []).append(cpu / done * 1e6)
                rows.append(
                    [
                        kind,
                        way,
                        f"{done:,}",
                        rate(done, wall),
                        f"{cpu / done * 1e6:.0f}",
                        f"{percentile(latencies, 50) * 1000:.2f}" if latencies else "-",
                        f"{percentile(latencies, 99) * 1000:.2f}" if latencies else "-",
                    ]
                )
    report(
        "HTTP serving: server CPU per request, pagerd (limits) against aiohttp (TCPSite)",
        ["server", "way", "requests", "per s", "CPU µs/request", "p50 ms", "p99 ms"],
        rows,
    )
    print("\nmedian CPU µs per request over the rounds, and pagerd / aiohttp:\n")
    for way in ways:
        pagerd = statistics.median(cpu_per[("pagerd", way)])
        if way == "refused":
            print(f"- {way}: pagerd {pagerd:.0f}")
            continue
        plain = statistics.median(cpu_per[("aiohttp", way)])
        print(f"- {way}: aiohttp {plain:.0f}, pagerd {pagerd:.0f}, ratio {pagerd / plain:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
