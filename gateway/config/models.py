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
    PlainValidator,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gateway.config.types import (
    MIN_KEY_BYTES,
    Duration,
    Network,
    Secret,
    resolve_secret,
)

TENANT_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}\Z")

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
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{value!r} is not a file path")
    path = Path(value).expanduser()
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
    if re.match(r"[a-z0-9+]+://[^/@]*:[^/@]+@", value):
        raise ValueError(
            "this URL contains a password, a literal secret: "
            "write it as {env: NAME} or {file: PATH}"
        )
    return value


ConnectionUrl = Annotated[str, PlainValidator(_connection_url)]


class RedisConfig(Section):
    url: ConnectionUrl = "redis://127.0.0.1:6379/0"
    timeout: Duration = 0.5


class DatabaseConfig(Section):
    url: ConnectionUrl = "sqlite+aiosqlite:///gateway.db"


class SessionConfig(Section):
    keys: list[Key] = Field(min_length=1)
    lifetime: Duration = 10 * 3600.0
    idle_timeout: Duration = 30 * 60.0
    refresh_after: Duration = 60.0
    pending_lifetime: Duration = 5 * 60.0


class LinkCacheConfig(Section):
    ttl: Duration = 60.0
    negative_ttl: Duration = 5.0


class FormsConfig(Section):
    min_failure_time: Duration = 1.0


class GatewayConfig(Section):
    """Contents of ``gateway.yaml``."""

    listen: ListenConfig = ListenConfig()
    tls: TlsConfig
    public_hostnames: list[str] = Field(min_length=1)
    upstream: UpstreamConfig
    redis: RedisConfig = RedisConfig()
    database: DatabaseConfig = DatabaseConfig()
    trusted_proxies: list[Network] = Field(default_factory=list)
    session: SessionConfig
    upstream_signing_keys: list[Key] = Field(min_length=1)
    link_cache: LinkCacheConfig = LinkCacheConfig()
    forms: FormsConfig = FormsConfig()
    views: dict[str, str] = Field(default_factory=dict)
    tenants_file: FilePath | None = None

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
        raise ValueError(f"view {name!r}: {template!r} must be a path starting with one '/'")
    if fields - {"client_id"}:
        raise ValueError(f"view {name!r}: {template!r} may only use the field {{client_id}}")
    if any(ch in template for ch in "\r\n\t ") or not template.isascii():
        raise ValueError(f"view {name!r}: {template!r} contains spaces or non-ASCII characters")


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
                raise ValueError(f"unknown view {view!r}")
        return views

    @model_validator(mode="after")
    def _one_method_one_pin(self) -> TenantConfig:
        if self.method == "oidc" or self.oidc is not None:
            if self.method == "ysis":
                raise ValueError(
                    "a tenant uses one SSO method: remove 'oidc' or set method: oidc"
                )
            raise ValueError("method 'oidc' is not supported by this gateway version")
        if self.certificates is not None and self.ca_file is not None:
            raise ValueError("pin with either 'certificates' or 'ca_file', not both")
        if self.certificates is None and self.ca_file is None:
            raise ValueError("a certificate pin is required: 'certificates' or 'ca_file'")
        if self.certificates is not None and not 1 <= len(self.certificates) <= 2:
            raise ValueError("'certificates' lists one certificate, or two during rotation")
        if self.ca_file is not None and not self.subject_name:
            raise ValueError("'ca_file' needs 'subject_name' (the common name or SAN)")
        if self.launch_signature and self.launch_secret is None:
            raise ValueError("'launch_signature: true' needs 'launch_secret'")
        return self

    def allows_view(self, view: str) -> bool:
        return view == "default" or self.views is None or view in self.views


class TenantsFile(Section):
    """Contents of ``tenants.yaml``."""

    tenants: list[TenantConfig] = Field(default_factory=list)
