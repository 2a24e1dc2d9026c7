"""The checks before any flow: tenant, certificate pin and client address.

An unknown tenant, a missing certificate and a certificate of another tenant
all raise the same ``Forbidden`` so that tenant names cannot be probed; only
the log tells them apart. The decision is made per request, never cached per
connection or TLS session.
"""

from __future__ import annotations

from cryptography import x509
from aiohttp import web

from gateway.config.loader import Tenant, matches_ca_pin
from gateway.errors import Forbidden
from gateway.middleware.address import allowed, client_address
from gateway.middleware.scope import SCOPE
from gateway.state import GATEWAY


def certificate_matches(tenant: Tenant, der: bytes | None, fingerprint: str | None) -> str | None:
    """Return why a client certificate fails the tenant's pin, or None if it fits."""
    if der is None or fingerprint is None:
        return "certificate_missing"
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return "certificate_invalid"
    if tenant.pinned:
        if fingerprint not in tenant.fingerprints:
            return "certificate_mismatch"
    elif not matches_ca_pin(tenant, cert):
        return "certificate_mismatch"
    issuer = cert.issuer.public_bytes()
    if (issuer, cert.serial_number) in tenant.revoked:
        return "certificate_revoked"
    return None


def admit(request: web.Request, tenant_name: str) -> Tenant:
    """Return the tenant when the certificate and address fit, else raise Forbidden."""
    gateway = request.app[GATEWAY]
    scope = request[SCOPE]
    scope.tenant = tenant_name

    tenant = gateway.tenant(tenant_name)
    if tenant is None:
        scope.tenant = None
        raise Forbidden("unknown_tenant", detail=tenant_name[:64])

    reason = certificate_matches(tenant, scope.certificate, scope.fingerprint)
    if reason is not None:
        raise Forbidden(reason, tenant=tenant.name)

    check_address(request, tenant)
    return tenant


def check_address(request: web.Request, tenant: Tenant) -> None:
    """Raise Forbidden unless the client address is in the tenant's allowlist."""
    gateway = request.app[GATEWAY]
    scope = request[SCOPE]
    scope.client = client_address(request, scope.peer, gateway.config.gateway.trusted_proxies)
    if not allowed(scope.client, tenant.config.allowed_ips):
        raise Forbidden("ip_not_allowed", tenant=tenant.name)
