"""The optional HMAC over launch parameters (tenant option ``launch_signature``).

``sig`` is the lowercase hex HMAC-SHA256, with the tenant's launch secret, of
the tenant name, a newline, and every other parameter as ``key=value`` with
key and value percent-encoded per RFC 3986, sorted by key and joined by
``&``. The usual keys (``userId``, ``ts`` and the rest) encode to themselves.
``ts`` must lie within 120 seconds of the gateway's clock and each ``nonce``
is accepted once within that window (remembered in Redis).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from urllib.parse import quote

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.errors import BadRequest, Forbidden, ServiceUnavailable

#: Seconds a launch timestamp may differ from the gateway's clock.
MAX_SKEW = 120

NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}\Z")
TIMESTAMP = re.compile(r"[0-9]{1,12}\Z")
SIGNATURE = re.compile(r"[0-9a-f]{64}\Z")


def canonical(tenant: str, params: Iterable[tuple[str, str]]) -> bytes:
    """Return the bytes a launch signature covers."""
    pairs = sorted((key, value) for key, value in params if key != "sig")
    # SECURITY: keys are percent-encoded like values. Otherwise a key that
    # contains "=" and "&" would merge two signed parameters into one, and the
    # gateway would see neither of them under the same signature.
    query = "&".join(f"{_encode(key)}={_encode(value)}" for key, value in pairs)
    return f"{tenant}\n{query}".encode("utf-8")


def _encode(text: str) -> str:
    # RFC 3986, section 2.3: only unreserved characters stay as they are.
    return quote(text, safe="-._~")


def sign(secret: bytes, tenant: str, params: Iterable[tuple[str, str]]) -> str:
    """Return ``sig`` for a launch, as Ysis computes it."""
    return hmac.new(secret, canonical(tenant, params), hashlib.sha256).hexdigest()


def _required(params: dict[str, str], name: str, pattern: re.Pattern[str]) -> str:
    value = params.get(name)
    if value is None or not pattern.match(value):
        raise BadRequest("parameter_invalid", detail=f"De parameter '{name}' ontbreekt of is ongeldig.")
    return value


async def verify(
    tenant: str,
    secret: bytes,
    params: list[tuple[str, str]],
    *,
    now: float,
    redis: Redis,
) -> None:
    """Raise unless the launch carries a fresh, unused, valid signature."""
    values = dict(params)
    timestamp = int(_required(values, "ts", TIMESTAMP))
    nonce = _required(values, "nonce", NONCE)
    signature = _required(values, "sig", SIGNATURE)

    expected = sign(secret, tenant, params)
    if not hmac.compare_digest(expected, signature):
        raise Forbidden("launch_signature_invalid", tenant=tenant)
    if abs(now - timestamp) > MAX_SKEW:
        raise Forbidden("launch_signature_stale", tenant=tenant)

    try:
        fresh = await redis.set(f"sso:nonce:{tenant}:{nonce}", "1", nx=True, ex=2 * MAX_SKEW + 10)
    except (RedisError, OSError) as exc:
        # SECURITY: without Redis a nonce cannot be checked, so a signed
        # launch is refused instead of being open to replay.
        raise ServiceUnavailable("redis_unavailable", tenant=tenant) from exc
    if not fresh:
        raise Forbidden("launch_nonce_reused", tenant=tenant)
