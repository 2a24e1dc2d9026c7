"""Client certificates in both pin modes: what the handshake and the pin decide.

Chain problems (validity dates, extended key usage, a missing intermediate)
end the TLS handshake, and the log names the peer and the verify error. A
certificate that chains to a trusted tenant anchor but fits another tenant,
or none, gets the 403 page, and the log names its fingerprint and subject,
never its PEM.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.harness import GatewayHarness, launch
from tests.test_server_tls import exchange, handshake_failure, request_bytes

MakeGateway = Callable[..., Awaitable[GatewayHarness]]

NOW = dt.datetime.now(dt.timezone.utc)


def issue_with_usage(ca: trustme.CA, name: str, usage: list[x509.ObjectIdentifier], folder: Path) -> tuple[Path, Path]:
    """Issue a client certificate with the given extended key usage; return cert and key paths."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def context_for(gateway: GatewayHarness, cert: Path, key: Path) -> ssl.SSLContext:
    context = gateway.ssl_context()
    context.load_cert_chain(cert, key)
    return context


async def refused_in_handshake(
    gateway: GatewayHarness, context: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> str:
    """Run a handshake that must fail; return the gateway's logged verify error."""
    outcome = await asyncio.to_thread(
        exchange, context, gateway.port, request_bytes(gateway.port, "/sso/afgemeld")
    )
    assert isinstance(outcome.error, ssl.SSLError), outcome
    assert outcome.data == b""
    record = await handshake_failure(caplog, outcome.local)
    return str(record.error)  # type: ignore[attr-defined]


@pytest.fixture
def tls_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="gateway.tls")
    caplog.set_level(logging.INFO, logger="gateway.auth")
    return caplog


# --- the handshake -------------------------------------------------------------


@pytest.fixture
async def ca_gateway(make_gateway: MakeGateway) -> GatewayHarness:
    """A gateway whose tenant noord trusts the harness CA, so its chains verify."""
    return await make_gateway(
        tenants={"noord": {"ca_file": "ca.pem", "subject_name": "noord.ysis.example"}}
    )


async def test_not_yet_valid_fails_handshake(ca_gateway: GatewayHarness, tls_log: pytest.LogCaptureFixture) -> None:
    gateway = ca_gateway
    early = gateway.ca.issue_cert(
        "noord.ysis.example",
        not_before=NOW + dt.timedelta(days=2),
        not_after=NOW + dt.timedelta(days=30),
    )

    error = await refused_in_handshake(gateway, gateway.ssl_context(cert=early), tls_log)

    assert "certificate is not yet valid" in error


async def test_server_only_usage_fails_handshake(
    ca_gateway: GatewayHarness, tls_log: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    gateway = ca_gateway
    cert, key = issue_with_usage(gateway.ca, "noord.ysis.example", [ExtendedKeyUsageOID.SERVER_AUTH], tmp_path)

    error = await refused_in_handshake(gateway, context_for(gateway, cert, key), tls_log)

    assert "unsuitable certificate purpose" in error


async def test_client_usage_passes_handshake(ca_gateway: GatewayHarness, tmp_path: Path) -> None:
    gateway = ca_gateway
    cert, key = issue_with_usage(gateway.ca, "noord.ysis.example", [ExtendedKeyUsageOID.CLIENT_AUTH], tmp_path)

    outcome = await asyncio.to_thread(
        exchange, context_for(gateway, cert, key), gateway.port, request_bytes(gateway.port, "/sso/afgemeld")
    )

    assert outcome.error is None
    assert outcome.data.startswith(b"HTTP/1.1 200")


# --- intermediate CAs --------------------------------------------------------
#
# ca_file contains the CA that issues the client certificates, with its root if
# the chain has one. The per-request pin check looks for the leaf's issuer in
# that file, because a resumed TLS session keeps no chain to look at.


@dataclass
class Chain:
    gateway: GatewayHarness
    leaf: trustme.LeafCert
    root_only: GatewayHarness


@pytest.fixture
async def chain(make_gateway: MakeGateway, tmp_path: Path) -> Chain:
    """Gateways trusting a root with its intermediate, and the root alone."""
    root = trustme.CA()
    intermediate = root.create_child_ca()
    leaf = intermediate.issue_cert("noord.ysis.example", common_name="noord.ysis.example")
    bundle = tmp_path / "issuing-ca.pem"
    bundle.write_bytes(intermediate.cert_pem.bytes() + root.cert_pem.bytes())
    pin = {"subject_name": "noord.ysis.example"}
    gateway = await make_gateway(ca=root, tenants={"noord": {**pin, "ca_file": str(bundle)}})
    root_only = await make_gateway(ca=root, tenants={"noord": {**pin, "ca_file": "ca.pem"}})
    for started in (gateway, root_only):
        await started.add_link("noord", "ysis-jan", "medimo-jan")
    return Chain(gateway, leaf, root_only)


def leaf_only(leaf: trustme.LeafCert, folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "leaf.pem", folder / "leaf-key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    return cert, key


async def test_leaf_with_intermediate_logs_in(chain: Chain) -> None:
    response = await launch(chain.gateway.client(cert=chain.leaf), "noord", userId="ysis-jan")

    assert len(chain.leaf.cert_chain_pems) == 2
    assert response.status == 303


async def test_leaf_without_intermediate_logs_in(chain: Chain, tmp_path: Path) -> None:
    # The gateway has the intermediate from ca_file, so the leaf alone verifies.
    cert, key = leaf_only(chain.leaf, tmp_path)
    client = chain.gateway.client(context=context_for(chain.gateway, cert, key))

    response = await launch(client, "noord", userId="ysis-jan")

    assert response.status == 303


async def test_root_only_ca_file_is_403(chain: Chain) -> None:
    # The chain verifies in the handshake, but the leaf's issuer is not in
    # ca_file, so the pin refuses it.
    response = await launch(chain.root_only.client(cert=chain.leaf), "noord", userId="ysis-jan")

    assert response.status == 403


async def test_root_only_leaf_alone_fails_handshake(
    chain: Chain, tls_log: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    cert, key = leaf_only(chain.leaf, tmp_path)

    error = await refused_in_handshake(chain.root_only, context_for(chain.root_only, cert, key), tls_log)

    assert "unable to get local issuer certificate" in error


# --- the pin, after the handshake ---------------------------------------------


async def test_same_subject_other_ca_is_403(
    make_gateway: MakeGateway, tmp_path: Path, tls_log: pytest.LogCaptureFixture
) -> None:
    other = trustme.CA()
    other.cert_pem.write_to_path(str(tmp_path / "other-ca.pem"))
    gateway = await make_gateway(
        tenants={
            "noord": {"ca_file": "ca.pem", "subject_name": "noord.ysis.example"},
            "zuid": {"ca_file": str(tmp_path / "other-ca.pem"), "subject_name": "zuid.ysis.example"},
        }
    )
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    impostor = other.issue_cert("noord.ysis.example", common_name="noord.ysis.example")

    response = await launch(gateway.client(cert=impostor), "noord", userId="ysis-jan")

    assert response.status == 403
    (record,) = [r for r in tls_log.records if getattr(r, "event", "") == "certificate_mismatch"]
    assert record.subject.startswith("CN=noord.ysis.example,")  # type: ignore[attr-defined]
    assert len(record.certificate) == 64  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "pin",
    [
        pytest.param({}, id="pinned-certificate"),
        pytest.param({"ca_file": "ca.pem", "subject_name": "noord.ysis.example"}, id="ca-and-subject"),
    ],
)
async def test_other_tenant_certificate_logged_without_pem(
    make_gateway: MakeGateway, tls_log: pytest.LogCaptureFixture, pin: dict[str, str]
) -> None:
    gateway = await make_gateway(tenants={"noord": pin, "zuid": {}})
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")

    response = await launch(gateway.client("zuid"), "noord", userId="ysis-jan")

    assert response.status == 403
    (record,) = [r for r in tls_log.records if getattr(r, "event", "") == "certificate_mismatch"]
    assert "zuid.ysis.example" in record.subject  # type: ignore[attr-defined]
    assert all("BEGIN CERTIFICATE" not in str(vars(r)) for r in tls_log.records)
