"""Listening for revocation announcements, through Redis outages.

redis-py's asyncio pub/sub does not recover by itself once its connection
drops or Redis restarts, and its health check sends a PING without waiting
for the reply, so a silent connection would look healthy for ever. This
module watches the connection itself instead: it sends a PING when nothing
was heard for ``ping_interval`` seconds and drops the connection when no
reply comes within another ``ping_interval``. After any failure it closes
the subscription, waits with exponential backoff and jitter, and subscribes
again on a new connection.

Pub/sub delivers at most once: whatever was announced while no subscription
was up is lost. The listener therefore hears of every (re)subscription, and
reads SQL at once, as if anything may have changed.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from gateway.logs import FailureLog, describe_error, revocation_logger
from gateway.session.announce import CHANNEL
from gateway.tasks import finish, raise_if_cancelled

#: Seconds before the first reconnect. Each further attempt waits twice as long.
FIRST_RECONNECT_DELAY = 0.1


class AnnouncementListener(Protocol):
    """Receiver of the subscriber's events: subscribed, unsubscribed, announced."""

    def on_subscribed(self) -> None: ...

    def on_unsubscribed(self) -> None: ...

    def on_announcement(self) -> None: ...


class _NoAnswer(Exception):
    """Redis did not respond in time, so the connection counts as dead."""


@dataclass
class Backoff:
    """Exponential delays with jitter, from ``first`` up to ``cap`` seconds."""

    first: float
    cap: float
    attempts: int = 0

    def next_delay(self) -> float:
        # The exponent is bounded, so a long outage cannot overflow the float.
        doubled = self.first * 2 ** min(self.attempts, 30)
        self.attempts += 1
        delay = min(self.cap, doubled)
        # Jitter spreads the reconnects of many instances after a restart.
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.attempts = 0


class RevocationSubscriber:
    """Keeps one subscription to ``CHANNEL`` up and reports to a listener.

    ``redis`` must be a client of its own, without retries, so that every
    failure reaches this loop at once (see ``gateway.app.pubsub_client``).
    """

    def __init__(
        self,
        redis: Redis,
        listener: AnnouncementListener,
        *,
        ping_interval: float,
        reconnect_max_delay: float,
    ) -> None:
        self._redis = redis
        self._listener = listener
        self._ping_interval = ping_interval
        self._backoff = Backoff(
            min(FIRST_RECONNECT_DELAY, reconnect_max_delay), reconnect_max_delay
        )
        self._failures = FailureLog(revocation_logger)
        self._task: asyncio.Task[None] | None = None
        self.subscribed = False
        #: Subscriptions made so far, the first one included.
        self.subscriptions = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="revocation-subscriber")

    async def stop(self) -> None:
        if self._task is not None:
            await finish(self._task, revocation_logger)
            self._task = None

    async def _run(self) -> None:
        revocation_logger.info(
            "listening for revocation announcements",
            extra={
                "event": "revocation_subscriber_started",
                "channel": CHANNEL,
                "ping_interval": self._ping_interval,
                "reconnect_max_delay": self._backoff.cap,
            },
        )
        while True:
            try:
                await self._subscribe_and_listen()
            except Exception as error:  # noqa: BLE001 - any failure: reconnect
                self._lost(error)
            # CancelledError is no Exception, so it ends the loop from here,
            # unless redis-py lost it on the way.
            raise_if_cancelled()
            await asyncio.sleep(self._backoff.next_delay())

    async def _subscribe_and_listen(self) -> None:
        pubsub = self._redis.pubsub()
        try:
            await self._subscribe(pubsub)
            self._now_subscribed()
            await self._listen(pubsub)
        finally:
            await self._close(pubsub)

    async def _subscribe(self, pubsub: PubSub) -> None:
        # Redis must confirm the SUBSCRIBE like a PING: within ping_interval.
        try:
            async with asyncio.timeout(self._ping_interval):
                await pubsub.subscribe(CHANNEL)
                while not _is_confirmation(await pubsub.get_message(timeout=None)):
                    pass
        except TimeoutError as error:
            raise _NoAnswer(
                f"SUBSCRIBE not confirmed within {self._ping_interval:g} s"
            ) from error
        raise_if_cancelled()

    def _now_subscribed(self) -> None:
        self.subscribed = True
        self.subscriptions += 1
        if self.subscriptions == 1:
            revocation_logger.info(
                "subscribed to revocation announcements",
                extra={"event": "revocation_subscribed", "channel": CHANNEL},
            )
        self._failures.success(
            "revocation announcements resumed; reading revocations from SQL",
            event="revocation_subscription_recovered",
            channel=CHANNEL,
        )
        # SECURITY: announcements made while unsubscribed are lost for good,
        # so the listener must read SQL now that the subscription is up.
        self._listener.on_subscribed()

    async def _listen(self, pubsub: PubSub) -> None:
        """Handle messages until the connection fails or stops responding."""
        heard = time.monotonic()
        ping_sent: float | None = None
        while True:
            since = heard if ping_sent is None else ping_sent
            wait = max(0.0, since + self._ping_interval - time.monotonic())
            message = await pubsub.get_message(timeout=wait)
            raise_if_cancelled()
            now = time.monotonic()
            if message is not None:
                heard, ping_sent = now, None
                # Reset only once Redis has replied after the SUBSCRIBE, so
                # a server that drops every new connection is not retried in
                # a tight loop.
                self._backoff.reset()
                self._handle(message)
            elif now >= since + self._ping_interval:
                if ping_sent is not None:
                    raise _NoAnswer(
                        f"no reply to PING within {self._ping_interval:g} s"
                    )
                await pubsub.ping()
                raise_if_cancelled()
                ping_sent = now

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "message":
            # The content is not read: SQL decides what was revoked.
            self._listener.on_announcement()
        elif kind == "subscribe":
            # redis-py reconnected and subscribed again on its own, so
            # announcements may have been lost in between.
            self._listener.on_subscribed()

    def _lost(self, error: Exception) -> None:
        was_subscribed, self.subscribed = self.subscribed, False
        if was_subscribed:
            self._listener.on_unsubscribed()
        message = (
            "revocation announcements lost; reading revocations from SQL "
            "until Redis is back"
            if was_subscribed
            else "subscribing to revocation announcements failed; retrying"
        )
        self._failures.failure(
            message,
            event="revocation_subscription_failed",
            error=describe_error(error),
            channel=CHANNEL,
            attempt=self._backoff.attempts + 1,
        )

    async def _close(self, pubsub: PubSub) -> None:
        try:
            await pubsub.aclose()
        except Exception as error:  # noqa: BLE001 - a new connection follows
            revocation_logger.warning(
                "closing the revocation subscription failed",
                extra={
                    "event": "revocation_unsubscribe_failed",
                    "error": describe_error(error),
                },
            )


def _is_confirmation(message: dict[str, Any] | None) -> bool:
    return message is not None and message.get("type") == "subscribe"

