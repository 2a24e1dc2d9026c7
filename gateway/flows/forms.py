"""The link form and the confirm form, which follow a launch.

Both read the pending-launch cookie, which must belong to this tenant and to
the certificate of this request, and both check the CSRF token bound to that
cookie and the ``Origin`` of a post. A wrong password leaves the pending
launch usable; a success marks it used in Redis, so it cannot be replayed,
and always mints a new session. Failed checks are limited per account and
per tenant and client address (see ``attempt_limits``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

from aiohttp import web
from redis.exceptions import RedisError

from gateway.config.loader import Tenant
from gateway.errors import (
    BadRequest,
    FormRejected,
    GatewayError,
    LinkConflict,
    ServiceUnavailable,
    TooManyRequests,
    UpstreamFailed,
    UpstreamTimeout,
)
from gateway.flows.attempt_limits import Attempt, account_key, client_key, username_key
from gateway.flows.admission import admit
from gateway.flows.body import read_urlencoded
from gateway.flows.cookies import check_origin
from gateway.flows.login import log_in, note_link_use
from gateway.logs import auth_logger
from gateway.middleware.scope import SCOPE
from gateway.pages.render import page
from gateway.session.codec import PENDING_COOKIE, BadCookie
from gateway.session.pending import PendingLaunch
from gateway.ssolog.events import record
from gateway.state import GATEWAY, Gateway

#: The result of an awaited upstream check.
T = TypeVar("T")

WRONG_CREDENTIALS = "De gebruikersnaam of het wachtwoord is onjuist."
WRONG_PASSWORD = "Het wachtwoord is onjuist."

#: Bytes a form post may hold.
MAX_FORM_BODY = 8 * 1024


class AlreadyLinked(GatewayError):
    status = 409


def _pending(request: web.Request, tenant: Tenant) -> PendingLaunch:
    gateway = request.app[GATEWAY]
    scope = request[SCOPE]
    try:
        pending = gateway.pending.decode(request.cookies.get(PENDING_COOKIE, ""))
    except BadCookie:
        raise FormRejected("pending_missing", tenant=tenant.name) from None
    # The cookie is the gateway's own, so the log may name its user even
    # when a check below rejects it.
    scope.ysis_user = pending.ysis_user
    scope.account = pending.account
    age_ms = gateway.now_ms() - pending.issued_at
    if not 0 <= age_ms <= gateway.config.gateway.session.pending_lifetime * 1000 + 5000:
        raise FormRejected("pending_expired", tenant=tenant.name)
    if pending.tenant != tenant.name or pending.fingerprint != scope.fingerprint:
        raise FormRejected("pending_mismatch", tenant=tenant.name)
    return pending


async def _form_fields(request: web.Request, tenant: Tenant, pending: PendingLaunch, form: str) -> dict[str, str]:
    check_origin(request, tenant.name)
    data = await read_urlencoded(request, MAX_FORM_BODY)
    fields: dict[str, str] = {}
    for name in ("csrf_token", "username", "password"):
        values = data.getall(name, [])
        if len(values) > 1:
            raise BadRequest("form_invalid", detail=f"Het veld '{name}' is ongeldig.")
        fields[name] = values[0] if values else ""
    if not request.app[GATEWAY].pending.check_csrf(pending, form, fields["csrf_token"]):
        raise FormRejected("csrf_invalid", tenant=tenant.name)
    return fields


async def _use_up(request: web.Request, pending: PendingLaunch, tenant: Tenant) -> None:
    """Mark the pending launch used; raise if it was used before or Redis is down."""
    gateway = request.app[GATEWAY]
    ttl_ms = int(gateway.config.gateway.session.pending_lifetime * 1000) + 10_000
    try:
        fresh = await gateway.redis.set(f"sso:pending-used:{pending.pid}", "1", nx=True, px=ttl_ms)
    except (RedisError, OSError) as exc:
        raise ServiceUnavailable("redis_unavailable", tenant=tenant.name) from exc
    if not fresh:
        raise FormRejected("pending_reused", tenant=tenant.name)


async def _admit_attempt(
    request: web.Request, tenant: Tenant, started: float, key: str
) -> Attempt:
    """Admit a password check, or raise 429 after the minimum failure time.

    ``key`` is the account's key from ``username_key`` or ``account_key``.
    Without Redis this raises 503, so the forms never run without limits.
    """
    client = client_key(tenant.name, request[SCOPE].client)
    try:
        return await request.app[GATEWAY].attempts.admit(key, client)
    except TooManyRequests:
        # SECURITY: a refusal takes as long as a wrong password, so timing
        # does not tell a lockout from a failed check.
        await _after_minimum(started, request)
        raise


async def _counted(gateway: Gateway, attempt: Attempt, check: Awaitable[T]) -> T:
    """Await an upstream password check; one that fails upstream still counts.

    SECURITY: an upstream fault is charged like a wrong password, so that an
    upstream that responds to some wrong passwords with an error gives no
    unlimited guesses from one address. The account's slot was taken on
    admission either way.
    """
    try:
        return await check
    except (UpstreamFailed, UpstreamTimeout):
        await gateway.attempts.record_failure(attempt)
        raise


async def _after_minimum(started: float, request: web.Request) -> None:
    minimum = request.app[GATEWAY].config.gateway.forms.min_failure_time
    remaining = started + minimum - time.monotonic()
    if remaining > 0:
        await asyncio.sleep(remaining)


def _render(
    request: web.Request,
    tenant: Tenant,
    pending: PendingLaunch,
    form: str,
    *,
    error: str = "",
    username: str = "",
    status: int = 200,
) -> web.Response:
    gateway = request.app[GATEWAY]
    titles = {"link": "Account koppelen", "confirm": "Wachtwoord bevestigen"}
    context = {
        "title": titles[form],
        "tenant_display": tenant.config.display_name,
        "ysis_user": pending.ysis_user,
        "action": f"/sso/ysis/{tenant.name}/{form}",
        "csrf_token": gateway.pending.csrf_token(pending, form),
        "error": error,
        "username": username,
    }
    return page(request, f"{form}.html", context, status=status)


async def link_form(request: web.Request) -> web.StreamResponse:
    tenant = admit(request, request.match_info["tenant"])
    pending = _pending(request, tenant)
    if pending.account is not None or not tenant.config.allow_self_link:
        raise FormRejected("pending_mismatch", tenant=tenant.name)
    return _render(request, tenant, pending, "link")


async def link_submit(request: web.Request) -> web.StreamResponse:
    started = time.monotonic()
    gateway = request.app[GATEWAY]
    tenant = admit(request, request.match_info["tenant"])
    pending = _pending(request, tenant)
    if pending.account is not None or not tenant.config.allow_self_link:
        raise FormRejected("pending_mismatch", tenant=tenant.name)
    fields = await _form_fields(request, tenant, pending, "link")

    username = fields["username"].strip()
    # SECURITY: the limit is checked before the password is sent upstream.
    # An unknown username gets a key of its own, exactly like a known one.
    attempt = await _admit_attempt(request, tenant, started, username_key(username))
    account = None
    if username and fields["password"] and len(username) <= 128 and len(fields["password"]) <= 256:
        account = await _counted(gateway, attempt, gateway.api.verify_account(username, fields["password"]))
    if account is None:
        await gateway.attempts.record_failure(attempt)
        _log_failure(request, tenant, pending, "link_password_wrong")
        await _after_minimum(started, request)
        return _render(request, tenant, pending, "link", error=WRONG_CREDENTIALS, username=username[:128], status=401)

    await gateway.attempts.record_success(attempt)
    await _use_up(request, pending, tenant)
    request[SCOPE].account = account.account_id
    try:
        await gateway.links.add(tenant.name, pending.ysis_user, account.account_id, "self-link")
    except LinkConflict as conflict:
        existing = await gateway.links.get(tenant.name, pending.ysis_user)
        if conflict.field != "ysis_user" or existing is None or existing.medimo_account != account.account_id:
            raise AlreadyLinked("account_already_linked", tenant=tenant.name) from None
    else:
        record(
            request,
            "link_created",
            tenant=tenant.name,
            ysis_user=pending.ysis_user,
            medimo_account=account.account_id,
            outcome="ok",
        )
    auth_logger.info(
        "link created",
        extra={
            "event": "link_created",
            "request_id": request[SCOPE].request_id,
            "tenant": tenant.name,
            "ysis_user": pending.ysis_user,
            "account": account.account_id,
        },
    )
    return await log_in(
        request,
        tenant,
        account=account.account_id,
        ysis_user=pending.ysis_user,
        client_id=pending.client_id,
        client_outcome=pending.client_outcome,
        view=pending.view,
    )


async def confirm_form(request: web.Request) -> web.StreamResponse:
    tenant = admit(request, request.match_info["tenant"])
    pending = _pending(request, tenant)
    if pending.account is None:
        raise FormRejected("pending_mismatch", tenant=tenant.name)
    return _render(request, tenant, pending, "confirm")


async def confirm_submit(request: web.Request) -> web.StreamResponse:
    started = time.monotonic()
    gateway = request.app[GATEWAY]
    tenant = admit(request, request.match_info["tenant"])
    pending = _pending(request, tenant)
    if pending.account is None:
        raise FormRejected("pending_mismatch", tenant=tenant.name)
    fields = await _form_fields(request, tenant, pending, "confirm")

    # SECURITY: the limit is checked before the password is sent upstream.
    key = account_key(pending.account)
    attempt = await _admit_attempt(request, tenant, started, key)
    password = fields["password"]
    ok = bool(password) and len(password) <= 256 and await _counted(gateway, attempt, gateway.api.verify_password(pending.account, password))
    if not ok:
        await gateway.attempts.record_failure(attempt)
        _log_failure(request, tenant, pending, "confirm_password_wrong")
        await _after_minimum(started, request)
        return _render(request, tenant, pending, "confirm", error=WRONG_PASSWORD, status=401)

    await gateway.attempts.record_success(attempt)
    # The link may have been removed since the launch.
    link = await gateway.links.get(tenant.name, pending.ysis_user)
    if link is None or link.medimo_account != pending.account:
        raise FormRejected("link_changed", tenant=tenant.name)
    await _use_up(request, pending, tenant)
    await note_link_use(gateway, tenant.name, pending.ysis_user)
    return await log_in(
        request,
        tenant,
        account=pending.account,
        ysis_user=pending.ysis_user,
        client_id=pending.client_id,
        client_outcome=pending.client_outcome,
        view=pending.view,
    )


def _log_failure(request: web.Request, tenant: Tenant, pending: PendingLaunch, event: str) -> None:
    scope = request[SCOPE]
    scope.outcome = event
    auth_logger.warning(
        "password check failed",
        extra={
            "event": event,
            "request_id": scope.request_id,
            "tenant": tenant.name,
            "ysis_user": pending.ysis_user,
            "client": str(scope.client) if scope.client else None,
        },
    )
    # SECURITY: the typed username is never logged, because it may be a
    # password typed in the wrong field.
    record(
        request,
        "refused",
        tenant=tenant.name,
        ysis_user=pending.ysis_user,
        medimo_account=pending.account,
        outcome="401",
        reason=event,
    )
