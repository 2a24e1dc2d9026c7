"""Notices shown to a logged-in user whose client could not be opened."""

from __future__ import annotations

from aiohttp import web

from gateway.errors import NotFound
from gateway.flows.login import NOTICE_NO_ACCESS, NOTICE_UNKNOWN_CLIENT, landing_path
from gateway.flows.proxied import reissue, require_session
from gateway.pages.render import page
from gateway.state import GATEWAY

NOTICES = {
    NOTICE_UNKNOWN_CLIENT: (
        "Onbekende cliënt",
        "De cliënt uit Ysis is in Medimo niet (eenduidig) gevonden. U bent wel aangemeld.",
    ),
    NOTICE_NO_ACCESS: (
        "Onvoldoende rechten voor deze cliënt",
        "U heeft in Medimo geen toegang tot de cliënt uit Ysis. U bent wel aangemeld.",
    ),
}


async def notice(request: web.Request) -> web.StreamResponse:
    kind = request.match_info["kind"]
    if kind not in NOTICES:
        raise NotFound("notice_unknown")
    active = require_session(request)
    gateway = request.app[GATEWAY]

    # The way on: the requested view when it needs no client, else the main
    # menu. landing_path maps the view name through the configuration, so
    # nothing from the query string becomes a URL.
    view = request.query.get("view")
    onward = landing_path(gateway, active.tenant, view, None)
    title, text = NOTICES[kind]
    context = {
        "title": title,
        "text": text,
        "onward": onward,
        "onward_label": "Naar het hoofdmenu" if onward == gateway.config.gateway.views["default"] else "Verder naar Medimo",
    }
    response = page(request, "notice.html", context)
    reissue(request, active, response)
    return response
