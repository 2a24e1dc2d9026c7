"""Logout: ``POST /sso/logout`` and the page it leads to."""

from __future__ import annotations

from aiohttp import web

from gateway.flows.cookies import check_origin, expire_cookie, see_other
from gateway.flows.login import end_browser_session
from gateway.pages.render import page
from gateway.session.codec import GATEWAY_COOKIES
from gateway.ssolog.events import record

LOGGED_OUT_PATH = "/sso/afgemeld"


async def logout(request: web.Request) -> web.StreamResponse:
    check_origin(request)
    ended = await end_browser_session(request)
    if ended is None:
        record(request, "logout", outcome="no_session")
    else:
        record(
            request,
            "logout",
            tenant=ended.tenant,
            ysis_user=ended.ysis_user,
            medimo_account=ended.account,
            medimo_client=ended.client_id,
            outcome="session_ended",
        )
    response = see_other(LOGGED_OUT_PATH)
    for name in GATEWAY_COOKIES:
        expire_cookie(response, name)
    response.headers["Clear-Site-Data"] = '"cookies"'
    return response


async def logged_out(request: web.Request) -> web.StreamResponse:
    return page(request, "logged_out.html", {"title": "U bent afgemeld"})
