"""Load and check both configuration files, collecting every problem.

``load_config`` returns a ``Config`` with the tenants' certificate pins read
from disk, or raises ``ConfigError`` with one line per problem in the form
``file:line: tenant 'name': key: message``. Warnings do not stop loading;
``check-config`` prints them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from pydantic import BaseModel, ValidationError

from gateway.config import yamlfile
from gateway.config.models import GatewayConfig, TenantConfig, TenantsFile
from gateway.config.types import covers_everyone
from gateway.errors import ConfigError

#: Certificates that expire sooner than this get a warning.
EXPIRY_WARNING = dt.timedelta(days=30)


@dataclass(frozen=True)
class Certificate:
    """A parsed certificate and where it came from."""

    path: Path
    cert: x509.Certificate
    der: bytes
    fingerprint: str

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


@dataclass(frozen=True)
class Tenant:
    """A tenant's settings with its pin, CA and CRL loaded from disk."""

    config: TenantConfig
    pinned: tuple[Certificate, ...] = ()
    authorities: tuple[Certificate, ...] = ()
    revoked: frozenset[tuple[bytes, int]] = frozenset()

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def fingerprints(self) -> frozenset[str]:
        return frozenset(cert.fingerprint for cert in self.pinned)

    def trust_anchors(self) -> Iterable[Certificate]:
        """Return the certificates the TLS handshake must trust for this tenant."""
        return self.pinned or self.authorities


@dataclass(frozen=True)
class Config:
    """Both files, validated, with every tenant loaded."""

    gateway: GatewayConfig
    tenants: Mapping[str, Tenant]
    path: Path
    tenants_path: Path
    digest: str
    warnings: Sequence[str] = field(default_factory=tuple)


def fingerprint(der: bytes) -> str:
    """Return the SHA-256 fingerprint of a DER certificate as lower-case hex."""
    return hashlib.sha256(der).hexdigest()


class _Problems:
    """Collects errors and warnings with file, line, tenant and key."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def error(self, where: str, message: str) -> None:
        self.errors.append(f"{where}: {message}")

    def warn(self, where: str, message: str) -> None:
        self.warnings.append(f"{where}: warning: {message}")


def _where(
    path: Path,
    lines: Mapping[yamlfile.Location, int],
    location: Sequence[str | int],
    data: Any,
) -> str:
    loc = tuple(location)
    while loc and loc not in lines:
        loc = loc[:-1]
    line = lines.get(loc, 1)
    parts: list[str] = []
    rest = list(location)
    if rest[:1] == ["tenants"] and len(rest) > 1 and isinstance(rest[1], int):
        parts.append(_tenant_label(data, rest[1]))
        rest = rest[2:]
    key = ""
    for item in rest:
        key += f"[{item}]" if isinstance(item, int) else (f".{item}" if key else str(item))
    if key:
        parts.append(key)
    return ": ".join([f"{path}:{line}", *parts])


def _tenant_label(data: Any, index: int) -> str:
    try:
        name = data["tenants"][index]["name"]
    except (KeyError, IndexError, TypeError):
        name = None
    return f"tenant {name!r}" if isinstance(name, str) else f"tenants[{index}]"


def _validate(
    model: type[BaseModel],
    path: Path,
    data: Any,
    lines: Mapping[yamlfile.Location, int],
    problems: _Problems,
) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.error(f"{path}:1", "the file must contain a mapping of keys")
        return None
    try:
        return model.model_validate(data, context={"base": path.parent})
    except ValidationError as exc:
        for item in exc.errors():
            location = [part for part in item["loc"] if not isinstance(part, str) or not part.startswith("function-")]
            message = str(item["msg"]).removeprefix("Value error, ")
            if item["type"] == "extra_forbidden":
                message = f"unknown key {location[-1]!r}"
            elif item["type"] == "missing":
                message = f"required key {location[-1]!r} is missing"
            problems.error(_where(path, lines, location, data), message)
        return None


def _read_certificates(path: Path) -> list[x509.Certificate]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"certificate file '{path}' cannot be read: {exc.strerror}") from None
    if b"PRIVATE KEY" in data:
        raise ValueError(
            f"'{path}' contains a private key where a certificate belongs: "
            "point this key at the certificate file"
        )
    if not data.strip():
        raise ValueError(f"certificate file '{path}' is empty")
    try:
        if b"-----BEGIN" in data:
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise ValueError(f"'{path}' holds no valid PEM or DER certificate") from None
    return certs


def load_certificates(path: Path) -> list[Certificate]:
    """Read every certificate of a PEM or DER file, or raise ValueError."""
    loaded = []
    for cert in _read_certificates(path):
        der = cert.public_bytes(serialization.Encoding.DER)
        loaded.append(Certificate(path, cert, der, fingerprint(der)))
    return loaded


def _load_crl(path: Path) -> frozenset[tuple[bytes, int]]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"CRL file '{path}' cannot be read: {exc.strerror}") from None
    try:
        crl = (
            x509.load_pem_x509_crl(data)
            if b"-----BEGIN" in data
            else x509.load_der_x509_crl(data)
        )
    except ValueError:
        raise ValueError(f"'{path}' holds no valid PEM or DER CRL") from None
    issuer = crl.issuer.public_bytes()
    return frozenset((issuer, entry.serial_number) for entry in crl)


def _check_expiry(cert: Certificate, where: str, problems: _Problems, now: dt.datetime) -> None:
    expires = cert.cert.not_valid_after_utc
    if expires < now:
        problems.warn(where, f"certificate '{cert.path}' expired on {expires:%Y-%m-%d}")
    elif expires - now < EXPIRY_WARNING:
        problems.warn(where, f"certificate '{cert.path}' expires on {expires:%Y-%m-%d}")


def _load_tenant(
    config: TenantConfig, where: str, problems: _Problems, now: dt.datetime
) -> Tenant | None:
    pinned: list[Certificate] = []
    authorities: list[Certificate] = []
    revoked: frozenset[tuple[bytes, int]] = frozenset()
    ok = True
    for index, path in enumerate(config.certificates or []):
        try:
            certs = load_certificates(path)
        except ValueError as exc:
            problems.error(f"{where}: certificates[{index}]", str(exc))
            ok = False
            continue
        if len(certs) != 1:
            problems.error(
                f"{where}: certificates[{index}]",
                f"'{path}' holds {len(certs)} certificates: pin one per file",
            )
            ok = False
        pinned.extend(certs[:1])
    if config.ca_file is not None:
        try:
            authorities = load_certificates(config.ca_file)
        except ValueError as exc:
            problems.error(f"{where}: ca_file", str(exc))
            ok = False
    if config.crl_file is not None:
        try:
            revoked = _load_crl(config.crl_file)
        except ValueError as exc:
            problems.error(f"{where}: crl_file", str(exc))
            ok = False

    for cert in (*pinned, *authorities):
        _check_expiry(cert, where, problems, now)
    _check_allowlist(config, where, problems)
    if not config.launch_signature:
        problems.warn(
            f"{where}: launch_signature",
            "off: anyone with the tenant certificate on an allowed address "
            "can launch as any userId",
        )
    if not ok:
        return None
    return Tenant(config, tuple(pinned), tuple(authorities), revoked)


def _check_allowlist(config: TenantConfig, where: str, problems: _Problems) -> None:
    for index, network in enumerate(config.allowed_ips):
        if not covers_everyone(network):
            continue
        key = f"{where}: allowed_ips[{index}]"
        if config.allow_any_ip:
            problems.warn(key, f"'{network}' admits every address (allow_any_ip is on)")
        else:
            problems.error(
                key,
                f"'{network}' admits every address: narrow it, or set "
                "allow_any_ip: true if that is intended",
            )
    if config.allow_any_ip and not any(map(covers_everyone, config.allowed_ips)):
        problems.warn(f"{where}: allow_any_ip", "on, but no entry admits every address")


def _check_overlaps(tenants: Sequence[Tenant], problems: _Problems, path: Path) -> None:
    """Refuse two tenants that would accept the same client certificate."""
    for index, first in enumerate(tenants):
        for second in tenants[index + 1 :]:
            if _accept_same(first, second) or _accept_same(second, first):
                problems.error(
                    f"{path}: tenant {second.name!r}",
                    f"accepts the same client certificate as tenant {first.name!r}: "
                    "give each tenant its own certificate or subject",
                )


def _accept_same(first: Tenant, second: Tenant) -> bool:
    if first.fingerprints & second.fingerprints:
        return True
    first_cas = {cert.fingerprint for cert in first.authorities}
    second_cas = {cert.fingerprint for cert in second.authorities}
    same_subject = (first.config.subject_name or "").lower() == (
        second.config.subject_name or ""
    ).lower()
    if first_cas & second_cas and same_subject:
        return True
    return any(
        matches_ca_pin(second, cert.cert) for cert in first.pinned if second.authorities
    )


def subject_names(cert: x509.Certificate) -> set[str]:
    """Return the common names and DNS names of a certificate, lower-cased."""
    names = {
        str(attr.value).lower()
        for attr in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    }
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return names
    names.update(name.lower() for name in san.value.get_values_for_type(x509.DNSName))
    return names


def matches_ca_pin(tenant: Tenant, cert: x509.Certificate) -> bool:
    """Tell whether ``cert`` is issued by the tenant's CA and has its subject."""
    wanted = (tenant.config.subject_name or "").lower()
    if not wanted or wanted not in subject_names(cert):
        return False
    for authority in tenant.authorities:
        try:
            cert.verify_directly_issued_by(authority.cert)
        except (InvalidSignature, ValueError, TypeError):
            continue
        return True
    return False


def _check_gateway_files(config: GatewayConfig, where: str, problems: _Problems, now: dt.datetime) -> None:
    try:
        for cert in load_certificates(config.tls.certificate)[:1]:
            _check_expiry(cert, f"{where}: tls.certificate", problems, now)
    except ValueError as exc:
        problems.error(f"{where}: tls.certificate", str(exc))
    try:
        key = config.tls.private_key.read_bytes()
    except OSError as exc:
        problems.error(f"{where}: tls.private_key", f"'{config.tls.private_key}' cannot be read: {exc.strerror}")
    else:
        if b"PRIVATE KEY" not in key:
            problems.error(f"{where}: tls.private_key", f"'{config.tls.private_key}' holds no PEM private key")


def load_config(path: Path | str, *, now: dt.datetime | None = None) -> Config:
    """Read ``gateway.yaml`` and its tenants file, or raise ``ConfigError``."""
    path = Path(path).absolute()
    now = now or dt.datetime.now(dt.timezone.utc)
    problems = _Problems()

    try:
        data, lines = yamlfile.load(path)
    except yamlfile.YamlError as exc:
        raise ConfigError([str(exc)]) from None
    gateway = _validate(GatewayConfig, path, data, lines, problems)
    tenants_path = (
        gateway.tenants_file if gateway and gateway.tenants_file else path.parent / "tenants.yaml"
    )
    if gateway is not None:
        _check_gateway_files(gateway, str(path), problems, now)

    try:
        tenant_data, tenant_lines = yamlfile.load(tenants_path)
    except yamlfile.YamlError as exc:
        problems.errors.append(str(exc))
        raise ConfigError(problems.errors) from None
    tenants_file = _validate(TenantsFile, tenants_path, tenant_data, tenant_lines, problems)

    tenants: dict[str, Tenant] = {}
    if tenants_file is not None:
        for index, tenant_config in enumerate(tenants_file.tenants):
            where = _where(tenants_path, tenant_lines, ["tenants", index], tenant_data)
            if tenant_config.name in tenants:
                problems.error(where, f"duplicate tenant name {tenant_config.name!r}")
                continue
            tenant = _load_tenant(tenant_config, where, problems, now)
            if tenant is not None:
                tenants[tenant.name] = tenant
        _check_overlaps(list(tenants.values()), problems, tenants_path)

    if problems.errors or gateway is None:
        raise ConfigError(problems.errors, problems.warnings)
    digest = hashlib.sha256(path.read_bytes() + b"\0" + tenants_path.read_bytes()).hexdigest()
    return Config(gateway, tenants, path, tenants_path, digest, tuple(problems.warnings))
