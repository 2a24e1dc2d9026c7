"""The session cookie: what it holds, how it expires, when it is re-issued.

Expiry is decided by the server from the signed timestamps, never by the
cookie's own ``Max-Age``: a session older than its lifetime, idle for longer
than the idle timeout, or stamped in the future is refused.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from typing import Any

from gateway.session.codec import BadCookie, CookieCodec

#: Milliseconds a timestamp may lie in the future (clock skew between instances).
FUTURE_SKEW_MS = 5_000


@dataclass(frozen=True)
class Session:
    """The contents of ``__Host-sso_session``; times in Unix milliseconds."""

    sid: str
    tenant: str
    account: str
    ysis_user: str
    client_id: str | None
    fingerprint: str | None
    issued_at: int
    seen_at: int

    def payload(self) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "ten": self.tenant,
            "acc": self.account,
            "usr": self.ysis_user,
            "cli": self.client_id,
            "fp": self.fingerprint,
            "iat": self.issued_at,
            "see": self.seen_at,
        }

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> Session:
        strings = ("sid", "ten", "acc", "usr")
        if not all(isinstance(data.get(key), str) and data[key] for key in strings):
            raise BadCookie("session fields missing")
        for key in ("cli", "fp"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise BadCookie(f"session field {key} malformed")
        for key in ("iat", "see"):
            if type(data.get(key)) is not int:
                raise BadCookie(f"session field {key} malformed")
        return cls(
            sid=data["sid"],
            tenant=data["ten"],
            account=data["acc"],
            ysis_user=data["usr"],
            client_id=data.get("cli"),
            fingerprint=data.get("fp"),
            issued_at=data["iat"],
            seen_at=data["see"],
        )


@dataclass(frozen=True)
class Lifetimes:
    """How long a session lives, in seconds."""

    lifetime: float
    idle_timeout: float
    refresh_after: float


class SessionCodec:
    """Mint, load and check session cookies signed by a ``CookieCodec``."""

    def __init__(self, codec: CookieCodec) -> None:
        self._codec = codec

    def mint(
        self,
        *,
        tenant: str,
        account: str,
        ysis_user: str,
        client_id: str | None,
        fingerprint: str | None,
        now_ms: int,
    ) -> Session:
        return Session(
            sid=secrets.token_urlsafe(18),
            tenant=tenant,
            account=account,
            ysis_user=ysis_user,
            client_id=client_id,
            fingerprint=fingerprint,
            issued_at=now_ms,
            seen_at=now_ms,
        )

    def encode(self, session: Session) -> str:
        return self._codec.dumps(session.payload())

    def decode(self, value: str) -> Session:
        """Return the session in a signed value, or raise ``BadCookie``."""
        return Session.from_payload(self._codec.loads(value))


def expiry_reason(session: Session, limits: Lifetimes, now_ms: int) -> str | None:
    """Return why a session has expired, or None while it is valid."""
    if session.issued_at > now_ms + FUTURE_SKEW_MS or session.seen_at > now_ms + FUTURE_SKEW_MS:
        return "session_future_timestamp"
    if session.seen_at < session.issued_at:
        return "session_malformed"
    if now_ms - session.issued_at > limits.lifetime * 1000:
        return "session_expired"
    if now_ms - session.seen_at > limits.idle_timeout * 1000:
        return "session_idle"
    return None


def touched(session: Session, limits: Lifetimes, now_ms: int) -> Session | None:
    """Return the session with a new last-seen time when it is due, else None."""
    if now_ms - session.seen_at < limits.refresh_after * 1000:
        return None
    return replace(session, seen_at=now_ms)
