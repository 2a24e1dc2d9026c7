"""The checks before any flow: tenant, certificate pin and client address.

An unknown tenant, a missing certificate and a certificate of another tenant
all raise the same ``Forbidden`` so that tenant names cannot be probed; only
the log tells them apart. The decision is made per request, never cached per
connection or TLS session.
"""

from __future__ import annotations

from aiohttp import web

from gateway.config.loader import Tenant
from gateway.errors import Forbidden
from gateway.middleware.address import allowed, client_address
from gateway.middleware.scope import SCOPE
from gateway.state import GATEWAY


def _named_literally(request: web.Request, tenant_name: str) -> bool:
    # aiohttp matches routes on the decoded path, so "/sso/ysis/no%72d" would
    # reach tenant "noord". The tenant must be spelled out in the raw path.
    raw = request.raw_path.split("?", 1)[0]
    prefix = f"/sso/ysis/{tenant_name}"
    return raw == prefix or raw.startswith(prefix + "/")


def admit(request: web.Request, tenant_name: str) -> Tenant:
    """Return the tenant when the certificate and address fit, else raise Forbidden."""
    gateway = request.app[GATEWAY]
    scope = request[SCOPE]
    scope.tenant = tenant_name

    tenant = gateway.tenant(tenant_name)
    if tenant is None or not _named_literally(request, tenant_name):
        scope.tenant = None
        raise Forbidden("unknown_tenant", detail=tenant_name[:64])

    reason = gateway.pins.problem(tenant, scope.certificate, scope.fingerprint)
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
