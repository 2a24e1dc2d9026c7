"""Whether a client certificate fits a tenant's pin, decided per request.

The TLS handshake only proves that a certificate chains to some tenant's
trust anchor. Each request then checks that it fits *this* tenant. It must
match the pinned fingerprint, or the tenant's CA and subject name. The
tenant's CRL must not list it, and no other tenant may accept it, so that one
certificate never opens two tenants. Decisions are cached per configuration,
because checking a CA signature on every proxied request would cost more than
the proxying.
"""

from __future__ import annotations

from collections import OrderedDict

from cryptography import x509

from gateway.config.loader import Config, Tenant, matches_ca_pin

#: Decisions cached per configuration, each keyed by tenant name and fingerprint.
MAX_REMEMBERED = 4096


class PinCheck:
    """Decide whether certificates fit tenants of one configuration.

    ``config`` is the configuration whose tenants are checked; a reload
    makes a new ``PinCheck``.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self._by_ca = [tenant for tenant in config.tenants.values() if tenant.authorities]
        self._decisions: OrderedDict[tuple[str, str], str | None] = OrderedDict()

    def problem(self, tenant: Tenant, der: bytes | None, fingerprint: str | None) -> str | None:
        """Return why the certificate does not fit ``tenant``, or None if it does."""
        if der is None or fingerprint is None:
            return "certificate_missing"
        key = (tenant.name, fingerprint)
        if key in self._decisions:
            self._decisions.move_to_end(key)
            return self._decisions[key]
        decision = self._decide(tenant, der, fingerprint)
        self._decisions[key] = decision
        if len(self._decisions) > MAX_REMEMBERED:
            self._decisions.popitem(last=False)
        return decision

    def _decide(self, tenant: Tenant, der: bytes, fingerprint: str) -> str | None:
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            return "certificate_invalid"
        if tenant.pinned:
            if fingerprint not in tenant.fingerprints:
                return "certificate_mismatch"
        elif not matches_ca_pin(tenant, cert):
            return "certificate_mismatch"
        if (cert.issuer.public_bytes(), cert.serial_number) in tenant.revoked:
            return "certificate_revoked"
        # SECURITY: check-config refuses two tenants pinning one certificate,
        # but a certificate whose names cover two CA-pinned tenants' subjects
        # only shows up here, and must open neither.
        for other in self._by_ca:
            if other is not tenant and matches_ca_pin(other, cert):
                return "certificate_ambiguous"
        return None
