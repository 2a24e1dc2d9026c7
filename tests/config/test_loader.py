"""load_config on real files: every required error, the warnings and defaults.

Each case starts from a valid pair of files (``GATEWAY`` and ``TENANTS``),
changes one line and checks that the problem names the file, line, tenant,
key and the offending value.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from gateway.config.loader import Config, load_config
from gateway.config.models import DEFAULT_VIEWS
from gateway.config.types import SAMPLE_KEY_HASHES, RetentionPeriod, Secret
from gateway.errors import ConfigError

GATEWAY = """\
tls:
  certificate: tls/server.pem
  private_key: tls/server-key.pem
public_hostnames:
  - medimo.example.nl
upstream:
  url: http://127.0.0.1:9
  api_token: {env: TEST_API_TOKEN}
session:
  keys:
    - {env: TEST_SESSION_KEY}
upstream_signing_keys:
  - {env: TEST_SIGNING_KEY}
"""

TENANTS = """\
tenants:
  - name: noord
    display_name: Zorggroep Noord
    certificates:
      - certs/noord.pem
    allowed_ips:
      - 192.0.2.0/24
  - name: zuid
    display_name: Zorggroep Zuid
    ca_file: certs/ca.pem
    subject_name: zuid.ysis.example
    allowed_ips:
      - 198.51.100.0/24
"""

#: A published sample key: its SHA-256 is in SAMPLE_KEY_HASHES.
SAMPLE_KEY = "change-me-change-me-change-me-change-me"


def edit(text: str, old: str, new: str) -> str:
    """Replace the one occurrence of ``old``, so that a stale test fails loudly."""
    assert text.count(old) == 1, f"{old!r} must occur once"
    return text.replace(old, new)


def line_of(text: str, needle: str) -> int:
    """Return the 1-based line of the only line that contains ``needle``."""
    found = [number for number, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(found) == 1, f"{needle!r} is on lines {found}"
    return found[0]


@dataclass
class Files:
    """A folder with both files, their certificates and their secrets."""

    folder: Path
    ca: trustme.CA
    monkeypatch: pytest.MonkeyPatch

    @property
    def gateway_path(self) -> Path:
        return self.folder / "gateway.yaml"

    @property
    def tenants_path(self) -> Path:
        return self.folder / "tenants.yaml"

    def write(self, gateway: str = GATEWAY, tenants: str = TENANTS) -> Path:
        self.gateway_path.write_text(gateway)
        self.tenants_path.write_text(tenants)
        return self.gateway_path

    def load(self, gateway: str = GATEWAY, tenants: str = TENANTS) -> Config:
        return load_config(self.write(gateway, tenants))

    def failure(self, gateway: str = GATEWAY, tenants: str = TENANTS) -> ConfigError:
        with pytest.raises(ConfigError) as caught:
            self.load(gateway, tenants)
        return caught.value

    def error(self, gateway: str = GATEWAY, tenants: str = TENANTS) -> str:
        """Load files with one planted error and return that one problem."""
        problems = self.failure(gateway, tenants).problems
        assert len(problems) == 1, problems
        return problems[0]

    def issue(self, name: str, **options: Any) -> trustme.LeafCert:
        """Write ``certs/<name>.pem`` and ``certs/<name>-key.pem``."""
        cert = self.ca.issue_cert(f"{name}.ysis.example", **options)
        cert.cert_chain_pems[0].write_to_path(str(self.folder / f"certs/{name}.pem"))
        cert.private_key_pem.write_to_path(str(self.folder / f"certs/{name}-key.pem"))
        return cert

    def setenv(self, name: str, value: str) -> None:
        self.monkeypatch.setenv(name, value)


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Files:
    folder = tmp_path / "etc"
    (folder / "tls").mkdir(parents=True)
    (folder / "certs").mkdir()
    ca = trustme.CA()
    server = ca.issue_cert("medimo.example.nl")
    server.cert_chain_pems[0].write_to_path(str(folder / "tls/server.pem"))
    server.private_key_pem.write_to_path(str(folder / "tls/server-key.pem"))
    ca.cert_pem.write_to_path(str(folder / "certs/ca.pem"))
    for name in ("TEST_API_TOKEN", "TEST_SESSION_KEY", "TEST_SIGNING_KEY"):
        monkeypatch.setenv(name, secrets.token_urlsafe(32))
    built = Files(folder, ca, monkeypatch)
    built.issue("noord")
    # Paths must resolve from the files' folder, never from the working one.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return built


def tenant_prefix(files: Files, text: str, needle: str, tenant: str, key: str) -> str:
    return f"{files.tenants_path}:{line_of(text, needle)}: tenant '{tenant}': {key}: "


def gateway_prefix(files: Files, text: str, needle: str, key: str) -> str:
    return f"{files.gateway_path}:{line_of(text, needle)}: {key}: "


# --- a valid configuration ---------------------------------------------------


def test_valid_config_loads(files: Files) -> None:
    config = files.load()

    assert sorted(config.tenants) == ["noord", "zuid"]
    assert config.path == files.gateway_path
    assert config.tenants_path == files.tenants_path


def test_valid_config_digest_covers_both(files: Files) -> None:
    first = files.load().digest
    second = files.load(tenants=edit(TENANTS, "Zorggroep Zuid", "Zuid")).digest

    assert first != second


def test_pin_fingerprint_is_der_sha256(files: Files) -> None:
    cert = files.issue("noord")
    der = cert.cert_chain_pems[0].bytes()

    config = files.load()

    (pinned,) = config.tenants["noord"].pinned
    expected = hashlib.sha256(
        _pem_to_der(der),
    ).hexdigest()
    assert pinned.fingerprint == expected
    assert config.tenants["noord"].fingerprints == {expected}


def _pem_to_der(pem: bytes) -> bytes:
    from cryptography import x509

    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def test_ca_pin_loads_authority(files: Files) -> None:
    zuid = files.load().tenants["zuid"]

    assert zuid.pinned == ()
    assert [cert.path for cert in zuid.authorities] == [files.folder / "certs/ca.pem"]


GATEWAY_DEFAULTS = [
    pytest.param(("listen", "host"), ["0.0.0.0"], id="listen-host"),
    pytest.param(("listen", "port"), 8443, id="listen-port"),
    pytest.param(("tls", "min_version"), "1.2", id="tls-min-version"),
    pytest.param(("tls", "handshake_timeout"), 10.0, id="tls-handshake-timeout"),
    pytest.param(("upstream", "api_url"), None, id="upstream-api-url"),
    pytest.param(("upstream", "api_base"), "http://127.0.0.1:9", id="upstream-api-base"),
    pytest.param(("upstream", "connect_timeout"), 5.0, id="upstream-connect-timeout"),
    pytest.param(("upstream", "timeout"), 30.0, id="upstream-timeout"),
    pytest.param(("upstream", "max_connections"), 100, id="upstream-max-connections"),
    pytest.param(("redis", "url"), "redis://127.0.0.1:6379/0", id="redis-url"),
    pytest.param(("redis", "timeout"), 0.5, id="redis-timeout"),
    pytest.param(("trusted_proxies",), [], id="trusted-proxies"),
    pytest.param(("session", "lifetime"), 10 * 3600.0, id="session-lifetime"),
    pytest.param(("session", "idle_timeout"), 30 * 60.0, id="session-idle-timeout"),
    pytest.param(("session", "refresh_after"), 60.0, id="session-refresh-after"),
    pytest.param(("session", "pending_lifetime"), 300.0, id="session-pending"),
    pytest.param(("link_cache", "ttl"), 60.0, id="link-cache-ttl"),
    pytest.param(("link_cache", "negative_ttl"), 5.0, id="link-cache-negative-ttl"),
    pytest.param(("forms", "min_failure_time"), 1.0, id="forms-min-failure-time"),
    pytest.param(("forms", "account_attempts", "limit"), 5, id="account-limit"),
    pytest.param(("forms", "account_attempts", "per"), 900.0, id="account-per"),
    pytest.param(("forms", "client_attempts", "limit"), 50, id="client-limit"),
    pytest.param(("forms", "client_attempts", "per"), 900.0, id="client-per"),
    pytest.param(("limits", "header_timeout"), 10.0, id="limits-header-timeout"),
    pytest.param(("limits", "keepalive_timeout"), 15.0, id="limits-keepalive-timeout"),
    pytest.param(("limits", "body_timeout"), 20.0, id="limits-body-timeout"),
    pytest.param(("limits", "body_min_rate"), 500, id="limits-body-min-rate"),
    pytest.param(("limits", "max_body_size"), 10 * 1024 * 1024, id="limits-max-body"),
    pytest.param(("limits", "max_request_line"), 8190, id="limits-max-request-line"),
    pytest.param(("limits", "max_header_field"), 8190, id="limits-max-header-field"),
    pytest.param(("limits", "max_headers"), 100, id="limits-max-headers"),
    pytest.param(("sso_log", "retention"), RetentionPeriod(5, "y"), id="retention"),
    pytest.param(("sso_log", "instance"), None, id="sso-log-instance"),
    pytest.param(("sso_log", "queue_size"), 10_000, id="sso-log-queue-size"),
    pytest.param(("revocations", "poll_interval"), 5.0, id="revocations-poll"),
    pytest.param(
        ("revocations", "fallback_poll_interval"), 2.0, id="revocations-fallback-poll"
    ),
    pytest.param(("revocations", "ping_interval"), 2.0, id="revocations-ping"),
    pytest.param(
        ("revocations", "reconnect_max_delay"), 5.0, id="revocations-reconnect"
    ),
    pytest.param(("revocations", "purge_interval"), 3600.0, id="revocations-purge"),
    pytest.param(("views",), DEFAULT_VIEWS, id="views"),
    pytest.param(("tenants_file",), None, id="tenants-file"),
]


@pytest.mark.parametrize(("keys", "expected"), GATEWAY_DEFAULTS)
def test_gateway_default(files: Files, keys: tuple[str, ...], expected: Any) -> None:
    value: Any = files.load().gateway
    for key in keys:
        value = getattr(value, key)

    assert value == expected


def test_database_default_beside_file(files: Files) -> None:
    config = files.load()

    expected = f"sqlite+aiosqlite:///{files.folder / 'gateway.db'}"
    assert config.gateway.database.url == expected


TENANT_DEFAULTS = [
    pytest.param("method", "ysis", id="method"),
    pytest.param("allow_any_ip", False, id="allow-any-ip"),
    pytest.param("allow_self_link", True, id="allow-self-link"),
    pytest.param("confirm_password", False, id="confirm-password"),
    pytest.param("client_context", True, id="client-context"),
    pytest.param("views", None, id="views"),
    pytest.param("launch_signature", False, id="launch-signature"),
    pytest.param("launch_secret", None, id="launch-secret"),
    pytest.param("bind_session_to_certificate", True, id="bind-to-certificate"),
    pytest.param("crl_file", None, id="crl-file"),
    pytest.param("oidc", None, id="oidc"),
]


@pytest.mark.parametrize(("key", "expected"), TENANT_DEFAULTS)
def test_tenant_default(files: Files, key: str, expected: Any) -> None:
    tenant = files.load().tenants["noord"].config

    assert getattr(tenant, key) == expected


def test_tenant_session_inherits(files: Files) -> None:
    session = files.load().tenants["noord"].config.session

    assert session.lifetime is None
    assert session.idle_timeout is None


def test_tenant_default_allows_every_view(files: Files) -> None:
    tenant = files.load().tenants["noord"].config

    assert all(tenant.allows_view(view) for view in DEFAULT_VIEWS)


def test_tenant_views_restrict(files: Files) -> None:
    tenants = edit(TENANTS, "    allowed_ips:\n      - 192.0.2.0/24\n", (
        "    allowed_ips:\n      - 192.0.2.0/24\n    views: [status]\n"
    ))

    tenant = files.load(tenants=tenants).tenants["noord"].config

    assert tenant.allows_view("status")
    assert tenant.allows_view("default")
    assert not tenant.allows_view("toedienen")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("500ms", 0.5, id="milliseconds"),
        pytest.param("45s", 45.0, id="seconds"),
        pytest.param("2m", 120.0, id="minutes"),
        pytest.param("1.5h", 5400.0, id="fractional-hours"),
        pytest.param("1d", 86400.0, id="days"),
    ],
)
def test_duration_units(files: Files, text: str, seconds: float) -> None:
    gateway = GATEWAY + f"link_cache:\n  ttl: {text}\n"

    assert files.load(gateway=gateway).gateway.link_cache.ttl == seconds


def test_revocation_interval_too_short(files: Files) -> None:
    gateway = GATEWAY + "revocations:\n  ping_interval: 50ms\n"

    problem = files.error(gateway=gateway)

    assert problem.startswith(
        gateway_prefix(files, gateway, "ping_interval:", "revocations.ping_interval")
    )
    assert "0.05 s is too short: use at least 100ms" in problem


def test_revocation_fallback_slower_than_poll(files: Files) -> None:
    gateway = GATEWAY + (
        "revocations:\n  poll_interval: 5s\n  fallback_poll_interval: 30s\n"
    )

    problem = files.error(gateway=gateway)

    assert problem.startswith(
        gateway_prefix(files, gateway, "revocations:", "revocations")
    )
    assert "fallback_poll_interval (30 s) is longer than poll_interval (5 s)" in problem


def test_revocation_unknown_key(files: Files) -> None:
    gateway = GATEWAY + "revocations:\n  poll: 5s\n"

    problem = files.error(gateway=gateway)

    assert problem.startswith(
        gateway_prefix(files, gateway, "poll:", "revocations.poll")
    )
    assert "unknown key 'poll'" in problem


def test_tenant_session_override(files: Files) -> None:
    tenants = edit(TENANTS, "      - 192.0.2.0/24\n", (
        "      - 192.0.2.0/24\n    session:\n      lifetime: 8h\n      idle_timeout: 15m\n"
    ))

    session = files.load(tenants=tenants).tenants["noord"].config.session

    assert session.lifetime == 8 * 3600.0
    assert session.idle_timeout == 15 * 60.0


def test_longest_session_lifetime(files: Files) -> None:
    tenants = edit(TENANTS, "      - 192.0.2.0/24\n", (
        "      - 192.0.2.0/24\n    session:\n      lifetime: 12h\n"
    ))

    config = files.load(tenants=tenants)

    assert config.longest_session_lifetime == 12 * 3600.0


def test_allowlist_parsed(files: Files) -> None:
    tenants = edit(TENANTS, "      - 192.0.2.0/24\n", (
        "      - 192.0.2.0/24\n      - 2001:db8:10::/48\n      - 203.0.113.7/32\n"
    ))

    networks = files.load(tenants=tenants).tenants["noord"].config.allowed_ips

    assert networks == [
        ipaddress.ip_network("192.0.2.0/24"),
        ipaddress.ip_network("2001:db8:10::/48"),
        ipaddress.ip_network("203.0.113.7/32"),
    ]


def test_hostnames_normalised(files: Files) -> None:
    gateway = edit(GATEWAY, "  - medimo.example.nl\n", "  - Medimo.Example.NL.\n")

    hostnames = files.load(gateway=gateway).gateway.public_hostnames

    assert hostnames == ["medimo.example.nl"]


def test_listen_host_string(files: Files) -> None:
    gateway = GATEWAY + "listen:\n  host: '::'\n"

    assert files.load(gateway=gateway).gateway.listen.host == ["::"]


def test_file_secret_from_file_folder(files: Files) -> None:
    (files.folder / "secrets").mkdir()
    # Surrounding whitespace is stripped, so the random bytes get fixed ends.
    key = b"k" + secrets.token_bytes(38) + b"k"
    (files.folder / "secrets/session-key").write_bytes(key + b"\n")
    gateway = edit(GATEWAY, "{env: TEST_SESSION_KEY}", "{file: secrets/session-key}")

    (loaded,) = files.load(gateway=gateway).gateway.session.keys

    assert loaded.reveal() == key


def test_env_secret_value(files: Files) -> None:
    files.setenv("TEST_SESSION_KEY", "k" * 40)

    (loaded,) = files.load().gateway.session.keys

    assert loaded.reveal() == b"k" * 40


def test_secret_repr_hides_value(files: Files) -> None:
    files.setenv("TEST_SESSION_KEY", "hidden-" + "k" * 40)

    (loaded,) = files.load().gateway.session.keys

    assert isinstance(loaded, Secret)
    assert "hidden" not in repr(loaded)
    assert "hidden" not in str(files.load().gateway)


def test_tenants_file_elsewhere(files: Files) -> None:
    other = files.folder / "tenants"
    other.mkdir()
    (other / "certs").mkdir()
    (files.folder / "certs/noord.pem").rename(other / "certs/noord.pem")
    (files.folder / "certs/ca.pem").rename(other / "certs/ca.pem")
    (other / "list.yaml").write_text(TENANTS)
    files.gateway_path.write_text(GATEWAY + "tenants_file: tenants/list.yaml\n")

    config = load_config(files.gateway_path)

    assert config.tenants_path == other / "list.yaml"
    assert config.tenants["noord"].pinned[0].path == other / "certs/noord.pem"


def test_database_relative_sqlite(files: Files) -> None:
    gateway = GATEWAY + "database:\n  url: sqlite+aiosqlite:///data/gateway.db\n"

    url = files.load(gateway=gateway).gateway.database.url

    assert url == f"sqlite+aiosqlite:///{files.folder / 'data/gateway.db'}"


def test_database_absolute_sqlite(files: Files) -> None:
    gateway = GATEWAY + "database:\n  url: sqlite+aiosqlite:////var/lib/gw.db\n"

    url = files.load(gateway=gateway).gateway.database.url

    assert url == "sqlite+aiosqlite:////var/lib/gw.db"


def test_database_url_from_env(files: Files) -> None:
    url = "postgresql+asyncpg://gateway:pw@127.0.0.1:5432/gateway"
    files.setenv("TEST_DATABASE_URL", url)
    gateway = GATEWAY + "database:\n  url: {env: TEST_DATABASE_URL}\n"

    assert files.load(gateway=gateway).gateway.database.url == url


# --- allowlists ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        pytest.param("10.0.0.0/33", "prefix length must be a number from 0 to 32", id="prefix-33"),
        pytest.param("2001:db8::/129", "from 0 to 128", id="ipv6-prefix-129"),
        pytest.param("10.0.0.0/08", "prefix length", id="prefix-leading-zero"),
        pytest.param("10.0.0.1/8", "has host bits set", id="host-bits"),
        pytest.param("2001:db8::1/32", "has host bits set", id="ipv6-host-bits"),
        pytest.param("010.0.0.0/8", "has leading zeros", id="leading-zeros"),
        pytest.param("10.0.0.0", "has no prefix length", id="no-prefix"),
        pytest.param("2001:db8::1", "has no prefix length", id="ipv6-no-prefix"),
        pytest.param("10.0.0.300/32", "is not an IPv4 or IPv6 address", id="bad-octet"),
        pytest.param("fe80::%eth0/64", "is not an IPv4 or IPv6 address", id="zone-id"),
        pytest.param("localhost/32", "is not an IPv4 or IPv6 address", id="hostname"),
    ],
)
def test_allowlist_invalid_cidr(files: Files, value: str, rule: str) -> None:
    tenants = edit(TENANTS, "      - 192.0.2.0/24\n", f"      - {value}\n")

    problem = files.error(tenants=tenants)

    assert problem.startswith(
        tenant_prefix(files, tenants, value, "noord", "allowed_ips[0]")
    )
    assert f"'{value}'" in problem
    assert rule in problem


def test_host_bits_suggests_network(files: Files) -> None:
    tenants = edit(TENANTS, "192.0.2.0/24", "192.0.2.77/24")

    problem = files.error(tenants=tenants)

    assert "'192.0.2.0/24'" in problem
    assert "'192.0.2.77/32'" in problem


def test_allowlist_number_rejected(files: Files) -> None:
    tenants = edit(TENANTS, "      - 192.0.2.0/24\n", "      - 10\n")

    problem = files.error(tenants=tenants)

    assert "allowed_ips[0]: 10 is not a CIDR" in problem


def test_second_entry_located(files: Files) -> None:
    tenants = edit(TENANTS, "      - 192.0.2.0/24\n", (
        "      - 192.0.2.0/24\n      - 10.0.0.1/8\n"
    ))

    problem = files.error(tenants=tenants)

    assert problem.startswith(
        tenant_prefix(files, tenants, "10.0.0.1/8", "noord", "allowed_ips[1]")
    )


EVERYONE = [
    pytest.param("0.0.0.0/0", id="ipv4-all"),
    pytest.param("::/0", id="ipv6-all"),
    pytest.param("::ffff:0:0/96", id="ipv4-mapped-all"),
    pytest.param("::fffe:0:0/95", id="ipv4-mapped-supernet"),
]


@pytest.mark.parametrize("value", EVERYONE)
def test_allowlist_everyone_rejected(files: Files, value: str) -> None:
    tenants = edit(TENANTS, "      - 192.0.2.0/24\n", f"      - {value}\n")

    problem = files.error(tenants=tenants)

    assert problem.startswith(
        tenant_prefix(files, tenants, f"- {value}", "noord", "allowed_ips[0]")
    )
    assert f"'{value}' admits every address" in problem
    assert "allow_any_ip: true" in problem


@pytest.mark.parametrize("value", EVERYONE)
def test_allow_any_ip_warns(files: Files, value: str) -> None:
    tenants = edit(TENANTS, "      - 192.0.2.0/24\n", (
        f"      - {value}\n    allow_any_ip: true\n"
    ))

    warnings = files.load(tenants=tenants).warnings

    expected = tenant_prefix(files, tenants, f"- {value}", "noord", "allowed_ips[0]")
    assert any(
        warning.startswith(expected + "warning: ") and f"'{value}'" in warning
        for warning in warnings
    ), warnings


def test_allow_any_ip_alone_warns(files: Files) -> None:
    tenants = edit(TENANTS, "      - 192.0.2.0/24\n", (
        "      - 192.0.2.0/24\n    allow_any_ip: true\n"
    ))

    warnings = files.load(tenants=tenants).warnings

    expected = tenant_prefix(files, tenants, "allow_any_ip", "noord", "allow_any_ip")
    assert any(warning.startswith(expected + "warning: on") for warning in warnings)


def test_narrow_ranges_not_everyone(files: Files) -> None:
    tenants = edit(TENANTS, "      - 192.0.2.0/24\n", (
        "      - 0.0.0.0/1\n      - ::ffff:0:0/97\n      - 2000::/3\n"
    ))

    files.load(tenants=tenants)


def test_empty_allowlist_loads(files: Files) -> None:
    tenants = edit(TENANTS, "    allowed_ips:\n      - 192.0.2.0/24\n", (
        "    allowed_ips: []\n"
    ))

    assert files.load(tenants=tenants).tenants["noord"].config.allowed_ips == []


def test_trusted_proxy_checked(files: Files) -> None:
    gateway = GATEWAY + "trusted_proxies:\n  - 10.1.0.1/24\n"

    problem = files.error(gateway=gateway)

    assert problem.startswith(
        gateway_prefix(files, gateway, "10.1.0.1/24", "trusted_proxies[0]")
    )
    assert "has host bits set" in problem


# --- certificate files ----------------------------------------------------------


def _write_missing(folder: Path) -> None:
    pass


def _write_empty(folder: Path) -> None:
    (folder / "certs/bad.pem").write_bytes(b"")


def _write_directory(folder: Path) -> None:
    (folder / "certs/bad.pem").mkdir()


def _write_private_key(folder: Path) -> None:
    key = (folder / "certs/noord-key.pem").read_bytes()
    (folder / "certs/bad.pem").write_bytes(key)


def _write_corrupt(folder: Path) -> None:
    pem = (folder / "certs/noord.pem").read_text().splitlines()
    pem[2] = pem[2][:10] + "!!!!" + pem[2][14:]
    (folder / "certs/bad.pem").write_text("\n".join(pem) + "\n")


def _write_truncated(folder: Path) -> None:
    pem = (folder / "certs/noord.pem").read_text()
    (folder / "certs/bad.pem").write_text(pem[: len(pem) // 2])


def _write_text(folder: Path) -> None:
    (folder / "certs/bad.pem").write_text("not a certificate\n")


def _write_two(folder: Path) -> None:
    pem = (folder / "certs/noord.pem").read_bytes()
    (folder / "certs/bad.pem").write_bytes(pem + (folder / "certs/ca.pem").read_bytes())


@pytest.mark.parametrize(
    ("prepare", "rule"),
    [
        pytest.param(_write_missing, "cannot be read: No such file", id="missing"),
        pytest.param(_write_empty, "is empty", id="empty"),
        pytest.param(_write_directory, "cannot be read", id="unreadable-directory"),
        pytest.param(_write_private_key, "contains a private key", id="private-key"),
        pytest.param(_write_corrupt, "no valid PEM or DER certificate", id="corrupt-pem"),
        pytest.param(_write_truncated, "no valid PEM or DER certificate", id="truncated"),
        pytest.param(_write_text, "no valid PEM or DER certificate", id="text"),
        pytest.param(_write_two, "holds 2 certificates", id="two-in-one-file"),
    ],
)
def test_pinned_certificate_bad(files: Files, prepare: Any, rule: str) -> None:
    prepare(files.folder)
    tenants = edit(TENANTS, "certs/noord.pem", "certs/bad.pem")

    problem = files.error(tenants=tenants)

    assert problem.startswith(
        tenant_prefix(files, tenants, "certs/bad.pem", "noord", "certificates[0]")
    )
    assert f"'{files.folder / 'certs/bad.pem'}'" in problem
    assert rule in problem


def test_der_certificate_accepted(files: Files) -> None:
    pem = (files.folder / "certs/noord.pem").read_bytes()
    (files.folder / "certs/noord.der").write_bytes(_pem_to_der(pem))
    tenants = edit(TENANTS, "certs/noord.pem", "certs/noord.der")

    pinned = files.load(tenants=tenants).tenants["noord"].pinned

    assert pinned[0].der == _pem_to_der(pem)


def test_ca_file_missing(files: Files) -> None:
    tenants = edit(TENANTS, "certs/ca.pem", "certs/absent-ca.pem")

    problem = files.error(tenants=tenants)

    assert problem.startswith(
        tenant_prefix(files, tenants, "certs/absent-ca.pem", "zuid", "ca_file")
    )
    assert "absent-ca.pem" in problem


def test_crl_file_missing(files: Files) -> None:
    tenants = edit(TENANTS, "    subject_name: zuid.ysis.example\n", (
        "    subject_name: zuid.ysis.example\n    crl_file: certs/absent.crl\n"
    ))

    problem = files.error(tenants=tenants)

    assert problem.startswith(
        tenant_prefix(files, tenants, "crl_file", "zuid", "crl_file")
    )
    assert "absent.crl" in problem


def test_server_certificate_missing(files: Files) -> None:
    gateway = edit(GATEWAY, "tls/server.pem", "tls/absent.pem")

    problem = files.error(gateway=gateway)

    assert problem.startswith(
        gateway_prefix(files, gateway, "tls/absent.pem", "tls.certificate")
    )
    assert f"'{files.folder / 'tls/absent.pem'}'" in problem


def test_server_certificate_is_key(files: Files) -> None:
    gateway = edit(GATEWAY, "certificate: tls/server.pem", "certificate: tls/server-key.pem")

    problem = files.error(gateway=gateway)

    assert problem.startswith(
        gateway_prefix(files, gateway, "certificate:", "tls.certificate")
    )
    assert "contains a private key where a certificate belongs" in problem


def test_server_key_is_certificate(files: Files) -> None:
    gateway = edit(GATEWAY, "private_key: tls/server-key.pem", "private_key: tls/server.pem")

    problem = files.error(gateway=gateway)

    assert problem.startswith(
        gateway_prefix(files, gateway, "private_key:", "tls.private_key")
    )
    assert "holds no PEM private key" in problem


def test_server_key_missing(files: Files) -> None:
    gateway = edit(GATEWAY, "tls/server-key.pem", "tls/absent-key.pem")

    problem = files.error(gateway=gateway)

    assert problem.startswith(
        gateway_prefix(files, gateway, "absent-key.pem", "tls.private_key")
    )
    assert "absent-key.pem" in problem


def test_expiring_certificate_warns(files: Files) -> None:
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=10)
    files.issue("noord", not_after=soon)

    warnings = files.load().warnings

    expected = tenant_prefix(files, TENANTS, "certs/noord.pem", "noord", "certificates[0]")
    (warning,) = [warning for warning in warnings if warning.startswith(expected)]
    assert f"expires on {soon:%Y-%m-%d}" in warning
    assert "noord.pem" in warning


def test_expired_certificate_warns(files: Files) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    files.issue("noord", not_before=past - dt.timedelta(days=30), not_after=past)

    warnings = files.load().warnings

    assert any(f"expired on {past:%Y-%m-%d}" in warning for warning in warnings)


@pytest.mark.parametrize("text", ["", "# every tenant was here\n", "other: 1\n"])
def test_tenants_file_without_list(files: Files, text: str) -> None:
    problem = files.error(tenants=text)

    assert "has no 'tenants' list" in problem
    assert "tenants: []" in problem


def test_empty_tenant_list_warns(files: Files) -> None:
    config = files.load(tenants="tenants: []\n")

    assert config.tenants == {}
    assert any("no tenants" in warning for warning in config.warnings)


def test_deep_nesting_is_error(files: Files) -> None:
    problem = files.error(tenants="tenants: " + "[" * 3000 + "]" * 3000 + "\n")

    assert problem.endswith("invalid YAML: nested too deeply for a configuration file")


def test_unknown_user_home_is_error(files: Files) -> None:
    tenants = edit(TENANTS, "certs/noord.pem", "~nosuchuser/noord.pem")

    problem = files.error(tenants=tenants)

    assert "'~nosuchuser/noord.pem' starts with the home folder of an unknown user" in problem


def test_nul_in_path_is_error(files: Files) -> None:
    tenants = edit(TENANTS, "certs/noord.pem", '"certs/noord\\0.pem"')

    problem = files.error(tenants=tenants)

    assert "is not a file path" in problem


def test_invalid_tenant_still_reports_files(files: Files) -> None:
    tenants = edit(TENANTS, "      - certs/noord.pem", "      - certs/absent.pem")
    tenants = edit(tenants, "    display_name: Zorggroep Noord\n", "")

    problems = files.failure(tenants=tenants).problems

    assert len(problems) == 2
    assert "required key 'display_name' is missing" in problems[0]
    assert "absent.pem' cannot be read" in problems[1]


def test_huge_integer_is_error(files: Files) -> None:
    problem = files.error(tenants=TENANTS + "extra: " + "9" * 5000 + "\n")

    assert "invalid YAML" in problem
    assert "4300 digits" in problem


def test_duration_over_a_year_is_error(files: Files) -> None:
    problem = files.error(gateway=GATEWAY + "shutdown_timeout: 3000000d\n")

    assert "longer than the longest duration allowed, 366d" in problem


def test_fifo_certificate_is_error(files: Files) -> None:
    os.mkfifo(files.folder / "certs/noord.fifo")
    tenants = edit(TENANTS, "certs/noord.pem", "certs/noord.fifo")

    problem = files.error(tenants=tenants)

    assert "noord.fifo' is not a regular file" in problem


def test_connect_timeout_over_timeout_warns(files: Files) -> None:
    gateway = edit(GATEWAY, "  url: http://127.0.0.1:9\n", "  url: http://127.0.0.1:9\n  timeout: 2s\n")

    warnings = files.load(gateway=gateway).warnings

    (warning,) = [warning for warning in warnings if "upstream.connect_timeout" in warning]
    assert "5 s is longer than upstream.timeout (2 s)" in warning


def test_default_timeouts_no_warning(files: Files) -> None:
    warnings = files.load().warnings

    assert not [warning for warning in warnings if "connect_timeout" in warning]


def test_distant_expiry_no_warning(files: Files) -> None:
    files.issue("noord", not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=31))

    warnings = files.load().warnings

    assert not any("expire" in warning for warning in warnings)


def test_expiry_uses_given_now(files: Files) -> None:
    # trustme certificates are valid until 3000-01-01.
    later = dt.datetime(3000, 1, 2, tzinfo=dt.UTC)

    config = load_config(files.write(), now=later)

    assert any("expired on" in warning for warning in config.warnings)


def test_expiring_server_certificate_warns(files: Files) -> None:
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=5)
    server = files.ca.issue_cert("medimo.example.nl", not_after=soon)
    server.cert_chain_pems[0].write_to_path(str(files.folder / "tls/server.pem"))

    warnings = files.load().warnings

    expected = gateway_prefix(files, GATEWAY, "certificate:", "tls.certificate")
    assert any(warning.startswith(expected + "warning: ") for warning in warnings)


# --- tenants: pins, methods and rules --------------------------------------------


def test_same_certificate_twice(files: Files) -> None:
    tenants = edit(TENANTS, (
        "    ca_file: certs/ca.pem\n    subject_name: zuid.ysis.example\n"
    ), "    certificates:\n      - certs/noord.pem\n")

    problem = files.error(tenants=tenants)

    second = tenants.index("name: zuid")
    line = tenants[:second].count("\n") + 4
    assert problem.startswith(f"{files.tenants_path}:{line}: tenant 'zuid': certificates[0]: ")
    assert "noord.pem" in problem
    assert "tenant 'noord'" in problem


def test_same_certificate_copied(files: Files) -> None:
    copy = files.folder / "certs/copy.pem"
    copy.write_bytes((files.folder / "certs/noord.pem").read_bytes())
    tenants = edit(TENANTS, (
        "    ca_file: certs/ca.pem\n    subject_name: zuid.ysis.example\n"
    ), "    certificates:\n      - certs/copy.pem\n")

    problem = files.error(tenants=tenants)

    assert problem.startswith(
        tenant_prefix(files, tenants, "certs/copy.pem", "zuid", "certificates[0]")
    )
    assert "is also pinned by tenant 'noord'" in problem


def test_ca_pin_accepts_other_pin(files: Files) -> None:
    tenants = edit(TENANTS, "subject_name: zuid.ysis.example", "subject_name: noord.ysis.example")

    problem = files.error(tenants=tenants)

    assert problem.startswith(
        tenant_prefix(files, tenants, "subject_name", "zuid", "subject_name")
    )
    assert "'noord.ysis.example'" in problem
    assert "tenant 'noord'" in problem


def test_same_ca_and_subject(files: Files) -> None:
    tenants = TENANTS + (
        "  - name: west\n    display_name: West\n    ca_file: certs/ca.pem\n"
        "    subject_name: ZUID.ysis.example\n    allowed_ips: []\n"
    )

    problem = files.error(tenants=tenants)

    assert problem.startswith(
        tenant_prefix(files, tenants, "ZUID.ysis.example", "west", "subject_name")
    )
    assert "tenant 'zuid'" in problem


def test_ca_file_without_subject(files: Files) -> None:
    tenants = edit(TENANTS, "    subject_name: zuid.ysis.example\n", "")

    problem = files.error(tenants=tenants)

    assert problem.startswith(
        tenant_prefix(files, tenants, "ca_file", "zuid", "ca_file")
    )
    assert "'certs/ca.pem'" in problem
    assert "needs subject_name" in problem or "without subject_name" in problem


def test_certificates_and_ca_file(files: Files) -> None:
    tenants = edit(TENANTS, "    ca_file: certs/ca.pem\n", (
        "    ca_file: certs/ca.pem\n    certificates:\n      - certs/noord.pem\n"
    ))

    problems = files.failure(tenants=tenants).problems

    assert any(
        problem.startswith(tenant_prefix(files, tenants, "ca_file", "zuid", "ca_file"))
        and "pin with one" in problem
        for problem in problems
    ), problems


def test_no_pin(files: Files) -> None:
    tenants = edit(TENANTS, "    certificates:\n      - certs/noord.pem\n", "")

    problem = files.error(tenants=tenants)

    assert problem.startswith(
        tenant_prefix(files, tenants, "name: noord", "noord", "certificates")
    )
    assert "a certificate pin is required" in problem


@pytest.mark.parametrize("count", [0, 3], ids=["none", "three"])
def test_pin_count(files: Files, count: int) -> None:
    for index in range(count):
        files.issue(f"extra{index}")
    listed = "".join(f"      - certs/extra{index}.pem\n" for index in range(count))
    tenants = edit(TENANTS, "    certificates:\n      - certs/noord.pem\n", (
        f"    certificates:{' []' if not count else ''}\n{listed}"
    ))

    problem = files.error(tenants=tenants)

    assert problem.startswith(
        tenant_prefix(files, tenants, "certificates:", "noord", "certificates")
    )
    assert f"{count} files are listed" in problem


def test_rotation_pins_two(files: Files) -> None:
    files.issue("noord-next")
    tenants = edit(TENANTS, "      - certs/noord.pem\n", (
        "      - certs/noord.pem\n      - certs/noord-next.pem\n"
    ))

    assert len(files.load(tenants=tenants).tenants["noord"].pinned) == 2


@pytest.mark.parametrize(
    "method_line",
    [
        pytest.param("    method: ysis\n", id="explicit-ysis"),
        pytest.param("", id="default-ysis"),
    ],
)
def test_ysis_with_oidc_section(files: Files, method_line: str) -> None:
    tenants = edit(TENANTS, "    display_name: Zorggroep Noord\n", (
        f"    display_name: Zorggroep Noord\n{method_line}"
        "    oidc:\n      issuer: https://login.example.nl\n"
    ))

    problem = files.error(tenants=tenants)

    assert problem.startswith(tenant_prefix(files, tenants, "oidc:", "noord", "oidc"))
    assert "'ysis'" in problem
    assert "one SSO method" in problem


def test_oidc_method_unsupported(files: Files) -> None:
    tenants = edit(TENANTS, "    display_name: Zorggroep Noord\n", (
        "    display_name: Zorggroep Noord\n    method: oidc\n"
        "    oidc:\n      issuer: https://login.example.nl\n"
    ))

    problem = files.error(tenants=tenants)

    assert problem.startswith(tenant_prefix(files, tenants, "method:", "noord", "method"))
    assert "'oidc' is not supported" in problem


def test_unknown_method(files: Files) -> None:
    tenants = edit(TENANTS, "    display_name: Zorggroep Noord\n", (
        "    display_name: Zorggroep Noord\n    method: saml\n"
    ))

    problem = files.error(tenants=tenants)

    assert problem.startswith(tenant_prefix(files, tenants, "method:", "noord", "method"))
    assert "'saml'" in problem


def test_duplicate_tenant_name(files: Files) -> None:
    tenants = edit(TENANTS, "  - name: zuid\n", "  - name: noord\n")

    problems = files.failure(tenants=tenants).problems

    assert len(problems) == 1, problems
    second = tenants.index("name: noord", tenants.index("name: noord") + 1)
    line = tenants[:second].count("\n") + 1
    assert problems[0].startswith(f"{files.tenants_path}:{line}: tenant 'noord': name: ")
    assert "duplicate tenant name 'noord'" in problems[0]


def test_duplicate_tenant_still_checked(files: Files) -> None:
    tenants = edit(TENANTS, "  - name: zuid\n", "  - name: noord\n")
    tenants = edit(tenants, "certs/ca.pem", "certs/absent.pem")

    problems = files.failure(tenants=tenants).problems

    assert len(problems) == 2, problems
    assert "absent.pem" in problems[1]


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("Noord", id="upper-case"),
        pytest.param("noord_1", id="underscore"),
        pytest.param("-noord", id="leading-dash"),
        pytest.param("noord.nl", id="dot"),
        pytest.param("a" * 64, id="64-characters"),
        pytest.param("zorg groep", id="space"),
        pytest.param("nóórd", id="non-ascii"),
    ],
)
def test_invalid_tenant_name(files: Files, name: str) -> None:
    tenants = edit(TENANTS, "  - name: noord\n", f"  - name: '{name}'\n")

    problem = files.error(tenants=tenants)

    prefix = tenant_prefix(files, tenants, f"name: '{name}'", name, "name")
    assert problem.startswith(prefix)
    assert f"{name!r} is not a valid tenant name" in problem


def test_empty_tenant_name(files: Files) -> None:
    tenants = edit(TENANTS, "  - name: noord\n", "  - name: ''\n")

    problem = files.error(tenants=tenants)

    assert problem.startswith(tenant_prefix(files, tenants, "name: ''", "", "name"))
    assert "'' is not a valid tenant name" in problem


def test_longest_tenant_name(files: Files) -> None:
    name = "a" * 63
    tenants = edit(TENANTS, "  - name: noord\n", f"  - name: {name}\n")

    assert name in files.load(tenants=tenants).tenants


def test_numeric_tenant_name(files: Files) -> None:
    tenants = edit(TENANTS, "  - name: noord\n", "  - name: 42\n")

    problem = files.error(tenants=tenants)

    assert problem.startswith(f"{files.tenants_path}:2: tenants[0]: name: ")
    assert "got 42: write it in quotes" in problem


def test_missing_display_name(files: Files) -> None:
    tenants = edit(TENANTS, "    display_name: Zorggroep Noord\n", "")

    problem = files.error(tenants=tenants)

    assert problem.startswith(tenant_prefix(files, tenants, "name: noord", "noord", "display_name"))
    assert "required key 'display_name' is missing" in problem


def test_launch_signature_needs_secret(files: Files) -> None:
    tenants = edit(TENANTS, "      - 192.0.2.0/24\n", (
        "      - 192.0.2.0/24\n    launch_signature: true\n"
    ))

    problem = files.error(tenants=tenants)

    assert problem.startswith(
        tenant_prefix(files, tenants, "launch_signature", "noord", "launch_signature")
    )
    assert "launch_secret is missing" in problem


def test_launch_signature_with_secret(files: Files) -> None:
    files.setenv("TEST_LAUNCH_SECRET", secrets.token_urlsafe(32))
    tenants = edit(TENANTS, "      - 192.0.2.0/24\n", (
        "      - 192.0.2.0/24\n    launch_signature: true\n"
        "    launch_secret: {env: TEST_LAUNCH_SECRET}\n"
    ))

    config = files.load(tenants=tenants)

    assert config.tenants["noord"].config.launch_signature is True
    assert not any("tenant 'noord': launch_signature" in w for w in config.warnings)


def test_launch_signature_off_warns(files: Files) -> None:
    warnings = files.load().warnings

    expected = tenant_prefix(files, TENANTS, "name: noord", "noord", "launch_signature")
    assert any(warning.startswith(expected + "warning: off") for warning in warnings)


def test_launch_secret_short(files: Files) -> None:
    files.setenv("TEST_LAUNCH_SECRET", "s" * 31)
    tenants = edit(TENANTS, "      - 192.0.2.0/24\n", (
        "      - 192.0.2.0/24\n    launch_signature: true\n"
        "    launch_secret: {env: TEST_LAUNCH_SECRET}\n"
    ))

    problem = files.error(tenants=tenants)

    assert problem.startswith(
        tenant_prefix(files, tenants, "launch_secret", "noord", "launch_secret")
    )
    assert "is 31 bytes, at least 32 are required" in problem


@pytest.mark.parametrize(
    ("views", "value"),
    [
        pytest.param("[default, nosuch]", "nosuch", id="unknown"),
        pytest.param("[Status]", "Status", id="wrong-case"),
    ],
)
def test_tenant_unknown_view(files: Files, views: str, value: str) -> None:
    tenants = edit(TENANTS, "      - 192.0.2.0/24\n", (
        f"      - 192.0.2.0/24\n    views: {views}\n"
    ))

    problem = files.error(tenants=tenants)

    assert problem.startswith(tenant_prefix(files, tenants, "views:", "noord", "views"))
    assert f"unknown view '{value}'" in problem
    assert "toedienen" in problem


def test_gateway_unknown_view(files: Files) -> None:
    gateway = GATEWAY + "views:\n  nosuch: /x\n"

    problem = files.error(gateway=gateway)

    assert problem.startswith(gateway_prefix(files, gateway, "views:", "views"))
    assert "unknown view 'nosuch'" in problem


@pytest.mark.parametrize(
    ("template", "rule"),
    [
        pytest.param("clients/status", "must be a path starting with one '/'", id="relative"),
        pytest.param("//evil.example/x", "must be a path starting with one '/'", id="scheme-relative"),
        pytest.param("/clients/{bsn}", "may only use the field {client_id}", id="unknown-field"),
        pytest.param("/a b", "contains spaces", id="space"),
    ],
)
def test_gateway_bad_view_path(files: Files, template: str, rule: str) -> None:
    gateway = GATEWAY + f"views:\n  status: '{template}'\n"

    problem = files.error(gateway=gateway)

    assert problem.startswith(gateway_prefix(files, gateway, "views:", "views"))
    assert f"'{template}'" in problem
    assert rule in problem


def test_gateway_view_override(files: Files) -> None:
    gateway = GATEWAY + "views:\n  werklijst: /lijst\n"

    views = files.load(gateway=gateway).gateway.views

    assert views == {**DEFAULT_VIEWS, "werklijst": "/lijst"}


# --- YAML surprises --------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("no", id="no"),
        pytest.param("yes", id="yes"),
        pytest.param("on", id="on"),
        pytest.param("off", id="off"),
        pytest.param("True", id="capital-true"),
        pytest.param("'true'", id="quoted-true"),
        pytest.param("1", id="one"),
    ],
)
def test_yaml_word_not_boolean(files: Files, value: str) -> None:
    tenants = edit(TENANTS, "      - 192.0.2.0/24\n", (
        f"      - 192.0.2.0/24\n    allow_self_link: {value}\n"
    ))

    problem = files.error(tenants=tenants)

    assert problem.startswith(
        tenant_prefix(files, tenants, "allow_self_link", "noord", "allow_self_link")
    )
    assert "is not a boolean: write true or false" in problem
    assert value.strip("'") in problem


@pytest.mark.parametrize(
    "key",
    [
        "allow_any_ip",
        "allow_self_link",
        "confirm_password",
        "client_context",
        "launch_signature",
        "bind_session_to_certificate",
    ],
)
def test_no_is_error_for_every_flag(files: Files, key: str) -> None:
    tenants = edit(TENANTS, "      - 192.0.2.0/24\n", (
        f"      - 192.0.2.0/24\n    {key}: no\n"
    ))

    problem = files.error(tenants=tenants)

    assert problem.startswith(tenant_prefix(files, tenants, f"{key}:", "noord", key))
    assert "'no' is not a boolean" in problem


def test_duplicate_yaml_key_gateway(files: Files) -> None:
    gateway = GATEWAY + "public_hostnames:\n  - other.example.nl\n"

    problem = files.error(gateway=gateway)

    line = gateway.count("\n") - 1
    assert problem.startswith(f"{files.gateway_path}:{line}: public_hostnames: ")
    assert "duplicate key 'public_hostnames'" in problem
    assert "line 4" in problem


def test_duplicate_yaml_key_tenant(files: Files) -> None:
    tenants = edit(TENANTS, "    display_name: Zorggroep Zuid\n", (
        "    display_name: Zorggroep Zuid\n    display_name: Zuid\n"
    ))

    problem = files.error(tenants=tenants)

    assert problem.startswith(
        tenant_prefix(files, tenants, "display_name: Zuid", "zuid", "display_name")
    )
    assert "duplicate key 'display_name'" in problem


def test_yaml_syntax_error(files: Files) -> None:
    tenants = TENANTS + "  - name: [unclosed\n"

    problem = files.error(tenants=tenants)

    assert problem.startswith(f"{files.tenants_path}: invalid YAML: ")


def test_yaml_alias_error(files: Files) -> None:
    tenants = edit(TENANTS, "    allowed_ips:\n      - 198.51.100.0/24\n", (
        "    allowed_ips: &ips\n      - 198.51.100.0/24\n"
    )) + "  - name: west\n    display_name: West\n    certificates: [certs/west.pem]\n    allowed_ips: *ips\n"
    files.issue("west")

    problems = files.failure(tenants=tenants).problems

    assert any("tenant 'west': allowed_ips: YAML aliases are not allowed" in p for p in problems)


def test_gateway_file_not_mapping(files: Files) -> None:
    problem = files.error(gateway="- a\n- b\n")

    assert problem == f"{files.gateway_path}:1: must be a mapping of keys"


def test_tenants_not_list(files: Files) -> None:
    problem = files.error(tenants="tenants: noord\n")

    assert problem == f"{files.tenants_path}:1: tenants: must be a list of tenants"


def test_tenant_not_mapping(files: Files) -> None:
    problem = files.error(tenants=TENANTS + "  - west\n")

    line = TENANTS.count("\n") + 1
    assert problem == f"{files.tenants_path}:{line}: tenants[2]: must be a mapping of keys"


def test_tenants_file_missing(files: Files) -> None:
    files.write()
    files.tenants_path.unlink()

    with pytest.raises(ConfigError) as caught:
        load_config(files.gateway_path)

    assert caught.value.problems == [f"{files.tenants_path}: file not found"]


def test_gateway_file_missing(files: Files) -> None:
    path = files.folder / "absent.yaml"

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert caught.value.problems == [f"{path}: file not found"]


# --- unknown and missing keys ----------------------------------------------------


@pytest.mark.parametrize(
    ("where", "gateway", "tenants", "key"),
    [
        pytest.param(
            "gateway", GATEWAY + "colour: red\n", TENANTS, "colour", id="top-level"
        ),
        pytest.param(
            "gateway",
            edit(GATEWAY, "  url: http://127.0.0.1:9\n", "  url: http://127.0.0.1:9\n  colour: red\n"),
            TENANTS,
            "upstream.colour",
            id="nested",
        ),
        pytest.param(
            "gateway",
            GATEWAY.replace("session:\n", "session:\n  colour: red\n"),
            TENANTS,
            "session.colour",
            id="nested-session",
        ),
        pytest.param(
            "tenants", GATEWAY, TENANTS + "colour: red\n", "colour", id="tenants-top-level"
        ),
        pytest.param(
            "tenant",
            GATEWAY,
            edit(TENANTS, "      - 192.0.2.0/24\n", "      - 192.0.2.0/24\n    colour: red\n"),
            "colour",
            id="tenant",
        ),
        pytest.param(
            "tenant",
            GATEWAY,
            edit(TENANTS, "      - 192.0.2.0/24\n", (
                "      - 192.0.2.0/24\n    session:\n      colour: red\n"
            )),
            "session.colour",
            id="tenant-session",
        ),
        pytest.param(
            "tenant",
            GATEWAY,
            edit(TENANTS, "      - 192.0.2.0/24\n", "      - 192.0.2.0/24\n    allowed_ip: []\n"),
            "allowed_ip",
            id="tenant-typo",
        ),
    ],
)
def test_unknown_key(
    files: Files, where: str, gateway: str, tenants: str, key: str
) -> None:
    problem = files.error(gateway=gateway, tenants=tenants)

    name = key.rsplit(".", 1)[-1]
    if where == "gateway":
        prefix = gateway_prefix(files, gateway, f"{name}:", key)
    elif where == "tenants":
        prefix = f"{files.tenants_path}:{line_of(tenants, f'{name}:')}: {key}: "
    else:
        prefix = tenant_prefix(files, tenants, f"{name}:", "noord", key)
    assert problem.startswith(prefix)
    assert f"unknown key '{name}'" in problem


@pytest.mark.parametrize(
    ("removed", "key"),
    [
        pytest.param("public_hostnames:\n  - medimo.example.nl\n", "public_hostnames", id="hostnames"),
        pytest.param("upstream_signing_keys:\n  - {env: TEST_SIGNING_KEY}\n", "upstream_signing_keys", id="signing-keys"),
        pytest.param("  private_key: tls/server-key.pem\n", "tls.private_key", id="private-key"),
    ],
)
def test_missing_gateway_key(files: Files, removed: str, key: str) -> None:
    problem = files.error(gateway=edit(GATEWAY, removed, ""))

    assert f": {key}: required key '{key.rsplit('.', 1)[-1]}' is missing" in problem


# --- secrets ---------------------------------------------------------------------


def test_short_key(files: Files) -> None:
    files.setenv("TEST_SESSION_KEY", "k" * 31)

    problem = files.error()

    assert problem.startswith(
        gateway_prefix(files, GATEWAY, "TEST_SESSION_KEY", "session.keys[0]")
    )
    assert "env:TEST_SESSION_KEY is 31 bytes, at least 32 are required" in problem
    assert "k" * 31 not in problem


def test_short_file_key(files: Files) -> None:
    (files.folder / "signing-key").write_text("short-signing-key\n")
    gateway = edit(GATEWAY, "{env: TEST_SIGNING_KEY}", "{file: signing-key}")

    problem = files.error(gateway=gateway)

    assert problem.startswith(
        gateway_prefix(files, gateway, "signing-key}", "upstream_signing_keys[0]")
    )
    assert f"file:{files.folder / 'signing-key'} is 17 bytes" in problem
    assert "short-signing-key" not in problem


def test_key_of_32_bytes(files: Files) -> None:
    files.setenv("TEST_SESSION_KEY", "k" * 32)

    files.load()


@pytest.mark.parametrize(
    ("old", "key"),
    [
        pytest.param("{env: TEST_SESSION_KEY}", "session.keys[0]", id="session-key"),
        pytest.param("{env: TEST_SIGNING_KEY}", "upstream_signing_keys[0]", id="signing-key"),
        pytest.param("{env: TEST_API_TOKEN}", "upstream.api_token", id="api-token"),
    ],
)
def test_literal_secret(files: Files, old: str, key: str) -> None:
    literal = "Literal-Secret-" + secrets.token_hex(16)
    gateway = edit(GATEWAY, old, literal)

    problem = files.error(gateway=gateway)

    assert problem.startswith(gateway_prefix(files, gateway, literal, key))
    assert "literal secrets are not allowed" in problem
    assert literal not in problem


def test_literal_secret_in_url(files: Files) -> None:
    gateway = GATEWAY + "redis:\n  url: redis://:Hunter2-Secret@127.0.0.1:6379/0\n"

    problem = files.error(gateway=gateway)

    assert problem.startswith(gateway_prefix(files, gateway, "redis://", "redis.url"))
    assert "contains a password" in problem
    assert "Hunter2" not in problem


def test_sentinel_url_accepted(files: Files) -> None:
    gateway = GATEWAY + "redis:\n  url: redis+sentinel://10.0.0.1,10.0.0.2:26380/gw/1\n"

    config = files.load(gateway=gateway)

    assert config.gateway.redis.url == "redis+sentinel://10.0.0.1,10.0.0.2:26380/gw/1"


def test_sentinel_url_without_service(files: Files) -> None:
    gateway = GATEWAY + "redis:\n  url: redis+sentinel://10.0.0.1:26379\n"

    problem = files.error(gateway=gateway)

    assert "must end in /SERVICE" in problem


def test_literal_sentinel_password_in_url(files: Files) -> None:
    gateway = GATEWAY + "redis:\n  url: redis+sentinel://h/gw?sentinel_password=Hunter2-Secret\n"

    problem = files.error(gateway=gateway)

    assert "contains a password" in problem
    assert "Hunter2" not in problem


def test_unsupported_database_scheme(files: Files) -> None:
    files.setenv("TEST_DATABASE_URL", "mysql://gw:Hunter2-Secret@127.0.0.1/gw")
    gateway = GATEWAY + "database:\n  url: {env: TEST_DATABASE_URL}\n"

    problem = files.error(gateway=gateway)

    assert problem.startswith(gateway_prefix(files, gateway, "TEST_DATABASE_URL", "database.url"))
    assert "unsupported URL scheme 'mysql'" in problem
    assert "Hunter2" not in problem


def test_unset_env(files: Files) -> None:
    files.monkeypatch.delenv("TEST_SIGNING_KEY")

    problem = files.error()

    assert problem.startswith(
        gateway_prefix(files, GATEWAY, "TEST_SIGNING_KEY", "upstream_signing_keys[0]")
    )
    assert "environment variable 'TEST_SIGNING_KEY' is not set" in problem


def test_empty_env(files: Files) -> None:
    files.setenv("TEST_API_TOKEN", "")

    problem = files.error()

    assert "upstream.api_token: environment variable 'TEST_API_TOKEN'" in problem


def test_missing_secret_file(files: Files) -> None:
    gateway = edit(GATEWAY, "{env: TEST_API_TOKEN}", "{file: secrets/absent}")

    problem = files.error(gateway=gateway)

    assert problem.startswith(gateway_prefix(files, gateway, "secrets/absent", "upstream.api_token"))
    assert f"'{files.folder / 'secrets/absent'}' cannot be read" in problem


def test_sample_key(files: Files) -> None:
    assert hashlib.sha256(SAMPLE_KEY.encode()).hexdigest() in SAMPLE_KEY_HASHES
    files.setenv("TEST_SESSION_KEY", SAMPLE_KEY)

    problem = files.error()

    assert problem.startswith(
        gateway_prefix(files, GATEWAY, "TEST_SESSION_KEY", "session.keys[0]")
    )
    assert "env:TEST_SESSION_KEY is a published sample key" in problem
    assert SAMPLE_KEY not in problem


def test_signing_key_shared_with_session(files: Files) -> None:
    shared = secrets.token_urlsafe(32)
    files.setenv("TEST_SESSION_KEY", shared)
    files.setenv("TEST_SIGNING_KEY", shared)

    problem = files.error()

    assert problem.startswith(
        gateway_prefix(files, GATEWAY, "TEST_SIGNING_KEY", "upstream_signing_keys[0]")
    )
    assert "is also in session.keys" in problem
    assert shared not in problem


@pytest.mark.parametrize(
    "written",
    [
        pytest.param("{env: A, file: b}", id="both"),
        pytest.param("{name: A}", id="other-key"),
        pytest.param("[A]", id="list"),
        pytest.param("42", id="number"),
    ],
)
def test_malformed_secret(files: Files, written: str) -> None:
    gateway = edit(GATEWAY, "{env: TEST_API_TOKEN}", written)

    problem = files.error(gateway=gateway)

    assert problem.startswith(gateway_prefix(files, gateway, "api_token", "upstream.api_token"))
    assert "{env: NAME} or {file: PATH}" in problem


# --- durations -------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("30", id="no-unit"),
        pytest.param("5x", id="unknown-unit"),
        pytest.param("-5m", id="negative"),
        pytest.param("10 h", id="space"),
        pytest.param("h", id="no-number"),
        pytest.param("1.5", id="float-no-unit"),
    ],
)
def test_bad_duration(files: Files, value: str) -> None:
    gateway = edit(GATEWAY, "session:\n", f"session:\n  lifetime: {value}\n")

    problem = files.error(gateway=gateway)

    assert problem.startswith(gateway_prefix(files, gateway, "lifetime", "session.lifetime"))
    assert f"{value!r} is not a duration" in problem or f"{value} is not a duration" in problem
    assert "(ms, s, m, h or d)" in problem


def test_bad_tenant_duration(files: Files) -> None:
    tenants = edit(TENANTS, "      - 192.0.2.0/24\n", (
        "      - 192.0.2.0/24\n    session:\n      idle_timeout: 30\n"
    ))

    problem = files.error(tenants=tenants)

    assert problem.startswith(
        tenant_prefix(files, tenants, "idle_timeout", "noord", "session.idle_timeout")
    )
    assert "30 is not a duration" in problem


def test_min_version_number(files: Files) -> None:
    gateway = edit(GATEWAY, "  private_key: tls/server-key.pem\n", (
        "  private_key: tls/server-key.pem\n  min_version: 1.3\n"
    ))

    problem = files.error(gateway=gateway)

    assert problem.startswith(gateway_prefix(files, gateway, "min_version", "tls.min_version"))
    assert "got 1.3: write it in quotes" in problem


# --- attempt limits --------------------------------------------------------------


def attempts(section: str, body: str) -> str:
    """Return GATEWAY with ``forms.<section>`` written as the lines of ``body``."""
    return GATEWAY + f"forms:\n  {section}:\n" + body


def test_attempt_limits_set(files: Files) -> None:
    gateway = attempts("account_attempts", "    limit: 3\n    per: 1h\n")

    forms = files.load(gateway=gateway).gateway.forms

    assert forms.account_attempts.limit == 3
    assert forms.account_attempts.per == 3600.0
    assert forms.client_attempts.limit == 50


@pytest.mark.parametrize("section", ["account_attempts", "client_attempts"])
@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        pytest.param("0", "greater than or equal to 1, got 0", id="zero"),
        pytest.param("-5", "greater than or equal to 1, got -5", id="negative"),
        pytest.param("10001", "less than or equal to 10000, got 10001", id="too-large"),
        pytest.param('"5"', "a valid integer, got '5'", id="quoted"),
        pytest.param("2.5", "a valid integer, got 2.5", id="fraction"),
        pytest.param("true", "a valid integer, got True", id="boolean"),
    ],
)
def test_bad_attempt_limit(
    files: Files, section: str, limit: str, expected: str
) -> None:
    gateway = attempts(section, f"    limit: {limit}\n    per: 15m\n")

    problem = files.error(gateway=gateway)

    key = f"forms.{section}.limit"
    assert problem.startswith(gateway_prefix(files, gateway, "limit:", key))
    assert expected in problem


@pytest.mark.parametrize("section", ["account_attempts", "client_attempts"])
@pytest.mark.parametrize(
    ("per", "expected"),
    [
        pytest.param("500ms", "'500ms' is not a valid window", id="below-second"),
        pytest.param("1.5s", "'1.5s' is not a valid window", id="fraction"),
        pytest.param("2d", "'2d' is not a valid window", id="above-day"),
        pytest.param("900", "900 is not a duration", id="no-unit"),
    ],
)
def test_bad_attempt_window(
    files: Files, section: str, per: str, expected: str
) -> None:
    gateway = attempts(section, f"    limit: 5\n    per: {per}\n")

    problem = files.error(gateway=gateway)

    key = f"forms.{section}.per"
    assert problem.startswith(gateway_prefix(files, gateway, "per:", key))
    assert expected in problem


def test_attempt_window_required(files: Files) -> None:
    gateway = attempts("account_attempts", "    limit: 5\n")

    problem = files.error(gateway=gateway)

    assert problem.startswith(f"{files.gateway_path}:")
    assert ": forms.account_attempts.per: required key 'per' is missing" in problem


def test_attempt_limits_unknown_key(files: Files) -> None:
    body = "    limit: 5\n    per: 15m\n    window: 1m\n"
    gateway = attempts("client_attempts", body)

    problem = files.error(gateway=gateway)

    assert problem.startswith(
        gateway_prefix(files, gateway, "window:", "forms.client_attempts.window")
    )
    assert "unknown key 'window'" in problem


# --- SSO log -------------------------------------------------------------------


def sso_log(body: str) -> str:
    """Return GATEWAY with an ``sso_log`` section written as the lines of ``body``."""
    return GATEWAY + "sso_log:\n" + body


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("1d", RetentionPeriod(1, "d"), id="one-day"),
        pytest.param("400d", RetentionPeriod(400, "d"), id="days"),
        pytest.param("5y", RetentionPeriod(5, "y"), id="years"),
        pytest.param("100y", RetentionPeriod(100, "y"), id="maximum"),
    ],
)
def test_retention_units(files: Files, text: str, expected: RetentionPeriod) -> None:
    gateway = sso_log(f"  retention: {text}\n")

    assert files.load(gateway=gateway).gateway.sso_log.retention == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("0d", "'0d' is too short: the minimum is 1d", id="zero"),
        pytest.param("1.5y", "'1.5y' is not a retention period", id="fraction"),
        pytest.param("05y", "'05y' is not a retention period", id="leading-zero"),
        pytest.param("36h", "'36h' is not a retention period", id="hours"),
        pytest.param("5", "5 is not a retention period", id="no-unit"),
        pytest.param("101y", "'101y' is longer than the maximum", id="too-long"),
        pytest.param("36526d", "is longer than the maximum", id="too-many-days"),
    ],
)
def test_bad_retention(files: Files, text: str, expected: str) -> None:
    gateway = sso_log(f"  retention: {text}\n")

    problem = files.error(gateway=gateway)

    assert problem.startswith(
        gateway_prefix(files, gateway, "retention:", "sso_log.retention")
    )
    assert expected in problem


def test_retention_years_are_calendar_years() -> None:
    now = dt.datetime(2031, 3, 1, 9, 30, tzinfo=dt.UTC)

    cutoff = RetentionPeriod(5, "y").cutoff(now)

    assert cutoff == dt.datetime(2026, 3, 1, 9, 30, tzinfo=dt.UTC)


def test_retention_from_leap_day() -> None:
    now = dt.datetime(2028, 2, 29, 12, 0, tzinfo=dt.UTC)

    cutoff = RetentionPeriod(1, "y").cutoff(now)

    # No 29 February in 2027: the 28th keeps a day more, never a day less.
    assert cutoff == dt.datetime(2027, 2, 28, 12, 0, tzinfo=dt.UTC)


def test_retention_days() -> None:
    now = dt.datetime(2028, 3, 1, 0, 0, tzinfo=dt.UTC)

    cutoff = RetentionPeriod(2, "d").cutoff(now)

    assert cutoff == dt.datetime(2028, 2, 28, 0, 0, tzinfo=dt.UTC)


def test_sso_log_instance_set(files: Files) -> None:
    gateway = sso_log("  instance: gateway-a.example_1\n")

    assert files.load(gateway=gateway).gateway.sso_log.instance == "gateway-a.example_1"


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("gateway a", id="space"),
        pytest.param("-gateway", id="leading-dash"),
        pytest.param("g" * 65, id="65-characters"),
    ],
)
def test_bad_instance_name(files: Files, name: str) -> None:
    gateway = sso_log(f"  instance: '{name}'\n")

    problem = files.error(gateway=gateway)

    assert problem.startswith(
        gateway_prefix(files, gateway, "instance:", "sso_log.instance")
    )
    assert "is not a valid instance name" in problem


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        pytest.param("99", "greater than or equal to 100, got 99", id="too-small"),
        pytest.param("1000001", "less than or equal to 1000000", id="too-large"),
    ],
)
def test_bad_queue_size(files: Files, size: str, expected: str) -> None:
    gateway = sso_log(f"  queue_size: {size}\n")

    problem = files.error(gateway=gateway)

    assert problem.startswith(
        gateway_prefix(files, gateway, "queue_size:", "sso_log.queue_size")
    )
    assert expected in problem


# --- every problem at once -------------------------------------------------------


def test_every_problem_reported(files: Files) -> None:
    files.setenv("TEST_SESSION_KEY", "short")
    gateway = GATEWAY + "colour: red\nlink_cache:\n  ttl: 5x\n"
    gateway = edit(gateway, "tls/server.pem", "tls/absent.pem")
    tenants = edit(TENANTS, "192.0.2.0/24", "10.0.0.1/8")
    tenants = edit(tenants, "    display_name: Zorggroep Noord\n", (
        "    display_name: Zorggroep Noord\n    allow_self_link: no\n"
    ))
    tenants = edit(tenants, "    subject_name: zuid.ysis.example\n", "")
    tenants = edit(tenants, "  - name: zuid\n", "  - name: noord\n")
    tenants += (
        "  - name: west\n    display_name: West\n    certificates: [certs/absent.pem]\n"
        "    allowed_ips: ['0.0.0.0/0']\n"
    )

    problems = files.failure(gateway=gateway, tenants=tenants).problems

    expected = [
        "session.keys[0]: the key from env:TEST_SESSION_KEY is 5 bytes",
        "colour: unknown key 'colour'",
        "link_cache.ttl: '5x' is not a duration",
        "tls.certificate: certificate file",
        "tenant 'noord': allowed_ips[0]: '10.0.0.1/8' has host bits set",
        "tenant 'noord': allow_self_link: 'no' is not a boolean",
        "tenant 'noord': name: duplicate tenant name 'noord'",
        "tenant 'noord': ca_file: 'certs/ca.pem' is set without subject_name",
        "tenant 'west': certificates[0]: certificate file",
        "tenant 'west': allowed_ips[0]: '0.0.0.0/0' admits every address",
    ]
    for part in expected:
        assert any(part in problem for problem in problems), (part, problems)
    assert len(problems) == len(expected), problems


def test_gateway_errors_keep_tenants_file(files: Files) -> None:
    other = files.folder / "list.yaml"
    other.write_text(edit(TENANTS, "192.0.2.0/24", "10.0.0.1/8"))
    gateway = GATEWAY + "tenants_file: list.yaml\ncolour: red\n"
    files.gateway_path.write_text(gateway)

    with pytest.raises(ConfigError) as caught:
        load_config(files.gateway_path)

    problems = caught.value.problems
    assert len(problems) == 2, problems
    assert problems[1].startswith(f"{other}:")


def test_tls_checked_despite_errors(files: Files) -> None:
    gateway = edit(GATEWAY, "tls/server.pem", "tls/absent.pem") + "colour: red\n"

    problems = files.failure(gateway=gateway).problems

    assert len(problems) == 2, problems
    assert any("tls.certificate" in problem for problem in problems)


def test_warnings_kept_on_error(files: Files) -> None:
    failure = files.failure(gateway=GATEWAY + "colour: red\n")

    assert any("launch_signature: warning: off" in w for w in failure.warnings)


def test_config_error_message_lists_problems(files: Files) -> None:
    failure = files.failure(gateway=GATEWAY + "colour: red\nshade: blue\n")

    assert str(failure).splitlines() == failure.problems


# --- limits -----------------------------------------------------------------------


def with_limits(line: str) -> str:
    return GATEWAY + f"limits:\n  {line}\n"


def test_limits_read(files: Files) -> None:
    config = files.load(gateway=with_limits("header_timeout: 2s"))

    assert config.gateway.limits.header_timeout == 2.0


def test_limits_unknown_key(files: Files) -> None:
    gateway = with_limits("max_header_count: 50")

    problem = files.error(gateway=gateway)

    assert problem.startswith(
        gateway_prefix(files, gateway, "max_header_count", "limits.max_header_count")
    )
    assert "unknown key 'max_header_count'" in problem


def test_limits_zero_timeout(files: Files) -> None:
    gateway = with_limits("body_timeout: 0s")

    problem = files.error(gateway=gateway)

    assert problem.startswith(
        gateway_prefix(files, gateway, "body_timeout", "limits.body_timeout")
    )


def test_limits_size_as_text(files: Files) -> None:
    gateway = with_limits('max_body_size: "10485760"')

    problem = files.error(gateway=gateway)

    assert problem.startswith(
        gateway_prefix(files, gateway, "max_body_size", "limits.max_body_size")
    )


def test_limits_header_floor(files: Files) -> None:
    gateway = with_limits("max_header_field: 100")

    problem = files.error(gateway=gateway)

    assert problem.startswith(
        gateway_prefix(files, gateway, "max_header_field", "limits.max_header_field")
    )
