"""CONTRACT §1 command line, run as users run it: ``python -m pagerd`` in a subprocess,
against real config files, a real mosquitto and a database a real daemon wrote."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest

from pagerd import __version__
from tests.conftest import PagerdFactory, Secured
from tests.harness import (
    REPO,
    Monitor,
    Mosquitto,
    Policy,
    SmsStandIn,
    eventually,
    free_port,
    sms,
    sqlite_rows,
)

SHIPPED_CONFIG = REPO / "config" / "pagerd.toml"
EXIT_OK, EXIT_RUNTIME_FAILURE, EXIT_BAD_USAGE = 0, 1, 2
ONE = "+15550000001"

POLICY = """
[[policies]]
id = "oncall"
[[policies.levels]]
targets = [{ type = "sms", phone_number = "+15550001111" }]
"""


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    def err_lines(self) -> list[str]:
        return self.err.strip().splitlines()


def environment(**extra: str) -> dict[str, str]:
    # A PAGERD_CONFIG from the caller's shell must not decide what these tests read.
    env = {k: v for k, v in os.environ.items() if k not in ("PAGERD_CONFIG", "STATE_DIRECTORY")}
    return env | extra


def pagerd(*args: str | Path, cwd: Path, **env: str) -> Run:
    """Run ``python -m pagerd ARGS`` to completion."""
    done = subprocess.run(
        [sys.executable, "-m", "pagerd", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environment(**env),
        timeout=30,
        check=False,
    )
    return Run(done.returncode, done.stdout, done.stderr)


async def pagerd_async(*args: str | Path, cwd: Path) -> Run:
    """Like ``pagerd`` without blocking the event loop, so MQTT clients keep receiving."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pagerd",
        *map(str, args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env=environment(),
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def mqtt_config(tmp_path: Path, port: int, prefix: str = "ops") -> Path:
    return write(
        tmp_path / "cli.toml",
        f'[database]\npath = "{tmp_path / "cli.db"}"\n\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\ntopic_prefix = "{prefix}"\n',
    )


# --- version, usage, config ----------------------------------------------------------------


def test_version_prints_the_version(tmp_path: Path) -> None:
    run = pagerd("version", cwd=tmp_path)
    assert run.code == EXIT_OK
    assert run.out.strip() == f"pagerd {__version__}"


def test_the_daemon_imports_nothing_it_needs_only_later() -> None:
    """Start-up time: cryptography (SNS signatures) and importlib.metadata cost ~90 ms each."""
    probe = "import sys, pagerd.cli, pagerd.app; print(sorted(set(sys.modules) & set(sys.argv)))"
    late = ["cryptography", "importlib.metadata"]
    run = subprocess.run(
        [sys.executable, "-c", probe, *late], capture_output=True, text=True, check=True
    )
    assert run.stdout.strip() == "[]", f"imported at start: {run.stdout.strip()}"


def test_the_installed_version_is_the_one_pagerd_reports() -> None:
    from importlib.metadata import version

    assert version("pagerd") == __version__


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["frobnicate"], id="unknown command"),
        pytest.param([], id="no command"),
        pytest.param(["alert", "api"], id="alert without message"),
        pytest.param(["check-config", "--verbose"], id="unknown option"),
    ],
)
def test_bad_usage_exits_2(tmp_path: Path, args: list[str]) -> None:
    run = pagerd(*args, cwd=tmp_path)
    assert run.code == EXIT_BAD_USAGE
    assert "usage: pagerd" in run.err


def test_check_config_accepts_the_shipped_config_with_a_made_token(tmp_path: Path) -> None:
    """As `make run` does: a token from `pagerd token` in var/api-token, read by tokens_file."""
    (tmp_path / "var").mkdir()
    token = pagerd("token", cwd=tmp_path)
    (tmp_path / "var" / "api-token").write_text(token.out, "utf-8")

    run = pagerd("check-config", "--config", SHIPPED_CONFIG, cwd=tmp_path)
    assert run.code == EXIT_OK, run.err
    assert run.err == ""
    assert str(SHIPPED_CONFIG) in run.out


def test_token_prints_a_new_random_url_safe_token(tmp_path: Path) -> None:
    tokens = [pagerd("token", cwd=tmp_path) for _ in range(3)]
    assert all(run.code == EXIT_OK and run.err == "" for run in tokens)
    values = [run.out.strip() for run in tokens]
    assert len(set(values)) == 3
    for value in values:
        assert re.fullmatch(r"[A-Za-z0-9_-]{43,}", value), value


WEAK = "short-but-secret"  # 16 characters


@pytest.mark.parametrize("command", ["check-config", "run"])
@pytest.mark.parametrize(
    ("http", "tokens_file", "problem"),
    [
        pytest.param(
            'tokens = ["dev-token-change-me"]',
            None,
            "http.tokens[0]: is the example placeholder; at least 32 characters are needed",
            id="placeholder inline",
        ),
        pytest.param(
            'tokens_file = "api-token"',
            f"# made by hand\n{WEAK}\n",
            "http.tokens_file: line 2 of api-token is 16 characters long; at least 32",
            id="short token in tokens_file",
        ),
    ],
)
def test_weak_tokens_are_refused_by_check_config_and_run(
    tmp_path: Path, command: str, http: str, tokens_file: str | None, problem: str
) -> None:
    """CONTRACT §9: exit 2, one line naming the problem and where, never the token."""
    if tokens_file is not None:
        write(tmp_path / "api-token", tokens_file)
    config = write(tmp_path / "pagerd.toml", f"[http]\n{http}\n")

    run = pagerd(command, "--config", config, cwd=tmp_path)

    assert run.code == EXIT_BAD_USAGE
    (line,) = run.err_lines()
    assert line.startswith(f"{config}: {problem}"), line
    assert line.endswith("(make one with: pagerd token)")
    assert WEAK not in run.err
    assert run.out == ""
    assert not (tmp_path / "var").exists()  # run stopped before opening anything


@pytest.mark.parametrize(
    ("text", "problems"),
    [
        pytest.param('[mqtt]\nhots = "x"\n', ["mqtt.hots: unknown key"], id="unknown key"),
        pytest.param(
            'bogus = 1\n[log]\nlevel = "info"\n', ["bogus: unknown key"], id="unknown table"
        ),
        pytest.param(
            POLICY + '\n[[services]]\nid = "api"\npolicy = "ghost"\n',
            ["services[0].policy: policy 'ghost' is not declared in [[policies]]"],
            id="undeclared policy",
        ),
        pytest.param(
            POLICY + '\n[[services]]\nid = "bad id"\npolicy = "oncall"\n',
            ["services[0].id: must match [A-Za-z0-9._-]{1,128}, got 'bad id'"],
            id="bad service id",
        ),
        pytest.param(
            '[mqtt]\nhots = "x"\nport = 0\n\n[[services]]\nid = "bad id"\npolicy = "ghost"\n',
            [
                "mqtt.hots: unknown key",
                "mqtt.port: must be >= 1, got 0",
                "services[0].id: must match [A-Za-z0-9._-]{1,128}, got 'bad id'",
                "services[0].policy: policy 'ghost' is not declared in [[policies]]",
            ],
            id="several problems",
        ),
    ],
)
def test_check_config_names_each_problem(tmp_path: Path, text: str, problems: list[str]) -> None:
    path = write(tmp_path / "broken.toml", text)
    run = pagerd("check-config", "--config", path, cwd=tmp_path)
    assert run.code == EXIT_BAD_USAGE
    assert run.out == ""
    assert sorted(run.err_lines()) == sorted(f"{path}: {problem}" for problem in problems)


def test_check_config_gives_the_line_of_a_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path / "broken.toml", '[mqtt]\nhost = "127.0.0.1"\nport = = 1883\n')
    run = pagerd("check-config", "--config", path, cwd=tmp_path)
    assert run.code == EXIT_BAD_USAGE
    (line,) = run.err_lines()
    assert re.fullmatch(rf"{re.escape(str(path))}:3: \S.*", line), line


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "pagerd.toml"
    run = pagerd("check-config", "--config", missing, cwd=tmp_path)
    assert run.code == EXIT_BAD_USAGE
    (line,) = run.err_lines()
    assert line.startswith(f"{missing}: ")
    assert "No such file" in line


def test_pagerd_config_variable_is_the_default_and_config_overrides_it(tmp_path: Path) -> None:
    good = write(tmp_path / "good.toml", '[log]\nlevel = "debug"\n')
    broken = write(tmp_path / "broken.toml", '[log]\nlevel = "loud"\n')

    run = pagerd("check-config", cwd=tmp_path, PAGERD_CONFIG=str(good))
    assert (run.code, run.out.strip()) == (EXIT_OK, f"{good}: ok")

    run = pagerd("check-config", cwd=tmp_path, PAGERD_CONFIG=str(broken))
    assert run.code == EXIT_BAD_USAGE
    assert run.err_lines() == [
        f"{broken}: log.level: must be one of debug, info, warning, error, got 'loud'"
    ]

    run = pagerd("check-config", "--config", good, cwd=tmp_path, PAGERD_CONFIG=str(broken))
    assert (run.code, run.out.strip()) == (EXIT_OK, f"{good}: ok")


# --- alert, ack, healthy over MQTT ----------------------------------------------------------


@contextlib.asynccontextmanager
async def watching(
    broker: Mosquitto, username: str | None = None, password: str | None = None
) -> AsyncIterator[list[tuple[str, bytes, int]]]:
    """Everything published on the broker while inside: (topic, payload, qos)."""
    seen: list[tuple[str, bytes, int]] = []
    async with aiomqtt.Client(
        "127.0.0.1", broker.port, identifier="watcher", username=username, password=password
    ) as client:
        await client.subscribe("#", qos=1)

        async def listen() -> None:
            async for message in client.messages:
                payload = message.payload if isinstance(message.payload, bytes) else b""
                seen.append((message.topic.value, payload, message.qos))

        listener = asyncio.create_task(listen())
        try:
            yield seen
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener


@pytest.mark.parametrize(
    ("args", "topic", "body"),
    [
        pytest.param(
            ["alert", "payments-api", "5xx at 12%"],
            "ops/alert/payments-api",
            {"message": "5xx at 12%"},
            id="alert",
        ),
        pytest.param(
            ["ack", "payments-api", "--incident", "01ABC"],
            "ops/ack/payments-api",
            {"incident_id": "01ABC"},
            id="ack an incident",
        ),
        pytest.param(["ack", "api"], "ops/ack/api", {}, id="ack the open incident"),
        pytest.param(["healthy", "api"], "ops/healthy/api", {}, id="healthy"),
    ],
)
async def test_event_commands_publish_to_the_configured_broker(
    tmp_path: Path,
    broker: Mosquitto,
    args: list[str],
    topic: str,
    body: dict[str, str],
) -> None:
    """With --wait 0 the command asks for no verdict: done once the broker has the event."""
    config = mqtt_config(tmp_path, broker.port, prefix="ops")
    async with watching(broker) as seen:
        run = await pagerd_async(*args, "--wait", "0", "--config", config, cwd=tmp_path)
        assert (run.code, run.out.strip()) == (EXIT_OK, f"published {args[0]} for {args[1]}")
        await eventually(lambda: len(seen) >= 1, what=f"message on {topic}")

    ((got_topic, payload, qos),) = seen
    assert (got_topic, qos) == (topic, 1)
    decoded = json.loads(payload)
    # Fields the command adds (e.g. "by"/"source" naming the CLI) are allowed.
    assert decoded | body == decoded, decoded
    assert "request_id" not in decoded
    if args[0] == "ack" and "--incident" not in args:
        assert "incident_id" not in decoded


async def test_event_commands_say_what_pagerd_made_of_the_event(
    tmp_path: Path, make_pagerd: PagerdFactory, sms_service: SmsStandIn
) -> None:
    """Each command waits for pagerd's verdict and prints it: the outcome and incident."""
    daemon = make_pagerd([Policy("oncall", [(30.0, [sms(ONE)])])], {"api": "oncall"})
    await daemon.start()
    config = daemon.directory / "pagerd.toml"

    alert = await pagerd_async("alert", "api", "disk full", "--config", config, cwd=tmp_path)
    ((incident_id,),) = sqlite_rows(daemon.db, "SELECT id FROM incidents")
    ack = await pagerd_async("ack", "api", "--config", config, cwd=tmp_path)
    healthy = await pagerd_async("healthy", "api", "--config", config, cwd=tmp_path)

    assert [(r.code, r.out.strip()) for r in (alert, ack, healthy)] == [
        (EXIT_OK, f"alert for api taken: opened, incident {incident_id}"),
        (EXIT_OK, f"ack for api taken: acknowledged, incident {incident_id}"),
        (EXIT_OK, f"healthy for api taken: resolved, incident {incident_id}"),
    ], [r.err for r in (alert, ack, healthy)]


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        pytest.param(["alert", "nope", "down"], "unknown service 'nope'", id="unknown service"),
        pytest.param(["ack", "api"], "no open incident on service 'api'", id="nothing to ack"),
        pytest.param(
            ["ack", "api", "--incident", "01ABC"],
            "no open incident on service 'api' with id '01ABC'",
            id="no such incident",
        ),
        pytest.param(
            ["alert", "api", "x" * 1025],
            "message: must be 1..1024 characters, not blank",
            id="refused before it was parsed",
        ),
    ],
)
async def test_event_commands_fail_with_pagerds_reason(
    tmp_path: Path, make_pagerd: PagerdFactory, args: list[str], reason: str
) -> None:
    daemon = make_pagerd([Policy("oncall", [(30.0, [sms(ONE)])])], {"api": "oncall"})
    await daemon.start()
    run = await pagerd_async(*args, "--config", daemon.directory / "pagerd.toml", cwd=tmp_path)
    assert run.code == EXIT_RUNTIME_FAILURE, run.out
    assert run.err.strip().startswith(f"pagerd {args[0]}: refused: {reason}"), run.err
    assert run.out == ""


async def test_event_commands_fail_when_no_verdict_comes(tmp_path: Path, broker: Mosquitto) -> None:
    """A broker but no pagerd: the event is published, and the command says none answered."""
    config = mqtt_config(tmp_path, broker.port, prefix="ops")
    async with watching(broker) as seen:
        run = await pagerd_async(
            "alert", "api", "down", "--wait", "0.5", "--config", config, cwd=tmp_path
        )
        await eventually(lambda: len(seen) >= 1, what="the alert")
    assert run.code == EXIT_RUNTIME_FAILURE, run.out
    assert (
        f"published to 127.0.0.1:{broker.port}, but no verdict from pagerd within 0.5 s" in run.err
    )
    assert "is pagerd running and connected?" in run.err
    assert json.loads(seen[0][1])["request_id"].startswith("cli-")


def test_event_commands_refuse_a_bad_wait(tmp_path: Path) -> None:
    config = mqtt_config(tmp_path, free_port())
    run = pagerd("healthy", "api", "--wait", "soon", "--config", config, cwd=tmp_path)
    assert run.code == EXIT_BAD_USAGE
    assert "argument --wait: 'soon' is not a number of seconds" in run.err


@pytest.mark.parametrize("args", [["alert", "api", "down"], ["ack", "api"], ["healthy", "api"]])
def test_event_commands_fail_clearly_without_a_broker(tmp_path: Path, args: list[str]) -> None:
    port = free_port()  # nothing listens here
    config = mqtt_config(tmp_path, port)
    run = pagerd(*args, "--config", config, cwd=tmp_path)
    assert run.code == EXIT_RUNTIME_FAILURE
    assert f"cannot publish to 127.0.0.1:{port}" in run.err
    assert "Traceback" not in run.err


def secured_config(tmp_path: Path, secured: Secured, password: str) -> Path:
    """A config reaching the broker as the daemon would: TLS with a private CA, a login,
    and a cluster's hosts of which the first does not answer."""
    password_file = write(tmp_path / "mqtt.pw", password + "\n")
    return write(
        tmp_path / "cli.toml",
        f'[database]\npath = "{tmp_path / "cli.db"}"\n\n'
        f'[mqtt]\nhosts = ["127.0.0.1:{free_port()}", "127.0.0.1:{secured.tls_port}"]\n'
        f'topic_prefix = "ops"\nusername = "alice"\npassword_file = "{password_file}"\n'
        f'tls = true\nca_file = "{secured.ca}"\n',
    )


async def test_event_commands_connect_as_the_daemon_does(tmp_path: Path, secured: Secured) -> None:
    config = secured_config(tmp_path, secured, "s3cret")
    async with watching(secured.broker, "alice", "s3cret") as seen:
        run = await pagerd_async(
            "alert", "api", "down", "--wait", "0", "--config", config, cwd=tmp_path
        )
        assert (run.code, run.out.strip()) == (EXIT_OK, "published alert for api"), run.err
        await eventually(lambda: len(seen) >= 1, what="the alert")
    ((topic, payload, qos),) = seen
    assert (topic, json.loads(payload)["message"], qos) == ("ops/alert/api", "down", 1)


async def test_event_commands_say_why_the_broker_refused_them(
    tmp_path: Path, secured: Secured
) -> None:
    config = secured_config(tmp_path, secured, "wrong")
    run = await pagerd_async("healthy", "api", "--config", config, cwd=tmp_path)
    assert run.code == EXIT_RUNTIME_FAILURE
    assert run.err.strip().endswith(
        f"127.0.0.1:{secured.tls_port}: the broker refused the connection: not authorized"
        " (CONNACK return code 5)"
    ), run.err
    assert "Connection refused; " in run.err, "the first host's failure is named too"


def test_event_command_refuses_a_bad_service_id(tmp_path: Path) -> None:
    config = mqtt_config(tmp_path, free_port())
    run = pagerd("alert", "bad/id", "down", "--config", config, cwd=tmp_path)
    assert run.code == EXIT_BAD_USAGE
    assert "bad/id" in run.err


# --- status --------------------------------------------------------------------------------


async def test_status_lists_services_with_their_open_incident(
    tmp_path: Path,
    make_pagerd: PagerdFactory,
    monitor: Monitor,
    sms_service: SmsStandIn,
) -> None:
    """Given a database where one of two services has an open incident,
    then status shows it unhealthy with the incident, and the other healthy."""
    policy = Policy("oncall", [(30.0, [sms(ONE)])])
    daemon = make_pagerd([policy], {"api": "oncall", "web": "oncall"})
    await daemon.start()
    await monitor.publish("alert", "api", "disk full")
    await eventually(lambda: len(sms_service.to(ONE)) == 1, what="page")
    config = daemon.directory / "pagerd.toml"

    # Beside the running daemon, then after it stopped.
    beside = await pagerd_async("status", "--config", config, cwd=tmp_path)
    assert await daemon.stop() == 0
    after = await pagerd_async("status", "--config", config, cwd=tmp_path)

    ((incident_id,),) = sqlite_rows(daemon.db, "SELECT id FROM incidents")
    for run in (beside, after):
        assert run.code == EXIT_OK, run.err
        rows = {line.split()[0]: line.split() for line in run.out.splitlines() if line.strip()}
        assert rows["api"][:5] == ["api", "unhealthy", incident_id, "triggered", "1"], run.out
        assert rows["api"][-1] == "oncall"
        assert rows["web"][:5] == ["web", "healthy", "-", "-", "-"], run.out
        assert "2 services, 1 open incident;" in run.out
    assert "notifications: 0 pending, 0 held, 0 failed" in after.out


async def test_status_counts_the_notifications_that_failed(
    tmp_path: Path,
    make_pagerd: PagerdFactory,
    monitor: Monitor,
    sms_service: SmsStandIn,
) -> None:
    """Given a page the SMS service refused for good (a 400),
    then status counts it failed, not as "0 pending" and nothing else."""
    sms_service.statuses = [400]
    daemon = make_pagerd([Policy("oncall", [(30.0, [sms(ONE)])])], {"api": "oncall"})
    await daemon.start()
    await monitor.publish("alert", "api", "disk full")
    await eventually(
        lambda: sqlite_rows(daemon.db, "SELECT status FROM outbox") == [("failed",)],
        what="the page marked failed",
    )

    run = await pagerd_async("status", "--config", daemon.directory / "pagerd.toml", cwd=tmp_path)

    assert run.code == EXIT_OK, run.err
    assert run.out.rstrip().endswith(
        "1 service, 1 open incident; notifications: 0 pending, 0 held, 1 failed"
    ), run.out


async def test_status_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    """`pagerd status | head`: the reader is gone before status writes. No traceback."""
    from pagerd.store.sqlite import Store

    db = tmp_path / "pagerd.db"
    await (await Store.open(db)).close()
    config = write(tmp_path / "pagerd.toml", f'[database]\npath = "{db}"\n')
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pagerd", "status", "--config", str(config)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env=environment(),
            timeout=30,
            check=False,
        )
    finally:
        os.close(write_end)
    assert done.stderr == ""
    assert done.returncode == EXIT_OK


def test_status_names_the_missing_database(tmp_path: Path) -> None:
    missing = tmp_path / "state" / "pagerd.db"
    config = write(tmp_path / "pagerd.toml", f'[database]\npath = "{missing}"\n')
    run = pagerd("status", "--config", config, cwd=tmp_path)
    assert run.code == EXIT_RUNTIME_FAILURE
    assert str(missing) in run.err
    assert not missing.exists()  # status only reads: it never creates a database


# --- maintenance -----------------------------------------------------------------------------


async def test_maintenance_starts_and_ends_a_window_through_the_api(
    tmp_path: Path, make_pagerd: PagerdFactory
) -> None:
    daemon = make_pagerd([Policy("oncall", [(30.0, [sms(ONE)])])], {"api": "oncall"})
    await daemon.start()
    config = daemon.directory / "pagerd.toml"
    run = await pagerd_async(
        "maintenance", "api", "--for", "1h30m", "--reason", "db upgrade", "--config", config,
        cwd=tmp_path,
    )  # fmt: skip
    assert run.code == EXIT_OK, run.err
    until = run.out.strip().removeprefix("api: in maintenance until ")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", until), run.out
    ((stored, reason),) = sqlite_rows(
        daemon.db, "SELECT maintenance_until, maintenance_reason FROM services WHERE id = 'api'"
    )
    assert (stored[:23] + "Z", reason) == (until, "db upgrade")

    run = await pagerd_async("maintenance", "api", "--end", "--config", config, cwd=tmp_path)
    assert (run.code, run.out.strip()) == (EXIT_OK, "api: maintenance ended")
    assert sqlite_rows(daemon.db, "SELECT maintenance_until FROM services WHERE id = 'api'") == [
        (None,)
    ]
    run = await pagerd_async("maintenance", "nope", "--for", "5m", "--config", config, cwd=tmp_path)
    assert run.code == EXIT_RUNTIME_FAILURE
    assert run.err.strip() == "pagerd maintenance: 404 no service 'nope'"


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["api", "--for", "soon"], "'soon' is not a duration like 30m, 2h, 1h30m, 1d or 90"),
        (["api", "--for", "0m"], "'0m' is no time at all"),
        (["bad/id", "--for", "5m"], "SERVICE: must match [A-Za-z0-9._-]{1,128}, got 'bad/id'"),
    ],
)
def test_maintenance_refuses_bad_usage(tmp_path: Path, args: list[str], error: str) -> None:
    config = write(tmp_path / "pagerd.toml", '[http]\ntokens = ["' + "t" * 40 + '"]\n')
    run = pagerd("maintenance", *args, "--config", config, cwd=tmp_path)
    assert (run.code, run.err.strip()) == (EXIT_BAD_USAGE, f"pagerd maintenance: {error}")


def test_maintenance_needs_a_token_and_says_when_the_api_is_not_there(tmp_path: Path) -> None:
    port = free_port()
    config = write(tmp_path / "pagerd.toml", f'[http]\nlisten = "0.0.0.0:{port}"\n')
    run = pagerd("maintenance", "api", "--for", "5m", "--config", config, cwd=tmp_path)
    assert run.code == EXIT_BAD_USAGE
    assert "needs an API token in [http] tokens or tokens_file" in run.err
    config = write(
        tmp_path / "pagerd.toml",
        f'[http]\nlisten = "0.0.0.0:{port}"\ntokens = ["' + "t" * 40 + '"]\n',
    )
    run = pagerd("maintenance", "api", "--end", "--config", config, cwd=tmp_path)
    assert run.code == EXIT_RUNTIME_FAILURE
    assert f"cannot reach the API at http://127.0.0.1:{port}" in run.err
    assert "Traceback" not in run.err
