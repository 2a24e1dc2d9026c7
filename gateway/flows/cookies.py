"""Setting and expiring the gateway's cookies, and the Origin check they need."""

from __future__ import annotations

from aiohttp import web

from gateway.errors import FormRejected
from gateway.session.codec import GATEWAY_COOKIES, PENDING_COOKIE, SESSION_COOKIE


def set_session_cookie(response: web.StreamResponse, value: str) -> None:
    # A session cookie (no Max-Age): the browser drops it when it closes, and
    # the server enforces lifetime and idle timeout from the signed times.
    response.set_cookie(
        SESSION_COOKIE, value, path="/", secure=True, httponly=True, samesite="Lax"
    )
    response.headers["Cache-Control"] = "no-store"


def set_pending_cookie(response: web.StreamResponse, value: str, max_age: float) -> None:
    response.set_cookie(
        PENDING_COOKIE,
        value,
        path="/",
        secure=True,
        httponly=True,
        samesite="Lax",
        max_age=int(max_age),
    )
    response.headers["Cache-Control"] = "no-store"


def expire_cookie(response: web.StreamResponse, name: str) -> None:
    # __Host- cookies are only replaced by a Set-Cookie with the same
    # prefix rules (Secure, Path=/), so the expiry carries them too.
    response.set_cookie(
        name,
        "",
        path="/",
        secure=True,
        httponly=True,
        samesite="Lax",
        max_age=0,
        expires="Thu, 01 Jan 1970 00:00:00 GMT",
    )
    response.headers["Cache-Control"] = "no-store"


def expire_sent_cookies(request: web.Request, response: web.StreamResponse) -> None:
    """Expire each gateway cookie the browser sent, unless the response sets it anew."""
    for name in GATEWAY_COOKIES:
        if name in request.cookies and name not in response.cookies:
            expire_cookie(response, name)


def see_other(location: str) -> web.Response:
    """Return a 303 to a path of this gateway, with no referrer sent onward."""
    return web.Response(
        status=303,
        headers={"Location": location, "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"},
    )


def check_origin(request: web.Request, tenant: str | None = None) -> None:
    """Raise FormRejected unless the post's one ``Origin`` is this gateway.

    The expected origin comes from the ``Host`` header, which the host check
    has matched to a public hostname. ``request.host`` is not used, because
    it can come from an absolute-form request target.
    """
    origins = request.headers.getall("Origin", [])
    expected = "https://" + request.headers.get("Host", "").lower()
    # SECURITY: browsers send the posting page's origin (RFC 6454, section
    # 7), so this also stops a sibling subdomain, which SameSite counts as
    # the same site.
    if len(origins) != 1 or origins[0].lower() != expected:
        raise FormRejected("origin_mismatch", tenant=tenant)
