"""The TOML configuration (CONTRACT.md §2), loaded into validated, frozen msgspec Structs.

msgspec checks types, ranges and unknown keys; pagerd.domain checks policies and
service ids; this module adds the checks that span the file (duplicates, references)
and turns every failure into one line ``FILE: key.path: what is wrong``.
msgspec stops at the first error of a ``convert`` call, so a value that fails is
converted again field by field and element by element until each problem is found.
The checks beyond types run on each table, team, policy and service whose types are
right, so a file with both kinds of mistakes reports both.
"""

from __future__ import annotations

import os
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, assert_never

import msgspec
from msgspec import Meta, Struct, field

from pagerd.core.policy import (
    MAX_ACK_TIMEOUT_S,
    DomainError,
    EmailTarget,
    Level,
    Policy,
    SmsTarget,
    Target,
    TeamTarget,
    WebhookTarget,
    validate_service_id,
)

T = TypeVar("T")

SYSTEM_CONFIG_PATH = Path("/etc/pagerd/pagerd.toml")
LOCAL_DATABASE_PATH = "./var/pagerd.db"
DATABASE_FILE_NAME = "pagerd.db"

_URL_PATTERN = r"^https?://\S+$"
# Where AWS serves SNS signing certificates (pagerd.sns fetches only from such URLs).
DEFAULT_SNS_CERT_URL_PATTERN = r"^https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/[^?#]*\.pem$"
# msgspec names the regex that failed; people want to read what was meant.
_PATTERN_HINTS = {_URL_PATTERN: "must be an http:// or https:// URL"}

Port = Annotated[int, Meta(ge=1, le=65535)]
# inf is a TOML float; the cap keeps deadlines computable (as pagerd.core.policy.Level does).
PositiveSeconds = Annotated[float, Meta(gt=0, le=MAX_ACK_TIMEOUT_S)]
Seconds = Annotated[float, Meta(ge=0, le=MAX_ACK_TIMEOUT_S)]
Text = Annotated[str, Meta(min_length=1)]
Url = Annotated[str, Meta(pattern=_URL_PATTERN)]


class _Section(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of every table of the file: immutable, and an unknown key is an error."""


class DatabaseConfig(_Section, frozen=True, kw_only=True):
    path: str = ""  # empty in the file: resolved by load_config (see _database_path)


class MqttConfig(_Section, frozen=True, kw_only=True):
    host: Text = "127.0.0.1"
    port: Port = 1883
    client_id: Text = "pagerd"
    topic_prefix: Text = "pagerd"
    username: str = ""
    password_file: str = ""
    tls: bool = False
    ca_file: str = ""


class HttpConfig(_Section, frozen=True, kw_only=True):
    listen: str = "127.0.0.1:8080"
    public_url: Url = "http://127.0.0.1:8080"
    tokens: tuple[Text, ...] = ()
    tokens_file: str = ""
    max_body_bytes: Annotated[int, Meta(gt=0)] = 65536

    def host_port(self) -> tuple[str, int]:
        """Split ``listen`` into host and port; ValueError if it is not ``host:port``."""
        host, sep, port = self.listen.rpartition(":")
        if host.startswith("[") and host.endswith("]"):  # [::1]:8080
            host = host[1:-1]
        if not sep or not host or not port.isdigit():
            raise ValueError(f"must be host:port, got {self.listen!r}")
        if not 1 <= int(port) <= 65535:
            raise ValueError(f"port must be 1..65535, got {self.listen!r}")
        return host, int(port)


class EscalationConfig(_Section, frozen=True, kw_only=True):
    ack_timeout_s: PositiveSeconds = 900.0


class RoutingConfig(_Section, frozen=True, kw_only=True):
    fallback_policy: str = ""


class SmsConfig(_Section, frozen=True, kw_only=True):
    url: Url = "https://run.mocky.io/v3/fd99c100-f88a-4d70-aaf7-393dbbd5d99f"
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


class NotifyConfig(_Section, frozen=True, kw_only=True):
    bundle_window_s: Seconds = 30.0  # 0: every notification goes out on its own
    # Pages a person gets at once within a window; only a storm beyond it is held.
    bundle_after: Annotated[int, Meta(ge=1, le=1000)] = 3
    max_attempts: Annotated[int, Meta(ge=1, le=100)] = 6
    max_age_s: PositiveSeconds = 3600.0  # older than this: failed, not retried
    concurrency: Annotated[int, Meta(ge=1, le=1000)] = 16  # sends in flight per channel
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
    phone_number: Text


class TeamConfig(_Section, frozen=True, kw_only=True):
    name: Text
    developers: tuple[DeveloperConfig, ...] = ()


class SmsTargetConfig(_Section, frozen=True, kw_only=True, tag="sms", tag_field="type"):
    phone_number: str


class EmailTargetConfig(_Section, frozen=True, kw_only=True, tag="email", tag_field="type"):
    address: str


class TeamTargetConfig(_Section, frozen=True, kw_only=True, tag="team", tag_field="type"):
    team: str


class WebhookTargetConfig(_Section, frozen=True, kw_only=True, tag="webhook", tag_field="type"):
    url: str


TargetConfig = SmsTargetConfig | EmailTargetConfig | TeamTargetConfig | WebhookTargetConfig
_TARGET_TYPES = ("sms", "email", "team", "webhook")


class LevelConfig(_Section, frozen=True, kw_only=True):
    # Range checked by pagerd.core.policy.Level, once [escalation].ack_timeout_s is filled in.
    ack_timeout_s: float | None = None
    targets: tuple[TargetConfig, ...] = ()


class PolicyConfig(_Section, frozen=True, kw_only=True):
    # id, repeat and levels are checked by pagerd.core.policy.Policy.
    id: str
    repeat: int = 0
    levels: tuple[LevelConfig, ...] = ()


class ServiceConfig(_Section, frozen=True, kw_only=True):
    id: str
    name: str = ""
    policy: str


@dataclass(frozen=True, slots=True)
class Secrets:
    """What load_config read from the files the config names; repr hides it from logs."""

    http_tokens: tuple[str, ...] = ()
    mqtt_password: str | None = None
    email_password: str | None = None

    def __repr__(self) -> str:
        return "Secrets(<hidden>)"


class Config(Struct, frozen=True, kw_only=True):
    """The whole configuration. ``source`` and ``secrets`` are filled in by load_config."""

    database: DatabaseConfig = field(default_factory=DatabaseConfig)
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
        """The file's policies as domain objects, by id."""
        problems: list[str] = []
        policies: dict[str, Policy] = {}
        for index, cfg in enumerate(self.policies):
            policy = _domain_policy(
                cfg, self.escalation.ack_timeout_s, f"policies[{index}]", problems
            )
            if policy is not None:
                policies[policy.id] = policy
        if problems:  # only for a Config built by hand: load_config has checked all this
            raise ConfigError([f"{self.source}: {problem}" for problem in problems])
        return policies


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

    try:
        http.host_port()
    except ValueError as exc:
        problems.append(f"http.listen: {exc}")
    problems += _check_integrations(integrations)
    for key_path, cfg in policies:
        _domain_policy(cfg, escalation.ack_timeout_s, key_path, problems)
    for key_path, svc in services:
        try:
            validate_service_id(svc.id, "id")
        except DomainError as exc:
            problems.append(f"{key_path}.{exc.field}: {exc.problem}")
    problems += _cross_check(raw, routing, teams, policies, services)
    secrets = _read_secrets(mqtt, http, notify.email, problems)

    if problems:
        raise ConfigError([f"{source}: {problem}" for problem in problems])
    return Config(
        database=msgspec.structs.replace(database, path=_database_path(database, env)),
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


def _database_path(database: DatabaseConfig, env: Mapping[str, str]) -> str:
    if database.path:
        return database.path
    # systemd's StateDirectory= may list several directories, separated by ':'.
    state_directory = env.get("STATE_DIRECTORY", "").split(":")[0]
    if state_directory:
        return str(Path(state_directory) / DATABASE_FILE_NAME)
    return LOCAL_DATABASE_PATH


def _read_secrets(
    mqtt: MqttConfig, http: HttpConfig, email: EmailConfig, problems: list[str]
) -> Secrets:
    tokens: tuple[str, ...] = ()
    if http.tokens_file:
        text = _read_file(http.tokens_file, "http.tokens_file", problems)
        lines = (line.strip() for line in (text or "").splitlines())
        tokens = tuple(line for line in lines if line and not line.startswith("#"))
    if mqtt.tls and mqtt.ca_file:
        _read_file(mqtt.ca_file, "mqtt.ca_file", problems)
    return Secrets(
        http_tokens=tokens,
        mqtt_password=_read_password(mqtt.password_file, "mqtt.password_file", problems),
        email_password=_read_password(email.password_file, "notify.email.password_file", problems),
    )


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
        problems += _type_problems(value, tp, path)
        return None


def _type_problems(value: object, tp: Any, path: str) -> list[str]:
    """Every type problem of ``value`` as ``tp``, found by descending into tables and arrays."""
    try:
        msgspec.convert(value, tp)
    except msgspec.ValidationError as exc:
        error = exc
    else:
        return []
    problems: list[str] = []
    if isinstance(tp, type) and issubclass(tp, Struct) and isinstance(value, dict):
        fields = {f.encode_name: f for f in msgspec.structs.fields(tp)}
        problems += [_join(path, key) + ": unknown key" for key in value if key not in fields]
        for key, info in fields.items():
            if key in value:
                problems += _type_problems(value[key], info.type, _join(path, key))
            elif info.required:
                problems.append(_join(path, key) + ": is required")
    elif typing.get_origin(tp) is tuple and isinstance(value, list):
        element_type = typing.get_args(tp)[0]
        for index, item in enumerate(value):
            problems += _type_problems(item, element_type, f"{path}[{index}]")
    return problems or [_describe(error, value, tp, path)]


def _describe(error: msgspec.ValidationError, value: object, tp: Any, path: str) -> str:
    """Say what msgspec's error means, in TOML terms, at the key path it names."""
    found = re.fullmatch(r"(?s)(.*?)(?: - at `\$(.*)`)?", str(error))
    assert found is not None  # the pattern matches any string
    message, subpath = found.group(1), found.group(2) or ""
    where = path + subpath
    got = _lookup(value, subpath)

    if key := _match(r"Object contains unknown field `(.*)`", message):
        return f"{_join(where, key)}: unknown key"
    if key := _match(r"Object missing required field `(.*)`", message):
        if key == "type" and where.endswith("]"):  # a target without its tag
            return f"{_join(where, key)}: is required, one of {', '.join(_TARGET_TYPES)}"
        return f"{_join(where, key)}: is required"
    if m := re.fullmatch(r"Expected `(.*)`, got `(.*)`", message):
        return f"{where}: expected {_toml_type_name(m.group(1))}, got {_toml_type_name(m.group(2))}"
    if m := re.fullmatch(r"Expected `\w+` (>=|>|<=|<) (\S+)", message):
        limit = float(m.group(2))
        # A float field's bound prints as 0.0; the file says 0.
        shown = str(int(limit)) if limit.is_integer() else m.group(2)
        bound = "positive" if m.group(1) == ">" and limit == 0 else f"{m.group(1)} {shown}"
        return f"{where}: must be {bound}, got {got!r}"
    if m := re.fullmatch(r"Expected `str` of length >= (\d+)", message):
        return f"{where}: must not be empty"
    if pattern := _match(r"Expected `str` matching regex (.*)", message):  # the regex's repr
        hint = next((h for p, h in _PATTERN_HINTS.items() if repr(p) == pattern), None)
        return f"{where}: {hint or f'must match {pattern}'}, got {got!r}"
    if _match(r"Invalid enum value (.*)", message) and typing.get_origin(tp) is Literal:
        return f"{where}: must be one of {', '.join(typing.get_args(tp))}, got {got!r}"
    if _match(r"Invalid value (.*)", message) and subpath.endswith(".type"):
        return f"{where}: must be one of {', '.join(_TARGET_TYPES)}, got {got!r}"
    return f"{where}: {message}"


def _match(pattern: str, text: str) -> str | None:
    m = re.fullmatch(pattern, text)
    return None if m is None else m.group(1)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _lookup(value: object, subpath: str) -> object:
    """The value at msgspec's path (``.levels[0].type``) below ``value``."""
    for key, index in re.findall(r"\.([^.\[]+)|\[(\d+)\]", subpath):
        if key and isinstance(value, dict):
            value = value.get(key)
        elif index and isinstance(value, list) and int(index) < len(value):
            value = value[int(index)]
        else:
            return None
    return value


_TOML_TYPE_NAMES = {"object": "table", "str": "string", "int": "integer", "bool": "boolean"}


def _toml_type_name(msgspec_name: str) -> str:
    # "float | null" is msgspec's name for an optional float; TOML has no null.
    names = [_TOML_TYPE_NAMES.get(n, n) for n in msgspec_name.split(" | ") if n != "null"]
    return " or ".join(names)


def _toml_type(value: object) -> str:
    match value:
        case dict():
            return "table"
        case list():
            return "array"
        case _:
            return _toml_type_name(type(value).__name__)


# --- domain and cross checks -------------------------------------------------------------


def _check_integrations(integrations: IntegrationsConfig) -> list[str]:
    try:
        re.compile(integrations.sns_cert_url_pattern)
    except re.error as exc:
        return [f"integrations.sns_cert_url_pattern: not a valid regular expression: {exc}"]
    return []


def _domain_policy(
    cfg: PolicyConfig, default_timeout_s: float, path: str, problems: list[str]
) -> Policy | None:
    """Build the domain Policy, recording each DomainError at its key path."""
    levels: list[Level] = []
    for level_index, level_cfg in enumerate(cfg.levels):
        level_path = f"{path}.levels[{level_index}]"
        targets: list[Target] = []
        for target_index, target_cfg in enumerate(level_cfg.targets):
            try:
                targets.append(_domain_target(target_cfg))
            except DomainError as exc:
                problems.append(f"{level_path}.targets[{target_index}].{exc.field}: {exc.problem}")
        if len(targets) < len(level_cfg.targets):
            continue
        timeout_s = (
            default_timeout_s if level_cfg.ack_timeout_s is None else level_cfg.ack_timeout_s
        )
        try:
            levels.append(Level(tuple(targets), timeout_s))
        except DomainError as exc:
            problems.append(f"{level_path}.{exc.field}: {exc.problem}")
    complete = len(levels) == len(cfg.levels)
    # A level that failed is reported already; a stand-in keeps it from also counting as
    # "no levels" while id and repeat are still checked.
    checked_levels = tuple(levels) if complete else (_STAND_IN_LEVEL,)
    try:
        policy = Policy(cfg.id, checked_levels, cfg.repeat)
    except DomainError as exc:
        problems.append(f"{path}.{exc.field}: {exc.problem}")
        return None
    return policy if complete else None


_STAND_IN_LEVEL = Level((SmsTarget("0"),), 1.0)


def _domain_target(cfg: TargetConfig) -> Target:
    match cfg:
        case SmsTargetConfig():
            return SmsTarget(cfg.phone_number)
        case EmailTargetConfig():
            return EmailTarget(cfg.address)
        case TeamTargetConfig():
            return TeamTarget(cfg.team)
        case WebhookTargetConfig():
            return WebhookTarget(cfg.url)
        case _:
            assert_never(cfg)


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
                if isinstance(target, TeamTargetConfig) and target.team not in team_names:
                    problems.append(
                        f"{path}.levels[{level_index}].targets[{target_index}].team: "
                        f"team {target.team!r} is not declared in [[teams]]"
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
