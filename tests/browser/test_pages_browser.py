"""The gateway's pages in a real browser: chromium with a client certificate.

Every page the gateway renders is checked for the same basics (Dutch,
labelled inputs, a visible way on, nothing loaded from elsewhere, a
Content-Security-Policy, no horizontal scroll at 375 px) and saved as a
full-page screenshot at desktop width and at 375 px.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlencode

from tests.support.harness import GatewayHarness
from tests.support.services import RedisServer

if TYPE_CHECKING:
    from playwright.async_api import Page, Response

    from tests.browser.conftest import OpenTab, SaveScreenshot, Tab

#: Width of a small phone screen, in CSS pixels.
NARROW_WIDTH = 375

DEMO_PASSWORD = "demo-wachtwoord"

#: Failed password checks an account gets by default (forms.account_attempts).
ATTEMPT_LIMIT = 5

#: Names of inputs that have no label with text, as a page script sees them.
UNLABELLED_INPUTS = """() => Array.from(
    document.querySelectorAll("input:not([type=hidden]), select, textarea")
).filter(
    (input) => !Array.from(input.labels).some((label) => label.textContent.trim())
).map((input) => input.name || input.id || input.outerHTML)"""


def launch_path(tenant: str, **params: str) -> str:
    return f"/sso/ysis/{tenant}?{urlencode(params)}"


async def visit(tab: Tab, path: str) -> Response:
    response = await tab.page.goto(tab.origin + path)
    assert response is not None, f"no response for {path}"
    return response


async def heading(page: Page) -> str:
    return (await page.locator("h1").inner_text()).strip()


async def submit(page: Page, button: str) -> Response:
    """Click a button and return the response of the page it leads to."""
    async with page.expect_navigation() as navigation:
        await page.get_by_role("button", name=button).click()
    response = await navigation.value
    assert response is not None, f"no response after clicking {button!r}"
    return response


async def has_visible_way_on(page: Page) -> bool:
    """Tell whether a button, a link or a "Wat nu?" next step is visible."""
    controls = page.get_by_role("button").or_(page.get_by_role("link"))
    for control in await controls.all():
        if await control.is_visible():
            return True
    return await page.get_by_text("Wat nu?").is_visible()


async def check_page(
    tab: Tab, response: Response, name: str, save_screenshot: SaveScreenshot
) -> None:
    """Assert the basics of a gateway page and save its screenshots."""
    page = tab.page
    headers = await response.all_headers()
    assert "content-security-policy" in headers, f"{name}: no CSP header"
    assert await page.locator("html").get_attribute("lang") == "nl"
    assert await page.evaluate(UNLABELLED_INPUTS) == [], f"{name}: unlabelled input"
    assert await has_visible_way_on(page), f"{name}: no visible next step"
    elsewhere = [url for url in tab.requests if not url.startswith(tab.origin + "/")]
    assert elsewhere == [], f"{name}: requests outside the gateway"
    await save_screenshot(page, name)

    viewport = page.viewport_size
    assert viewport is not None
    await page.set_viewport_size({"width": NARROW_WIDTH, "height": 700})
    scroll_width = await page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= NARROW_WIDTH, f"{name}: scrolls sideways at 375 px"
    await save_screenshot(page, f"{name}-{NARROW_WIDTH}")
    await page.set_viewport_size(viewport)


async def fill_link_form(page: Page, username: str, password: str) -> Response:
    await page.get_by_label("Medimo-gebruikersnaam").fill(username)
    await page.get_by_label("Medimo-wachtwoord").fill(password)
    return await submit(page, "Koppelen en doorgaan")


async def fill_confirm_form(page: Page, password: str) -> Response:
    await page.get_by_label("Medimo-wachtwoord").fill(password)
    return await submit(page, "Bevestigen")


async def test_self_link_lands_on_menu(
    gateway: GatewayHarness, open_tab: OpenTab, save_screenshot: SaveScreenshot
) -> None:
    tab = await open_tab("noord")
    form = await visit(tab, launch_path("noord", userId="ysis-piet"))
    assert form.status == 200
    assert tab.page.url == f"{tab.origin}/sso/ysis/noord/link"
    assert await heading(tab.page) == "Account koppelen"
    await check_page(tab, form, "link-form", save_screenshot)

    landing = await fill_link_form(tab.page, "piet", DEMO_PASSWORD)

    assert landing.status == 200
    assert tab.page.url == f"{tab.origin}/"
    assert await heading(tab.page) == "Hoofdmenu"
    assert await gateway.links("noord") == {"ysis-piet": "medimo-piet"}


async def test_link_wrong_password_shows_error(
    gateway: GatewayHarness, open_tab: OpenTab, save_screenshot: SaveScreenshot
) -> None:
    tab = await open_tab("noord")
    await visit(tab, launch_path("noord", userId="ysis-piet"))

    answer = await fill_link_form(tab.page, "piet", "fout-wachtwoord")

    assert answer.status == 401
    alert = tab.page.get_by_role("alert")
    assert await alert.inner_text() == "De gebruikersnaam of het wachtwoord is onjuist."
    assert await tab.page.get_by_label("Medimo-gebruikersnaam").input_value() == "piet"
    assert await tab.page.get_by_label("Medimo-wachtwoord").input_value() == ""
    await check_page(tab, answer, "link-form-error", save_screenshot)
    assert await gateway.links("noord") == {}


async def test_confirm_lands_on_menu(
    gateway: GatewayHarness, open_tab: OpenTab, save_screenshot: SaveScreenshot
) -> None:
    await gateway.add_link("zuid", "ysis-anna", "medimo-anna")
    tab = await open_tab("zuid")
    form = await visit(tab, launch_path("zuid", userId="ysis-anna"))
    assert form.status == 200
    assert tab.page.url == f"{tab.origin}/sso/ysis/zuid/confirm"
    assert await heading(tab.page) == "Wachtwoord bevestigen"
    await check_page(tab, form, "confirm-form", save_screenshot)

    landing = await fill_confirm_form(tab.page, DEMO_PASSWORD)

    assert landing.status == 200
    assert tab.page.url == f"{tab.origin}/"
    assert await heading(tab.page) == "Hoofdmenu"


async def test_confirm_wrong_password_shows_error(
    gateway: GatewayHarness, open_tab: OpenTab, save_screenshot: SaveScreenshot
) -> None:
    await gateway.add_link("zuid", "ysis-anna", "medimo-anna")
    tab = await open_tab("zuid")
    await visit(tab, launch_path("zuid", userId="ysis-anna"))

    answer = await fill_confirm_form(tab.page, "fout-wachtwoord")

    assert answer.status == 401
    assert await tab.page.get_by_role("alert").inner_text() == "Het wachtwoord is onjuist."
    await check_page(tab, answer, "confirm-error", save_screenshot)


async def test_unknown_client_notice_leads_on(
    gateway: GatewayHarness, open_tab: OpenTab, save_screenshot: SaveScreenshot
) -> None:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    tab = await open_tab("noord")
    path = launch_path("noord", userId="ysis-jan", clientId="no-such-client")

    notice = await visit(tab, path)

    assert notice.status == 200
    assert tab.page.url == f"{tab.origin}/sso/melding/onbekende-client"
    assert await heading(tab.page) == "Onbekende cliënt"
    await check_page(tab, notice, "unknown-client", save_screenshot)
    async with tab.page.expect_navigation():
        await tab.page.get_by_role("link", name="Naar het hoofdmenu").click()
    assert tab.page.url == f"{tab.origin}/"
    assert await heading(tab.page) == "Hoofdmenu"


async def test_rights_notice_shown(
    gateway: GatewayHarness, open_tab: OpenTab, save_screenshot: SaveScreenshot
) -> None:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    tab = await open_tab("noord")
    path = launch_path("noord", userId="ysis-jan", clientId="ysis-client-2")

    notice = await visit(tab, path)

    assert notice.status == 200
    assert tab.page.url == f"{tab.origin}/sso/melding/onvoldoende-rechten"
    assert await heading(tab.page) == "Onvoldoende rechten voor deze cliënt"
    await check_page(tab, notice, "no-rights", save_screenshot)


async def test_other_tenant_certificate_is_403(
    gateway: GatewayHarness, open_tab: OpenTab, save_screenshot: SaveScreenshot
) -> None:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    tab = await open_tab("zuid")

    answer = await visit(tab, launch_path("noord", userId="ysis-jan"))

    assert answer.status == 403
    assert await heading(tab.page) == "Toegang geweigerd"
    assert await tab.page.get_by_text("verzoek-ID").is_visible()
    await check_page(tab, answer, "error-403", save_screenshot)


async def test_repeated_parameter_is_400(
    gateway: GatewayHarness, open_tab: OpenTab, save_screenshot: SaveScreenshot
) -> None:
    tab = await open_tab("noord")
    path = "/sso/ysis/noord?userId=ysis-jan&userId=ysis-piet"

    answer = await visit(tab, path)

    assert answer.status == 400
    assert await heading(tab.page) == "Ongeldig verzoek"
    detail = tab.page.get_by_text("De parameter 'userId' komt meer dan één keer voor.")
    assert await detail.is_visible()
    await check_page(tab, answer, "error-400", save_screenshot)


async def test_no_session_is_401(
    gateway: GatewayHarness, open_tab: OpenTab, save_screenshot: SaveScreenshot
) -> None:
    tab = await open_tab("noord")

    answer = await visit(tab, "/")

    assert answer.status == 401
    assert await heading(tab.page) == "Sessie verlopen"
    await check_page(tab, answer, "error-401", save_screenshot)


async def test_logout_shows_logged_out_page(
    gateway: GatewayHarness, open_tab: OpenTab, save_screenshot: SaveScreenshot
) -> None:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    tab = await open_tab("noord")
    await visit(tab, launch_path("noord", userId="ysis-jan"))
    assert await heading(tab.page) == "Hoofdmenu"

    logged_out = await submit(tab.page, "Afmelden")

    assert logged_out.status == 200
    assert tab.page.url == f"{tab.origin}/sso/afgemeld"
    assert await heading(tab.page) == "U bent afgemeld"
    await check_page(tab, logged_out, "logged-out", save_screenshot)
    after = await visit(tab, "/")
    assert after.status == 401


async def logged_in_tab(gateway: GatewayHarness, open_tab: OpenTab) -> Tab:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    tab = await open_tab("noord")
    await visit(tab, launch_path("noord", userId="ysis-jan"))
    assert await heading(tab.page) == "Hoofdmenu"
    return tab


async def test_reserved_path_is_404(
    gateway: GatewayHarness, open_tab: OpenTab, save_screenshot: SaveScreenshot
) -> None:
    tab = await open_tab("noord")

    answer = await visit(tab, "/sso/onbekend")

    assert answer.status == 404
    assert await heading(tab.page) == "Pagina niet gevonden"
    await check_page(tab, answer, "error-404", save_screenshot)


async def test_unsupported_method_is_405(
    gateway: GatewayHarness, open_tab: OpenTab, save_screenshot: SaveScreenshot
) -> None:
    tab = await open_tab("noord")
    # A page cannot send PROPFIND itself, so the request is rewritten on its way.
    await tab.page.route(
        f"{tab.origin}/werklijst", lambda route: route.continue_(method="PROPFIND")
    )

    answer = await visit(tab, "/werklijst")

    assert answer.status == 405
    assert await heading(tab.page) == "Methode niet toegestaan"
    await check_page(tab, answer, "error-405", save_screenshot)


async def test_unknown_host_is_421(
    gateway: GatewayHarness, open_tab: OpenTab, save_screenshot: SaveScreenshot
) -> None:
    tab = await open_tab("noord", host="127.0.0.1")

    answer = await visit(tab, "/")

    assert answer.status == 421
    assert await heading(tab.page) == "Onjuist adres"
    await check_page(tab, answer, "error-421", save_screenshot)


async def test_upstream_down_is_502(
    gateway: GatewayHarness, open_tab: OpenTab, save_screenshot: SaveScreenshot
) -> None:
    tab = await logged_in_tab(gateway, open_tab)
    await gateway.stop_upstream()

    answer = await visit(tab, "/werklijst")

    assert answer.status == 502
    assert await heading(tab.page) == "Medimo is niet bereikbaar"
    await check_page(tab, answer, "error-502", save_screenshot)


async def test_redis_down_form_is_503(
    gateway: GatewayHarness,
    killable_redis: RedisServer,
    open_tab: OpenTab,
    save_screenshot: SaveScreenshot,
) -> None:
    tab = await open_tab("noord")
    await visit(tab, launch_path("noord", userId="ysis-piet"))
    killable_redis.stop()

    answer = await fill_link_form(tab.page, "piet", DEMO_PASSWORD)

    assert answer.status == 503
    assert await heading(tab.page) == "Tijdelijk niet beschikbaar"
    await check_page(tab, answer, "error-503", save_screenshot)
    assert await gateway.links("noord") == {}


async def test_slow_upstream_is_504(
    gateway: GatewayHarness, open_tab: OpenTab, save_screenshot: SaveScreenshot
) -> None:
    tab = await logged_in_tab(gateway, open_tab)

    answer = await visit(tab, "/demo/slow?seconds=3")

    assert answer.status == 504
    assert await heading(tab.page) == "Medimo reageert niet"
    await check_page(tab, answer, "error-504", save_screenshot)


async def test_too_many_attempts_is_429(
    gateway: GatewayHarness, open_tab: OpenTab, save_screenshot: SaveScreenshot
) -> None:
    tab = await open_tab("noord")
    await visit(tab, launch_path("noord", userId="ysis-piet"))
    for _ in range(ATTEMPT_LIMIT):
        answer = await fill_link_form(tab.page, "piet", "fout-wachtwoord")
        assert answer.status == 401

    answer = await fill_link_form(tab.page, "piet", DEMO_PASSWORD)

    assert answer.status == 429
    assert await heading(tab.page) == "Te veel pogingen"
    await check_page(tab, answer, "error-429", save_screenshot)
