"""Limits on failed password checks of the link and confirm forms.

Failures are counted in the gateway's Redis with the moving-window strategy
of the ``limits`` library, under two keys: the Medimo account and the pair of
tenant and client address. A check is admitted only while both keys have
failures left, and a refused check never reaches upstream.

The account key is reserved before the check, so that parallel posts for one
account cannot pass its limit. ``limits`` cannot hand a reserved slot back,
so a success clears the account's failures. This is a decision, not only a
workaround: the user has just shown that they know the password. The cost is
that a success also clears failures that a guesser caused in the same window.
A success never clears the client address key, so one valid account does not
buy more guesses for an address.

Without Redis every method raises ``ServiceUnavailable``, so the forms stop
instead of running without limits.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.config.models import AttemptLimit
from gateway.errors import ServiceUnavailable, TooManyRequests
from gateway.middleware.scope import IPAddress

#: Prefix of every Redis key the limiter writes.
KEY_PREFIX = "sso:attempts"

#: Event of a refused check, in the log line and the access log's outcome.
RATE_LIMITED = "password_rate_limited"

_REDIS_ERRORS = (RedisError, StorageError, OSError)


def _digest(value: str) -> str:
    # A username may be a personal name, so Redis keys carry a hash of it.
    # The hash also bounds the key length, whatever the form contained.
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def username_key(username: str) -> str:
    """Return the account key of a link-form username, trimmed and case-folded."""
    # SECURITY: "Piet", " piet" and "PIET" name one account upstream, so they
    # must share one budget.
    return f"username:{_digest(username.strip().casefold())}"


def account_key(account_id: str) -> str:
    """Return the account key of a confirm-form account ID."""
    return f"account:{_digest(account_id)}"


def client_key(tenant: str, client: IPAddress | None) -> str:
    """Return the key of a tenant and client address."""
    # Admission rejects a request without a client address unless the tenant
    # has allow_any_ip. Such requests share one key.
    return f"{tenant}:{client if client is not None else 'unknown'}"


@dataclass(frozen=True)
class Attempt:
    """An admitted password check: the keys its outcome is recorded under."""

    account: str
    client: str


class AttemptLimiter:
    """Admits password checks and records their outcome in Redis."""

    def __init__(
        self, redis: Redis, account: AttemptLimit, client: AttemptLimit
    ) -> None:
        # The storage shares the gateway's connection pool, and with it the
        # URL and the timeouts of the redis section. With a pool, limits
        # 5.8 ignores the URL, and its annotations type the pool option too
        # narrowly, which the ignore below is for.
        storage = RedisStorage(
            "async+redis://",
            implementation="redispy",
            key_prefix=KEY_PREFIX,
            wrap_exceptions=True,
            connection_pool=redis.connection_pool,  # type: ignore[arg-type]
        )
        self._window = MovingWindowRateLimiter(storage)
        self._account = _item(account, "account")
        self._client = _item(client, "client")

    async def admit(self, account: str, client: str) -> Attempt:
        """Reserve a check for the account, or raise ``TooManyRequests``.

        The client address key is only tested here. It is charged when the
        check fails, so that successes behind one NAT address never add up.
        """
        try:
            if not await self._window.test(self._client, client):
                raise TooManyRequests(RATE_LIMITED, detail="client_limit")
            # SECURITY: hit() tests and records in one Redis script, so
            # parallel posts cannot all pass a nearly used-up account limit.
            if not await self._window.hit(self._account, account):
                raise TooManyRequests(RATE_LIMITED, detail="account_limit")
        except _REDIS_ERRORS as exc:
            raise ServiceUnavailable("redis_unavailable") from exc
        return Attempt(account, client)

    async def record_failure(self, attempt: Attempt) -> None:
        """Charge a failed check to the client address key.

        The account key was charged when the check was admitted.
        """
        # NOTE: parallel failures from one address are tested before any of
        # them is charged, so they can pass client_attempts.limit by the
        # number of posts in flight. Each account stays within its own limit.
        try:
            await self._window.hit(self._client, attempt.client)
        except _REDIS_ERRORS as exc:
            # SECURITY: a failure that cannot be counted must not be reported
            # as a wrong password, or a Redis outage would allow free guesses.
            raise ServiceUnavailable("redis_unavailable") from exc

    async def record_success(self, attempt: Attempt) -> None:
        """Clear the account's failures, its reserved slot included."""
        try:
            await self._window.clear(self._account, attempt.account)
        except _REDIS_ERRORS as exc:
            raise ServiceUnavailable("redis_unavailable") from exc


def _item(setting: AttemptLimit, namespace: str) -> RateLimitItem:
    # The window is validated as whole seconds, which is what limits counts in.
    return RateLimitItemPerSecond(setting.limit, int(setting.per), namespace=namespace)
