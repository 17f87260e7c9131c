"""Command line: ``pagerd run | check-config | alert | ack | healthy | maintenance | status |
migrate | token | standin | version``.

Exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad config (CONTRACT §1).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from pagerd import __version__
from pagerd.config import (
    Config,
    ConfigError,
    default_config_path,
    load_config,
    weak_token_problems,
)

if TYPE_CHECKING:
    from pagerd.intake.mqtt_messages import Kind

EXIT_OK = 0
EXIT_RUNTIME_FAILURE = 1
EXIT_BAD_USAGE = 2
DEFAULT_WAIT_S = 5.0  # for pagerd's verdict on alert, ack and healthy (CONTRACT §9)
# 32 random bytes: 43 URL-safe characters, well over the 32 characters a token needs.
TOKEN_BYTES = 32
API_TIMEOUT_S = 10.0
# 30m, 2h, 1h30m, 90s, 1d; or plain seconds.
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)([smhd]))+|(\d+(?:\.\d+)?)")
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pagerd", description="Self-hosted on-call pager.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(name: str, help_text: str) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=help_text)
        command.add_argument(
            "--config",
            type=Path,
            default=None,
            help="configuration file (default: $PAGERD_CONFIG, else /etc/pagerd/pagerd.toml)",
        )
        return command

    def with_event(name: str, help_text: str) -> argparse.ArgumentParser:
        command = with_config(name, help_text)
        command.add_argument("service")
        command.add_argument(
            "--wait",
            type=_seconds,
            default=DEFAULT_WAIT_S,
            metavar="SECONDS",
            help="wait this long for pagerd's verdict; 0: only for the broker "
            "(default: %(default)g)",
        )
        return command

    with_config("run", "run the daemon in the foreground until SIGTERM/SIGINT")
    with_config("check-config", "validate the configuration")
    alert = with_event("alert", "publish an alert for a service over MQTT")
    alert.add_argument("message")
    ack = with_event("ack", "acknowledge a service's open incident over MQTT")
    ack.add_argument("--incident", default=None, help="acknowledge this incident only")
    with_event("healthy", "report a service healthy over MQTT")
    maintenance = with_config(
        "maintenance", "put a service in maintenance (or end it) through the HTTP API"
    )
    maintenance.add_argument("service")
    how = maintenance.add_mutually_exclusive_group(required=True)
    how.add_argument("--for", dest="duration", help="how long: 30m, 2h, 1h30m, 1d, or seconds")
    how.add_argument("--end", action="store_true", help="end the service's maintenance now")
    maintenance.add_argument("--reason", default=None, help="why, shown with the window")
    with_config("status", "services, health, open incidents, notifications not delivered")
    migrate = commands.add_parser(
        "migrate", help="copy a single node's SQLite database into an empty PostgreSQL one"
    )
    migrate.add_argument("--from", dest="source", type=Path, required=True, metavar="PATH")
    migrate.add_argument("--to", dest="target", required=True, metavar="URL")
    commands.add_parser("token", help="print a new random API token")
    standin = commands.add_parser(
        "standin",
        help="print the pages pagerd sends, in place of the SMS, webhook and email services",
    )
    standin.add_argument(
        "--listen",
        default="127.0.0.1:8025",
        help="HTTP for SMS and webhooks (default: %(default)s)",
    )
    standin.add_argument(
        "--smtp",
        default="127.0.0.1:2525",
        help="SMTP for email, '' for none (default: %(default)s)",
    )
    commands.add_parser("version", help="print the version")
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r}: must be 0..3600 seconds")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return the process exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # argparse exits 2 on bad usage, 0 on --help
        return int(exit_.code or 0)
    try:
        code = _command(args)
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (`pagerd status | head`): nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    return code


def _command(args: argparse.Namespace) -> int:
    match args.command:
        case "version":
            print(f"pagerd {__version__}")
            return EXIT_OK
        case "token":
            print(secrets.token_urlsafe(TOKEN_BYTES))
            return EXIT_OK
        case "standin":
            from pagerd.tools.standin import main as standin_main

            return standin_main(args.listen, args.smtp)
        case "migrate":
            return _migrate(args.source, args.target)
    path: Path = args.config or default_config_path()
    try:
        config = load_config(path)
    except ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return EXIT_BAD_USAGE
    # Only the commands that serve the API refuse weak tokens; alert, ack and status don't use them.
    if args.command in ("check-config", "run") and (problems := weak_token_problems(config)):
        for problem in problems:
            print(problem, file=sys.stderr)
        return EXIT_BAD_USAGE
    match args.command:
        case "check-config":
            print(f"{path}: ok")
            return EXIT_OK
        case "run":
            return _run(config)
        case "alert":
            body = {"message": args.message, "source": "pagerd-cli"}
            return _publish(config, "alert", args.service, body, args.wait)
        case "ack":
            body = {"by": "pagerd-cli"} | ({"incident_id": args.incident} if args.incident else {})
            return _publish(config, "ack", args.service, body, args.wait)
        case "healthy":
            return _publish(config, "healthy", args.service, {}, args.wait)
        case "maintenance":
            return _maintenance(config, args.service, args.duration, args.reason, end=args.end)
        case "status":
            return _status(config)
        case _:
            return EXIT_BAD_USAGE


def _run(config: Config) -> int:
    from pagerd import app
    from pagerd.telemetry.logs import choose_format, configure_logging

    configure_logging(choose_format(config.log.format, sys.stdout), config.log.level)
    try:
        return asyncio.run(app.main(config))
    except Exception:  # noqa: BLE001 - the last word: logged with its traceback, exit 1
        from pagerd.telemetry.logs import get_logger

        get_logger("pagerd").exception("pagerd.crashed")
        return EXIT_RUNTIME_FAILURE


def _publish(config: Config, kind: Kind, service: str, body: dict[str, str], wait_s: float) -> int:
    from pagerd.app import mqtt_settings
    from pagerd.core.policy import DomainError, validate_service_id
    from pagerd.intake.mqtt_client import ConnectError, MqttError
    from pagerd.tools.send import send_event

    try:
        validate_service_id(service, "SERVICE")
    except DomainError as error:
        print(f"pagerd {kind}: {error}", file=sys.stderr)
        return EXIT_BAD_USAGE
    settings = mqtt_settings(config)
    try:
        sent = asyncio.run(send_event(settings, kind, service, body, wait_s))
    except ConnectError as error:  # it names the address(es) tried
        print(f"pagerd {kind}: cannot publish to {error}", file=sys.stderr)
        return EXIT_RUNTIME_FAILURE
    except (MqttError, OSError) as error:
        print(f"pagerd {kind}: cannot publish to {settings.where()}: {error}", file=sys.stderr)
        return EXIT_RUNTIME_FAILURE
    verdict = sent.verdict
    if sent.request_id is None:
        print(f"published {kind} for {service}")
        return EXIT_OK
    if verdict is None:
        print(
            f"pagerd {kind}: published to {settings.where()}, but no verdict from pagerd within "
            f"{wait_s:g} s (request {sent.request_id}); is pagerd running and connected?",
            file=sys.stderr,
        )
        return EXIT_RUNTIME_FAILURE
    if not verdict.taken:
        print(f"pagerd {kind}: refused: {verdict.reason}", file=sys.stderr)
        return EXIT_RUNTIME_FAILURE
    incident = f", incident {verdict.incident_id}" if verdict.incident_id else ""
    print(f"{kind} for {service} taken: {verdict.outcome}{incident}")
    return EXIT_OK


def parse_duration(text: str) -> timedelta:
    """``30m``, ``2h``, ``1h30m``, ``90s``, ``1d`` or plain seconds; ValueError otherwise."""
    if not _DURATION.fullmatch(text):
        raise ValueError(f"{text!r} is not a duration like 30m, 2h, 1h30m, 1d or 90")
    parts = _PART.findall(text)
    seconds = sum(float(n) * _UNIT_S[unit] for n, unit in parts) if parts else float(text)
    if seconds <= 0:
        raise ValueError(f"{text!r} is no time at all")
    return timedelta(seconds=seconds)


def _maintenance(
    config: Config, service: str, duration: str | None, reason: str | None, *, end: bool
) -> int:
    """Start or end a maintenance window through the HTTP API (CONTRACT §8).

    The API, not MQTT: a window is an operator's command that needs an answer (the
    window as committed, or why not), and the contract defines it there only.
    """
    from pagerd.core.policy import DomainError, validate_service_id

    try:
        validate_service_id(service, "SERVICE")
        until = None if end or duration is None else datetime.now(UTC) + parse_duration(duration)
    except (DomainError, ValueError) as error:
        print(f"pagerd maintenance: {error}", file=sys.stderr)
        return EXIT_BAD_USAGE
    tokens = config.http_tokens()
    if not tokens:
        print(
            "pagerd maintenance: needs an API token in [http] tokens or tokens_file",
            file=sys.stderr,
        )
        return EXIT_BAD_USAGE
    host, port = config.http.host_port()
    # Listening on every address: this host reaches it on its loopback.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104 - not a bind
    base = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    url = f"{base}/api/v1/services/{service}/maintenance"
    body: dict[str, str] | None = None
    if until is not None:
        body = {"until": until.isoformat()} | ({} if reason is None else {"reason": reason})
    try:
        status, answer = asyncio.run(_call_api("DELETE" if end else "POST", url, tokens[0], body))
    except OSError as error:
        print(f"pagerd maintenance: cannot reach the API at {base}: {error}", file=sys.stderr)
        return EXIT_RUNTIME_FAILURE
    if status >= 300:
        detail = answer.get("detail", "") if isinstance(answer, dict) else ""
        print(f"pagerd maintenance: {status} {detail}".rstrip(), file=sys.stderr)
        return EXIT_RUNTIME_FAILURE
    if isinstance(answer, dict) and "until" in answer:
        print(f"{service}: in maintenance until {answer['until']}")
    else:
        print(f"{service}: maintenance ended")
    return EXIT_OK


async def _call_api(
    method: str, url: str, token: str, body: dict[str, str] | None
) -> tuple[int, object]:
    import aiohttp

    headers = {"Authorization": f"Bearer {token}"}
    timeout = aiohttp.ClientTimeout(total=API_TIMEOUT_S)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(method, url, json=body, headers=headers) as response,
        ):
            answer = await response.json(content_type=None) if response.status != 204 else None
            return response.status, answer
    except (aiohttp.ClientError, TimeoutError) as error:
        raise OSError(str(error) or type(error).__name__) from error


def _status(config: Config) -> int:
    import sqlite3

    from pagerd.core.records import StoreError
    from pagerd.store.status import read_status, render_status

    nodes = ""
    try:
        if config.database.url:
            from pagerd.store import postgres_status

            url = config.database.url
            rows, notifications, joined = asyncio.run(postgres_status.read_status(url))
            nodes = postgres_status.render_nodes(joined) if joined else ""
        else:
            rows, notifications = read_status(Path(config.database.path))
    except (OSError, sqlite3.Error, StoreError) as error:
        print(f"pagerd status: {error}", file=sys.stderr)
        return EXIT_RUNTIME_FAILURE
    print(render_status(rows, notifications))
    if nodes:
        print(f"\n{nodes}")
    return EXIT_OK


def _migrate(source: Path, url: str) -> int:
    from pagerd.core.records import StoreError
    from pagerd.store.postgres import redact
    from pagerd.store.postgres_copy import CopyRefusedError, copy_sqlite_to_postgres

    if not url.startswith(("postgresql://", "postgres://")):
        print("pagerd migrate: --to must be a postgresql:// URL", file=sys.stderr)
        return EXIT_BAD_USAGE
    try:
        copied = asyncio.run(copy_sqlite_to_postgres(source, url))
    except CopyRefusedError as refusal:
        print(f"pagerd migrate: {refusal}", file=sys.stderr)
        return EXIT_BAD_USAGE
    except StoreError as error:
        print(f"pagerd migrate: {error}", file=sys.stderr)
        return EXIT_RUNTIME_FAILURE
    counts = ", ".join(f"{rows} {table}" for table, rows in copied.items())
    print(f"copied {source} into {redact(url)}: {counts}")
    return EXIT_OK
