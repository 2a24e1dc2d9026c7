"""The Ysis launch: ``GET`` or ``POST /sso/ysis/{tenant}``.

Order of the checks: tenant and certificate pin, client address, then the
parameters. A launch that passes the first two ends whatever session the
browser had, then either logs the user in (303 to the landing page) or sends
them to the link or confirm form with a pending-launch cookie.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiohttp import web
from multidict import MultiMapping

from gateway.errors import BadRequest, Forbidden
from gateway.flows.admission import admit
from gateway.flows.body import read_urlencoded
from gateway.config.loader import Tenant
from gateway.flows import launch_signature
from gateway.flows.cookies import see_other, set_pending_cookie
from gateway.flows.login import end_browser_session, log_in, note_link_use
from gateway.logs import auth_logger
from gateway.middleware.scope import SCOPE
from gateway.ssolog.events import record
from gateway.state import GATEWAY

ACCOUNT_ID = re.compile(r"[A-Za-z0-9._@-]{1,64}\Z")

#: Bytes a form-encoded launch body may hold.
MAX_LAUNCH_BODY = 8 * 1024


@dataclass(frozen=True)
class LaunchParameters:
    user_id: str
    client_id: str | None
    bsn: str | None
    view: str | None


def elfproef(bsn: str) -> bool:
    """Check a BSN: nine digits whose weighted sum (9..2, then -1) is divisible by 11."""
    if len(bsn) != 9 or not bsn.isascii() or not bsn.isdigit():
        return False
    weights = (9, 8, 7, 6, 5, 4, 3, 2, -1)
    total = sum(int(digit) * weight for digit, weight in zip(bsn, weights))
    return total % 11 == 0 and bsn != "000000000"


def _single(values: MultiMapping[str], name: str) -> str | None:
    found = values.getall(name, [])
    return found[0] if found else None


def parse_parameters(values: MultiMapping[str]) -> LaunchParameters:
    """Apply the launch parameter rules; raise BadRequest naming the parameter."""
    for name in set(values.keys()):
        if len(values.getall(name)) > 1:
            raise BadRequest("parameter_repeated", detail=f"De parameter '{name[:40]}' komt meer dan één keer voor.")

    user_id = _single(values, "userId")
    if user_id is None or user_id == "":
        raise BadRequest("parameter_missing", detail="De parameter 'userId' ontbreekt.")
    if not ACCOUNT_ID.match(user_id):
        raise BadRequest("parameter_invalid", detail="De parameter 'userId' is ongeldig.")

    client_id = _single(values, "clientId")
    if client_id is not None and not ACCOUNT_ID.match(client_id):
        raise BadRequest("parameter_invalid", detail="De parameter 'clientId' is ongeldig.")

    bsn = _single(values, "bsn")
    if bsn is not None and not elfproef(bsn):
        # SECURITY: the message names the parameter, never the value.
        raise BadRequest("parameter_invalid", detail="De parameter 'bsn' is ongeldig.")

    return LaunchParameters(user_id, client_id or None, bsn, _single(values, "view"))


async def read_parameters(request: web.Request) -> MultiMapping[str]:
    """Return the query of a GET launch or the form body of a POST launch."""
    if request.method != "POST":
        return request.query
    if request.query_string:
        raise BadRequest("post_with_query", detail="Een POST-start mag geen parameters in het adres hebben.")
    return await read_urlencoded(request, MAX_LAUNCH_BODY)


async def _find_client(request: web.Request, tenant: Tenant, params: LaunchParameters) -> tuple[str | None, str | None]:
    """Match ``clientId``, then the BSN, to a Medimo client; return (outcome, client ID).

    Several matches are never settled by the BSN: they stay ``ambiguous``.
    """
    if not tenant.config.client_context or not (params.client_id or params.bsn):
        return None, None
    api = request.app[GATEWAY].api
    outcome, client_id = "not_found", None
    if params.client_id:
        outcome, client_id = await api.find_client(external_id=params.client_id)
    if outcome == "not_found" and params.bsn:
        outcome, client_id = await api.find_client(bsn=params.bsn)
    return outcome, client_id


async def launch(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    scope = request[SCOPE]
    tenant = admit(request, request.match_info["tenant"])

    # Past the certificate and address checks, the browser's old session
    # ends whatever follows, so that two users of one workstation never mix.
    scope.expire_cookies = True
    previous = await end_browser_session(request)

    values = await read_parameters(request)
    params = parse_parameters(values)
    scope.ysis_user = params.user_id
    if tenant.config.launch_signature:
        assert tenant.config.launch_secret is not None
        await launch_signature.verify(
            tenant.name,
            tenant.config.launch_secret.reveal(),
            list(values.items()),
            now=gateway.clock(),
            redis=gateway.redis,
        )

    outcome, client_id = await _find_client(request, tenant, params)
    link = await gateway.links.get(tenant.name, params.user_id)
    scope.account = link.medimo_account if link is not None else None
    if link is None and not tenant.config.allow_self_link:
        raise Forbidden(
            "self_link_not_allowed",
            tenant=tenant.name,
            shown="Uw Ysis-account is nog niet gekoppeld aan Medimo. Vraag de applicatiebeheerder om de koppeling te maken.",
        )

    auth_logger.info(
        "launch accepted",
        extra={
            "event": "launch",
            "request_id": scope.request_id,
            "tenant": tenant.name,
            "ysis_user": params.user_id,
            "linked": link is not None,
            "client_lookup": outcome,
            "ended_session": previous is not None,
        },
    )
    # SECURITY: the BSN is never logged, only how the client lookup ended.
    record(
        request,
        "launch",
        tenant=tenant.name,
        ysis_user=params.user_id,
        medimo_account=scope.account,
        medimo_client=client_id,
        client_lookup=outcome,
        outcome="linked" if link is not None else "not_linked",
    )
    if link is not None and not tenant.config.confirm_password:
        await note_link_use(gateway, tenant.name, params.user_id)
        return await log_in(
            request,
            tenant,
            account=link.medimo_account,
            ysis_user=params.user_id,
            client_id=client_id,
            client_outcome=outcome,
            view=params.view,
        )

    pending = gateway.pending.new(
        tenant=tenant.name,
        ysis_user=params.user_id,
        account=link.medimo_account if link else None,
        client_id=client_id,
        client_outcome=outcome,
        view=params.view,
        fingerprint=scope.fingerprint,
        issued_at=gateway.now_ms(),
    )
    form = "confirm" if link is not None else "link"
    response = see_other(f"/sso/ysis/{tenant.name}/{form}")
    set_pending_cookie(
        response, gateway.pending.encode(pending), gateway.config.gateway.session.pending_lifetime
    )
    return response
