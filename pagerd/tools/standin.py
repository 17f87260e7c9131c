"""``pagerd standin``: the SMS service, webhook receivers and SMTP server, on this machine.

Each page it receives is printed as one line with its idempotency key (for an email,
its Message-ID) and answered as a provider that took it: HTTP 200, SMTP 250. It is for
trying pagerd out (``make run`` starts it): it keeps nothing and sends nothing on.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

Write = Callable[[str], None]

# An SMTP line, and a whole message, beyond which the stand-in stops listening to a client.
MAX_SMTP_LINE = 8192
MAX_MESSAGE_BYTES = 1 << 20
SMTP_NAME = "pagerd-standin"


def one_line(text: object) -> str:
    """``text`` on one line of printable characters: no newline or escape from a sender."""
    printable = "".join(c if c.isprintable() else " " for c in str(text))
    return " ".join(printable.split())


def page_line(channel: str, recipient: str, text: str, key: str) -> str:
    """``HH:MM:SS  CHANNEL  recipient  text  key=...``, the one line printed for each page."""
    stamp = time.strftime("%H:%M:%S")
    return f"{stamp}  {channel:<7}  {one_line(recipient)}  {one_line(text)}  key={one_line(key)}"


# --- HTTP: SMS and webhooks ------------------------------------------------------------------


def http_app(write: Write) -> web.Application:
    """``POST /sms`` takes SMS; a POST to any other path is a webhook."""

    async def body_of(request: web.Request) -> dict[str, Any] | None:
        try:
            body = await request.json()
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    def refuse(channel: str, request: web.Request, problem: str) -> web.Response:
        write(page_line(channel, request.path, f"refused: {problem}", key_of(request)))
        return web.json_response({"error": problem}, status=400)

    async def sms(request: web.Request) -> web.Response:
        body = await body_of(request)
        if body is None or not {"phone_number", "message"} <= body.keys():
            return refuse("sms", request, 'expected JSON {"phone_number", "message"}')
        write(page_line("sms", str(body["phone_number"]), body["message"], key_of(request)))
        return web.json_response({"status": "accepted"})

    async def webhook(request: web.Request) -> web.Response:
        body = await body_of(request)
        if body is None:
            return refuse("webhook", request, "expected a JSON object")
        write(page_line("webhook", request.path, webhook_summary(body), key_of(request)))
        return web.json_response({"status": "accepted"})

    async def about(_: web.Request) -> web.Response:
        return web.Response(
            text="pagerd standin: POST /sms for SMS, any other path for a webhook\n"
        )

    app = web.Application()
    app.router.add_post("/sms", sms)
    app.router.add_post("/{path:.*}", webhook)
    app.router.add_get("/", about)
    return app


def key_of(request: web.Request) -> str:
    return request.headers.get("Idempotency-Key", "-")


def webhook_summary(body: dict[str, Any]) -> str:
    """pagerd's webhook body, read as a sentence: event, service, message, level, link."""
    incident, service = _table(body.get("incident")), _table(body.get("service"))
    name = service.get("name") or service.get("id") or "?"
    text = f"{body.get('event', '?')} {name}: {incident.get('message', '?')}"
    text += f" [incident {incident.get('id', '?')} L{body.get('level', '?')}]"
    if body.get("ack_url"):
        text += f" ack: {body['ack_url']}"
    return text


def _table(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# --- SMTP: email -----------------------------------------------------------------------------


class SmtpSession:
    """One client's SMTP conversation (RFC 5321's minimum): each message is printed."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, write: Write
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._write = write
        self._recipients: list[str] = []

    async def run(self) -> None:
        """Answer commands until QUIT, the client leaves, or a line too long to read."""
        try:
            await self._reply("220 " + SMTP_NAME + " ESMTP")
            while (line := await self._reader.readline()) and await self._command(line):
                pass
        except (ValueError, ConnectionError):  # a line over the limit, or the client reset
            pass
        finally:
            self._writer.close()
            with contextlib.suppress(ConnectionError):
                await self._writer.wait_closed()

    async def _command(self, raw: bytes) -> bool:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        verb, _, argument = line.partition(" ")
        match verb.upper():
            case "EHLO":
                await self._reply(f"250-{SMTP_NAME}", "250-8BITMIME", "250 SMTPUTF8")
            case "HELO" | "NOOP":
                await self._reply("250 ok")
            case "MAIL" | "RSET":
                self._recipients = []
                await self._reply("250 ok")
            case "RCPT":
                self._recipients.append(argument.partition(":")[2].strip().strip("<>"))
                await self._reply("250 ok")
            case "DATA" if not self._recipients:
                await self._reply("503 RCPT first")
            case "DATA":
                await self._reply("354 end with <CRLF>.<CRLF>")
                message = await self._read_message()
                if message is None:
                    await self._reply("552 message too large")
                    return False
                self._print(message)
                self._recipients = []
                await self._reply("250 ok: printed")
            case "QUIT":
                await self._reply("221 bye")
                return False
            case _:
                await self._reply("502 not implemented")
        return True

    async def _read_message(self) -> bytes | None:
        lines: list[bytes] = []
        size = 0
        while (line := await self._reader.readline()) not in (b".\r\n", b".\n", b""):
            size += len(line)
            if size > MAX_MESSAGE_BYTES:
                return None
            lines.append(line[1:] if line.startswith(b"..") else line)  # dot-stuffing
        return b"".join(lines)

    def _print(self, data: bytes) -> None:
        message = email.message_from_bytes(data, policy=email.policy.default)
        text = str(message.get("Subject", "(no subject)"))
        body = message.get_body(("plain",)) if message.is_multipart() else message
        content = body.get_content() if body is not None else ""
        ack = next((ln for ln in str(content).splitlines() if ln.startswith("Acknowledge: ")), "")
        if ack:
            text += " ack: " + ack.removeprefix("Acknowledge: ")
        key = str(message.get("Message-ID", "-"))
        for recipient in self._recipients:
            self._write(page_line("email", recipient, text, key))

    async def _reply(self, *lines: str) -> None:
        self._writer.write("".join(f"{line}\r\n" for line in lines).encode())
        await self._writer.drain()


# --- the process -----------------------------------------------------------------------------


def parse_address(value: str, option: str) -> tuple[str, int]:
    """``host:port`` as a pair; ValueError naming ``option`` otherwise."""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{option} must be host:port, got {value!r}")
    return host, int(port)


async def serve(
    listen: tuple[str, int],
    smtp: tuple[str, int] | None,
    write: Write,
    stop: asyncio.Event,
    on_ready: Callable[[list[str]], None] | None = None,
) -> None:
    """Serve until ``stop`` is set; ``on_ready`` gets the URLs once both servers listen."""
    runner = web.AppRunner(http_app(write), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, *listen)
        await site.start()
        base = f"http://{listen[0]}:{listen[1]}"
        urls = [f"SMS {base}/sms", f"webhooks {base}/<any path>"]
        smtp_server: asyncio.Server | None = None
        if smtp is not None:

            async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                await SmtpSession(reader, writer, write).run()

            smtp_server = await asyncio.start_server(session, *smtp, limit=MAX_SMTP_LINE)
            urls.append(f"email smtp://{smtp[0]}:{smtp[1]}")
        if on_ready is not None:
            on_ready(urls)
        try:
            await stop.wait()
        finally:
            if smtp_server is not None:
                smtp_server.close()
    finally:
        await runner.cleanup()


def _write_line(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()  # a page shows at once, also when stdout is a pipe


def main(listen: str, smtp: str) -> int:
    """``pagerd standin``: serve until SIGINT or SIGTERM; exit 2 on bad usage, 1 if it cannot."""
    try:
        http_address = parse_address(listen, "--listen")
        smtp_address = parse_address(smtp, "--smtp") if smtp else None
    except ValueError as error:
        sys.stderr.write(f"pagerd standin: {error}\n")
        return 2

    def ready(urls: list[str]) -> None:
        _write_line(f"pagerd standin: {', '.join(urls)}; each page prints here")

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await serve(http_address, smtp_address, _write_line, stop, ready)

    try:
        asyncio.run(run())
    except OSError as error:
        sys.stderr.write(f"pagerd standin: cannot listen: {error.strerror or error}\n")
        return 1
    return 0
