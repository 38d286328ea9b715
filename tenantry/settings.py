"""Settings from environment variables, read once at start-up into an immutable object."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from tenantry.net import Network, parse_networks

ROOT = Path(__file__).resolve().parent.parent


class SettingsError(RuntimeError):
    """Raised when the environment does not describe a runnable configuration."""


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name} must be true or false, not {raw!r}")


class Section(Protocol):
    """A settings section a plug-in registers (host.settings_section): its own fields, read from the
    environment and checked by `from_env`, which raises SettingsError naming the variable."""

    @classmethod
    def from_env(cls) -> Any:
        """Returns the section read from the environment; raises SettingsError on a bad value."""


S = TypeVar("S")

#: The registered sections, in registration order (tenantry.host.Host.settings_section adds them).
_sections: list[type] = []


def register_section(cls: type) -> None:
    """Makes every Settings read and check the section `cls` at start (registering it again is a no-op)."""
    if cls not in _sections:
        _sections.append(cls)


def int_setting(name: str, default: int, minimum: int = 1) -> int:
    """Reads an integer of at least `minimum` from the environment variable `name` (for sections)."""
    return _int(name, default, minimum)


def schedule_setting(name: str, default: tuple[int, ...]) -> tuple[int, ...]:
    """Reads delays in seconds separated by commas from the environment variable `name` (for sections)."""
    return _schedule(name, default)


def _int(name: str, default: int, minimum: int = 1) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, not {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}")
    return value


def _seconds(name: str, default: float) -> float:
    """Reads a positive number of seconds (`30`, or `0.5`)."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number of seconds, not {raw!r}") from None
    if not value > 0 or value == float("inf"):
        raise SettingsError(f"{name} must be a positive number of seconds")
    return value


_RETENTION_UNITS = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}


def _retention(name: str, default: int) -> int:
    """Reads how long to keep something: `90d`, `12h`, `30m`, `45s` or plain seconds; `0` keeps it forever."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    number, unit = (raw[:-1], raw[-1]) if raw[-1:] in _RETENTION_UNITS else (raw, "s")
    if not number.isdigit():
        raise SettingsError(f"{name} must be a duration such as 90d, 12h, 30m or 45s (0 keeps forever), not {raw!r}")
    return int(number) * _RETENTION_UNITS[unit]


def _schedule(name: str, default: tuple[int, ...]) -> tuple[int, ...]:
    """Reads delays in seconds separated by commas (`5,300,1800`): one per retry after the first attempt."""
    raw = os.environ.get(name, "")
    if not raw.strip():
        return default
    try:
        delays = tuple(int(item) for item in raw.split(","))
    except ValueError:
        raise SettingsError(f"{name} must be seconds separated by commas, not {raw!r}") from None
    if any(delay < 0 for delay in delays):
        raise SettingsError(f"{name} must not hold a negative delay")
    return delays


def _public_url(name: str) -> str:
    """Reads an absolute http(s) URL with a host and no query or fragment; returned without a trailing `/`."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return ""
    try:
        url = urlsplit(raw)
        url.port  # noqa: B018 (raises ValueError on a port out of range or not a number)
    except ValueError:
        url = None
    if (
        url is None
        or url.scheme not in ("http", "https")
        or not url.hostname
        or url.query
        or url.fragment
        or "@" in url.netloc
        or any(c.isspace() for c in raw)
    ):
        raise SettingsError(
            f"{name} must be an absolute http:// or https:// URL such as https://api.example.com, not {raw!r}"
        )
    return raw.rstrip("/")


def _list(name: str) -> tuple[str, ...]:
    raw = os.environ.get(name, "")
    return tuple(item.strip() for item in raw.split(",") if item.strip())


@dataclass(frozen=True)
class Settings:
    """Everything configurable about a Tenantry process. Build it with `Settings.from_env()`."""

    env: str = "development"
    instance_path: Path = ROOT / "instance"
    database_url: str = ""
    secret_key: str = field(default="", repr=False)
    access_token_ttl: int = 900
    refresh_token_ttl: int = 30 * 24 * 3600
    self_signup: bool = True
    cors_origins: tuple[str, ...] = ()
    # The URL partners reach this API at (TENANTRY_PUBLIC_URL): the published spec's `servers`.
    # Empty: `/`, the server the document was fetched from.
    public_url: str = ""
    log_level: str = "INFO"
    validate_responses: bool = False
    db_pool_size: int = 20
    threads: int = 8
    db_role: str = ""
    trusted_proxies: tuple[str, ...] = ()
    spec_path: Path = ROOT / "openapi" / "openapi.yaml"
    redis_url: str = ""
    rate_limit_prefix: str = "tenantry"
    rate_limit_ip: str = "1200/minute"
    rate_limit_auth_ip: str = "30/minute"
    rate_limit_auth_account: str = "10/minute"
    rate_limit_slots: int = 131072
    redis_retry_after: int = 5
    default_plan: str = "standard"
    outbound_allowlist: tuple[str, ...] = ()
    # `tenantry worker`: seconds between claims when no wake-up comes (LISTEN/NOTIFY, Redis), and
    # the seconds running jobs get to finish after SIGTERM before their leases are released.
    worker_poll_interval: float = 1.0
    worker_grace: float = 10.0
    # Seconds an operation may take, by its spec class (x-timeout), from the request's arrival;
    # past it the answer is 504 GATEWAY_TIMEOUT and nothing it did commits (tenantry.deadline).
    # TENANTRY_REQUEST_TIMEOUT (standard), TENANTRY_BATCH_TIMEOUT, TENANTRY_UPLOAD_TIMEOUT.
    request_timeout: float = 30.0
    batch_timeout: float = 120.0
    upload_timeout: float = 300.0
    # How long the periodic purges (tenantry/periodic.py) keep audit entries and events, in seconds;
    # 0 keeps them forever: the spec promises events are kept like the audit trail, and the audit
    # trail is evidence, so either is removed only when the operator says so.
    audit_retention: int = 0
    event_retention: int = 0
    #: The registered sections (host.settings_section), by class: each read and checked at start.
    sections: Mapping[type, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)

    def section(self, cls: type[S]) -> S:
        """Returns the section `cls` as read at start (or now, from the environment, when it was
        registered after these settings were made)."""
        found = self.sections.get(cls)
        return found if found is not None else cls.from_env()  # type: ignore[attr-defined]  # a Section

    def with_sections(self) -> Settings:
        """Returns these settings with every registered section read and checked (raises SettingsError)."""
        missing = [cls for cls in _sections if cls not in self.sections]
        if not missing:
            return self
        return replace(self, sections={**self.sections, **{cls: cls.from_env() for cls in missing}})  # type: ignore[attr-defined]

    def timeout(self, timeout_class: str) -> float:
        """Returns the seconds an operation of `timeout_class` (standard, batch or upload) may take."""
        return {"batch": self.batch_timeout, "upload": self.upload_timeout}.get(timeout_class, self.request_timeout)

    @property
    def outbound_networks(self) -> tuple[Network, ...]:
        """The CIDR ranges outbound calls may reach although they are not public (TENANTRY_OUTBOUND_ALLOWLIST)."""
        return parse_networks(self.outbound_allowlist)

    @property
    def is_sqlite(self) -> bool:
        """True when the database is the embedded SQLite default."""
        return self.database_url.startswith("sqlite")

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Returns settings read from the environment, with `overrides` taking precedence.

        `TENANTRY_SECRET_KEY` is required when `TENANTRY_ENV=production`; elsewhere, when it is
        absent, a random key is generated once and kept in the instance folder (mode 0600), so
        tokens survive restarts without any default secret in the code.
        """
        env = os.environ.get("TENANTRY_ENV", "development")
        if env not in {"development", "production", "test"}:
            raise SettingsError("TENANTRY_ENV must be development, production or test")
        instance = Path(os.environ.get("TENANTRY_INSTANCE_PATH", str(ROOT / "instance"))).resolve()
        values: dict[str, object] = {
            "env": env,
            "instance_path": instance,
            "database_url": os.environ.get("DATABASE_URL", ""),
            "secret_key": os.environ.get("TENANTRY_SECRET_KEY", ""),
            "access_token_ttl": _int("TENANTRY_ACCESS_TOKEN_TTL", 900),
            "refresh_token_ttl": _int("TENANTRY_REFRESH_TOKEN_TTL", 30 * 24 * 3600),
            "self_signup": _bool("TENANTRY_SELF_SIGNUP", True),
            "cors_origins": _list("TENANTRY_CORS_ORIGINS"),
            "public_url": _public_url("TENANTRY_PUBLIC_URL"),
            "log_level": os.environ.get("TENANTRY_LOG_LEVEL", "INFO").upper(),
            "validate_responses": _bool("TENANTRY_VALIDATE_RESPONSES", False),
            "db_pool_size": _int("TENANTRY_DB_POOL_SIZE", 20),
            "threads": _int("TENANTRY_THREADS", 8),
            "db_role": os.environ.get("TENANTRY_DB_ROLE", ""),
            "trusted_proxies": _list("TENANTRY_TRUSTED_PROXIES"),
            "redis_url": os.environ.get("REDIS_URL", ""),
            "rate_limit_prefix": os.environ.get("TENANTRY_RATE_LIMIT_PREFIX", "tenantry"),
            "rate_limit_ip": os.environ.get("TENANTRY_RATE_LIMIT_IP", "1200/minute"),
            "rate_limit_auth_ip": os.environ.get("TENANTRY_RATE_LIMIT_AUTH_IP", "30/minute"),
            "rate_limit_auth_account": os.environ.get("TENANTRY_RATE_LIMIT_AUTH_ACCOUNT", "10/minute"),
            # Counters the shared table of one host's workers holds (48 bytes each) when there is no Redis.
            "rate_limit_slots": _int("TENANTRY_RATE_LIMIT_SLOTS", 131072, minimum=1024),
            # Seconds the limiter leaves a failed Redis alone (failing open) before one request tries it again.
            "redis_retry_after": _int("TENANTRY_REDIS_RETRY_AFTER", 5),
            "default_plan": os.environ.get("TENANTRY_DEFAULT_PLAN", "standard"),
            "outbound_allowlist": _list("TENANTRY_OUTBOUND_ALLOWLIST"),
            "worker_poll_interval": _seconds("TENANTRY_WORKER_POLL_INTERVAL", 0.0),
            "worker_grace": _seconds("TENANTRY_WORKER_GRACE", 10.0),
            "request_timeout": _seconds("TENANTRY_REQUEST_TIMEOUT", 30.0),
            "batch_timeout": _seconds("TENANTRY_BATCH_TIMEOUT", 120.0),
            "upload_timeout": _seconds("TENANTRY_UPLOAD_TIMEOUT", 300.0),
            "audit_retention": _retention("TENANTRY_AUDIT_RETENTION", 0),
            "event_retention": _retention("TENANTRY_EVENT_RETENTION", 0),
        }
        values.update(overrides)
        if not values["database_url"]:
            values["database_url"] = f"sqlite:///{instance / 'tenantry.db'}"
        if not values["worker_poll_interval"]:
            # SQLite without Redis has no wake-up: polling is its enqueue-to-start latency, which
            # stays under a second (p95) only at half a second. PostgreSQL's NOTIFY wakes at once.
            sqlite = str(values["database_url"]).startswith("sqlite")
            values["worker_poll_interval"] = 0.5 if sqlite else 1.0
        if not values["secret_key"]:
            if env == "production":
                raise SettingsError("TENANTRY_SECRET_KEY must be set when TENANTRY_ENV=production")
            values["secret_key"] = _instance_secret(instance)
        try:
            parse_networks(values["trusted_proxies"])  # type: ignore[arg-type]  # values is dict[str, object]: each was read by its own typed parser above
        except ValueError as exc:
            raise SettingsError(f"TENANTRY_TRUSTED_PROXIES: {exc}") from None
        try:
            parse_networks(values["outbound_allowlist"])  # type: ignore[arg-type]  # values is dict[str, object]: each was read by its own typed parser above
        except ValueError as exc:
            raise SettingsError(f"TENANTRY_OUTBOUND_ALLOWLIST: {exc}") from None
        for name, key in (
            ("TENANTRY_RATE_LIMIT_IP", "rate_limit_ip"),
            ("TENANTRY_RATE_LIMIT_AUTH_IP", "rate_limit_auth_ip"),
            ("TENANTRY_RATE_LIMIT_AUTH_ACCOUNT", "rate_limit_auth_account"),
        ):
            _check_limit(name, str(values[key]))
        if values["db_role"] and not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", str(values["db_role"])):
            raise SettingsError("TENANTRY_DB_ROLE must be a PostgreSQL role name (a-z, 0-9, _)")
        if values["default_plan"] not in ("standard", "professional", "enterprise"):
            raise SettingsError("TENANTRY_DEFAULT_PLAN must be standard, professional or enterprise")
        if values["redis_url"] and not str(values["redis_url"]).startswith(("redis://", "rediss://")):
            raise SettingsError("REDIS_URL must be a redis:// or rediss:// URL")
        if len(str(values["secret_key"])) < 32:
            raise SettingsError("TENANTRY_SECRET_KEY must be at least 32 characters")
        return cls(**values).with_sections()  # type: ignore[arg-type]  # each value has its field's type (parsed above)


def _instance_secret(instance: Path) -> str:
    """Returns the key kept in the instance folder, creating it (0600) on first use."""
    instance.mkdir(parents=True, exist_ok=True)
    path = instance / "secret_key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def _check_limit(name: str, value: str) -> None:
    """Raises SettingsError unless `value` is a rate limit such as `30/minute` or `10 per second`."""
    from limits import parse_many

    try:
        if not parse_many(value):
            raise ValueError(value)
    except ValueError:
        raise SettingsError(f"{name} must be a rate limit such as 30/minute, not {value!r}") from None


@dataclass(frozen=True)
class StreamSettings:
    """The event stream's (server-sent events) settings: the core's own section."""

    #: Seconds between heartbeats on an idle stream (TENANTRY_SSE_HEARTBEAT).
    heartbeat: int = 15
    #: Seconds a stream stays open before the server ends it (TENANTRY_SSE_MAX_SECONDS).
    max_seconds: int = 900

    @classmethod
    def from_env(cls) -> StreamSettings:
        """Returns the stream settings read from the environment; raises SettingsError on a bad value."""
        return cls(heartbeat=_int("TENANTRY_SSE_HEARTBEAT", 15), max_seconds=_int("TENANTRY_SSE_MAX_SECONDS", 900))


register_section(StreamSettings)
