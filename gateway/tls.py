"""The server's TLS context: its certificate, and trust in the tenants' pins.

The handshake asks for a client certificate but lets a connection without
one through (the pages say why it is refused). A certificate that does not
verify against the tenants' CAs and pinned certificates ends the handshake.
Pinned certificates are trust anchors of their own through OpenSSL's
partial-chain verification, so a pin works for a self-signed certificate and
for one whose CA the gateway does not otherwise trust.
"""

from __future__ import annotations

import ssl

from gateway.config.loader import Config


def server_context(config: Config) -> ssl.SSLContext:
    """Build a new server context; a reload builds another and swaps it in."""
    settings = config.gateway.tls
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if settings.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    )
    context.load_cert_chain(str(settings.certificate), str(settings.private_key))
    context.verify_mode = ssl.CERT_OPTIONAL
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(["http/1.1"])

    anchors = {
        cert.fingerprint: cert.pem
        for tenant in config.tenants.values()
        for cert in tenant.trust_anchors()
    }
    if anchors:
        context.load_verify_locations(cadata="".join(anchors.values()))
    return context
