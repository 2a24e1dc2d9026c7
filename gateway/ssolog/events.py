"""SSO log entries of the request path, with the request's time, address and ID.

Each function queues its entry with the writer and returns at once, so the
SSO log never delays or fails a request, even with the database down.
"""

from __future__ import annotations

from aiohttp import web

from gateway.errors import GatewayError
from gateway.middleware.scope import SCOPE
from gateway.ssolog.entry import Entry
from gateway.state import GATEWAY

#: Refusals that concern no SSO step: a wrong Host and not-found paths.
_NOT_SSO_REASONS = frozenset({"host_invalid", "host_not_served"})
_NOT_SSO_STATUSES = frozenset({404, 405})

#: Paths of the launch, the link and confirm forms, and the logout.
_SSO_PATH_PREFIX = "/sso/ysis/"
_LOGOUT_PATH = "/sso/logout"


def record(request: web.Request, event: str, **fields: str | None) -> None:
    """Queue an entry for ``request``; ``fields`` are Entry fields."""
    gateway = request.app[GATEWAY]
    scope = request[SCOPE]
    # Before the address check has read the client address, the TCP peer
    # is the best known source.
    address = scope.client or scope.peer
    entry = Entry(
        event,
        gateway.utcnow(),
        source_ip=str(address) if address is not None else None,
        request_id=scope.request_id,
        **fields,
    )
    gateway.sso_log.record(entry)


def concerns_sso(request: web.Request, error: GatewayError) -> bool:
    """Tell whether a refusal belongs in the SSO log.

    Refusals of the launch, the forms and the logout belong there, and so do
    refusals by the session check of a proxied request or notice. Requests
    without any session cookie and upstream failures after the session check
    passed do not, and neither do not-found paths and a wrong Host.
    """
    if error.status in _NOT_SSO_STATUSES or error.reason in _NOT_SSO_REASONS:
        return False
    path = request.rel_url.path
    if path.startswith(_SSO_PATH_PREFIX) or path == _LOGOUT_PATH:
        return True
    return request[SCOPE].ysis_user is not None and error.status < 500


def record_refusal(request: web.Request, error: GatewayError) -> None:
    """Queue a ``refused`` entry when the refusal concerns single sign-on."""
    if not concerns_sso(request, error):
        return
    scope = request[SCOPE]
    record(
        request,
        "refused",
        tenant=error.tenant or scope.tenant,
        ysis_user=scope.ysis_user,
        medimo_account=scope.account,
        outcome=str(error.status),
        reason=error.reason,
    )
