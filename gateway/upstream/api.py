"""Client of the upstream API that the gateway calls (``/gateway-api/v1``).

Credentials and BSNs pass through here and nowhere else: nothing in this
module logs a request body or a query string.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from gateway.errors import UpstreamFailed, UpstreamTimeout
from gateway.logs import upstream_logger


#: What the gateway accepts from upstream as an account or client ID. It goes
#: into identity headers and landing paths, so "..", "/" or CR/LF must not.
IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}\Z")


def _identifier(body: Any, key: str) -> str | None:
    value = body.get(key) if isinstance(body, dict) else None
    return value if isinstance(value, str) and IDENTIFIER.match(value) else None


@dataclass(frozen=True)
class Account:
    account_id: str
    display_name: str


def _refuses_token(response: aiohttp.ClientResponse) -> bool:
    """Tell whether a 401 or 403 is about the bearer token, not the user.

    A bearer token's refusal carries a ``WWW-Authenticate: Bearer``
    challenge; a wrong password in the body of a call does not.
    """
    challenges = response.headers.getall("WWW-Authenticate", [])
    return any(value.strip().lower().startswith("bearer") for value in challenges)


class MedimoApi:
    """Calls the upstream API with its bearer token over the shared client session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        token: str,
        timeout: float,
        observe: Callable[[float], None] = lambda seconds: None,
    ) -> None:
        """``observe`` receives the seconds each call took until its answer."""
        self._observe = observe
        self._session = session
        self._base = base_url.rstrip("/") + "/gateway-api/v1"
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def _call(
        self, method: str, path: str, *, json: Any = None, params: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        started = time.monotonic()
        try:
            async with self._session.request(
                method,
                self._base + path,
                json=json,
                params=params,
                headers=self._headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                self._observe(time.monotonic() - started)
                if response.status in (401, 403) and _refuses_token(response):
                    upstream_logger.error(
                        "upstream api rejected the gateway's token: check upstream.api_token",
                        extra={"event": "api_token_rejected", "call": path.split("?")[0]},
                    )
                    raise UpstreamFailed("api_token_rejected")
                body = await response.json(content_type=None) if response.status < 500 else None
                return response.status, body
        except asyncio.TimeoutError as exc:
            upstream_logger.error("upstream api timed out", extra={"event": "api_timeout", "call": path.split("?")[0]})
            raise UpstreamTimeout("api_timeout") from exc
        except (aiohttp.ClientError, ValueError) as exc:
            upstream_logger.error(
                "upstream api failed",
                extra={"event": "api_failed", "call": path.split("?")[0], "error": type(exc).__name__},
            )
            raise UpstreamFailed("api_failed") from exc

    def _unexpected(self, call: str, status: int) -> UpstreamFailed:
        upstream_logger.error(
            "upstream api returned an unexpected status",
            extra={"event": "api_unexpected_status", "call": call, "status": status},
        )
        return UpstreamFailed("api_unexpected_status")

    async def verify_account(self, username: str, password: str) -> Account | None:
        """Return the account for a username and password, or None if they are wrong."""
        status, body = await self._call(
            "POST", "/accounts/verify", json={"username": username, "password": password}
        )
        if status == 401:
            return None
        account_id = _identifier(body, "account_id")
        if status != 200 or account_id is None:
            raise self._unexpected("accounts/verify", status)
        return Account(account_id, str(body.get("display_name", "")))

    async def verify_password(self, account_id: str, password: str) -> bool:
        path = f"/accounts/{quote(account_id, safe='')}/verify-password"
        status, _ = await self._call("POST", path, json={"password": password})
        if status in (200, 401):
            return status == 200
        raise self._unexpected("accounts/verify-password", status)

    async def find_client(self, *, external_id: str | None = None, bsn: str | None = None) -> tuple[str, str | None]:
        """Look a client up; return ``(outcome, client_id)``.

        The outcome is ``found``, ``not_found`` or ``ambiguous``.
        """
        params = {"external_id": external_id} if external_id else {"bsn": bsn or ""}
        status, body = await self._call("GET", "/clients", params=params)
        if status == 404:
            return "not_found", None
        if status == 409:
            return "ambiguous", None
        client_id = _identifier(body, "client_id")
        if status != 200 or client_id is None:
            raise self._unexpected("clients", status)
        return "found", client_id

    async def client_access(self, client_id: str, account_id: str) -> bool:
        path = f"/clients/{quote(client_id, safe='')}/access"
        status, body = await self._call("GET", path, params={"account_id": account_id})
        if status == 404:
            return False
        if status != 200 or not isinstance(body, dict) or not isinstance(body.get("allowed"), bool):
            raise self._unexpected("clients/access", status)
        return bool(body["allowed"])
