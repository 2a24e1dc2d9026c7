"""Announcing a recorded revocation to every gateway instance over Redis.

An announcement only means "read the revocations table now". No instance
takes the message for the revocation itself, so a lost, forged or repeated
message costs at most a late or an extra SQL read. Redis shares pub/sub
channels across its database numbers, so two deployments on one server wake
each other up; that is harmless for the same reason.
"""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis
from redis.exceptions import RedisError

#: The pub/sub channel of revocation announcements.
CHANNEL = "sso:revocations:v1"


class AnnounceFailed(Exception):
    """Redis did not accept an announcement, for the reason in the message."""


async def announce(redis: Redis, revocation_id: int, timeout: float) -> int:
    """Publish a new revocation's id and return how many subscribers got it.

    Raises ``AnnounceFailed`` when Redis fails or takes longer than
    ``timeout`` seconds.
    """
    try:
        async with asyncio.timeout(timeout):
            return int(await redis.publish(CHANNEL, str(revocation_id)))
    except TimeoutError as error:
        # asyncio.timeout raises a TimeoutError without a message.
        raise AnnounceFailed(f"no reply within {timeout:g} s") from error
    except (RedisError, OSError) as error:
        raise AnnounceFailed(f"{type(error).__name__}: {error}") from error
