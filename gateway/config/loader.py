"""Load and check both configuration files, collecting every problem.

``load_config`` returns a ``Config`` with the tenants' certificate pins read
from disk, or raises ``ConfigError`` with one line per problem in the form
``file:line: tenant 'name': key: message``. Warnings do not stop loading;
``check-config`` prints them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from gateway.config import yamlfile
from gateway.config.models import (
    FilePath,
    GatewayConfig,
    TenantConfig,
    TlsConfig,
    UpstreamConfig,
)
from gateway.config.files import read_regular_file
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

    @property
    def longest_session_lifetime(self) -> float:
        """Return the longest session lifetime of any tenant, in seconds."""
        overrides = [tenant.config.session.lifetime for tenant in self.tenants.values()]
        default = self.gateway.session.lifetime
        return max([default, *(seconds for seconds in overrides if seconds)])


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


@dataclass(frozen=True)
class _Locator:
    """Turns a key path of one file into ``file:line: tenant 'name': key``."""

    path: Path
    lines: Mapping[yamlfile.Location, int]
    data: Any

    def __call__(self, location: Sequence[str | int], line: int | None = None) -> str:
        return _where(self.path, self.lines, location, self.data, line)


def _where(
    path: Path,
    lines: Mapping[yamlfile.Location, int],
    location: Sequence[str | int],
    data: Any,
    line: int | None = None,
) -> str:
    loc = tuple(location)
    while loc and loc not in lines:
        loc = loc[:-1]
    if line is None:
        line = lines.get(loc, 1)
    parts: list[str] = []
    rest = list(location)
    if rest[:1] == ["tenants"] and len(rest) > 1 and isinstance(rest[1], int):
        parts.append(_tenant_label(data, rest[1]))
        rest = rest[2:]
    key = ""
    for item in rest:
        key += (
            f"[{item}]" if isinstance(item, int) else (f".{item}" if key else str(item))
        )
    if key:
        parts.append(key)
    return ": ".join([f"{path}:{line}", *parts])


def _tenant_label(data: Any, index: int) -> str:
    try:
        name = data["tenants"][index]["name"]
    except (KeyError, IndexError, TypeError):
        name = None
    return f"tenant {name!r}" if isinstance(name, str) else f"tenants[{index}]"


#: Error types of pydantic whose message gains the value that was found.
_SHOWN_INPUT_TYPES = frozenset(
    {
        "int_type",
        "int_parsing",
        "float_type",
        "string_type",
        "literal_error",
        "greater_than_equal",
        "less_than_equal",
        "too_short",
        "too_long",
    }
)


def _message(item: Mapping[str, Any], location: Sequence[str | int]) -> str:
    """Word one pydantic error in this loader's style."""
    kind = item["type"]
    value = item.get("input")
    if kind == "extra_forbidden":
        return f"unknown key {location[-1]!r}: remove it or correct its spelling"
    if kind == "missing":
        return f"required key {location[-1]!r} is missing"
    if kind in ("bool_type", "bool_parsing"):
        return f"{value!r} is not a boolean: write true or false"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "must be a mapping of keys"
    if kind == "list_type":
        return "must be a list"
    message = str(item["msg"]).removeprefix("Value error, ")
    if kind not in _SHOWN_INPUT_TYPES:
        return message
    # Secrets never get here: their validators raise value errors only.
    message = f"{message[:1].lower()}{message[1:]}, got {value!r}"
    if kind in ("literal_error", "string_type") and isinstance(value, int | float):
        message += ": write it in quotes"
    return message


def _validate(
    model: type[BaseModel],
    data: Any,
    base: Path,
    locate: _Locator,
    problems: _Problems,
    prefix: Sequence[str | int] = (),
) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.error(locate(prefix), "must be a mapping of keys")
        return None
    try:
        return model.model_validate(data, context={"base": base})
    except ValidationError as exc:
        for item in exc.errors():
            location = [
                *prefix,
                *(part for part in item["loc"] if not _is_validator_name(part)),
            ]
            problems.error(locate(location), _message(item, location))
        return None


def _is_validator_name(part: str | int) -> bool:
    return isinstance(part, str) and part.startswith("function-")


def _quietly(model: type[BaseModel], data: Any, base: Path) -> Any:
    """Validate one section whose errors are already reported, or return None."""
    try:
        return model.model_validate(data, context={"base": base})
    except ValidationError:
        return None


def _read_certificates(path: Path) -> list[x509.Certificate]:
    try:
        data = read_regular_file(path)
    except OSError as exc:
        raise ValueError(
            f"certificate file '{path}' cannot be read: {exc.strerror}"
        ) from None
    if b"PRIVATE KEY" in data:
        raise ValueError(
            f"'{path}' contains a private key where a certificate belongs: "
            "give the certificate file instead, not its key"
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


def _load_crl(path: Path) -> x509.CertificateRevocationList:
    try:
        data = read_regular_file(path)
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
    return crl


def _check_crl(
    crl: x509.CertificateRevocationList,
    path: Path,
    pinned: Sequence[Certificate],
    authorities: Sequence[Certificate],
    locate: Callable[..., str],
    problems: _Problems,
    now: dt.datetime,
) -> None:
    """Raise ValueError for a CRL of another CA or with a bad signature.

    A CRL whose issuer signs none of the tenant's certificates would revoke
    nothing, so it is refused rather than trusted to protect anyone.
    """
    issuers = {cert.cert.issuer for cert in pinned} | {
        cert.cert.subject for cert in authorities
    }
    if crl.issuer not in issuers:
        raise ValueError(
            f"'{path}' is issued by '{crl.issuer.rfc4514_string()}', which "
            "issues none of this tenant's certificates: use the CRL of their CA"
        )
    signers = [cert for cert in authorities if cert.cert.subject == crl.issuer]
    # SECURITY: with ca_file the signing CA is known, so the CRL must carry
    # its signature. A pinned tenant has no CA to check against.
    if signers and not any(
        crl.is_signature_valid(cert.cert.public_key())  # type: ignore[arg-type]
        for cert in signers
    ):
        raise ValueError(
            f"'{path}' is not signed by the CA in ca_file: use the CRL that "
            "CA published"
        )
    next_update = crl.next_update_utc
    if next_update is not None and next_update < now:
        problems.warn(
            locate("crl_file"),
            f"'{path}' was due to be replaced on {next_update:%Y-%m-%d}: fetch "
            "the CA's current CRL",
        )


def _check_expiry(
    cert: Certificate, where: str, problems: _Problems, now: dt.datetime
) -> None:
    expires = cert.cert.not_valid_after_utc
    if expires < now:
        problems.warn(where, f"certificate '{cert.path}' expired on {expires:%Y-%m-%d}")
    elif expires - now < EXPIRY_WARNING:
        problems.warn(
            where,
            f"certificate '{cert.path}' expires on {expires:%Y-%m-%d}, in less "
            f"than {EXPIRY_WARNING.days} days: exchange a new one",
        )


def _load_tenant(
    config: TenantConfig,
    locate: Callable[..., str],
    problems: _Problems,
    now: dt.datetime,
) -> Tenant | None:
    """Read the tenant's certificate files and check its allowlist.

    ``locate(*keys)`` names a key of this tenant for a problem.
    """
    files = _load_tenant_files(config, locate, problems, now)
    _check_allowlist(config, locate, problems)
    if not config.launch_signature:
        problems.warn(
            locate("launch_signature"),
            "off: anyone with the tenant certificate on an allowed address "
            "can launch as any userId",
        )
    if files is None:
        return None
    pinned, authorities, revoked = files
    return Tenant(config, pinned, authorities, revoked)


class _TenantFiles(BaseModel):
    """The file keys of a tenant, read even when its other keys are invalid."""

    model_config = ConfigDict(extra="ignore", strict=True, arbitrary_types_allowed=True)

    certificates: list[FilePath] | None = None
    ca_file: FilePath | None = None
    crl_file: FilePath | None = None


_TenantFileSet = tuple[
    tuple[Certificate, ...], tuple[Certificate, ...], frozenset[tuple[bytes, int]]
]


def _load_tenant_files(
    config: TenantConfig | _TenantFiles,
    locate: Callable[..., str],
    problems: _Problems,
    now: dt.datetime,
) -> _TenantFileSet | None:
    """Read the pinned certificates, the CA and the CRL; None if one failed."""
    pinned: list[Certificate] = []
    authorities: list[Certificate] = []
    revoked: frozenset[tuple[bytes, int]] = frozenset()
    ok = True
    for index, path in enumerate(config.certificates or []):
        where = locate("certificates", index)
        try:
            certs = load_certificates(path)
        except ValueError as exc:
            problems.error(where, str(exc))
            ok = False
            continue
        if len(certs) != 1:
            problems.error(
                where, f"'{path}' holds {len(certs)} certificates: pin one per file"
            )
            ok = False
        pinned.extend(certs[:1])
        for cert in certs[:1]:
            _check_expiry(cert, where, problems, now)
    if config.ca_file is not None:
        try:
            authorities = load_certificates(config.ca_file)
        except ValueError as exc:
            problems.error(locate("ca_file"), str(exc))
            ok = False
        for cert in authorities:
            _check_expiry(cert, locate("ca_file"), problems, now)
    if config.crl_file is not None:
        try:
            crl = _load_crl(config.crl_file)
            _check_crl(crl, config.crl_file, pinned, authorities, locate, problems, now)
        except ValueError as exc:
            problems.error(locate("crl_file"), str(exc))
            ok = False
        else:
            issuer = crl.issuer.public_bytes()
            revoked = frozenset((issuer, entry.serial_number) for entry in crl)
    if not ok:
        return None
    return tuple(pinned), tuple(authorities), revoked


def _check_allowlist(
    config: TenantConfig, locate: Callable[..., str], problems: _Problems
) -> None:
    for index, network in enumerate(config.allowed_ips):
        if not covers_everyone(network):
            continue
        where = locate("allowed_ips", index)
        if config.allow_any_ip:
            problems.warn(
                where, f"'{network}' admits every address (allow_any_ip is on)"
            )
        else:
            problems.error(
                where,
                f"'{network}' admits every address: narrow it, or set "
                "allow_any_ip: true if that is intended",
            )
    if config.allow_any_ip and not any(map(covers_everyone, config.allowed_ips)):
        problems.warn(locate("allow_any_ip"), "on, but no entry admits every address")


def _check_overlaps(
    tenants: Sequence[tuple[int, Tenant]], locate: _Locator, problems: _Problems
) -> None:
    """Refuse two tenants that would accept the same client certificate."""
    for position, (_, first) in enumerate(tenants):
        for index, second in tenants[position + 1 :]:
            shared = _shared_pin(first, second)
            if shared is not None:
                keys, message = shared
                problems.error(locate(["tenants", index, *keys]), message)


def _shared_pin(
    first: Tenant, second: Tenant
) -> tuple[tuple[str | int, ...], str] | None:
    """Describe how ``second`` accepts a certificate that ``first`` accepts.

    Returns the key of ``second`` to blame and the message, or None.
    """
    advice = "give each tenant its own certificate or subject"
    for index, cert in enumerate(second.pinned):
        if cert.fingerprint in first.fingerprints:
            return ("certificates", index), (
                f"'{cert.path}' (SHA-256 {cert.fingerprint}) is also pinned by "
                f"tenant {first.name!r}: {advice}"
            )
        if first.authorities and matches_ca_pin(first, cert.cert):
            return ("certificates", index), (
                f"'{cert.path}' is also accepted by the ca_file and subject_name "
                f"of tenant {first.name!r}: {advice}"
            )
    if not second.authorities:
        return None
    subject = second.config.subject_name or ""
    for cert in first.pinned:
        if matches_ca_pin(second, cert.cert):
            return ("subject_name",), (
                f"{subject!r} with this ca_file accepts '{cert.path}', which "
                f"tenant {first.name!r} pins: {advice}"
            )
    first_cas = {cert.fingerprint for cert in first.authorities}
    second_cas = {cert.fingerprint for cert in second.authorities}
    same_subject = (first.config.subject_name or "").lower() == subject.lower()
    if first_cas & second_cas and same_subject:
        return ("subject_name",), (
            f"{subject!r} with the same CA is also pinned by tenant "
            f"{first.name!r}: {advice}"
        )
    return None


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


def _check_gateway_files(
    tls: TlsConfig, locate: _Locator, problems: _Problems, now: dt.datetime
) -> None:
    where = locate(["tls", "certificate"])
    try:
        for cert in load_certificates(tls.certificate)[:1]:
            _check_expiry(cert, where, problems, now)
    except ValueError as exc:
        problems.error(where, str(exc))
    where = locate(["tls", "private_key"])
    try:
        key = read_regular_file(tls.private_key)
    except OSError as exc:
        problems.error(
            where,
            f"private key file '{tls.private_key}' cannot be read: {exc.strerror}",
        )
    except ValueError as exc:
        problems.error(where, str(exc))
    else:
        if b"PRIVATE KEY" not in key:
            problems.error(
                where,
                f"'{tls.private_key}' holds no PEM private key: point this key "
                "at the server's private key file",
            )


def _check_upstream_timeouts(
    upstream: UpstreamConfig, locate: _Locator, problems: _Problems
) -> None:
    if upstream.connect_timeout > upstream.timeout:
        problems.warn(
            locate(["upstream", "connect_timeout"]),
            f"{upstream.connect_timeout:g} s is longer than upstream.timeout "
            f"({upstream.timeout:g} s), which bounds connecting too: lower it "
            "to upstream.timeout or less",
        )


def _load_tenants(
    document: yamlfile.Document,
    locate: _Locator,
    problems: _Problems,
    now: dt.datetime,
) -> dict[str, Tenant]:
    """Validate each tenant on its own, so that one bad tenant hides no other."""
    data = document.data
    if data is None or (isinstance(data, dict) and "tenants" not in data):
        # SECURITY: a file cut short by an interrupted write looks like this,
        # and loading it would end every session at once.
        problems.error(
            locate([]),
            "has no 'tenants' list: write 'tenants: []' to run without tenants",
        )
        return {}
    if not isinstance(data, dict):
        problems.error(locate([]), "the file must contain a mapping of keys")
        return {}
    for key in data:
        if key != "tenants":
            problems.error(locate([key]), _message({"type": "extra_forbidden"}, [key]))
    entries = data["tenants"]
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        problems.error(locate(["tenants"]), "must be a list of tenants")
        return {}
    if not entries:
        problems.warn(
            locate(["tenants"]),
            "no tenants: every launch and every client certificate is refused",
        )

    base = locate.path.parent
    names: dict[str, int] = {}
    loaded: list[tuple[int, Tenant]] = []
    for index, entry in enumerate(entries):
        name = entry.get("name") if isinstance(entry, dict) else None
        first = names.get(name) if isinstance(name, str) else None
        duplicate = first is not None
        if first is not None:
            problems.error(
                locate(["tenants", index, "name"]),
                f"duplicate tenant name {name!r}, first used by tenants[{first}]: "
                "give each tenant its own name",
            )
        elif isinstance(name, str):
            names[name] = index
        config = _validate(
            TenantConfig, entry, base, locate, problems, ("tenants", index)
        )
        def locate_key(*keys: str | int, index: int = index) -> str:
            return locate(["tenants", index, *keys])

        if config is None:
            # Report the file problems of this tenant in the same run.
            files = _quietly(_TenantFiles, entry, base)
            if files is not None:
                _load_tenant_files(files, locate_key, problems, now)
            continue

        tenant = _load_tenant(config, locate_key, problems, now)
        if tenant is not None and not duplicate:
            loaded.append((index, tenant))
    _check_overlaps(loaded, locate, problems)
    return {tenant.name: tenant for _, tenant in loaded}


def _read(path: Path, problems: _Problems) -> tuple[yamlfile.Document, _Locator]:
    """Parse one file and report the rules it breaks; YamlError if unparsable."""
    document = yamlfile.read(path)
    locate = _Locator(path, document.lines, document.data)
    for problem in document.problems:
        problems.error(locate(problem.location, problem.line), problem.message)
    return document, locate


def _tenants_path(path: Path, data: Any, gateway: GatewayConfig | None) -> Path:
    if gateway is not None:
        return gateway.tenants_file or path.parent / "tenants.yaml"
    # gateway.yaml has errors: still follow a valid tenants_file.
    raw = data.get("tenants_file") if isinstance(data, dict) else None
    try:
        named = TypeAdapter(FilePath).validate_python(
            raw, context={"base": path.parent}
        )
    except ValidationError:
        named = None
    return named or path.parent / "tenants.yaml"


def load_config(path: Path | str, *, now: dt.datetime | None = None) -> Config:
    """Read ``gateway.yaml`` and its tenants file, or raise ``ConfigError``.

    Every problem of both files is collected before raising, unless
    ``gateway.yaml`` cannot be parsed at all.
    """
    path = Path(path).absolute()
    now = now or dt.datetime.now(dt.timezone.utc)
    problems = _Problems()

    try:
        document, locate = _read(path, problems)
    except yamlfile.YamlError as exc:
        raise ConfigError([str(exc)]) from None
    data = document.data
    gateway = _validate(GatewayConfig, data, path.parent, locate, problems)
    if gateway is not None:
        tls: TlsConfig | None = gateway.tls
    elif isinstance(data, dict):
        tls = _quietly(TlsConfig, data.get("tls"), path.parent)
    else:
        tls = None
    if tls is not None:
        _check_gateway_files(tls, locate, problems, now)
    if gateway is not None:
        _check_upstream_timeouts(gateway.upstream, locate, problems)

    tenants_path = _tenants_path(path, data, gateway)
    tenants: dict[str, Tenant] = {}
    try:
        tenants_document, tenants_locate = _read(tenants_path, problems)
    except yamlfile.YamlError as exc:
        problems.errors.append(str(exc))
    else:
        tenants = _load_tenants(tenants_document, tenants_locate, problems, now)

    if problems.errors or gateway is None:
        raise ConfigError(problems.errors, problems.warnings)
    digest = hashlib.sha256(
        read_regular_file(path) + b"\0" + read_regular_file(tenants_path)
    ).hexdigest()
    return Config(
        gateway, tenants, path, tenants_path, digest, tuple(problems.warnings)
    )
