"""The TOML configuration: the shipped example, defaults, secrets, and every kind of mistake."""

from __future__ import annotations

import getpass
import re
import shutil
import socket
import ssl
import subprocess
import time
import tomllib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import msgspec
import pytest

from pagerd.config import (
    DEFAULT_SMS_URL,
    ClusterConfig,
    Config,
    ConfigError,
    HttpConfig,
    IntegrationsConfig,
    LevelConfig,
    MqttConfig,
    NotifyConfig,
    PolicyConfig,
    RotationConfig,
    ScheduleConfig,
    ServiceConfig,
    TeamConfig,
    default_config_path,
    load_config,
    weak_token_problems,
)
from pagerd.core.policy import (
    DomainError,
    EmailTarget,
    Level,
    ScheduleTarget,
    SmsTarget,
    TeamTarget,
    WebhookTarget,
)
from tests.harness import free_port, make_tls_files

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "pagerd.toml"
MOSQUITTO_CONF = EXAMPLE.parent / "mosquitto.conf"
GOOD_TOKEN = "a-token-long-enough-Rf3kW9pL2xQ7vB"  # 34 characters
MOSQUITTO = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin")

POLICY = """
[[policies]]
id = "p"
[[policies.levels]]
targets = [{ type = "sms", phone_number = "+15550001111" }]
"""


def domain_problem(make: Callable[[], object]) -> str:
    """What pagerd.domain says about the input ``make`` builds."""
    with pytest.raises(DomainError) as caught:
        make()
    return caught.value.problem


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pagerd.toml"
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(tmp_path: Path, text: str) -> list[str]:
    """The problems load_config reports for ``text``, without the leading ``FILE: ``."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    prefix = f"{path}: "
    assert all(problem.startswith(prefix) for problem in caught.value.problems), caught.value
    return [problem.removeprefix(prefix) for problem in caught.value.problems]


# --- the shipped files -------------------------------------------------------------------


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    """The example config, loaded where `make run` has written its API token."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "api-token").write_text(f"{GOOD_TOKEN}\n", "utf-8")
    return load_config(EXAMPLE, env={})


def test_example_config_loads_and_builds_its_policies(example: Config) -> None:
    """Given the token `make run` writes, the example loads, and pages go to the stand-in."""
    config = example

    assert config.source == str(EXAMPLE)
    assert config.database.path == "./var/pagerd.db"
    assert (config.mqtt.host, config.mqtt.port) == ("127.0.0.1", 1883)
    assert config.http.host_port() == ("127.0.0.1", 8080)
    assert config.http_tokens() == (GOOD_TOKEN,)
    assert weak_token_problems(config) == []
    # Every channel goes to `pagerd standin` (make run), never to a third party.
    assert config.notify.sms.url == "http://127.0.0.1:8025/sms"
    assert config.notify.sms.url != DEFAULT_SMS_URL
    assert (config.notify.email.host, config.notify.email.port) == ("127.0.0.1", 2525)
    [team] = config.teams
    assert team.name == "claims"
    assert [(d.name, d.phone_number) for d in team.developers] == [
        ("someone", "999999999"),
        ("somebody", "9111111111"),
    ]
    assert [(s.id, s.name, s.policy, s.heartbeat_s) for s in config.services] == [
        ("payments-api", "Payments API", "payments", None),
        ("backups", "Backups", "payments", 90000),
    ]
    [schedule] = config.schedules
    assert (schedule.id, schedule.team, schedule.time_zone) == (
        "claims-weekly",
        "claims",
        "Europe/Paris",
    )
    [rotation] = schedule.rotations
    assert (rotation.start, rotation.shift_s, rotation.developers) == (
        datetime(2026, 11, 30, 9),
        7 * 24 * 3600,
        ("someone", "somebody"),
    )

    policies = config.domain_policies()
    assert list(policies) == ["payments"]
    first, second = policies["payments"].levels
    assert first.targets == (TeamTarget("claims"),)
    assert first.ack_timeout_s == 300
    # The second level sets no timeout: [escalation].ack_timeout_s applies.
    assert second.ack_timeout_s == config.escalation.ack_timeout_s == 900
    assert second.targets == (
        SmsTarget("+15550001111"),
        EmailTarget("oncall@example.com"),
        WebhookTarget("http://127.0.0.1:8025/hooks/chat"),
        ScheduleTarget("claims-weekly"),
    )


def _keys(struct_type: type[msgspec.Struct]) -> set[str]:
    return {f.encode_name for f in msgspec.structs.fields(struct_type)}


def test_example_config_shows_every_key() -> None:
    document = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    file_keys = _keys(Config) - {"source", "secrets"}

    # [cluster] needs a PostgreSQL url, which the example leaves empty: commented out.
    assert set(document) == file_keys - {"cluster"}
    commented = re.findall(r"^# (\w+) = ", EXAMPLE.read_text(encoding="utf-8"), re.MULTILINE)
    assert _keys(ClusterConfig) <= set(commented)
    for name in ("database", "mqtt", "http", "escalation", "routing", "integrations", "log"):
        field_type = next(f.type for f in msgspec.structs.fields(Config) if f.name == name)
        assert set(document[name]) == _keys(field_type), name
    assert set(document["notify"]) == _keys(NotifyConfig)
    for channel in ("sms", "email", "webhook"):
        field_type = next(f.type for f in msgspec.structs.fields(NotifyConfig) if f.name == channel)
        assert set(document["notify"][channel]) == _keys(field_type), channel
    assert set(document["policies"][0]) == _keys(PolicyConfig)
    assert set(document["policies"][0]["levels"][0]) == _keys(LevelConfig)
    assert set(document["teams"][0]) == _keys(TeamConfig)
    assert set().union(*document["services"]) == _keys(ServiceConfig)
    assert set(document["schedules"][0]) == _keys(ScheduleConfig)
    assert set(document["schedules"][0]["rotations"][0]) == _keys(RotationConfig)
    levels = document["policies"][0]["levels"]
    assert {t["type"] for level in levels for t in level["targets"]} == {
        "sms",
        "email",
        "team",
        "webhook",
        "schedule",
    }


def test_mosquitto_conf_keeps_queued_messages_across_restarts() -> None:
    lines = MOSQUITTO_CONF.read_text(encoding="utf-8").splitlines()
    settings = dict(
        line.split(" ", 1) for line in lines if line.strip() and not line.startswith("#")
    )

    assert settings["listener"] == "1883 127.0.0.1"
    assert settings["persistence"] == "true"
    assert int(settings["autosave_interval"]) <= 5
    assert int(settings["max_queued_messages"]) > 1000
    assert int(settings["max_inflight_messages"]) > 20
    # The broker drops a huge message itself; pagerd refuses those between the limits.
    assert int(settings["message_size_limit"]) > MqttConfig().max_message_bytes


@pytest.mark.slow
@pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed")
def test_mosquitto_runs_the_conf_and_saves_its_state(tmp_path: Path) -> None:
    assert MOSQUITTO is not None
    port = free_port()
    conf = MOSQUITTO_CONF.read_text(encoding="utf-8")
    assert "\nlistener 1883 127.0.0.1\n" in conf
    # Run as whoever runs the tests: as root, mosquitto would switch to the user
    # "mosquitto", which cannot write into pytest's private tmp_path.
    conf = conf.replace("listener 1883 ", f"listener {port} ") + f"user {getpass.getuser()}\n"
    (tmp_path / "mosquitto.conf").write_text(conf, encoding="utf-8")
    (tmp_path / "var" / "mosquitto").mkdir(parents=True)
    saved = tmp_path / "var" / "mosquitto" / "mosquitto.db"

    with subprocess.Popen(
        [MOSQUITTO, "-c", "mosquitto.conf"],
        cwd=tmp_path,  # persistence_location is relative to where mosquitto starts
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    ) as broker:
        try:
            deadline = time.monotonic() + 10
            while not saved.exists():  # autosave_interval 1: written within a second or two
                assert broker.poll() is None, broker.communicate()[0].decode()
                assert time.monotonic() < deadline, "mosquitto did not save its state"
                time.sleep(0.05)
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass
        finally:
            broker.terminate()
            output = broker.communicate(timeout=10)[0].decode()
    assert "Error" not in output, output


# --- defaults ----------------------------------------------------------------------------


def test_an_empty_file_is_all_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""), env={})

    assert config.database.path == "./var/pagerd.db"
    assert config.mqtt.client_id == "pagerd"
    assert config.http.listen == "127.0.0.1:8080"
    assert config.escalation.ack_timeout_s == 900
    assert config.notify.sms.url == "https://run.mocky.io/v3/fd99c100-f88a-4d70-aaf7-393dbbd5d99f"
    assert (config.log.format, config.log.level) == ("json", "info")
    assert (config.teams, config.policies, config.services) == ((), (), ())
    assert config.http_tokens() == ()
    assert config.mqtt_password() is None
    assert config.domain_policies() == {}


def test_database_defaults_to_state_directory(tmp_path: Path) -> None:
    path = write(tmp_path, "")

    config = load_config(path, env={"STATE_DIRECTORY": "/var/lib/pagerd"})

    assert config.database.path == "/var/lib/pagerd/pagerd.db"


def test_database_uses_the_first_of_several_state_directories(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""), env={"STATE_DIRECTORY": "/var/lib/a:/var/lib/b"})

    assert config.database.path == "/var/lib/a/pagerd.db"


def test_database_path_in_file_beats_state_directory(tmp_path: Path) -> None:
    path = write(tmp_path, '[database]\npath = "/srv/pager.db"\n')

    config = load_config(path, env={"STATE_DIRECTORY": "/var/lib/pagerd"})

    assert config.database.path == "/srv/pager.db"


def test_database_url_names_postgresql_and_no_file(tmp_path: Path) -> None:
    url = "postgresql://pagerd@db1,db2/pagerd?target_session_attrs=read-write"
    path = write(tmp_path, f'[database]\nurl = "{url}"\n')

    config = load_config(path, env={"STATE_DIRECTORY": "/var/lib/pagerd"})

    assert config.database.url == url
    assert config.database.path == ""


def test_database_path_and_url_together_are_refused(tmp_path: Path) -> None:
    both = '[database]\npath = "/srv/pager.db"\nurl = "postgresql://pagerd@db/pagerd"\n'
    assert problems_of(tmp_path, both) == [
        "database: set path (SQLite) or url (PostgreSQL), not both"
    ]
    assert problems_of(tmp_path, '[database]\nurl = "mysql://db/pagerd"\n') == [
        "database.url: must be a postgresql:// URL"
    ]


def test_cluster_keys_need_a_postgresql_url(tmp_path: Path) -> None:
    assert problems_of(tmp_path, '[cluster]\nnode_id = "a"\n') == [
        "cluster: only with a PostgreSQL [database] url; a SQLite database serves one node"
    ]


def test_cluster_node_id_defaults_to_the_host_name(tmp_path: Path) -> None:
    url = "postgresql://pagerd@db/pagerd"
    path = write(tmp_path, f'[database]\nurl = "{url}"\n')

    cluster = load_config(path, env={}).cluster

    assert cluster.node_id == socket.gethostname()
    assert cluster.lease_ttl_s == 5.0


def test_cluster_keys_are_checked(tmp_path: Path) -> None:
    url = '[database]\nurl = "postgresql://pagerd@db/pagerd"\n'
    path = write(tmp_path, url + '[cluster]\nnode_id = "db-1.example"\nlease_ttl_s = 1.5\n')
    cluster = load_config(path, env={}).cluster
    assert (cluster.node_id, cluster.lease_ttl_s) == ("db-1.example", 1.5)

    assert problems_of(tmp_path, url + "[cluster]\nlease_ttl_s = 0.5\n") == [
        "cluster.lease_ttl_s: must be >= 1, got 0.5"
    ]
    assert problems_of(tmp_path, url + '[cluster]\nnode_id = "a/b"\n') == [
        "cluster.node_id: must match [A-Za-z0-9._-]{1,128}, got 'a/b'"
    ]


def test_default_config_path() -> None:
    assert default_config_path({}) == Path("/etc/pagerd/pagerd.toml")
    assert default_config_path({"PAGERD_CONFIG": ""}) == Path("/etc/pagerd/pagerd.toml")
    assert default_config_path({"PAGERD_CONFIG": "/tmp/p.toml"}) == Path("/tmp/p.toml")


def test_notify_defaults(tmp_path: Path) -> None:
    notify = load_config(write(tmp_path, ""), env={}).notify

    assert notify.bundle_window_s == 30
    assert notify.max_attempts == 6
    assert notify.max_age_s == 3600
    assert notify.concurrency == 16
    assert notify.sms.timeout_s == 5
    assert notify.email.timeout_s == 10
    assert notify.webhook.timeout_s == 5
    assert not notify.email.starttls


def test_example_config_shows_the_notify_defaults(example: Config) -> None:
    """Every [notify] key the example sets is its default, but where pages go (the stand-in,
    on loopback, which webhooks may reach only when allowed)."""
    defaults = NotifyConfig()
    stand_in = msgspec.structs.replace(
        defaults,
        sms=msgspec.structs.replace(defaults.sms, url="http://127.0.0.1:8025/sms"),
        email=msgspec.structs.replace(defaults.email, host="127.0.0.1", port=2525),
        webhook=msgspec.structs.replace(defaults.webhook, allow_hosts=("127.0.0.1",)),
    )
    assert example.notify == stand_in


def test_integrations_defaults_admit_only_aws_sns_certificates(tmp_path: Path) -> None:
    integrations = load_config(write(tmp_path, ""), env={}).integrations
    pattern = re.compile(integrations.sns_cert_url_pattern)

    assert not integrations.sns_confirm_subscriptions
    assert pattern.fullmatch(
        "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-01d088a6f77103d0fe307c0069e40ed6.pem"
    )
    assert pattern.fullmatch(
        "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService.pem"
    )
    for url in (
        "http://sns.eu-west-1.amazonaws.com/cert.pem",  # not https
        "https://sns.eu-west-1.amazonaws.com.evil.example/cert.pem",
        "https://evil.example/sns.eu-west-1.amazonaws.com/cert.pem",
        "https://sns.eu-west-1.amazonaws.com/cert.pem?x=.pem",
        "https://sns.eu-west-1.amazonaws.com/cert.pem\n",
    ):
        assert not pattern.fullmatch(url), url


def test_example_config_shows_the_integrations_defaults(example: Config) -> None:
    assert example.integrations == IntegrationsConfig()


def test_integrations_settings_are_read(tmp_path: Path) -> None:
    text = (
        "[integrations]\nsns_cert_url_pattern = 'http://127\\.0\\.0\\.1:\\d+/.*'\n"
        "sns_confirm_subscriptions = true\n"
    )

    integrations = load_config(write(tmp_path, text), env={}).integrations

    assert integrations.sns_cert_url_pattern == r"http://127\.0\.0\.1:\d+/.*"
    assert integrations.sns_confirm_subscriptions


def test_notify_settings_at_their_bounds(tmp_path: Path) -> None:
    text = (
        "[notify]\nbundle_window_s = 0\nmax_attempts = 100\nmax_age_s = 0.3\n"
        "concurrency = 1000\n[notify.email]\ntimeout_s = 0.3\n"
        "[notify.webhook]\ntimeout_s = 0.3\n"
    )

    notify = load_config(write(tmp_path, text), env={}).notify

    assert (notify.bundle_window_s, notify.max_attempts, notify.max_age_s) == (0, 100, 0.3)
    assert notify.concurrency == 1000
    assert (notify.email.timeout_s, notify.webhook.timeout_s) == (0.3, 0.3)


def test_http_limits_default_and_read(tmp_path: Path) -> None:
    defaults = load_config(write(tmp_path, ""), env={}).http
    text = "[http]\nrequest_timeout_s = 0.3\nmax_connections = 1\n"
    http = load_config(write(tmp_path, text), env={}).http

    assert (defaults.request_timeout_s, defaults.max_connections) == (10, 1000)
    assert (http.request_timeout_s, http.max_connections) == (0.3, 1)


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""), env={})

    with pytest.raises(AttributeError):
        config.mqtt.port = 1  # type: ignore[misc]  # assigning to a frozen Struct is the test


def test_level_without_timeout_uses_escalation_default(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[escalation]\nack_timeout_s = 0.3\n" + POLICY), env={})

    assert config.domain_policies()["p"].levels[0].ack_timeout_s == 0.3


def test_public_url_loses_its_trailing_slash(tmp_path: Path) -> None:
    path = write(tmp_path, '[http]\npublic_url = "https://pager.example.com/"\n')

    assert load_config(path, env={}).http.public_url == "https://pager.example.com"


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        ("[::1]:8080", ("::1", 8080)),
        ("localhost:1", ("localhost", 1)),
    ],
)
def test_host_port(listen: str, expected: tuple[str, int]) -> None:
    assert HttpConfig(listen=listen).host_port() == expected


# --- secrets -----------------------------------------------------------------------------


def test_tokens_file_is_merged_with_tokens(tmp_path: Path) -> None:
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text("# ops team\nfile-token-1\n\n  file-token-2  \ninline\n", "utf-8")
    path = write(tmp_path, f'[http]\ntokens = ["inline"]\ntokens_file = "{tokens_file}"\n')

    config = load_config(path, env={})

    assert config.http_tokens() == ("inline", "file-token-1", "file-token-2")
    assert "file-token-1" not in repr(config)


def test_relative_secret_files_are_systemd_credentials(tmp_path: Path) -> None:
    """Given $CREDENTIALS_DIRECTORY (LoadCredential=), a relative tokens_file or password_file
    is read from it; an absolute path is read where it names."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "api-tokens").write_text(f"{GOOD_TOKEN}\n", "utf-8")
    (credentials / "mqtt-password").write_text("broker pass\n", "utf-8")
    (tmp_path / "smtp.pw").write_text("smtp pass\n", "utf-8")
    path = write(
        tmp_path,
        '[http]\ntokens_file = "api-tokens"\n'
        '[mqtt]\nusername = "pagerd"\npassword_file = "mqtt-password"\n'
        f'[notify.email]\nusername = "pagerd"\npassword_file = "{tmp_path / "smtp.pw"}"\n',
    )

    config = load_config(path, env={"CREDENTIALS_DIRECTORY": str(credentials)})

    assert config.http_tokens() == (GOOD_TOKEN,)
    assert config.mqtt_password() == "broker pass"
    assert config.email_password() == "smtp pass"

    # A file left empty is still no file, credentials or not.
    unset = write(tmp_path, '[http]\ntokens_file = "api-tokens"\n')
    loaded = load_config(unset, env={"CREDENTIALS_DIRECTORY": str(credentials)})
    assert (loaded.mqtt_password(), loaded.email_password()) == (None, None)

    # Without systemd's credentials, a relative path is the working directory's, as before.
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert f"{path}: http.tokens_file: cannot read api-tokens: No such file or directory" in (
        caught.value.problems
    )


@pytest.mark.parametrize(
    ("http", "tokens_file", "problems"),
    [
        pytest.param(f'tokens = ["{GOOD_TOKEN}"]', None, [], id="a good token"),
        pytest.param(
            'tokens = ["dev-token-change-me"]',
            None,
            [
                (
                    "http.tokens[0]: is the example placeholder; at least 32 characters are needed "
                    "(make one with: pagerd token)"
                )
            ],
            id="the placeholder",
        ),
        pytest.param(
            f'tokens = ["{GOOD_TOKEN}", "{"x" * 31}"]',
            None,
            [
                (
                    "http.tokens[1]: is 31 characters long; at least 32 characters are needed "
                    "(make one with: pagerd token)"
                )
            ],
            id="one character short",
        ),
        pytest.param(
            'tokens_file = "TOKENS"',
            f"# ops\n{GOOD_TOKEN}\n\n  short-token  \ndev-token-change-me\n",
            [
                (
                    "http.tokens_file: line 4 of TOKENS is 11 characters long; at least 32 "
                    "characters are needed (make one with: pagerd token)"
                ),
                (
                    "http.tokens_file: line 5 of TOKENS is the example placeholder; at least 32 "
                    "characters are needed (make one with: pagerd token)"
                ),
            ],
            id="in the tokens file, by line",
        ),
    ],
)
def test_weak_tokens_are_named_by_where_they_are_never_by_value(
    tmp_path: Path, http: str, tokens_file: str | None, problems: list[str]
) -> None:
    path_of_tokens = tmp_path / "tokens"
    if tokens_file is not None:
        path_of_tokens.write_text(tokens_file, "utf-8")
    path = write(tmp_path, "[http]\n" + http.replace("TOKENS", str(path_of_tokens)) + "\n")

    found = weak_token_problems(load_config(path, env={}))

    expected = [f"{path}: {p.replace('TOKENS', str(path_of_tokens))}" for p in problems]
    assert found == expected
    for line in found:
        assert "short-token" not in line
        assert "x" * 31 not in line


def test_password_files_are_read_at_load(tmp_path: Path) -> None:
    (tmp_path / "mqtt.pw").write_text("s3cret pass\n", "utf-8")
    (tmp_path / "smtp.pw").write_text("smtp-pass", "utf-8")
    path = write(
        tmp_path,
        f'[mqtt]\nusername = "pagerd"\npassword_file = "{tmp_path / "mqtt.pw"}"\n'
        f'[notify.email]\nusername = "pagerd"\npassword_file = "{tmp_path / "smtp.pw"}"\n',
    )

    config = load_config(path, env={})

    assert config.mqtt_password() == "s3cret pass"
    assert config.email_password() == "smtp-pass"
    assert "s3cret" not in repr(config)


def test_mqtt_hosts_are_tried_in_turn_with_the_port_as_default(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[mqtt]\nport = 8883\nhosts = ["mq1:1883", "mq2", "[::1]:1884", "[fd00::2]"]\n'
        "max_message_bytes = 1048576\n",
    )

    config = load_config(path, env={})

    assert config.mqtt.addresses() == (
        ("mq1", 1883),
        ("mq2", 8883),
        ("::1", 1884),
        ("fd00::2", 8883),
    )
    assert config.mqtt.max_message_bytes == 1048576
    assert load_config(write(tmp_path, ""), env={}).mqtt.addresses() == (("127.0.0.1", 1883),)
    empty = write(tmp_path, '[mqtt]\nhost = "mq"\nhosts = []\n')  # as the example has it
    assert load_config(empty, env={}).mqtt.addresses() == (("mq", 1883),)


def test_a_ca_file_without_a_certificate_is_a_problem(tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("not a certificate\n", "utf-8")

    (problem,) = problems_of(tmp_path, f'[mqtt]\ntls = true\nca_file = "{ca_file}"\n')

    assert problem.startswith(f"mqtt.ca_file: {ca_file} holds no usable certificate: "), problem


def test_https_is_served_from_a_certificate_and_its_key(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "tls")
    config = load_config(
        write(
            tmp_path,
            f'[http]\npublic_url = "https://pager.example.com"\n'
            f'tls_cert_file = "{tls.cert}"\ntls_key_file = "{tls.key}"\n',
        ),
        env={},
    )
    assert isinstance(config.secrets.http_tls, ssl.SSLContext)
    assert load_config(write(tmp_path, ""), env={}).secrets.http_tls is None


def test_https_mistakes_are_problems(tmp_path: Path) -> None:
    tls, other = make_tls_files(tmp_path / "tls"), make_tls_files(tmp_path / "other")
    https = 'public_url = "https://pager.example.com"\n'
    assert problems_of(tmp_path, f'[http]\n{https}tls_cert_file = "{tls.cert}"\n') == [
        "http.tls_key_file: must be set with http.tls_cert_file (both, or neither)"
    ]
    assert problems_of(tmp_path, f'[http]\n{https}tls_key_file = "{tls.key}"\n') == [
        "http.tls_cert_file: must be set with http.tls_key_file (both, or neither)"
    ]
    both = f'tls_cert_file = "{tls.cert}"\ntls_key_file = "{tls.key}"\n'
    (plain_url,) = problems_of(tmp_path, f"[http]\n{both}")
    assert plain_url == (
        "http.public_url: must be https:// when pagerd serves HTTPS (http.tls_cert_file),"
        " got 'http://127.0.0.1:8080'"
    )
    (mismatched,) = problems_of(
        tmp_path, f'[http]\n{https}tls_cert_file = "{tls.cert}"\ntls_key_file = "{other.key}"\n'
    )
    assert mismatched.startswith(
        f"http.tls_cert_file: {tls.cert} with the key {other.key} is no usable certificate: "
    ), mismatched
    missing = tmp_path / "nope.pem"
    assert problems_of(
        tmp_path, f'[http]\n{https}tls_cert_file = "{missing}"\ntls_key_file = "{tls.key}"\n'
    ) == [f"http.tls_cert_file: cannot read {missing}: No such file or directory"]


def test_missing_secret_files_are_problems(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    problems = problems_of(
        tmp_path,
        f'[http]\ntokens_file = "{missing}"\n[mqtt]\npassword_file = "{missing}"\n'
        f'[notify.email]\npassword_file = "{missing}"\n',
    )

    assert problems == [
        f"http.tokens_file: cannot read {missing}: No such file or directory",
        f"mqtt.password_file: cannot read {missing}: No such file or directory",
        f"notify.email.password_file: cannot read {missing}: No such file or directory",
    ]


# --- mistakes ----------------------------------------------------------------------------

BROKEN = {
    "unknown top-level key": ("prot = 1\n", "prot: unknown key"),
    "unknown key in a section": ("[mqtt]\nprot = 1883\n", "mqtt.prot: unknown key"),
    "unknown key in a nested section": (
        '[notify.sms]\nurll = "https://x"\n',
        "notify.sms.urll: unknown key",
    ),
    "unknown key in a level": (
        POLICY.replace("targets =", "ack_timeout = 3\ntargets ="),
        "policies[0].levels[0].ack_timeout: unknown key",
    ),
    "unknown key in a target": (
        POLICY.replace('phone_number = "+1', 'number = 1, phone_number = "+1'),
        "policies[0].levels[0].targets[0].number: unknown key",
    ),
    "wrong type": ('[mqtt]\nport = "1883"\n', "mqtt.port: expected integer, got string"),
    "wrong type of a section": ("mqtt = 5\n", "mqtt: expected table, got integer"),
    "array of tables given as a table": (
        "[policies]\n",
        "policies: expected array of tables, got table",
    ),
    "port out of range": ("[mqtt]\nport = 70000\n", "mqtt.port: must be <= 65535, got 70000"),
    "port zero": ("[notify.email]\nport = 0\n", "notify.email.port: must be >= 1, got 0"),
    "missing required field": (
        POLICY + '[[services]]\nid = "api"\n',
        "services[0].policy: is required",
    ),
    "missing required field of a developer": (
        '[[teams]]\nname = "t"\ndevelopers = [{ name = "a" }]\n',
        "teams[0].developers[0].phone_number: is required",
    ),
    "bad service id": (
        POLICY + '[[services]]\nid = "payments api"\npolicy = "p"\n',
        "services[0].id: must match [A-Za-z0-9._-]{1,128}, got 'payments api'",
    ),
    "bad policy id": (
        POLICY.replace('id = "p"', 'id = "p/q"'),
        "policies[0].id: must match [A-Za-z0-9._-]{1,128}, got 'p/q'",
    ),
    "duplicate policy id": (
        POLICY + POLICY,
        "policies[1].id: duplicate policy id 'p' (first at policies[0].id)",
    ),
    "duplicate service id": (
        POLICY + '[[services]]\nid = "a"\npolicy = "p"\n' * 2,
        "services[1].id: duplicate service id 'a' (first at services[0].id)",
    ),
    "duplicate team name": (
        '[[teams]]\nname = "t"\n[[teams]]\nname = "t"\n',
        "teams[1].name: duplicate team name 't' (first at teams[0].name)",
    ),
    "undeclared policy": (
        '[[services]]\nid = "a"\npolicy = "nope"\n',
        "services[0].policy: policy 'nope' is not declared in [[policies]]",
    ),
    "undeclared team": (
        POLICY.replace('type = "sms", phone_number = "+15550001111"', 'type = "team", team = "x"'),
        "policies[0].levels[0].targets[0].team: team 'x' is not declared in [[teams]]",
    ),
    "undeclared fallback policy": (
        '[routing]\nfallback_policy = "nope"\n',
        "routing.fallback_policy: policy 'nope' is not declared in [[policies]]",
    ),
    "zero level timeout": (
        POLICY.replace("targets =", "ack_timeout_s = 0\ntargets ="),
        # pagerd.domain words this one; its start is what matters here.
        "policies[0].levels[0].ack_timeout_s: must be positive",
    ),
    "negative escalation timeout": (
        "[escalation]\nack_timeout_s = -1\n",
        "escalation.ack_timeout_s: must be positive, got -1",
    ),
    "infinite escalation timeout": (
        "[escalation]\nack_timeout_s = inf\n",
        "escalation.ack_timeout_s: must be <= 2592000",
    ),
    "zero sms timeout": (
        "[notify.sms]\ntimeout_s = 0\n",
        "notify.sms.timeout_s: must be positive, got 0",
    ),
    "negative bundle window": (
        "[notify]\nbundle_window_s = -1\n",
        "notify.bundle_window_s: must be >= 0, got -1",
    ),
    "zero max_attempts": (
        "[notify]\nmax_attempts = 0\n",
        "notify.max_attempts: must be >= 1, got 0",
    ),
    "too many max_attempts": (
        "[notify]\nmax_attempts = 101\n",
        "notify.max_attempts: must be <= 100, got 101",
    ),
    "fractional max_attempts": (
        "[notify]\nmax_attempts = 2.5\n",
        "notify.max_attempts: expected integer, got float",
    ),
    "zero max_age": (
        "[notify]\nmax_age_s = 0\n",
        "notify.max_age_s: must be positive, got 0",
    ),
    "zero concurrency": (
        "[notify]\nconcurrency = 0\n",
        "notify.concurrency: must be >= 1, got 0",
    ),
    "too much concurrency": (
        "[notify]\nconcurrency = 1001\n",
        "notify.concurrency: must be <= 1000, got 1001",
    ),
    "zero email timeout": (
        "[notify.email]\ntimeout_s = 0\n",
        "notify.email.timeout_s: must be positive, got 0",
    ),
    "negative webhook timeout": (
        "[notify.webhook]\ntimeout_s = -1\n",
        "notify.webhook.timeout_s: must be positive, got -1",
    ),
    "unknown key in notify.webhook": (
        '[notify.webhook]\nurl = "https://x"\n',
        "notify.webhook.url: unknown key",
    ),
    "zero max_body_bytes": (
        "[http]\nmax_body_bytes = 0\n",
        "http.max_body_bytes: must be >= 1, got 0",
    ),
    "zero request_timeout_s": (
        "[http]\nrequest_timeout_s = 0\n",
        "http.request_timeout_s: must be positive, got 0",
    ),
    "request_timeout_s as text": (
        '[http]\nrequest_timeout_s = "10s"\n',
        "http.request_timeout_s: expected float, got string",
    ),
    "zero max_connections": (
        "[http]\nmax_connections = 0\n",
        "http.max_connections: must be >= 1, got 0",
    ),
    "fractional max_connections": (
        "[http]\nmax_connections = 10.5\n",
        "http.max_connections: expected integer, got float",
    ),
    "repeat 10": (
        POLICY.replace('id = "p"', 'id = "p"\nrepeat = 10'),
        "policies[0].repeat: must be between 0 and 9, got 10",
    ),
    "no levels": (
        '[[policies]]\nid = "p"\n',
        "policies[0].levels: a policy needs at least one level",
    ),
    "level without targets": (
        '[[policies]]\nid = "p"\n[[policies.levels]]\ntargets = []\n',
        "policies[0].levels[0].targets: a level needs at least one target",
    ),
    "unknown target type": (
        POLICY.replace('type = "sms"', 'type = "pager"'),
        (
            "policies[0].levels[0].targets[0].type: must be one of sms, email, team, webhook, "
            "schedule, got 'pager'"
        ),
    ),
    "target without type": (
        POLICY.replace('type = "sms", ', ""),
        (
            "policies[0].levels[0].targets[0].type: is required, one of sms, email, team, "
            "webhook, schedule"
        ),
    ),
    "bad email address": (
        POLICY.replace(
            'type = "sms", phone_number = "+15550001111"', 'type = "email", address = "x"'
        ),
        "policies[0].levels[0].targets[0].address: must be an email address, got 'x'",
    ),
    "bad webhook url": (
        POLICY.replace(
            'type = "sms", phone_number = "+15550001111"', 'type = "webhook", url = "x"'
        ),
        "policies[0].levels[0].targets[0].url: must be an http:// or https:// URL, got 'x'",
    ),
    "bad log level": (
        '[log]\nlevel = "verbose"\n',
        "log.level: must be one of debug, info, warning, error, got 'verbose'",
    ),
    "bad log format": (
        '[log]\nformat = "xml"\n',
        "log.format: must be one of json, console, got 'xml'",
    ),
    "both host and hosts": (
        '[mqtt]\nhost = "mq1"\nhosts = ["mq2:1883"]\n',
        "mqtt.hosts: set either host (and port) or hosts, not both",
    ),
    "hosts entry with a bad port": (
        '[mqtt]\nhosts = ["mq1:1883", "mq2:x"]\n',
        "mqtt.hosts[1]: must be host:port, got 'mq2:x'",
    ),
    "hosts entry with a port out of range": (
        '[mqtt]\nhosts = ["mq1:70000"]\n',
        "mqtt.hosts[0]: port must be 1..65535, got 'mq1:70000'",
    ),
    "zero max_message_bytes": (
        "[mqtt]\nmax_message_bytes = 0\n",
        "mqtt.max_message_bytes: must be >= 1, got 0",
    ),
    "max_message_bytes over MQTT's limit": (
        "[mqtt]\nmax_message_bytes = 268435456\n",
        "mqtt.max_message_bytes: must be <= 268435455, got 268435456",
    ),
    "listen without host": (
        '[http]\nlisten = "8080"\n',
        "http.listen: must be host:port, got '8080'",
    ),
    "listen port out of range": (
        '[http]\nlisten = "127.0.0.1:99999"\n',
        "http.listen: port must be 1..65535, got '127.0.0.1:99999'",
    ),
    "bad sms url": (
        '[notify.sms]\nurl = "ftp://sms"\n',
        "notify.sms.url: must be an http:// or https:// URL, got 'ftp://sms'",
    ),
    "empty token": ('[http]\ntokens = [""]\n', "http.tokens[0]: must not be empty"),
    "invalid sns cert url pattern": (
        "[integrations]\nsns_cert_url_pattern = '^https://(sns'\n",
        "integrations.sns_cert_url_pattern: not a valid regular expression: missing )",
    ),
    "empty sns cert url pattern": (
        '[integrations]\nsns_cert_url_pattern = ""\n',
        "integrations.sns_cert_url_pattern: must not be empty",
    ),
    "sns confirm subscriptions not a boolean": (
        '[integrations]\nsns_confirm_subscriptions = "yes"\n',
        "integrations.sns_confirm_subscriptions: expected boolean, got string",
    ),
    "unknown key in integrations": (
        "[integrations]\nsns_verify = false\n",
        "integrations.sns_verify: unknown key",
    ),
}


@pytest.mark.parametrize(("text", "expected"), BROKEN.values(), ids=BROKEN.keys())
def test_each_mistake_is_reported_at_its_key_path(tmp_path: Path, text: str, expected: str) -> None:
    [problem] = problems_of(tmp_path, text)
    assert problem.startswith(expected), problem


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[mqtt]\nhost = "127.0.0.1"\nport 1883\n')

    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})

    [problem] = caught.value.problems
    assert problem.startswith(f"{path}:3: ")
    assert "column" in problem


def test_toml_error_at_end_of_document_names_the_last_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[mqtt]\nhost = "127.0.0.1\n')

    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})

    [problem] = caught.value.problems
    assert problem.startswith((f"{path}:2: ", f"{path}:3: "))


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"

    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})

    assert caught.value.problems == [f"{path}: cannot read: No such file or directory"]


def test_every_problem_of_a_file_is_reported(tmp_path: Path) -> None:
    text = """
    [mqtt]
    prot = 1883
    port = "1883"
    tls = "yes"

    [log]
    level = "loud"

    [[teams]]
    name = "t"
    developers = [{ name = "a", phone_number = "1" }, { name = "b" }]

    [[policies]]
    id = "p"
    repeat = 10
    [[policies.levels]]
    ack_timeout_s = 0
    targets = [{ type = "team", team = "ghost" }]

    [[policies]]
    id = "q"
    levels = "none"

    [[services]]
    id = "api"
    policy = "nope"
    """

    problems = problems_of(tmp_path, text)

    zero_timeout = domain_problem(lambda: Level((SmsTarget("+15550001111"),), 0.0))
    assert sorted(problems) == sorted(
        [
            "mqtt.prot: unknown key",
            "mqtt.port: expected integer, got string",
            "mqtt.tls: expected boolean, got string",
            "log.level: must be one of debug, info, warning, error, got 'loud'",
            (
                "teams[0].developers[0].phone_number: must be a phone number: an optional + and"
                " 6 to 15 digits, got '1'"
            ),
            "teams[0].developers[1].phone_number: is required",
            "policies[0].levels[0].ack_timeout_s: " + zero_timeout,
            "policies[0].repeat: must be between 0 and 9, got 10",
            "policies[0].levels[0].targets[0].team: team 'ghost' is not declared in [[teams]]",
            "policies[1].levels: expected array, got string",
            "services[0].policy: policy 'nope' is not declared in [[policies]]",
        ]
    )


def test_a_policy_with_a_type_error_still_counts_as_declared(tmp_path: Path) -> None:
    text = POLICY.replace('id = "p"', 'id = "p"\nrepeat = "once"')
    text += '[[services]]\nid = "api"\npolicy = "p"\n'

    assert problems_of(tmp_path, text) == ["policies[0].repeat: expected integer, got string"]


def test_domain_policies_of_a_hand_built_config_are_checked() -> None:
    """A config built by hand (not by load_config) still gets its policies checked: a target
    checks itself as it is made, and a level without targets names its field."""
    with pytest.raises(DomainError, match="phone_number: must be a phone number"):
        SmsTarget(" ")
    config = Config(policies=(PolicyConfig(id="p", levels=(LevelConfig(targets=()),)),))

    with pytest.raises(DomainError) as caught:
        config.domain_policies()

    assert str(caught.value) == "levels[0].targets: a level needs at least one target"
