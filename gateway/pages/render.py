"""Pages the gateway shows itself: Dutch, self-contained, never cached.

Templates live in ``templates/`` and are rendered through aiohttp-jinja2
with autoescaping. Every page is ``Cache-Control: no-store`` with a strict
Content-Security-Policy that allows only the page's own inline style.
"""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

#: No scripts, no frames, forms only to this origin, styles only inline.
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

#: Title and explanation of each error page, by status.
ERRORS: dict[int, tuple[str, str]] = {
    400: ("Ongeldig verzoek", "Het verzoek bevat een fout."),
    401: (
        "Sessie verlopen",
        "U bent niet (meer) aangemeld. Start Medimo opnieuw vanuit Ysis.",
    ),
    403: (
        "Toegang geweigerd",
        "U heeft geen toegang tot deze pagina. Start Medimo vanuit Ysis, "
        "op een werkplek van uw organisatie.",
    ),
    404: ("Pagina niet gevonden", "Deze pagina bestaat niet."),
    405: ("Methode niet toegestaan", "Deze pagina ondersteunt dit soort verzoek niet."),
    409: (
        "Account al gekoppeld",
        "Dit Medimo-account is al gekoppeld aan een andere Ysis-gebruiker van uw organisatie.",
    ),
    421: ("Onjuist adres", "Dit adres hoort niet bij deze dienst."),
    429: (
        "Te veel pogingen",
        "Er zijn te veel mislukte pogingen gedaan. Probeer het later opnieuw.",
    ),
    500: ("Er ging iets mis", "Er is een onverwachte fout opgetreden."),
    502: ("Medimo is niet bereikbaar", "Medimo gaf geen geldig antwoord."),
    503: (
        "Tijdelijk niet beschikbaar",
        "Deze functie is tijdelijk niet beschikbaar. Probeer het over enkele minuten opnieuw.",
    ),
    504: ("Medimo reageert niet", "Medimo reageerde niet op tijd."),
}

#: What the user can do next, by status.
NEXT_STEPS: dict[int, str] = {
    400: "Start Medimo opnieuw vanuit Ysis. Blijft dit gebeuren, neem dan contact op met de applicatiebeheerder.",
    401: "Ga terug naar Ysis en open Medimo opnieuw.",
    403: "Ga terug naar Ysis en open Medimo opnieuw. Blijft dit gebeuren, neem dan contact op met de applicatiebeheerder.",
    404: "Ga terug naar Ysis en open Medimo opnieuw.",
    405: "Ga terug naar Ysis en open Medimo opnieuw.",
    409: "Vraag de applicatiebeheerder om de bestaande koppeling op te heffen, en start Medimo daarna opnieuw vanuit Ysis.",
    421: "Gebruik het adres dat uw organisatie heeft ingesteld, of start Medimo vanuit Ysis.",
    429: "Wacht enkele minuten en start Medimo daarna opnieuw vanuit Ysis. Blijft dit gebeuren, neem dan contact op met de applicatiebeheerder.",
    500: "Probeer het opnieuw. Blijft dit gebeuren, neem dan contact op met de applicatiebeheerder.",
    502: "Probeer het over enkele minuten opnieuw vanuit Ysis.",
    503: "Probeer het over enkele minuten opnieuw vanuit Ysis.",
    504: "Probeer het over enkele minuten opnieuw vanuit Ysis.",
}


def setup(app: web.Application) -> None:
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("gateway.pages", "templates"),
        autoescape=jinja2.select_autoescape(default=True),
        undefined=jinja2.StrictUndefined,
    )


def protect(response: web.StreamResponse) -> None:
    """Add the headers every gateway page carries."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"


def page(
    request: web.Request, template: str, context: dict[str, Any], *, status: int = 200
) -> web.Response:
    response = aiohttp_jinja2.render_template(template, request, context, status=status)
    protect(response)
    return response


def error_page(request: web.Request, status: int, request_id: str, detail: str = "") -> web.Response:
    title, text = ERRORS.get(status, ERRORS[500])
    context = {
        "title": title,
        "text": text,
        "detail": detail,
        "next_step": NEXT_STEPS.get(status, NEXT_STEPS[500]),
        "status": status,
        "request_id": request_id,
    }
    return page(request, "error.html", context, status=status)
