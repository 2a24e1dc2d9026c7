"""Fixtures for the browser tests: Debian's chromium driven by Playwright.

Each test starts its own Playwright driver, because the driver (Node.js)
reads the test CA from ``NODE_EXTRA_CA_CERTS`` once, at startup, and every
harness makes a new CA. Browsers are never downloaded: chromium is launched
from ``CHROMIUM``. When Playwright or chromium is missing, the tests fail
with the install command, because CI installs both.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.harness import GatewayHarness
from tests.support.services import RedisServer

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

#: Debian's chromium package; the tests must not download a browser.
CHROMIUM = Path("/usr/bin/chromium")

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

#: Desktop viewport of every new page, in CSS pixels.
DESKTOP = {"width": 1280, "height": 800}

#: Where the lead looks at the screenshots of the last run.
SHARED_SCREENSHOTS = Path("/tmp/gateway-screenshots")

#: Upstream timeout of the browser tests' gateway; /demo/slow outlasts it.
UPSTREAM_TIMEOUT = "1s"

#: Milliseconds a Playwright action or navigation may take.
ACTION_TIMEOUT_MS = 10_000


@dataclass
class Tab:
    """A page in a browser context that presents one tenant's client certificate."""

    page: Page
    origin: str
    #: URL of every request the page sent, in order.
    requests: list[str] = field(default_factory=list)


OpenTab = Callable[..., Awaitable[Tab]]
SaveScreenshot = Callable[["Page", str], Awaitable[Path]]

#: Screenshot folder of this run, once a test has asked for it.
_used_folders: list[Path] = []


@pytest.fixture(scope="session")
def screenshot_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of this run's screenshots, under pytest's base temporary folder."""
    folder = tmp_path_factory.getbasetemp() / "screenshots"
    folder.mkdir(exist_ok=True)
    SHARED_SCREENSHOTS.mkdir(exist_ok=True)
    print(f"\nscreenshots: {folder} (copied to {SHARED_SCREENSHOTS})")
    _used_folders.append(folder)
    return folder


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the screenshot folder at the end of a run that wrote screenshots."""
    for folder in _used_folders:
        if any(folder.iterdir()):
            terminalreporter.write_line(
                f"screenshots: {folder} (copied to {SHARED_SCREENSHOTS})"
            )


@pytest.fixture
def save_screenshot(screenshot_folder: Path) -> SaveScreenshot:
    """Save a full-page PNG of a page as ``NAME.png`` in both folders."""

    async def save(page: Page, name: str) -> Path:
        path = screenshot_folder / f"{name}.png"
        await page.screenshot(path=str(path), full_page=True)
        shutil.copy2(path, SHARED_SCREENSHOTS / path.name)
        return path

    return save


@pytest.fixture
async def gateway(
    make_gateway: Callable[..., Awaitable[GatewayHarness]], killable_redis: RedisServer
) -> GatewayHarness:
    """A gateway with its own redis-server, a short upstream timeout, one host.

    The browser tests stop Redis for the 503 page, wait out the upstream
    timeout for the 504 page and visit 127.0.0.1 for the 421 page.
    """
    return await make_gateway(
        redis_url=killable_redis.url,
        gateway_overrides={
            "upstream": {"timeout": UPSTREAM_TIMEOUT},
            # The server certificate also names 127.0.0.1, which then gets 421.
            "public_hostnames": ["localhost"],
        },
    )


@pytest.fixture
async def browser(
    gateway: GatewayHarness, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Browser]:
    """Chromium under a Playwright driver that trusts the gateway's test CA."""
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.fail(
            "The Python package playwright is not installed. "
            "Install the test extra: pip install -e '.[test]'"
        )
    if not CHROMIUM.is_file():
        pytest.fail(
            f"chromium is missing at {CHROMIUM}. "
            "Install Debian's package: apt-get install chromium"
        )

    # With client certificates, Playwright's Node.js side opens the TLS
    # connection to the gateway itself and trusts only Node's CA list, so the
    # driver gets the test CA here. Server certificates stay verified:
    # ignore_https_errors is not needed and not used.
    monkeypatch.setenv("NODE_EXTRA_CA_CERTS", str(gateway.folder / "ca.pem"))
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
def open_tab(gateway: GatewayHarness, browser: Browser) -> OpenTab:
    """Open a page whose browser context presents ``tenant``'s client certificate."""

    async def open_for(tenant: str, host: str = "localhost") -> Tab:
        origin = f"https://{host}:{gateway.port}"
        # Playwright presents a certificate only to its exact origin
        # (scheme, host and port), and base_url is that origin.
        context = await browser.new_context(
            viewport=DESKTOP,
            client_certificates=[
                {
                    "origin": origin,
                    "certPath": str(gateway.folder / f"{tenant}-client.pem"),
                    "keyPath": str(gateway.folder / f"{tenant}-client-key.pem"),
                }
            ],
        )
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        page = await context.new_page()
        tab = Tab(page, origin)
        page.on("request", lambda request: tab.requests.append(request.url))
        return tab

    return open_for
