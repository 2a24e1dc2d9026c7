"""The middlewares that wrap every request, outermost first.

1. ``scope_middleware`` reads the peer address and certificate before any
   ``await`` and writes the access log line, so every request, refused or
   not, is logged with its request ID.
2. ``error_middleware`` turns every ``GatewayError`` and aiohttp HTTP error
   into a Dutch page and logs refusals; nothing below it shows a stack trace.
3. ``method_middleware`` refuses methods outside the supported set (405)
   before any routing or upstream work.
4. ``host_middleware`` refuses a ``Host`` that names none of the configured
   public hostnames (421), so a request for another site never reaches a flow.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from cryptography import x509
from sqlalchemy.exc import SQLAlchemyError

from gateway.errors import (
    BadRequest,
    GatewayError,
    MisdirectedRequest,
    ServiceUnavailable,
)
from gateway.flows.cookies import expire_sent_cookies
from gateway.logs import access_logger, auth_logger, server_logger
from gateway.metrics import ROUTE_CLASSES, launch_outcome
from gateway.middleware.scope import SCOPE, RequestScope, build_scope
from gateway.config.models import normalise_host
from gateway.pages.render import error_page
from gateway.ssolog.events import record_refusal
from gateway.state import GATEWAY

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ALLOWED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

#: HSTS for two years; the gateway serves nothing over plain HTTP.
HSTS = "max-age=63072000; includeSubDomains"


@web.middleware
async def scope_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    scope = build_scope(request)
    request[SCOPE] = scope
    status = 500
    try:
        response = await handler(request)
        status = response.status
        scope.location = response.headers.get("Location")
        return response
    finally:
        _count(request, scope, status)
        access_logger.info(
            "request",
            extra={
                "request_id": scope.request_id,
                "method": request.method,
                "path": request.rel_url.path[:256],
                "status": status,
                "tenant": scope.tenant,
                "peer": str(scope.peer) if scope.peer else None,
                "client": str(scope.client) if scope.client else None,
                "outcome": scope.outcome,
                "duration_ms": round((time.monotonic() - scope.started) * 1000, 1),
            },
        )


def _count(request: web.Request, scope: RequestScope, status: int) -> None:
    gateway = request.app.get(GATEWAY)
    if gateway is None:
        return
    route = _route_class(request, scope)
    gateway.metrics.requests.labels(route, str(status)).inc()
    if route == "launch":
        tenant = scope.tenant if scope.tenant in gateway.config.tenants else ""
        location = scope.location or ""
        outcome = launch_outcome(status, location, scope.outcome)
        gateway.metrics.launches.labels(tenant, outcome).inc()


def _route_class(request: web.BaseRequest, scope: RequestScope) -> str:
    resource = request.match_info.route.resource if isinstance(request, web.Request) else None
    name = resource.name if resource is not None else None
    if name == "proxied" and request.path.startswith(("/sso", "/relay", "/gateway-api")):
        # Paths the gateway keeps to itself are never proxied.
        return "other"
    return name if name in ROUTE_CLASSES else "other"


def certificate_subject(der: bytes) -> str:
    """Return a DER certificate's subject as an RFC 4514 string, at most 256 characters."""
    try:
        return x509.load_der_x509_certificate(der).subject.rfc4514_string()[:256]
    except ValueError:
        return "unreadable"


def _log_refusal(request: web.Request, error: GatewayError) -> None:
    scope = request[SCOPE]
    scope.outcome = error.reason
    fields = {
        "event": error.reason,
        "request_id": scope.request_id,
        "tenant": error.tenant or scope.tenant,
        "peer": str(scope.peer) if scope.peer else None,
        "client": str(scope.client) if scope.client else None,
        "certificate": scope.fingerprint,
        "status": error.status,
    }
    if error.detail and error.status != 400:
        fields["detail"] = error.detail
    if error.reason.startswith("certificate_") and scope.certificate is not None:
        # The subject and fingerprint identify the certificate; the PEM would
        # only fill the log.
        fields["subject"] = certificate_subject(scope.certificate)
    if error.status >= 500:
        auth_logger.error("request failed", extra=fields)
    else:
        auth_logger.warning("request refused", extra=fields)
    record_refusal(request, error)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    scope = request[SCOPE]
    try:
        return await handler(request)
    except GatewayError as error:
        _log_refusal(request, error)
        return error_page(request, error.status, scope.request_id, _shown_detail(error))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        scope.outcome = f"http_{exc.status}"
        page = error_page(request, exc.status, scope.request_id)
        if exc.status == 405 and "Allow" in exc.headers:
            page.headers["Allow"] = exc.headers["Allow"]
        return page
    except asyncio.CancelledError:
        raise
    except SQLAlchemyError as exc:
        # The database is down or refused the statement: a degraded mode, so
        # the page says to try again later instead of showing a failure.
        error = ServiceUnavailable("database_unavailable", detail=type(exc).__name__)
        _log_refusal(request, error)
        return error_page(request, error.status, scope.request_id)
    except Exception:
        scope.outcome = "internal_error"
        server_logger.exception(
            "unhandled error", extra={"event": "internal_error", "request_id": scope.request_id}
        )
        return error_page(request, 500, scope.request_id)


def _shown_detail(error: GatewayError) -> str:
    # A 400 page names what was wrong (the parameter, never its value).
    # Other refusals show only what their raiser marked as safe to show, so
    # no page tells why a certificate or address check failed.
    return error.detail if error.status == 400 else error.shown


@web.middleware
async def method_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method not in ALLOWED_METHODS:
        raise web.HTTPMethodNotAllowed(request.method, sorted(ALLOWED_METHODS))
    return await handler(request)


#: A ``Host`` value: a name, an IPv4 address or a bracketed IPv6 address,
#: then an optional port of digits (RFC 9110, section 7.2).
HOST_VALUE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::([0-9]{1,5}))?\Z")


def host_name(host: str) -> str | None:
    """Return the name part of a ``Host`` value, or None if it is malformed."""
    match = HOST_VALUE.match(host)
    if match is None:
        return None
    port = match.group(2)
    if port is not None and not 0 < int(port) < 65536:
        return None
    return match.group(1).strip("[]")


@web.middleware
async def host_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    names = request.app[GATEWAY].config.gateway.public_hostnames
    hosts = request.headers.getall("Host", [])
    name = host_name(hosts[0]) if len(hosts) == 1 else None
    if name is None:
        # RFC 9112, section 3.2: a missing, repeated or invalid Host is a 400.
        raise BadRequest("host_invalid", detail="De Host-header ontbreekt of is ongeldig.")
    if normalise_host(name) not in names:
        raise MisdirectedRequest("host_not_served", detail=hosts[0][:100])
    return await handler(request)


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Add HSTS and the request ID to every response, streamed ones included."""
    response.headers["Strict-Transport-Security"] = HSTS
    scope = request.get(SCOPE)
    if scope is not None:
        response.headers["X-Request-Id"] = scope.request_id
        if scope.expire_cookies:
            expire_sent_cookies(request, response)


MIDDLEWARES = (scope_middleware, error_middleware, method_middleware, host_middleware)
