"""Every request outside ``/sso/``: check the session, then proxy it upstream."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from gateway.config.loader import Tenant

from gateway.errors import Forbidden, NotFound, Unauthorized
from gateway.flows.admission import check_address
from gateway.flows.cookies import set_session_cookie
from gateway.flows.login import session_from_cookie
from gateway.middleware.scope import SCOPE
from gateway.session.sessions import Session, expiry_reason, touched
from gateway.state import GATEWAY
from gateway.upstream.websocket import check_websocket_origin, is_websocket

#: Seconds between two session checks of an open WebSocket.
WEBSOCKET_RECHECK = 1.0

#: Path prefixes the gateway owns or keeps to itself, so nothing below them
#: goes upstream. The upstream API is for the gateway's bearer token alone.
RESERVED_PREFIXES = ("/sso/", "/relay/", "/gateway-api/")


def identity_headers(session: Session, request_id: str) -> dict[str, str]:
    headers = {
        "X-Medimo-Account": session.account,
        "X-Medimo-Tenant": session.tenant,
        "X-Ysis-User": session.ysis_user,
    }
    if session.client_id:
        headers["X-Medimo-Client"] = session.client_id
    headers["X-Medimo-Auth-Method"] = "ysis"
    headers["X-Request-Id"] = request_id
    return headers


@dataclass(frozen=True)
class ActiveSession:
    """A session that passed every check, and its re-issued form when due."""

    session: Session
    tenant: Tenant
    refreshed: Session | None


def require_session(request: web.Request) -> ActiveSession:
    """Return the request's valid session, or raise 401 or 403 with the reason."""
    gateway = request.app[GATEWAY]
    scope = request[SCOPE]
    session = session_from_cookie(request)
    if session is None:
        raise Unauthorized("session_missing")
    scope.tenant = session.tenant
    scope.ysis_user = session.ysis_user
    scope.account = session.account
    tenant = gateway.tenant(session.tenant)
    if tenant is None:
        raise Unauthorized("tenant_removed", tenant=session.tenant)
    limits = gateway.lifetimes(tenant)
    now_ms = gateway.now_ms()
    reason = expiry_reason(session, limits, now_ms)
    if reason is not None:
        raise Unauthorized(reason, tenant=tenant.name)
    if gateway.revocations.is_revoked(session):
        raise Unauthorized("session_revoked", tenant=tenant.name)
    check_address(request, tenant)
    if tenant.config.bind_session_to_certificate:
        if scope.fingerprint != session.fingerprint:
            # SECURITY: a copied cookie is useless on a machine without the
            # certificate the session was minted with.
            raise Unauthorized("certificate_not_bound", tenant=tenant.name)
        # SECURITY: the pin is checked again, so that a certificate revoked
        # by a new CRL, or no longer pinned, ends the sessions minted with it.
        reason = gateway.pins.problem(tenant, scope.certificate, scope.fingerprint)
        if reason is not None:
            raise Forbidden(reason, tenant=tenant.name)
    return ActiveSession(session, tenant, touched(session, limits, now_ms))


def _still_valid(request: web.Request, session: Session) -> bool:
    """Tell whether an open WebSocket's session may go on."""
    gateway = request.app[GATEWAY]
    tenant = gateway.tenant(session.tenant)
    if tenant is None or gateway.revocations.is_revoked(session):
        return False
    lifetime_ms = gateway.lifetimes(tenant).lifetime * 1000
    return gateway.now_ms() - session.issued_at <= lifetime_ms


def reissue(request: web.Request, active: ActiveSession, response: web.StreamResponse) -> None:
    """Set the re-issued session cookie on a response, when one is due."""
    if active.refreshed is not None:
        set_session_cookie(response, request.app[GATEWAY].sessions.encode(active.refreshed))


async def _methods_of_own_route(request: web.Request) -> list[str]:
    """Return the methods of the gateway's own route for this path, if any.

    aiohttp hands a path whose route lacks the method on to the catch-all
    route, so ``GET /sso/logout`` arrives here and gets its 405 from here.
    """
    methods: set[str] = set()
    catch_all = request.match_info.route.resource
    for resource in request.app.router.resources():
        if resource is catch_all:
            continue
        _, allowed = await resource.resolve(request)
        methods |= allowed
    return sorted(methods)


async def proxied(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    scope = request[SCOPE]
    path = request.rel_url.path
    if path in ("/sso", "/relay", "/gateway-api") or path.startswith(RESERVED_PREFIXES):
        # Only the path's shape decides a 405, so it reveals nothing about tenants.
        allowed = await _methods_of_own_route(request)
        if allowed:
            raise web.HTTPMethodNotAllowed(request.method, allowed)
        if path.startswith("/sso/ysis/"):
            # A path that is no valid tenant gets the same page as an unknown one.
            raise Forbidden("unknown_tenant", detail=path[10:74])
        raise NotFound("reserved_path")

    active = require_session(request)
    scope.outcome = "proxied"
    identity = identity_headers(active.session, scope.request_id)
    if is_websocket(request):
        check_websocket_origin(request)
        return await gateway.proxy.websocket(
            request,
            identity,
            str(scope.client),
            still_valid=lambda: _still_valid(request, active.session),
            recheck=WEBSOCKET_RECHECK,
        )
    return await gateway.proxy.forward(
        request,
        identity,
        str(scope.client),
        lambda response: reissue(request, active, response),
    )
