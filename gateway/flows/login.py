"""Minting a session at the end of a flow, and ending the one a browser had."""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from gateway.config.loader import Tenant
from gateway.flows.cookies import expire_cookie, see_other, set_session_cookie
from gateway.logs import LogThrottle, auth_logger
from gateway.middleware.scope import SCOPE
from gateway.session.codec import PENDING_COOKIE, SESSION_COOKIE, BadCookie
from gateway.session.sessions import Session
from gateway.ssolog.events import record
from gateway.state import GATEWAY, Gateway


def landing_path(gateway: Gateway, tenant: Tenant, view: str | None, client_id: str | None) -> str:
    """Return the upstream path a launch lands on; never a URL from the request.

    An unknown or disallowed view, and a view that needs a client when none
    was resolved, land on the main menu (``default``).
    """
    views = gateway.config.gateway.views
    wanted = view if view is not None else ("status" if client_id else "default")
    reason = None
    if wanted not in views:
        reason = "view_unknown"
    elif not tenant.config.allows_view(wanted):
        reason = "view_not_allowed"
    elif "{client_id}" in views[wanted] and not client_id:
        reason = "view_needs_client"
    if reason is not None:
        auth_logger.info(
            "view replaced by the main menu",
            extra={"event": reason, "tenant": tenant.name, "view": (view or "")[:64]},
        )
        wanted = "default"
    return views[wanted].replace("{client_id}", quote(client_id or "", safe=""))


_touch_throttle = LogThrottle()


async def note_link_use(gateway: Gateway, tenant: str, ysis_user: str) -> None:
    """Set the link's ``last_used_at``; a database error does not stop the login.

    The link itself may come from the Redis cache, so a login can go on
    while the database is down. Only the time of last use is then lost.
    """
    try:
        await gateway.links.touch(tenant, ysis_user, gateway.utcnow())
    except (SQLAlchemyError, OSError) as error:
        held_back = _touch_throttle.allow()
        if held_back is not None:
            auth_logger.warning(
                "last use of a link not written",
                extra={
                    "event": "link_touch_failed",
                    "tenant": tenant,
                    "ysis_user": ysis_user,
                    "error": repr(error)[:500],
                    "not_logged": held_back,
                },
            )


def session_from_cookie(request: web.Request) -> Session | None:
    """Return the signed session the browser sent, or None (expiry not checked)."""
    value = request.cookies.get(SESSION_COOKIE)
    if not value:
        return None
    try:
        return request.app[GATEWAY].sessions.decode(value)
    except BadCookie:
        return None


async def end_browser_session(request: web.Request) -> Session | None:
    """Revoke the browser's current session, if it sent a valid one, and return it."""
    gateway = request.app[GATEWAY]
    session = session_from_cookie(request)
    if session is None:
        return None
    # SECURITY: recorded in SQL and announced, so that every copy of the
    # cookie stops working on every instance, not only on this one.
    await gateway.revocations.revoke("session", session.tenant, session.sid)
    auth_logger.info(
        "session ended",
        extra={
            "event": "session_ended",
            "request_id": request[SCOPE].request_id,
            "tenant": session.tenant,
            "session": session.sid[:8],
        },
    )
    return session


#: Notice pages shown after a launch whose client could not be opened.
NOTICE_UNKNOWN_CLIENT = "onbekende-client"
NOTICE_NO_ACCESS = "onvoldoende-rechten"


async def _client_for(
    request: web.Request, account: str, client_id: str | None, outcome: str | None
) -> tuple[str | None, str | None]:
    """Return the client the session may carry and the notice to show, if any."""
    if outcome is None:
        return None, None
    if outcome != "found" or client_id is None:
        return None, NOTICE_UNKNOWN_CLIENT
    if not await request.app[GATEWAY].api.client_access(client_id, account):
        return None, NOTICE_NO_ACCESS
    return client_id, None


async def log_in(
    request: web.Request,
    tenant: Tenant,
    *,
    account: str,
    ysis_user: str,
    client_id: str | None,
    client_outcome: str | None,
    view: str | None,
) -> web.StreamResponse:
    """Mint a new session and answer 303 to the landing page or a notice."""
    gateway = request.app[GATEWAY]
    scope = request[SCOPE]
    client_id, notice = await _client_for(request, account, client_id, client_outcome)
    session = gateway.sessions.mint(
        tenant=tenant.name,
        account=account,
        ysis_user=ysis_user,
        client_id=client_id,
        fingerprint=scope.fingerprint,
        now_ms=gateway.now_ms(),
    )
    if notice is not None:
        location = f"/sso/melding/{notice}" + (f"?view={quote(view, safe='')}" if view else "")
    else:
        location = landing_path(gateway, tenant, view, client_id)
    response = see_other(location)
    set_session_cookie(response, gateway.sessions.encode(session))
    if PENDING_COOKIE in request.cookies:
        expire_cookie(response, PENDING_COOKIE)
    scope.outcome = "logged_in"
    auth_logger.info(
        "logged in",
        extra={
            "event": "logged_in",
            "request_id": scope.request_id,
            "tenant": tenant.name,
            "ysis_user": ysis_user,
            "account": account,
            "client_id": client_id,
            "notice": notice,
            "session": session.sid[:8],
        },
    )
    _record_login(request, tenant, session, notice)
    return response


#: ``reason`` of a ``logged_in`` row whose client could not be opened.
_NOTICE_REASONS = {
    NOTICE_UNKNOWN_CLIENT: "client_unknown",
    NOTICE_NO_ACCESS: "client_no_access",
}


def _record_login(
    request: web.Request, tenant: Tenant, session: Session, notice: str | None
) -> None:
    identity = {
        "tenant": tenant.name,
        "ysis_user": session.ysis_user,
        "medimo_account": session.account,
    }
    reason = _NOTICE_REASONS.get(notice) if notice is not None else None
    record(request, "logged_in", **identity, outcome="ok", reason=reason)
    if session.client_id is not None:
        record(
            request,
            "client_opened",
            **identity,
            medimo_client=session.client_id,
            outcome="ok",
        )
