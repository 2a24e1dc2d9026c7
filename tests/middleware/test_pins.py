"""The per-request certificate check: pin, CA and subject, CRL, ambiguity."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from gateway.config.loader import Config, fingerprint, load_config
from gateway.errors import ConfigError
from gateway.middleware.pins import PinCheck
from gateway.state import GATEWAY
from tests.support.harness import GatewayHarness, launch, whoami

MakeGateway = Callable[..., Awaitable[GatewayHarness]]


def der(cert: trustme.LeafCert) -> bytes:
    pem = cert.cert_chain_pems[0].bytes()
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def problem(config: Config, tenant: str, cert: trustme.LeafCert) -> str | None:
    data = der(cert)
    return PinCheck(config).problem(config.tenants[tenant], data, fingerprint(data))


def write_crl(
    ca: trustme.CA,
    revoked: trustme.LeafCert,
    path: Path,
    *,
    signer: trustme.CA | None = None,
    next_update: dt.timedelta = dt.timedelta(days=7),
) -> None:
    """Write a CRL in the name of ``ca`` that revokes ``revoked``.

    ``signer`` signs it instead of ``ca``, for a forged CRL.
    """
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    key = serialization.load_pem_private_key((signer or ca).private_key_pem.bytes(), password=None)
    serial = x509.load_pem_x509_certificate(revoked.cert_chain_pems[0].bytes()).serial_number
    now = dt.datetime.now(dt.timezone.utc)
    entry = (
        x509.RevokedCertificateBuilder()
        .serial_number(serial)
        .revocation_date(now - dt.timedelta(hours=1))
        .build()
    )
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - dt.timedelta(days=30))
        .next_update(now + next_update)
        .add_revoked_certificate(entry)
        .sign(key, hashes.SHA256())  # type: ignore[arg-type]
    )
    path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))


def configured(tmp_path: Path, tenants: dict[str, dict[str, Any]]) -> tuple[GatewayHarness, Config]:
    harness = GatewayHarness(tmp_path, redis_url="redis://127.0.0.1:6379/0", tenants=tenants)
    return harness, load_config(harness.write_config(upstream_port=9))


def test_pinned_certificate_fits(tmp_path: Path) -> None:
    harness, config = configured(tmp_path, {"noord": {}, "zuid": {}})

    assert problem(config, "noord", harness.client_certs["noord"]) is None
    assert problem(config, "zuid", harness.client_certs["noord"]) == "certificate_mismatch"


def test_missing_certificate(tmp_path: Path) -> None:
    _, config = configured(tmp_path, {"noord": {}})

    assert PinCheck(config).problem(config.tenants["noord"], None, None) == "certificate_missing"


def test_revoked_certificate(tmp_path: Path) -> None:
    harness = GatewayHarness(tmp_path, redis_url="redis://127.0.0.1:6379/0", tenants={"noord": {}})
    revoked = harness.issue_client_cert("noord")
    write_crl(harness.ca, revoked, tmp_path / "noord.crl")
    harness.tenants["noord"] = {"crl_file": "noord.crl"}

    config = load_config(harness.write_config(upstream_port=9))

    assert problem(config, "noord", revoked) == "certificate_revoked"


def test_certificate_for_two_ca_tenants(tmp_path: Path) -> None:
    harness = GatewayHarness(tmp_path, redis_url="redis://127.0.0.1:6379/0")
    harness.pem("ca.pem", harness.ca.cert_pem)
    tenants = {
        name: {"ca_file": "ca.pem", "subject_name": f"{name}.ysis.example"}
        for name in ("noord", "zuid")
    }
    harness.tenants = tenants
    config = load_config(harness.write_config(upstream_port=9))
    both = harness.ca.issue_cert("noord.ysis.example", "zuid.ysis.example")
    one = harness.ca.issue_cert("noord.ysis.example")

    assert problem(config, "noord", both) == "certificate_ambiguous"
    assert problem(config, "zuid", both) == "certificate_ambiguous"
    assert problem(config, "noord", one) is None
    assert problem(config, "zuid", one) == "certificate_mismatch"


async def test_revocation_ends_bound_session(gateway: GatewayHarness) -> None:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    client = gateway.client("noord")
    await launch(client, "noord", userId="ysis-jan")
    assert (await whoami(client))["X-Ysis-User"] == "ysis-jan"
    write_crl(gateway.ca, gateway.client_certs["noord"], gateway.folder / "noord.crl")
    tenants_file = gateway.folder / "tenants.yaml"
    tenants = yaml.safe_load(tenants_file.read_text())
    tenants["tenants"][0]["crl_file"] = "noord.crl"
    tenants_file.write_text(yaml.safe_dump(tenants, sort_keys=False))

    # What a reload does: the running gateway takes the new configuration.
    assert gateway.running is not None
    gateway.running.runner.app[GATEWAY].config = load_config(gateway.folder / "gateway.yaml")

    async with client.get("/whoami") as response:
        assert response.status == 403


def ca_tenant(tmp_path: Path) -> GatewayHarness:
    harness = GatewayHarness(tmp_path, redis_url="redis://127.0.0.1:6379/0")
    harness.pem("ca.pem", harness.ca.cert_pem)
    harness.tenants = {"noord": {"ca_file": "ca.pem", "subject_name": "noord.ysis.example", "crl_file": "noord.crl"}}
    return harness


def test_revoked_in_ca_mode(tmp_path: Path) -> None:
    harness = ca_tenant(tmp_path)
    revoked = harness.ca.issue_cert("noord.ysis.example")
    kept = harness.ca.issue_cert("noord.ysis.example")
    write_crl(harness.ca, revoked, tmp_path / "noord.crl")

    config = load_config(harness.write_config(upstream_port=9))

    assert problem(config, "noord", revoked) == "certificate_revoked"
    assert problem(config, "noord", kept) is None


def test_forged_crl_is_config_error(tmp_path: Path) -> None:
    harness = ca_tenant(tmp_path)
    revoked = harness.ca.issue_cert("noord.ysis.example")
    write_crl(harness.ca, revoked, tmp_path / "noord.crl", signer=trustme.CA())

    with pytest.raises(ConfigError) as caught:
        load_config(harness.write_config(upstream_port=9))

    (message,) = caught.value.problems
    assert "crl_file" in message
    assert "is not signed by the CA in ca_file" in message


def test_crl_of_other_ca_is_config_error(tmp_path: Path) -> None:
    harness = ca_tenant(tmp_path)
    stranger = trustme.CA()
    write_crl(stranger, stranger.issue_cert("x.example"), tmp_path / "noord.crl")

    with pytest.raises(ConfigError) as caught:
        load_config(harness.write_config(upstream_port=9))

    (message,) = caught.value.problems
    assert "issues none of this tenant's certificates" in message


def test_stale_crl_warns(tmp_path: Path) -> None:
    harness = ca_tenant(tmp_path)
    revoked = harness.ca.issue_cert("noord.ysis.example")
    write_crl(harness.ca, revoked, tmp_path / "noord.crl", next_update=-dt.timedelta(days=1))

    config = load_config(harness.write_config(upstream_port=9))

    assert any("crl_file: warning: " in line and "fetch the CA's current CRL" in line for line in config.warnings)
    assert problem(config, "noord", revoked) == "certificate_revoked"
