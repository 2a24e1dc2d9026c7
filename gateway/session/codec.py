"""Signed cookie values: one salt per purpose and a type field checked on load.

itsdangerous signs and does not encrypt, so a payload must never hold a BSN,
a Ysis client ID, a password or a display name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from itsdangerous import BadData, URLSafeSerializer

SESSION_COOKIE = "__Host-sso_session"
PENDING_COOKIE = "__Host-sso_pending"
GATEWAY_COOKIES = frozenset({SESSION_COOKIE, PENDING_COOKIE})


class BadCookie(Exception):
    """Raised for a value that is unsigned, tampered, of another type or malformed."""


class CookieCodec:
    """Sign and check the JSON payload of one kind of cookie or token.

    ``keys`` is the key list, newest first: the first key signs and every key
    verifies, so that keys rotate without logging anyone out. ``purpose`` is
    both the salt suffix and the ``typ`` field, so a value minted for one
    purpose never loads as another.
    """

    def __init__(self, keys: Sequence[bytes], purpose: str) -> None:
        if not keys:
            raise ValueError("a cookie codec needs at least one key")
        self.purpose = purpose
        # itsdangerous signs with the last key of the list and verifies with all.
        self._serializer = URLSafeSerializer(
            list(reversed(keys)),
            salt=f"sso-gateway.{purpose}",
            signer_kwargs={"digest_method": hashlib.sha256},
        )

    def dumps(self, payload: dict[str, Any]) -> str:
        return str(self._serializer.dumps({**payload, "typ": self.purpose}))

    def loads(self, value: str) -> dict[str, Any]:
        """Return the payload, or raise ``BadCookie``."""
        if not value or len(value) > 4096:
            raise BadCookie("empty or oversized value")
        try:
            payload = self._serializer.loads(value)
        except BadData as exc:
            raise BadCookie("invalid signature or encoding") from exc
        if not isinstance(payload, dict) or payload.get("typ") != self.purpose:
            raise BadCookie(f"not a {self.purpose} value")
        return payload
