"""The configuration file's shape (CONTRACT §2): frozen msgspec Structs, one per table.

msgspec checks types, ranges and unknown keys as it converts a table; the targets of
a level are the domain's own (``pagerd.core.policy``), which check themselves.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

from msgspec import Meta, Struct, field

from pagerd.core.policy import (
    HTTP_URL,
    MAX_ACK_TIMEOUT_S,
    PHONE_NUMBER,
    DomainError,
    Level,
    Policy,
    Target,
    anchored,
)

# Where AWS serves SNS signing certificates (pagerd.intake.sns fetches only from such URLs).
DEFAULT_SNS_CERT_URL_PATTERN = r"^https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/[^?#]*\.pem$"

Port = Annotated[int, Meta(ge=1, le=65535)]
# inf is a TOML float; the cap keeps deadlines computable (as pagerd.core.policy.Level does).
PositiveSeconds = Annotated[float, Meta(gt=0, le=MAX_ACK_TIMEOUT_S)]
Seconds = Annotated[float, Meta(ge=0, le=MAX_ACK_TIMEOUT_S)]
Text = Annotated[str, Meta(min_length=1)]
Url = Annotated[str, Meta(pattern=anchored(HTTP_URL))]
PhoneNumber = Annotated[str, Meta(pattern=anchored(PHONE_NUMBER))]
# A lease longer than this would leave a pager without a node for as long after a crash.
MAX_LEASE_TTL_S = 300.0


class _Section(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of every table of the file: immutable, and an unknown key is an error."""


class DatabaseConfig(_Section, frozen=True, kw_only=True):
    path: str = ""  # empty in the file: resolved by load_config (see _database_path)
    url: str = ""  # instead of path: the PostgreSQL store (CONTRACT §7)


LeaseSeconds = Annotated[float, Meta(ge=1, le=MAX_LEASE_TTL_S)]


class ClusterConfig(_Section, frozen=True, kw_only=True):
    """``[cluster]``: this node among others on one PostgreSQL database (CONTRACT §7)."""

    # Checked by load_config, which puts the host name in place of an empty one.
    node_id: str = ""
    lease_ttl_s: LeaseSeconds = 5.0


class MqttConfig(_Section, frozen=True, kw_only=True):
    host: Text = "127.0.0.1"
    port: Port = 1883
    hosts: tuple[Text, ...] = ()  # instead of host: "mq1:1883", ..., one broker cluster
    max_message_bytes: Annotated[int, Meta(gt=0, le=268_435_455)] = 65536  # MQTT's own limit
    client_id: Text = "pagerd"
    topic_prefix: Text = "pagerd"
    username: str = ""
    password_file: str = ""
    tls: bool = False
    ca_file: str = ""

    def addresses(self) -> tuple[tuple[str, int], ...]:
        """The brokers to try in turn: each of ``hosts`` (``port`` where it names none), else
        ``host`` and ``port``. ValueError if an entry is not ``host[:port]``."""
        if not self.hosts:
            return ((self.host, self.port),)
        return tuple(host_port(entry, self.port) for entry in self.hosts)


class HttpConfig(_Section, frozen=True, kw_only=True):
    listen: str = "127.0.0.1:8080"
    public_url: Url = "http://127.0.0.1:8080"
    tokens: tuple[Text, ...] = ()
    tokens_file: str = ""
    max_body_bytes: Annotated[int, Meta(gt=0)] = 65536
    request_timeout_s: PositiveSeconds = 10.0  # a client must send headers and body within this
    max_connections: Annotated[int, Meta(ge=1, le=1_000_000)] = 1000  # past it: closed at once
    tls_cert_file: str = ""  # with tls_key_file: serve HTTPS
    tls_key_file: str = ""

    def host_port(self) -> tuple[str, int]:
        """Split ``listen`` into host and port; ValueError if it is not ``host:port``."""
        return host_port(self.listen, None)


def host_port(text: str, default_port: int | None) -> tuple[str, int]:
    """``host:port`` or ``[v6 address]:port``; without ``:port``, ``default_port`` if given."""
    if default_port is not None and (text.endswith("]") or ":" not in text):
        host, sep, port = text, ":", str(default_port)
    else:
        host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):  # [::1]:8080
        host = host[1:-1]
    if not sep or not host or not port.isdigit():
        raise ValueError(f"must be host:port, got {text!r}")
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"port must be 1..65535, got {text!r}")
    return host, int(port)


class EscalationConfig(_Section, frozen=True, kw_only=True):
    ack_timeout_s: PositiveSeconds = 900.0


class RoutingConfig(_Section, frozen=True, kw_only=True):
    fallback_policy: str = ""


# CONTRACT §2's default: a public mock service. pagerd warns at start-up while it is in use.
DEFAULT_SMS_URL = "https://run.mocky.io/v3/fd99c100-f88a-4d70-aaf7-393dbbd5d99f"


class SmsConfig(_Section, frozen=True, kw_only=True):
    url: Url = DEFAULT_SMS_URL
    timeout_s: PositiveSeconds = 5.0


class EmailConfig(_Section, frozen=True, kw_only=True):
    host: Text = "localhost"
    port: Port = 25
    sender: Text = "pagerd@localhost"
    starttls: bool = False
    username: str = ""
    password_file: str = ""
    timeout_s: PositiveSeconds = 10.0  # the whole SMTP conversation of one message


class WebhookConfig(_Section, frozen=True, kw_only=True):
    timeout_s: PositiveSeconds = 5.0
    # Host names, addresses or CIDRs a webhook may reach although internal (core.egress).
    allow_hosts: tuple[Text, ...] = ()


class NotifyConfig(_Section, frozen=True, kw_only=True):
    bundle_window_s: Seconds = 30.0  # 0: every notification goes out on its own
    # Pages a person gets at once within a window; only a storm beyond it is held.
    bundle_after: Annotated[int, Meta(ge=1, le=1000)] = 3
    max_attempts: Annotated[int, Meta(ge=1, le=100)] = 6
    max_age_s: PositiveSeconds = 3600.0  # older than this: failed, not retried
    concurrency: Annotated[int, Meta(ge=1, le=1000)] = 16  # sends in flight per channel
    # Sender processes beside the daemon's event loop; 0 sends from the loop itself, which
    # measured best on 2 cores, where the processes compete with the loop (docs/processes.md).
    workers: Annotated[int, Meta(ge=0, le=64)] = 0
    sms: SmsConfig = field(default_factory=SmsConfig)
    email: EmailConfig = field(default_factory=EmailConfig)
    webhook: WebhookConfig = field(default_factory=WebhookConfig)


class IntegrationsConfig(_Section, frozen=True, kw_only=True):
    # Checked by load_config: it must compile (see _check_integrations).
    sns_cert_url_pattern: Text = DEFAULT_SNS_CERT_URL_PATTERN
    sns_confirm_subscriptions: bool = False


class LogConfig(_Section, frozen=True, kw_only=True):
    format: Literal["json", "console"] = "json"
    level: Literal["debug", "info", "warning", "error"] = "info"


class DeveloperConfig(_Section, frozen=True, kw_only=True):
    name: Text
    phone_number: PhoneNumber


class TeamConfig(_Section, frozen=True, kw_only=True):
    name: Text
    developers: tuple[DeveloperConfig, ...] = ()


class LevelConfig(_Section, frozen=True, kw_only=True):
    # Range checked by pagerd.core.policy.Level, once [escalation].ack_timeout_s is filled in.
    ack_timeout_s: float | None = None
    targets: tuple[Target, ...] = ()


class PolicyConfig(_Section, frozen=True, kw_only=True):
    # id, repeat and levels are checked by pagerd.core.policy.Policy.
    id: str
    repeat: int = 0
    levels: tuple[LevelConfig, ...] = ()

    def policy(self, default_ack_timeout_s: float) -> Policy:
        """The domain policy; DomainError names the first wrong field (``levels[1].targets``)."""
        levels: list[Level] = []
        for index, level in enumerate(self.levels):
            timeout = default_ack_timeout_s if level.ack_timeout_s is None else level.ack_timeout_s
            try:
                levels.append(Level(level.targets, timeout))
            except DomainError as error:
                raise DomainError(f"levels[{index}].{error.field}", error.problem) from None
        return Policy(self.id, tuple(levels), self.repeat)


class ServiceConfig(_Section, frozen=True, kw_only=True):
    id: str
    name: str = ""
    policy: str
    heartbeat_s: PositiveSeconds | None = None  # a beat is expected at least this often


class RotationConfig(_Section, frozen=True, kw_only=True):
    # Checked by pagerd.core.schedules.Schedule: a local time, a shift of 1 s to a year.
    start: datetime  # a TOML local date-time (no offset): 2026-12-01T09:00:00
    shift_s: int
    developers: tuple[Text, ...] = ()  # names of the team's developers, in turn order


class ScheduleConfig(_Section, frozen=True, kw_only=True):
    id: str
    team: Text  # a team of [[teams]]
    time_zone: Text
    notify_handover: bool = False  # an SMS to each developer as their turn begins
    rotations: tuple[RotationConfig, ...] = ()


@dataclass(frozen=True, slots=True)
class Secrets:
    """What load_config read from the files the config names; repr hides it from logs."""

    http_tokens: tuple[str, ...] = ()
    http_token_lines: tuple[int, ...] = ()  # each token's line in http.tokens_file
    mqtt_password: str | None = None
    email_password: str | None = None
    # [http] tls_cert_file and tls_key_file, loaded: the server side of HTTPS.
    http_tls: ssl.SSLContext | None = None

    def __repr__(self) -> str:
        return "Secrets(<hidden>)"


class Config(Struct, frozen=True, kw_only=True):
    """The whole configuration. ``source`` and ``secrets`` are filled in by load_config."""

    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    escalation: EscalationConfig = field(default_factory=EscalationConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    integrations: IntegrationsConfig = field(default_factory=IntegrationsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    teams: tuple[TeamConfig, ...] = ()
    policies: tuple[PolicyConfig, ...] = ()
    services: tuple[ServiceConfig, ...] = ()
    schedules: tuple[ScheduleConfig, ...] = ()
    source: str = ""
    secrets: Secrets = field(default_factory=Secrets)

    def http_tokens(self) -> tuple[str, ...]:
        """The API bearer tokens: ``http.tokens`` then those of ``http.tokens_file``, each once."""
        return tuple(dict.fromkeys((*self.http.tokens, *self.secrets.http_tokens)))

    def mqtt_password(self) -> str | None:
        """The MQTT password read from ``mqtt.password_file``, or None."""
        return self.secrets.mqtt_password

    def email_password(self) -> str | None:
        """The SMTP password read from ``notify.email.password_file``, or None."""
        return self.secrets.email_password

    def domain_policies(self) -> dict[str, Policy]:
        """The file's policies as domain objects, by id (load_config has checked them)."""
        default = self.escalation.ack_timeout_s
        return {cfg.id: cfg.policy(default) for cfg in self.policies}
