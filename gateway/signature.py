"""Sign and verify the identity headers the gateway sends upstream.

The gateway adds ``X-Gateway-Signature: t=<unix seconds>,v1=<hex>`` to every
proxied request. The HMAC-SHA256 covers, joined by newlines: ``t``, the
method, the request target (path and query as sent upstream) and the values
of the identity headers in ``IDENTITY_HEADERS`` order, with an empty string
for a header that is absent.

This module needs only the standard library, so that upstream developers can
copy it or import it on its own to check each request:

    from gateway.signature import verify_request
    if not verify_request(keys, method, target, headers):
        reject the request

Upstream must read identity headers only from requests that pass this check
and only from the gateway's network.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping, Sequence

SIGNATURE_HEADER = "X-Gateway-Signature"

#: Headers covered by the signature, in the order they are signed.
IDENTITY_HEADERS = (
    "X-Medimo-Account",
    "X-Medimo-Tenant",
    "X-Ysis-User",
    "X-Medimo-Client",
    "X-Medimo-Auth-Method",
    "X-Request-Id",
)

#: Seconds a signature stays acceptable on either side of the verifier's clock.
MAX_CLOCK_SKEW = 60

_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


def _message(timestamp: int, method: str, target: str, values: Sequence[str]) -> bytes:
    parts = [str(timestamp), method.upper(), target, *values]
    return "\n".join(parts).encode("utf-8")


def _digest(key: bytes, message: bytes) -> str:
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def sign_request(
    key: bytes,
    method: str,
    target: str,
    identity: Mapping[str, str],
    *,
    timestamp: int | None = None,
) -> str:
    """Return the ``X-Gateway-Signature`` value for one upstream request.

    ``identity`` maps header names from ``IDENTITY_HEADERS`` to their values;
    a missing name is signed as an empty string.
    """
    when = int(time.time()) if timestamp is None else timestamp
    values = [identity.get(name, "") for name in IDENTITY_HEADERS]
    return f"t={when},v1={_digest(key, _message(when, method, target, values))}"


def _parse(signature: str) -> tuple[int, str] | None:
    fields: dict[str, str] = {}
    for part in signature.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep or name in fields:
            return None
        fields[name] = value
    timestamp, digest = fields.get("t", ""), fields.get("v1", "")
    if not _HEX_DIGEST.fullmatch(digest) or not _TIMESTAMP.fullmatch(timestamp):
        return None
    return int(timestamp), digest


def verify_request(
    keys: Sequence[bytes],
    method: str,
    target: str,
    headers: Mapping[str, str],
    *,
    now: Callable[[], float] = time.time,
    max_skew: int = MAX_CLOCK_SKEW,
) -> bool:
    """Check the ``X-Gateway-Signature`` of a request against any key in ``keys``.

    ``headers`` is a case-insensitive mapping of the received headers (such as
    aiohttp's ``request.headers``). Return False for a missing or malformed
    signature, a timestamp more than ``max_skew`` seconds away, a header that
    appears more than once, or a digest that no key produces.
    """
    getall = getattr(headers, "getall", None)
    if getall is not None:
        for name in (SIGNATURE_HEADER, *IDENTITY_HEADERS):
            if len(getall(name, [])) > 1:
                return False

    parsed = _parse(headers.get(SIGNATURE_HEADER, ""))
    if parsed is None:
        return False
    timestamp, digest = parsed
    if abs(now() - timestamp) > max_skew:
        return False

    values = [headers.get(name, "") for name in IDENTITY_HEADERS]
    message = _message(timestamp, method, target, values)
    matches = [hmac.compare_digest(_digest(key, message), digest) for key in keys]
    return any(matches)
