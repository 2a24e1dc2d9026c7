"""Typed models of ``gateway.yaml`` and ``tenants.yaml``.

Every model forbids unknown keys and uses strict types, so that a typo or a
YAML surprise is an error instead of a silent default. Secrets are resolved
while validating (``{env: NAME}`` or ``{file: PATH}``, relative paths from the
file's folder), which needs the folder in the validation context.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from gateway.redis_connect import SENTINEL_SCHEME, is_sentinel_url, parse_sentinel_url
from gateway.config.types import (
    MIN_KEY_BYTES,
    Duration,
    Network,
    Retention,
    RetentionPeriod,
    Secret,
    Window,
    resolve_secret,
)

TENANT_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}\Z")
INSTANCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")

#: The deeplink targets Medimo knows, each with its default upstream path.
DEFAULT_VIEWS: dict[str, str] = {
    "default": "/",
    "status": "/clients/{client_id}/status",
    "medicatiestatus": "/clients/{client_id}/medicatiestatus",
    "bestellen": "/clients/{client_id}/bestellen",
    "bestelronde": "/bestelronde",
    "toedienen": "/clients/{client_id}/toedienen",
    "deelronde": "/deelronde",
    "werklijst": "/werklijst",
    "werklijstafdeling": "/werklijst/afdeling",
    "aanvraagmenu": "/aanvragen",
    "tdlmenu": "/tdl",
    "tdrmenu": "/tdr",
    "dispense": "/clients/{client_id}/dispense",
    "medimo-app": "/app",
}


def _base(info: ValidationInfo) -> Path:
    context = info.context or {}
    return Path(context.get("base", "."))


def _key(value: Any, info: ValidationInfo) -> Secret:
    return resolve_secret(value, _base(info), min_bytes=MIN_KEY_BYTES)


def _secret(value: Any, info: ValidationInfo) -> Secret:
    return resolve_secret(value, _base(info))


def _path(value: Any, info: ValidationInfo) -> Path:
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise ValueError(f"{value!r} is not a file path")
    try:
        path = Path(value).expanduser()
    except RuntimeError:
        raise ValueError(
            f"'{value}' starts with the home folder of an unknown user: "
            "write the full path"
        ) from None
    return path if path.is_absolute() else _base(info) / path


#: A signing key of at least ``MIN_KEY_BYTES`` bytes.
Key = Annotated[Secret, PlainValidator(_key)]
#: A token or password that only has to be set.
SecretValue = Annotated[Secret, PlainValidator(_secret)]
#: A path, resolved from the folder of the file that names it.
FilePath = Annotated[Path, PlainValidator(_path)]


class Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, arbitrary_types_allowed=True
    )


class ListenConfig(Section):
    host: list[str] = Field(default_factory=lambda: ["0.0.0.0"])
    port: int = Field(default=8443, ge=0, le=65535)

    @field_validator("host", mode="before")
    @classmethod
    def _one_or_more(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class AdminConfig(Section):
    """The admin listener: plain HTTP with /healthz, /readyz and /metrics."""

    enabled: bool = True
    host: list[str] = Field(default_factory=lambda: ["127.0.0.1"])
    port: int = Field(default=9180, ge=0, le=65535)
    health_interval: Duration = 10.0
    #: Names a scraper may use in ``Host`` besides IP addresses and localhost.
    hostnames: list[str] = Field(default_factory=list)

    @field_validator("host", mode="before")
    @classmethod
    def _one_or_more(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("hostnames")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        names = []
        for name in value:
            normal = name.strip().lower().rstrip(".")
            if not re.fullmatch(r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?", normal):
                raise ValueError(f"{name!r} is not a host name")
            names.append(normal)
        return names


class TlsConfig(Section):
    certificate: FilePath
    private_key: FilePath
    min_version: Literal["1.2", "1.3"] = "1.2"
    handshake_timeout: Duration = 10.0


class UpstreamConfig(Section):
    url: str
    api_url: str | None = None
    api_token: SecretValue
    connect_timeout: Duration = 5.0
    timeout: Duration = 30.0
    max_connections: int = Field(default=100, ge=1)

    @field_validator("url", "api_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"https?://[^/?#\s]+", value):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value.rstrip("/") if value else value

    @property
    def api_base(self) -> str:
        return self.api_url or self.url


def _connection_url(value: Any, info: ValidationInfo) -> str:
    if isinstance(value, dict):
        return resolve_secret(value, _base(info)).text()
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a URL")
    if re.match(r"[a-z0-9+]+://[^/@]*:[^/@]+@", value) or "password=" in value:
        raise ValueError(
            "this URL contains a password, a literal secret: "
            "write it as {env: NAME} or {file: PATH}"
        )
    return value


def _check_scheme(url: str, schemes: tuple[str, ...]) -> None:
    # The message names only the scheme, because the URL may hold a password.
    scheme = url.partition("://")[0] if "://" in url else ""
    if scheme not in schemes:
        accepted = ", ".join(f"{name}://" for name in schemes)
        raise ValueError(
            f"unsupported URL scheme {scheme!r}: the URL must start with {accepted}"
        )


def _redis_url(value: Any, info: ValidationInfo) -> str:
    url = _connection_url(value, info)
    _check_scheme(url, REDIS_SCHEMES)
    if is_sentinel_url(url):
        parse_sentinel_url(url)
    return url


def _database_url(value: Any, info: ValidationInfo) -> str:
    """Check a database URL and read a relative SQLite path from the file's folder."""
    url = _connection_url(value, info)
    _check_scheme(url, DATABASE_SCHEMES)
    prefix = "sqlite+aiosqlite:///"
    if url.startswith(prefix):
        database = url.removeprefix(prefix)
        if database and database != ":memory:" and not database.startswith("/"):
            return prefix + str(_base(info).absolute() / database)
    return url


REDIS_SCHEMES = ("redis", "rediss", "unix", SENTINEL_SCHEME)
DATABASE_SCHEMES = ("sqlite+aiosqlite", "postgresql+asyncpg")


class RedisConfig(Section):
    url: Annotated[str, PlainValidator(_redis_url)] = "redis://127.0.0.1:6379/0"
    timeout: Duration = 0.5


class DatabaseConfig(Section):
    url: Annotated[str, PlainValidator(_database_url)] = Field(
        default="sqlite+aiosqlite:///gateway.db", validate_default=True
    )


class SessionConfig(Section):
    keys: list[Key] = Field(min_length=1)
    lifetime: Duration = 10 * 3600.0
    idle_timeout: Duration = 30 * 60.0
    refresh_after: Duration = 60.0
    pending_lifetime: Duration = 5 * 60.0


class LinkCacheConfig(Section):
    ttl: Duration = 60.0
    negative_ttl: Duration = 5.0


class AttemptLimit(Section):
    """Failed password checks allowed within a moving window of ``per`` seconds."""

    limit: int = Field(ge=1, le=10_000)
    per: Window


def _attempt_limit(limit: int, per: str) -> AttemptLimit:
    # Validated like a written section, because Window parses durations only.
    return AttemptLimit.model_validate({"limit": limit, "per": per})


class FormsConfig(Section):
    min_failure_time: Duration = 1.0
    #: Per Medimo account: the link form's username, the confirm form's account.
    account_attempts: AttemptLimit = _attempt_limit(5, "15m")
    #: Per tenant and client address, across accounts.
    client_attempts: AttemptLimit = _attempt_limit(50, "15m")


#: A duration that must be longer than zero, such as a timeout.
PositiveDuration = Annotated[Duration, Field(gt=0)]


class LimitsConfig(Section):
    """Limits on what one client connection may send, and how slowly.

    Sizes are bytes. A head (request line and header fields) over a limit is
    rejected with 400, 414 or 431 and the connection is closed.
    """

    #: The whole request head must arrive within this time of its first byte.
    header_timeout: PositiveDuration = 10.0
    #: An idle connection (no byte of a next request) is closed after this.
    keepalive_timeout: PositiveDuration = 15.0
    #: Maximum pause between two parts of a request body.
    body_timeout: PositiveDuration = 20.0
    #: Bytes per second a request body must average once body_timeout has
    #: passed since its first byte; 0 checks pauses only.
    body_min_rate: int = Field(default=500, ge=0)
    max_body_size: int = Field(default=10 * 1024 * 1024, ge=1)
    # The floors keep a typo from rejecting every browser: a session cookie
    # and a signed launch URL take a few hundred bytes each.
    max_request_line: int = Field(default=8190, ge=1024)
    max_header_field: int = Field(default=8190, ge=1024)
    max_headers: int = Field(default=100, ge=16)
class SsoLogConfig(Section):
    """The SSO log: one hash-chained table in the database for every instance."""

    #: Rows logged longer ago than this are purged.
    retention: Retention = RetentionPeriod(5, "y")
    #: Name of this instance in the log. The default is host name and process ID.
    instance: str | None = None
    #: Maximum number of entries that wait for the database. Further ones are dropped.
    queue_size: int = Field(default=10_000, ge=100, le=1_000_000)

    @field_validator("instance")
    @classmethod
    def _instance_name(cls, name: str | None) -> str | None:
        if name is not None and not INSTANCE_NAME.match(name):
            raise ValueError(
                f"{name!r} is not a valid instance name: use 1 to 64 letters, "
                "digits, '.', '_' and '-', starting with a letter or digit"
            )
        return name


#: Shortest interval of the revocation feed: anything shorter only loads SQL
#: and Redis without making revocations noticeably faster.
MIN_FEED_INTERVAL = 0.1


class RevocationsConfig(Section):
    """Intervals of the feed that keeps each instance's copy of the revocations."""

    poll_interval: Duration = 5.0
    fallback_poll_interval: Duration = 2.0
    ping_interval: Duration = 2.0
    reconnect_max_delay: Duration = 5.0
    purge_interval: Duration = 3600.0

    @field_validator("*")
    @classmethod
    def _not_too_short(cls, seconds: float) -> float:
        if seconds < MIN_FEED_INTERVAL:
            raise ValueError(f"{seconds:g} s is too short: use at least 100ms")
        return seconds

    @model_validator(mode="after")
    def _fallback_not_slower(self) -> RevocationsConfig:
        # The fallback applies while announcements cannot arrive, so a slower
        # one would make a Redis outage delay revocations even more.
        if self.fallback_poll_interval > self.poll_interval:
            raise ValueError(
                f"fallback_poll_interval ({self.fallback_poll_interval:g} s) is "
                f"longer than poll_interval ({self.poll_interval:g} s): the "
                "fallback must be as fast or faster"
            )
        return self


class GatewayConfig(Section):
    """Contents of ``gateway.yaml``."""

    listen: ListenConfig = ListenConfig()
    admin: AdminConfig = AdminConfig()
    tls: TlsConfig
    public_hostnames: list[str] = Field(min_length=1)
    upstream: UpstreamConfig
    redis: RedisConfig = RedisConfig()
    # Validated like a written section, so that the default SQLite path is
    # read from the folder of gateway.yaml.
    database: DatabaseConfig = Field(default={}, validate_default=True)
    trusted_proxies: list[Network] = Field(default_factory=list)
    #: L4 load balancers that must send a PROXY protocol header (v1 or v2).
    balancers: list[Network] = Field(default_factory=list)
    session: SessionConfig
    upstream_signing_keys: list[Key] = Field(min_length=1)
    link_cache: LinkCacheConfig = LinkCacheConfig()
    forms: FormsConfig = FormsConfig()
    limits: LimitsConfig = LimitsConfig()
    sso_log: SsoLogConfig = SsoLogConfig()
    revocations: RevocationsConfig = RevocationsConfig()
    views: dict[str, str] = Field(default_factory=dict)
    tenants_file: FilePath | None = None
    #: After SIGTERM or SIGINT, requests in progress get this long to finish.
    shutdown_timeout: Duration = 15.0
    #: How often the configuration files and the files they name are checked
    #: for changes, which reload the configuration; 0 turns the check off.
    config_watch_interval: Duration = 2.0

    @model_validator(mode="wrap")
    @classmethod
    def _separate_keys(
        cls, data: Any, handler: ModelWrapValidatorHandler[GatewayConfig]
    ) -> GatewayConfig:
        config = handler(data)
        # SECURITY: upstream holds the signing keys, so a key that also signs
        # cookies would let upstream mint sessions.
        shared: list[InitErrorDetails] = []
        for index, key in enumerate(config.upstream_signing_keys):
            if key in config.session.keys:
                error = PydanticCustomError(
                    "shared_key",
                    "{message}",
                    {
                        "message": f"the key from {key.source} is also in "
                        "session.keys: upstream could sign session cookies with "
                        "it, so generate a key of its own (sso-gateway keys "
                        "generate)"
                    },
                )
                shared.append(
                    {"type": error, "loc": ("upstream_signing_keys", index), "input": None}
                )
        if shared:
            raise ValidationError.from_exception_data(cls.__name__, shared)
        return config

    @field_validator("public_hostnames")
    @classmethod
    def _normalise_hostnames(cls, names: list[str]) -> list[str]:
        return [normalise_host(name) for name in names]

    @field_validator("views")
    @classmethod
    def _known_views(cls, views: dict[str, str]) -> dict[str, str]:
        for name, template in views.items():
            if name not in DEFAULT_VIEWS:
                known = ", ".join(sorted(DEFAULT_VIEWS))
                raise ValueError(f"unknown view {name!r}: the views are {known}")
            check_view_template(name, template)
        return {**DEFAULT_VIEWS, **views}

    @model_validator(mode="after")
    def _fill_views(self) -> GatewayConfig:
        if not self.views:
            object.__setattr__(self, "views", dict(DEFAULT_VIEWS))
        return self


def normalise_host(name: str) -> str:
    """Lower-case a host name and drop one trailing dot, as DNS compares it."""
    return name.strip().lower().removesuffix(".")


def check_view_template(name: str, template: str) -> None:
    """Refuse a view template that is not a local path with known fields."""
    fields = set(re.findall(r"{([^}]*)}", template))
    if not template.startswith("/") or template.startswith("//") or "\\" in template:
        raise ValueError(
            f"view {name!r}: {template!r} must be a path starting with one '/'"
        )
    if fields - {"client_id"}:
        raise ValueError(
            f"view {name!r}: {template!r} may only use the field {{client_id}}"
        )
    if any(ch in template for ch in "\r\n\t ") or not template.isascii():
        raise ValueError(
            f"view {name!r}: {template!r} contains spaces or non-ASCII characters"
        )


class TenantSessionConfig(Section):
    lifetime: Duration | None = None
    idle_timeout: Duration | None = None


class TenantConfig(Section):
    """One koppelvlak: a care organisation and the options of its coupling."""

    name: str
    display_name: str
    method: Literal["ysis", "oidc"] = "ysis"
    certificates: list[FilePath] | None = None
    ca_file: FilePath | None = None
    subject_name: str | None = None
    crl_file: FilePath | None = None
    allowed_ips: list[Network]
    allow_any_ip: bool = False
    allow_self_link: bool = True
    confirm_password: bool = False
    client_context: bool = True
    views: list[str] | None = None
    launch_signature: bool = False
    launch_secret: Key | None = None
    bind_session_to_certificate: bool = True
    session: TenantSessionConfig = TenantSessionConfig()
    oidc: dict[str, Any] | None = None

    @field_validator("name")
    @classmethod
    def _tenant_name(cls, name: str) -> str:
        if not TENANT_NAME.match(name):
            raise ValueError(
                f"{name!r} is not a valid tenant name: use 1 to 63 lower-case "
                "letters, digits and '-', starting with a letter or digit"
            )
        return name

    @field_validator("views")
    @classmethod
    def _known_views(cls, views: list[str] | None) -> list[str] | None:
        for view in views or []:
            if view not in DEFAULT_VIEWS:
                known = ", ".join(sorted(DEFAULT_VIEWS))
                raise ValueError(f"unknown view {view!r}: the views are {known}")
        return views

    @model_validator(mode="wrap")
    @classmethod
    def _check_rules(
        cls, data: Any, handler: ModelWrapValidatorHandler[TenantConfig]
    ) -> TenantConfig:
        # The rules read the raw keys, so that they are reported together
        # with the errors of single fields instead of only after those are
        # fixed.
        broken = tenant_rule_errors(data) if isinstance(data, dict) else []
        try:
            tenant = handler(data)
        except ValidationError as exc:
            if not broken:
                raise
            errors: list[Any] = [*exc.errors(), *broken]
            raise ValidationError.from_exception_data(cls.__name__, errors) from None
        if broken:
            raise ValidationError.from_exception_data(cls.__name__, broken)
        return tenant

    def allows_view(self, view: str) -> bool:
        return view == "default" or self.views is None or view in self.views


def tenant_rule_errors(data: dict[str, Any]) -> list[InitErrorDetails]:
    """Check the rules of a tenant that span several keys, on its raw keys."""
    broken: list[InitErrorDetails] = []

    def fail(key: str, message: str) -> None:
        # The message goes in as a context value, because the braces of
        # "{env: NAME}" would be read as template fields.
        error = PydanticCustomError("tenant_rule", "{message}", {"message": message})
        broken.append({"type": error, "loc": (key,), "input": data.get(key)})

    method = data.get("method", "ysis")
    if method == "oidc":
        fail("method", "'oidc' is not supported by this gateway version: use ysis")
    elif method == "ysis" and data.get("oidc") is not None:
        fail(
            "oidc",
            "set next to method 'ysis', but a tenant uses one SSO method: "
            "remove 'oidc' or set method: oidc",
        )

    certificates = data.get("certificates")
    ca_file = data.get("ca_file")
    if certificates is not None and ca_file is not None:
        fail("ca_file", "both 'certificates' and 'ca_file' are set: pin with one")
    elif certificates is None and ca_file is None:
        fail(
            "certificates",
            "a certificate pin is required: add 'certificates' (one or two "
            "files) or 'ca_file' with 'subject_name'",
        )
    if isinstance(certificates, list) and not 1 <= len(certificates) <= 2:
        fail(
            "certificates",
            f"{len(certificates)} files are listed: pin one certificate, or two "
            "during a rotation",
        )
    if ca_file is not None and not data.get("subject_name"):
        fail(
            "ca_file",
            f"{ca_file!r} is set without subject_name: add the common name or "
            "DNS name that the client certificate must carry",
        )
    if data.get("launch_signature") is True and data.get("launch_secret") is None:
        fail(
            "launch_signature",
            "true, but launch_secret is missing: add "
            "launch_secret: {env: NAME} or set launch_signature: false",
        )
    return broken


class TenantsFile(Section):
    """Contents of ``tenants.yaml``."""

    tenants: list[TenantConfig] = Field(default_factory=list)
