"""Reading the small form-encoded bodies of a POST launch and the forms.

aiohttp's ``request.post()`` honours any charset the client names and checks
the body size only against ``Content-Length``. Here the body is read with a
hard limit on the bytes that arrive, chunked or not, and decoded as UTF-8
only, so that two different byte strings never mean the same launch.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from aiohttp import web
from multidict import MultiDict

from gateway.errors import BadRequest

FORM_TYPE = "application/x-www-form-urlencoded"


async def read_urlencoded(request: web.Request, limit: int) -> MultiDict[str]:
    """Return the fields of a form-encoded body of at most ``limit`` bytes.

    Raise BadRequest for another content type, a charset other than UTF-8,
    a body over the limit, or bytes that are not UTF-8.
    """
    if request.content_type != FORM_TYPE:
        raise BadRequest("form_content_type", detail="Het verzoek moet formuliergegevens bevatten.")
    charset = request.charset
    if charset is not None and charset.lower() not in ("utf-8", "utf8"):
        raise BadRequest("form_charset", detail="Het formulier moet in UTF-8 zijn gecodeerd.")
    declared = request.content_length
    if declared is not None and declared > limit:
        raise BadRequest("form_too_large", detail="Het verzoek is te groot.")

    body = await _read_at_most(request, limit)
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise BadRequest("form_encoding", detail="Het formulier bevat ongeldige tekens.") from None
    return MultiDict(pairs)


async def _read_at_most(request: web.Request, limit: int) -> bytes:
    # SECURITY: a chunked body has no Content-Length, so the bytes that
    # arrive are counted here instead.
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise BadRequest("form_too_large", detail="Het verzoek is te groot.")
        chunks.append(chunk)
    return b"".join(chunks)
