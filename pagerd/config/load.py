"""Reading the configuration file: every problem found, one line ``FILE: key.path: what``.

msgspec stops at the first error of a ``convert`` call, so a table that fails is
explained field by field (``pagerd.wire.explain``) until each problem is named. The
checks beyond types (policies, service ids, duplicates and references across the
file) run on each table, team, policy and service whose types are right, so a file
with both kinds of mistakes reports both.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from pagerd.config.model import (
    ClusterConfig,
    Config,
    DatabaseConfig,
    EmailConfig,
    EscalationConfig,
    HttpConfig,
    IntegrationsConfig,
    LogConfig,
    MqttConfig,
    NotifyConfig,
    PolicyConfig,
    RoutingConfig,
    ScheduleConfig,
    Secrets,
    ServiceConfig,
    TeamConfig,
    WebhookConfig,
    host_port,
)
from pagerd.core.egress import EgressRule, allow_hosts_problems
from pagerd.core.policy import (
    PATTERN_MEANINGS,
    SERVICE_ID,
    SERVICE_ID_PATTERN,
    DomainError,
    Level,
    Policy,
    ScheduleTarget,
    TeamTarget,
    WebhookTarget,
    validate_service_id,
)
from pagerd.core.schedules import Rotation, Schedule
from pagerd.wire.explain import TOML, explain

T = TypeVar("T")

SYSTEM_CONFIG_PATH = Path("/etc/pagerd/pagerd.toml")
LOCAL_DATABASE_PATH = "./var/pagerd.db"
DATABASE_FILE_NAME = "pagerd.db"
# Where systemd's LoadCredential= puts the files it hands to the service.
CREDENTIALS_DIRECTORY_VARIABLE = "CREDENTIALS_DIRECTORY"


class ConfigError(Exception):
    """The configuration is unusable; ``problems`` holds one ``FILE: key.path: what`` line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    """``$PAGERD_CONFIG``, else /etc/pagerd/pagerd.toml."""
    env = os.environ if env is None else env
    return Path(env["PAGERD_CONFIG"]) if env.get("PAGERD_CONFIG") else SYSTEM_CONFIG_PATH


def load_config(path: Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and check the file at ``path``; ConfigError lists every problem found."""
    env = os.environ if env is None else env
    source = str(path)
    raw = _parse_toml(path)
    problems: list[str] = []

    known = {f.encode_name for f in msgspec.structs.fields(Config)} - {"source", "secrets"}
    problems += [f"{key}: unknown key" for key in raw if key not in known]
    database = _section(raw, "database", DatabaseConfig, problems)
    cluster = _section(raw, "cluster", ClusterConfig, problems)
    mqtt = _section(raw, "mqtt", MqttConfig, problems)
    http = _section(raw, "http", HttpConfig, problems)
    escalation = _section(raw, "escalation", EscalationConfig, problems)
    routing = _section(raw, "routing", RoutingConfig, problems)
    notify = _section(raw, "notify", NotifyConfig, problems)
    integrations = _section(raw, "integrations", IntegrationsConfig, problems)
    log = _section(raw, "log", LogConfig, problems)
    teams = _elements(raw, "teams", TeamConfig, problems)
    policies = _elements(raw, "policies", PolicyConfig, problems)
    services = _elements(raw, "services", ServiceConfig, problems)
    schedules = _elements(raw, "schedules", ScheduleConfig, problems)

    try:
        http.host_port()
    except ValueError as exc:
        problems.append(f"http.listen: {exc}")
    problems += _check_integrations(integrations)
    problems += _check_mqtt(raw.get("mqtt"), mqtt)
    problems += _check_database(database)
    problems += _check_webhooks(notify.webhook, policies)
    node_id = _node_id(cluster, database, "cluster" in raw, problems)
    for key_path, cfg in policies:
        problems += _policy_problems(cfg, escalation.ack_timeout_s, key_path)
    for key_path, svc in services:
        try:
            validate_service_id(svc.id, "id")
        except DomainError as exc:
            problems.append(f"{key_path}.{exc.field}: {exc.problem}")
    for key_path, schedule in schedules:
        problems += _schedule_problems(schedule, key_path)
    problems += _cross_check(raw, routing, teams, policies, services)
    problems += _schedule_references(raw, teams, policies, schedules)
    secrets = _read_secrets(mqtt, http, notify.email, problems, _credentials_directory(env))

    if problems:
        raise ConfigError([f"{source}: {problem}" for problem in problems])
    return Config(
        database=msgspec.structs.replace(database, path=_database_path(database, env)),
        cluster=msgspec.structs.replace(cluster, node_id=node_id),
        mqtt=mqtt,
        # Links are built as f"{public_url}/ack/...": a trailing slash would double.
        http=msgspec.structs.replace(http, public_url=http.public_url.rstrip("/")),
        escalation=escalation,
        routing=routing,
        notify=notify,
        integrations=integrations,
        log=log,
        teams=tuple(team for _, team in teams),
        policies=tuple(policy for _, policy in policies),
        services=tuple(service for _, service in services),
        schedules=tuple(schedule for _, schedule in schedules),
        source=source,
        secrets=secrets,
    )


# --- reading -----------------------------------------------------------------------------


def _parse_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {_reason(exc)}"]) from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        at = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
        if at is not None:
            line, where = at.group(1), f" (column {at.group(2)})"
        else:  # "(at end of document)"
            line, where = str(text.count("\n") + 1), ""
        message = re.sub(r"\s*\(at [^()]*\)$", "", message)
        raise ConfigError([f"{path}:{line}: {message}{where}"]) from exc


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def _check_database(database: DatabaseConfig) -> list[str]:
    if database.path and database.url:
        return ["database: set path (SQLite) or url (PostgreSQL), not both"]
    if database.url and not database.url.startswith(("postgresql://", "postgres://")):
        return ["database.url: must be a postgresql:// URL"]
    return []


def _node_id(
    cluster: ClusterConfig, database: DatabaseConfig, declared: bool, problems: list[str]
) -> str:
    """The node's id: ``[cluster] node_id``, else the host name; checked."""
    if declared and not database.url:
        problems.append(
            "cluster: only with a PostgreSQL [database] url; a SQLite database serves one node"
        )
        return cluster.node_id
    node_id = cluster.node_id or socket.gethostname()
    if not SERVICE_ID_PATTERN.fullmatch(node_id):
        where = "cluster.node_id" if cluster.node_id else "cluster.node_id (the host name)"
        problems.append(f"{where}: {PATTERN_MEANINGS[SERVICE_ID]}, got {node_id!r}")
    return node_id


def _database_path(database: DatabaseConfig, env: Mapping[str, str]) -> str:
    if database.path or database.url:
        return database.path
    # systemd's StateDirectory= may list several directories, separated by ':'.
    state_directory = env.get("STATE_DIRECTORY", "").split(":")[0]
    if state_directory:
        return str(Path(state_directory) / DATABASE_FILE_NAME)
    return LOCAL_DATABASE_PATH


def _credentials_directory(env: Mapping[str, str]) -> Path | None:
    directory = env.get(CREDENTIALS_DIRECTORY_VARIABLE, "")
    return Path(directory) if directory else None


def _secret_path(path: str, credentials: Path | None) -> str:
    """A relative secret file is one of systemd's credentials when the unit loaded some."""
    if not path or credentials is None or Path(path).is_absolute():  # "": no such file
        return path
    return str(credentials / path)


def _read_secrets(
    mqtt: MqttConfig,
    http: HttpConfig,
    email: EmailConfig,
    problems: list[str],
    credentials: Path | None = None,
) -> Secrets:
    numbered: list[tuple[int, str]] = []
    if http.tokens_file:
        path = _secret_path(http.tokens_file, credentials)
        text = _read_file(path, "http.tokens_file", problems)
        lines = ((n, line.strip()) for n, line in enumerate((text or "").splitlines(), 1))
        numbered = [(n, line) for n, line in lines if line and not line.startswith("#")]
    ca_text = (
        _read_file(mqtt.ca_file, "mqtt.ca_file", problems) if mqtt.tls and mqtt.ca_file else None
    )
    if ca_text is not None:
        try:
            ssl.create_default_context(cafile=mqtt.ca_file)
        except ssl.SSLError as exc:
            problems.append(f"mqtt.ca_file: {mqtt.ca_file} holds no usable certificate: {exc}")
    return Secrets(
        http_tokens=tuple(token for _, token in numbered),
        http_token_lines=tuple(n for n, _ in numbered),
        mqtt_password=_read_password(
            _secret_path(mqtt.password_file, credentials), "mqtt.password_file", problems
        ),
        email_password=_read_password(
            _secret_path(email.password_file, credentials), "notify.email.password_file", problems
        ),
        http_tls=_server_tls(http, credentials, problems),
    )


def _server_tls(
    http: HttpConfig, credentials: Path | None, problems: list[str]
) -> ssl.SSLContext | None:
    """HTTPS's server context, from the certificate chain and its key; None for HTTP."""
    cert, key = http.tls_cert_file, _secret_path(http.tls_key_file, credentials)
    if not cert and not key:
        return None
    if not cert or not key:
        given, missing = (
            ("tls_cert_file", "tls_key_file") if cert else ("tls_key_file", "tls_cert_file")
        )
        problems.append(f"http.{missing}: must be set with http.{given} (both, or neither)")
        return None
    if _read_file(cert, "http.tls_cert_file", problems) is None:
        return None
    if _read_file(key, "http.tls_key_file", problems) is None:
        return None
    if not http.public_url.startswith("https://"):
        problems.append(
            f"http.public_url: must be https:// when pagerd serves HTTPS (http.tls_cert_file),"
            f" got {http.public_url!r}"
        )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        problems.append(
            f"http.tls_cert_file: {cert} with the key {key} is no usable certificate: {exc}"
        )
        return None
    return context


def _read_password(path: str, key: str, problems: list[str]) -> str | None:
    if not path:
        return None
    text = _read_file(path, key, problems)
    if text is None:
        return None
    password = text.rstrip("\r\n")  # files written by editors and echo end in a newline
    if not password:
        problems.append(f"{key}: {path} is empty")
    return password


def _read_file(path: str, key: str, problems: list[str]) -> str | None:
    # Relative paths are relative to the working directory, like database.path.
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{key}: cannot read {path}: {_reason(exc)}")
        return None


# --- type checks (msgspec) ---------------------------------------------------------------


def _section(raw: Mapping[str, Any], key: str, tp: type[T], problems: list[str]) -> T:
    """Convert one table of the file; on failure record its problems and use the defaults."""
    converted = _convert(raw.get(key, {}), tp, key, problems)
    return tp() if converted is None else converted


def _elements(
    raw: Mapping[str, Any], key: str, tp: type[T], problems: list[str]
) -> list[tuple[str, T]]:
    """Convert each table of an array of tables, keyed by its path; drop the ones that fail."""
    value = raw.get(key, [])
    if not isinstance(value, list):
        problems.append(f"{key}: expected array of tables, got {_toml_type(value)}")
        return []
    converted = (
        (f"{key}[{i}]", _convert(item, tp, f"{key}[{i}]", problems)) for i, item in enumerate(value)
    )
    return [(path, item) for path, item in converted if item is not None]


def _convert(value: object, tp: type[T], path: str, problems: list[str]) -> T | None:
    try:
        return msgspec.convert(value, tp)
    except msgspec.ValidationError:
        problems += [f"{p.field}: {p.problem}" for p in explain(value, tp, TOML, path=path)]
        return None


def _toml_type(value: object) -> str:
    match value:
        case dict():
            return "table"
        case list():
            return "array"
        case _:
            name = type(value).__name__
            return TOML.types.get(name, name)


# --- domain and cross checks -------------------------------------------------------------


def _check_mqtt(table: object, mqtt: MqttConfig) -> list[str]:
    """``host`` or a non-empty ``hosts``, not both; each of ``hosts`` a ``host[:port]``."""
    if not isinstance(table, dict) or not table.get("hosts"):
        return []  # left out or empty: host and port
    if "host" in table:
        return ["mqtt.hosts: set either host (and port) or hosts, not both"]
    problems: list[str] = []
    for index, entry in enumerate(mqtt.hosts):
        try:
            host_port(entry, mqtt.port)
        except ValueError as exc:
            problems.append(f"mqtt.hosts[{index}]: {exc}")
    return problems


def _check_integrations(integrations: IntegrationsConfig) -> list[str]:
    try:
        re.compile(integrations.sns_cert_url_pattern)
    except re.error as exc:
        return [f"integrations.sns_cert_url_pattern: not a valid regular expression: {exc}"]
    return []


def _check_webhooks(webhook: WebhookConfig, policies: list[tuple[str, PolicyConfig]]) -> list[str]:
    """``allow_hosts`` entries that mean nothing, and webhook URLs the egress rule refuses."""
    problems = [
        f"notify.webhook.allow_hosts[{index}]: {problem}"
        for index, problem in allow_hosts_problems(webhook.allow_hosts)
    ]
    if problems:
        return problems
    rule = EgressRule.from_allow_hosts(webhook.allow_hosts)
    for path, policy in policies:
        for level_index, level in enumerate(policy.levels):
            for target_index, target in enumerate(level.targets):
                if isinstance(target, WebhookTarget):
                    refusal = rule.url_refusal(target.url)
                    if refusal is not None:
                        where = f"{path}.levels[{level_index}].targets[{target_index}].url"
                        problems.append(f"{where}: {refusal}")
    return problems


def _policy_problems(cfg: PolicyConfig, default_timeout_s: float, path: str) -> list[str]:
    """Every problem the domain finds with a policy: each level's, then id and repeat."""
    problems: list[str] = []
    levels: list[Level] = []
    for index, level in enumerate(cfg.levels):
        timeout = default_timeout_s if level.ack_timeout_s is None else level.ack_timeout_s
        try:
            levels.append(Level(level.targets, timeout))
        except DomainError as exc:
            problems.append(f"{path}.levels[{index}].{exc.field}: {exc.problem}")
    # A level that failed is reported already; a stand-in keeps it from also counting as
    # "no levels" while id and repeat are still checked.
    checked = tuple(levels) if len(levels) == len(cfg.levels) else (_STAND_IN_LEVEL,)
    try:
        Policy(cfg.id, checked, cfg.repeat)
    except DomainError as exc:
        problems.append(f"{path}.{exc.field}: {exc.problem}")
    return problems


_STAND_IN_LEVEL = Level((TeamTarget("stand-in"),), 1.0)


def _cross_check(
    raw: Mapping[str, Any],
    routing: RoutingConfig,
    teams: list[tuple[str, TeamConfig]],
    policies: list[tuple[str, PolicyConfig]],
    services: list[tuple[str, ServiceConfig]],
) -> list[str]:
    """Duplicates and references between the file's teams, policies and services."""
    problems = _duplicates("team name", [(f"{p}.name", t.name) for p, t in teams])
    problems += _duplicates("policy id", [(f"{p}.id", c.id) for p, c in policies])
    problems += _duplicates("service id", [(f"{p}.id", s.id) for p, s in services])

    # Names are taken from the raw file too, so an entry with a type error elsewhere
    # still counts as declared and does not add a second, misleading problem.
    team_names = _declared(raw, "teams", "name") | {t.name for _, t in teams}
    policy_ids = _declared(raw, "policies", "id") | {c.id for _, c in policies}
    for path, service in services:
        if service.policy not in policy_ids:
            problems.append(
                f"{path}.policy: policy {service.policy!r} is not declared in [[policies]]"
            )
    if routing.fallback_policy and routing.fallback_policy not in policy_ids:
        problems.append(
            f"routing.fallback_policy: policy {routing.fallback_policy!r} "
            "is not declared in [[policies]]"
        )
    for path, policy in policies:
        for level_index, level in enumerate(policy.levels):
            for target_index, target in enumerate(level.targets):
                if isinstance(target, TeamTarget) and target.team not in team_names:
                    problems.append(
                        f"{path}.levels[{level_index}].targets[{target_index}].team: "
                        f"team {target.team!r} is not declared in [[teams]]"
                    )
    return problems


def _schedule_problems(cfg: ScheduleConfig, path: str) -> list[str]:
    """What the domain finds wrong with a schedule: its id, then its zone and rotations."""
    problems: list[str] = []
    try:
        validate_service_id(cfg.id, "id")
    except DomainError as exc:
        problems.append(f"{path}.{exc.field}: {exc.problem}")
    # Developers are named here, by name: stand-in ids let the domain check the rest.
    rotations = tuple(
        Rotation(r.start, r.shift_s, tuple(range(1, len(r.developers) + 1))) for r in cfg.rotations
    )
    try:
        Schedule(0, cfg.time_zone, rotations)
    except DomainError as exc:
        field = exc.field.replace("developer_ids", "developers")
        problems.append(f"{path}.{field}: {exc.problem}")
    return problems


def _schedule_references(
    raw: Mapping[str, Any],
    teams: list[tuple[str, TeamConfig]],
    policies: list[tuple[str, PolicyConfig]],
    schedules: list[tuple[str, ScheduleConfig]],
) -> list[str]:
    """Duplicate schedule ids; each schedule's team and developers, each schedule target's
    schedule, declared in the file."""
    problems = _duplicates("schedule id", [(f"{p}.id", s.id) for p, s in schedules])
    members = {team.name: {d.name for d in team.developers} for _, team in teams}
    declared_teams = _declared(raw, "teams", "name")
    for path, schedule in schedules:
        names = members.get(schedule.team)
        if names is None:
            if schedule.team not in declared_teams:
                problems.append(f"{path}.team: team {schedule.team!r} is not declared in [[teams]]")
            continue
        for i, rotation in enumerate(schedule.rotations):
            for j, name in enumerate(rotation.developers):
                if name not in names:
                    problems.append(
                        f"{path}.rotations[{i}].developers[{j}]: "
                        f"{name!r} is not a developer of team {schedule.team!r}"
                    )
    schedule_ids = _declared(raw, "schedules", "id") | {s.id for _, s in schedules}
    for path, policy in policies:
        for level_index, level in enumerate(policy.levels):
            for target_index, target in enumerate(level.targets):
                if isinstance(target, ScheduleTarget) and target.schedule not in schedule_ids:
                    problems.append(
                        f"{path}.levels[{level_index}].targets[{target_index}].schedule: "
                        f"schedule {target.schedule!r} is not declared in [[schedules]]"
                    )
    return problems


def _duplicates(what: str, entries: list[tuple[str, str]]) -> list[str]:
    first: dict[str, str] = {}
    problems: list[str] = []
    for path, name in entries:
        if name in first:
            problems.append(f"{path}: duplicate {what} {name!r} (first at {first[name]})")
        else:
            first[name] = path
    return problems


def _declared(raw: Mapping[str, Any], key: str, name_key: str) -> set[str]:
    items = raw.get(key)
    if not isinstance(items, list):
        return set()
    names = (item.get(name_key) for item in items if isinstance(item, dict))
    return {name for name in names if isinstance(name, str)}
