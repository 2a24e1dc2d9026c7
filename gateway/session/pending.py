"""The pending-launch cookie and the CSRF tokens of the forms.

Between the launch and the link or confirm form, the launch state travels in
``__Host-sso_pending``: tenant, Ysis ID, resolved client, view, certificate
fingerprint and a CSRF secret. Each form carries a token signed with its own
salt that names the pending launch and its secret, so a token from another
browser or another launch does not fit. A successful form post uses the
pending launch up (marked in Redis), so that it cannot be replayed.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from gateway.session.codec import BadCookie, CookieCodec


@dataclass(frozen=True)
class PendingLaunch:
    """The contents of ``__Host-sso_pending``; ``issued_at`` in Unix milliseconds."""

    pid: str
    tenant: str
    ysis_user: str
    account: str | None
    client_id: str | None
    client_outcome: str | None
    view: str | None
    fingerprint: str | None
    csrf: str
    issued_at: int

    def payload(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "ten": self.tenant,
            "usr": self.ysis_user,
            "acc": self.account,
            "cli": self.client_id,
            "out": self.client_outcome,
            "view": self.view,
            "fp": self.fingerprint,
            "csrf": self.csrf,
            "iat": self.issued_at,
        }

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> PendingLaunch:
        required = ("pid", "ten", "usr", "csrf")
        if not all(isinstance(data.get(key), str) and data[key] for key in required):
            raise BadCookie("pending fields missing")
        for key in ("acc", "cli", "out", "view", "fp"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise BadCookie(f"pending field {key} malformed")
        if type(data.get("iat")) is not int:
            raise BadCookie("pending field iat malformed")
        return cls(
            pid=data["pid"],
            tenant=data["ten"],
            ysis_user=data["usr"],
            account=data.get("acc"),
            client_id=data.get("cli"),
            client_outcome=data.get("out"),
            view=data.get("view"),
            fingerprint=data.get("fp"),
            csrf=data["csrf"],
            issued_at=data["iat"],
        )


class PendingCodec:
    """Sign pending launches and the CSRF tokens bound to them."""

    def __init__(self, pending: CookieCodec, csrf: CookieCodec) -> None:
        self._pending = pending
        self._csrf = csrf

    def new(self, **fields: Any) -> PendingLaunch:
        return PendingLaunch(
            pid=secrets.token_urlsafe(18), csrf=secrets.token_urlsafe(18), **fields
        )

    def encode(self, pending: PendingLaunch) -> str:
        return self._pending.dumps(pending.payload())

    def decode(self, value: str) -> PendingLaunch:
        return PendingLaunch.from_payload(self._pending.loads(value))

    def csrf_token(self, pending: PendingLaunch, form: str) -> str:
        return self._csrf.dumps({"pid": pending.pid, "n": pending.csrf, "form": form})

    def check_csrf(self, pending: PendingLaunch, form: str, token: str) -> bool:
        try:
            data = self._csrf.loads(token)
        except BadCookie:
            return False
        return (
            hmac.compare_digest(str(data.get("pid", "")), pending.pid)
            and hmac.compare_digest(str(data.get("n", "")), pending.csrf)
            and data.get("form") == form
        )
