"""The SSO log of a real gateway: which requests write which rows.

Each test drives a gateway from the harness over mutual TLS and reads the
table ``sso_log`` afterwards. The last tests take the database away while
the gateway runs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from gateway.ssolog.entry import Entry, Row
from gateway.ssolog.store import SqlSsoLog
from gateway.state import GATEWAY
from gateway.storage.database import create_engine, upgrade
from tests.support.harness import GatewayHarness, form_fields, launch, post_form
from tests.support.relay import TcpRelay

MakeGateway = Callable[..., Awaitable[GatewayHarness]]

#: Passes the elfproef and finds the demo upstream's client c-1003.
KNOWN_BSN = "123456782"
#: Fails the elfproef.
MALFORMED_BSN = "123456789"
PASSWORD = "demo-wachtwoord"
WRONG_PASSWORD = "fout-wachtwoord-7"


def named(rows: list[Row], event: str) -> list[Row]:
    return [row for row in rows if row.entry.event == event]


def only(rows: list[Row], event: str) -> Row:
    """Return the one row of ``event``, failing with the events found."""
    found = named(rows, event)
    assert len(found) == 1, [row.entry.event for row in rows]
    return found[0]


async def open_form(
    client: aiohttp.ClientSession, tenant: str, user: str
) -> tuple[str, dict[str, str]]:
    """Launch an unlinked or confirm user; return the form's path and fields."""
    response = await launch(client, tenant, userId=user)
    path = response.headers["Location"]
    async with client.get(path) as page:
        assert page.status == 200
        return path, form_fields(await page.text())


async def logout(gateway: GatewayHarness, client: aiohttp.ClientSession) -> int:
    response = await post_form(client, "/sso/logout", {}, origin=gateway.base_url)
    return response.status


# --- launch and login -------------------------------------------------------


async def test_linked_launch_rows(gateway: GatewayHarness) -> None:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")

    response = await launch(gateway.client("noord"), "noord", userId="ysis-jan")

    rows = await gateway.sso_log()
    assert [row.entry.event for row in rows] == ["launch", "logged_in"]
    entry = rows[0].entry
    assert entry.tenant == "noord"
    assert entry.ysis_user == "ysis-jan"
    assert entry.medimo_account == "medimo-jan"
    assert entry.outcome == "linked"
    assert entry.client_lookup is None
    assert entry.medimo_client is None
    assert entry.source_ip == "127.0.0.1"
    assert entry.request_id == response.headers["X-Request-Id"]


async def test_login_row_fields(gateway: GatewayHarness) -> None:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    before = gateway.clock.now

    response = await launch(gateway.client("noord"), "noord", userId="ysis-jan")

    login = only(await gateway.sso_log(), "logged_in").entry
    assert login.tenant == "noord"
    assert login.ysis_user == "ysis-jan"
    assert login.medimo_account == "medimo-jan"
    assert login.outcome == "ok"
    assert login.reason is None
    assert login.request_id == response.headers["X-Request-Id"]
    assert login.logged_at == dt.datetime.fromtimestamp(before, dt.UTC)


async def test_rows_name_instance(gateway: GatewayHarness) -> None:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")

    await launch(gateway.client("noord"), "noord", userId="ysis-jan")

    instances = {row.instance for row in await gateway.sso_log()}
    assert instances == {f"{socket.gethostname()}-{os.getpid()}"}


async def test_configured_instance_name(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(gateway_overrides={"sso_log": {"instance": "gw-2"}})
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")

    await launch(gateway.client("noord"), "noord", userId="ysis-jan")

    assert {row.instance for row in await gateway.sso_log()} == {"gw-2"}


async def test_launch_with_client_opens_it(gateway: GatewayHarness) -> None:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")

    client = gateway.client("noord")
    await launch(client, "noord", userId="ysis-jan", clientId="ysis-client-1")

    rows = await gateway.sso_log()
    assert [row.entry.event for row in rows] == ["launch", "logged_in", "client_opened"]
    assert rows[0].entry.client_lookup == "found"
    assert rows[0].entry.medimo_client == "c-1001"
    opened = rows[2].entry
    assert opened.medimo_client == "c-1001"
    assert opened.medimo_account == "medimo-jan"
    assert opened.ysis_user == "ysis-jan"
    assert opened.outcome == "ok"


async def test_launch_by_bsn_logs_lookup(gateway: GatewayHarness) -> None:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")

    await launch(gateway.client("noord"), "noord", userId="ysis-jan", bsn=KNOWN_BSN)

    rows = await gateway.sso_log()
    assert rows[0].entry.client_lookup == "found"
    assert only(rows, "client_opened").entry.medimo_client == "c-1003"
    assert all(KNOWN_BSN not in str(row.document()) for row in rows)


async def test_client_without_access_not_opened(gateway: GatewayHarness) -> None:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")

    client = gateway.client("noord")
    await launch(client, "noord", userId="ysis-jan", clientId="ysis-client-2")

    rows = await gateway.sso_log()
    assert named(rows, "client_opened") == []
    assert only(rows, "logged_in").entry.reason == "client_no_access"


async def test_unknown_client_not_opened(gateway: GatewayHarness) -> None:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")

    client = gateway.client("noord")
    await launch(client, "noord", userId="ysis-jan", clientId="onbekend")

    rows = await gateway.sso_log()
    assert rows[0].entry.client_lookup == "not_found"
    assert named(rows, "client_opened") == []
    assert only(rows, "logged_in").entry.reason == "client_unknown"


async def test_ambiguous_client_lookup(gateway: GatewayHarness) -> None:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")

    client = gateway.client("noord")
    await launch(client, "noord", userId="ysis-jan", clientId="ysis-client-dubbel")

    rows = await gateway.sso_log()
    assert rows[0].entry.client_lookup == "ambiguous"
    assert rows[0].entry.medimo_client is None


async def test_unlinked_launch_row(gateway: GatewayHarness) -> None:
    response = await launch(gateway.client("noord"), "noord", userId="ysis-piet")

    assert response.headers["Location"] == "/sso/ysis/noord/link"
    (row,) = await gateway.sso_log()
    assert row.entry.event == "launch"
    assert row.entry.outcome == "not_linked"
    assert row.entry.medimo_account is None


# --- forms ---------------------------------------------------------------------


async def test_self_link_rows(gateway: GatewayHarness) -> None:
    client = gateway.client("noord")
    path, fields = await open_form(client, "noord", "ysis-piet")

    fields.update(username="piet", password=PASSWORD)
    response = await post_form(client, path, fields, origin=gateway.base_url)

    assert response.status == 303
    rows = await gateway.sso_log()
    assert [row.entry.event for row in rows] == ["launch", "link_created", "logged_in"]
    created = rows[1].entry
    assert created.tenant == "noord"
    assert created.ysis_user == "ysis-piet"
    assert created.medimo_account == "medimo-piet"
    assert created.outcome == "ok"
    assert created.operator is None
    assert created.request_id == response.headers["X-Request-Id"]


async def test_wrong_link_password_refused(gateway: GatewayHarness) -> None:
    client = gateway.client("noord")
    path, fields = await open_form(client, "noord", "ysis-piet")

    fields.update(username="piet", password=WRONG_PASSWORD)
    response = await post_form(client, path, fields, origin=gateway.base_url)

    assert response.status == 401
    refused = only(await gateway.sso_log(), "refused").entry
    assert refused.tenant == "noord"
    assert refused.ysis_user == "ysis-piet"
    assert refused.outcome == "401"
    assert refused.reason == "link_password_wrong"
    assert refused.request_id == response.headers["X-Request-Id"]


async def test_confirm_rows(gateway: GatewayHarness) -> None:
    await gateway.add_link("zuid", "ysis-anna", "medimo-anna")
    client = gateway.client("zuid")
    path, fields = await open_form(client, "zuid", "ysis-anna")

    fields["password"] = PASSWORD
    response = await post_form(client, path, fields, origin=gateway.base_url)

    assert response.status == 303
    rows = await gateway.sso_log()
    assert [row.entry.event for row in rows] == ["launch", "logged_in"]
    assert rows[0].entry.outcome == "linked"
    assert rows[1].entry.medimo_account == "medimo-anna"
    assert rows[1].entry.request_id == response.headers["X-Request-Id"]


async def test_wrong_confirm_password_refused(gateway: GatewayHarness) -> None:
    await gateway.add_link("zuid", "ysis-anna", "medimo-anna")
    client = gateway.client("zuid")
    path, fields = await open_form(client, "zuid", "ysis-anna")

    fields["password"] = WRONG_PASSWORD
    await post_form(client, path, fields, origin=gateway.base_url)

    refused = only(await gateway.sso_log(), "refused").entry
    assert refused.reason == "confirm_password_wrong"
    assert refused.ysis_user == "ysis-anna"
    assert refused.medimo_account == "medimo-anna"


async def test_form_without_origin_refused(gateway: GatewayHarness) -> None:
    client = gateway.client("noord")
    path, fields = await open_form(client, "noord", "ysis-piet")

    fields.update(username="piet", password=PASSWORD)
    response = await post_form(client, path, fields, origin=None)

    assert response.status == 403
    refused = only(await gateway.sso_log(), "refused").entry
    assert refused.reason == "origin_mismatch"
    assert refused.outcome == "403"
    assert refused.ysis_user == "ysis-piet"


# --- refusals ------------------------------------------------------------------


async def test_unknown_tenant_refused(gateway: GatewayHarness) -> None:
    response = await launch(gateway.client("noord"), "west", userId="ysis-jan")

    assert response.status == 403
    refused = only(await gateway.sso_log(), "refused").entry
    assert refused.reason == "unknown_tenant"
    assert refused.tenant is None
    assert refused.source_ip == "127.0.0.1"


async def test_other_tenant_certificate_refused(gateway: GatewayHarness) -> None:
    response = await launch(gateway.client("zuid"), "noord", userId="ysis-jan")

    assert response.status == 403
    refused = only(await gateway.sso_log(), "refused").entry
    assert refused.tenant == "noord"
    assert refused.reason.startswith("certificate_")


async def test_self_link_not_allowed_refused(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(tenants={"noord": {"allow_self_link": False}})

    response = await launch(gateway.client("noord"), "noord", userId="ysis-piet")

    assert response.status == 403
    refused = only(await gateway.sso_log(), "refused").entry
    assert refused.reason == "self_link_not_allowed"
    assert refused.ysis_user == "ysis-piet"
    assert named(await gateway.sso_log(), "launch") == []


async def test_bad_bsn_refused_without_value(gateway: GatewayHarness) -> None:
    response = await launch(
        gateway.client("noord"), "noord", userId="ysis-jan", bsn=MALFORMED_BSN
    )

    assert response.status == 400
    rows = await gateway.sso_log()
    refused = only(rows, "refused").entry
    assert refused.reason == "parameter_invalid"
    assert refused.outcome == "400"
    assert all(MALFORMED_BSN not in str(row.document()) for row in rows)


async def test_idle_session_refused(gateway: GatewayHarness) -> None:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    client = gateway.client("noord")
    await launch(client, "noord", userId="ysis-jan")

    gateway.clock.advance(31 * 60)
    async with client.get("/whoami", allow_redirects=False) as response:
        assert response.status == 401

    refused = only(await gateway.sso_log(), "refused").entry
    assert refused.reason == "session_idle"
    assert refused.ysis_user == "ysis-jan"
    assert refused.medimo_account == "medimo-jan"
    assert refused.outcome == "401"


async def test_requests_without_session_not_logged(gateway: GatewayHarness) -> None:
    client = gateway.client("noord")

    async with client.get("/whoami", allow_redirects=False) as missing:
        assert missing.status == 401
    async with client.get("/gateway-api/v1/clients", allow_redirects=False) as reserved:
        assert reserved.status == 404
    async with client.get("/sso/logout", allow_redirects=False) as method:
        assert method.status == 405

    assert await gateway.sso_log() == []


async def test_unknown_notice_not_logged(gateway: GatewayHarness) -> None:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    client = gateway.client("noord")
    await launch(client, "noord", userId="ysis-jan")

    async with client.get("/sso/melding/onbekend", allow_redirects=False) as response:
        assert response.status == 404

    assert named(await gateway.sso_log(), "refused") == []


async def test_wrong_host_not_logged(gateway: GatewayHarness) -> None:
    client = gateway.client("noord")

    response = await client.get(
        "/sso/ysis/noord",
        params={"userId": "ysis-jan"},
        headers={"Host": "example.org"},
    )
    await response.read()

    assert response.status == 421
    assert await gateway.sso_log() == []


# --- logout --------------------------------------------------------------------


async def test_logout_row(gateway: GatewayHarness) -> None:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    client = gateway.client("noord")
    await launch(client, "noord", userId="ysis-jan", clientId="ysis-client-1")

    assert await logout(gateway, client) == 303

    ended = only(await gateway.sso_log(), "logout").entry
    assert ended.outcome == "session_ended"
    assert ended.tenant == "noord"
    assert ended.ysis_user == "ysis-jan"
    assert ended.medimo_account == "medimo-jan"
    assert ended.medimo_client == "c-1001"


async def test_logout_without_session(gateway: GatewayHarness) -> None:
    assert await logout(gateway, gateway.client("noord")) == 303

    ended = only(await gateway.sso_log(), "logout").entry
    assert ended.outcome == "no_session"
    assert ended.ysis_user is None


async def test_logout_without_origin_refused(gateway: GatewayHarness) -> None:
    response = await post_form(gateway.client("noord"), "/sso/logout", {}, origin=None)

    assert response.status == 403
    refused = only(await gateway.sso_log(), "refused").entry
    assert refused.reason == "origin_mismatch"


# --- nothing secret ------------------------------------------------------------


async def scripted_run(gateway: GatewayHarness) -> None:
    """Launch, self-link, confirm, open clients, get refused and log out."""
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    await gateway.add_link("zuid", "ysis-anna", "medimo-anna")
    jan = gateway.client("noord")
    await launch(jan, "noord", userId="ysis-jan", clientId="onbekend", bsn=KNOWN_BSN)
    await launch(jan, "noord", userId="ysis-jan", bsn=MALFORMED_BSN)
    await launch(jan, "noord", userId="ysis-jan", clientId="ysis-client-1")
    async with jan.get("/whoami") as page:
        await page.read()

    piet = gateway.client("noord")
    path, fields = await open_form(piet, "noord", "ysis-piet")
    for password in (WRONG_PASSWORD, PASSWORD):
        await post_form(
            piet,
            path,
            {**fields, "username": "piet", "password": password},
            origin=gateway.base_url,
        )

    anna = gateway.client("zuid")
    path, fields = await open_form(anna, "zuid", "ysis-anna")
    for password in (WRONG_PASSWORD, PASSWORD):
        await post_form(
            anna, path, {**fields, "password": password}, origin=gateway.base_url
        )

    for client in (jan, piet, anna):
        assert await logout(gateway, client) == 303


def secrets_of(gateway: GatewayHarness, cookies: list[str]) -> dict[str, str]:
    """Return every value the SSO log must not contain, by name."""
    assert gateway.config is not None
    found = {
        "known BSN": KNOWN_BSN,
        "malformed BSN": MALFORMED_BSN,
        "password": PASSWORD,
        "wrong password": WRONG_PASSWORD,
        "api token": gateway.api_token,
        "signing key": gateway.signing_key.decode(),
        "tenant display name noord": "Zorggroep Noord",
        "tenant display name zuid": "Zorggroep Zuid",
        "account display name": "Jan Jansen",
        "account display name piet": "Piet Pieters",
        "account display name anna": "Anna de Vries",
        "client name": "Mevrouw A. Bakker",
        "client name by BSN": "Mevrouw C. Dekker",
    }
    for index, key in enumerate(gateway.session_keys):
        found[f"session key {index}"] = key.decode()
    for index, value in enumerate(cookies):
        found[f"cookie {index}"] = value
    return found


async def raw_table(gateway: GatewayHarness) -> str:
    """Return every value of every sso_log row as one text, once written."""
    assert gateway.config is not None
    await gateway.sso_log()
    engine = create_engine(gateway.config.gateway.database.url)
    try:
        async with engine.connect() as connection:
            rows = (await connection.execute(text("SELECT * FROM sso_log"))).all()
    finally:
        await engine.dispose()
    assert rows
    return "\n".join("\t".join(str(value) for value in row) for row in rows)


async def test_log_holds_no_secret(gateway: GatewayHarness) -> None:
    await scripted_run(gateway)
    cookies = gateway.cookie_values()
    events = {row.entry.event for row in await gateway.sso_log()}

    table = (await raw_table(gateway)).casefold()

    expected = {"launch", "link_created", "logged_in", "client_opened", "logout"}
    assert expected | {"refused"} <= events
    for name, value in secrets_of(gateway, cookies).items():
        assert value.casefold() not in table, name


async def test_log_holds_no_cookie_value(gateway: GatewayHarness) -> None:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    client = gateway.client("noord")
    response = await launch(client, "noord", userId="ysis-jan")
    cookie = response.cookies["__Host-sso_session"].value
    assert gateway.running is not None
    session_id = gateway.running.runner.app[GATEWAY].sessions.decode(cookie).sid

    table = await raw_table(gateway)

    assert cookie not in table
    assert session_id not in table


# --- the database away -----------------------------------------------------------


async def rename_table(url: str, old: str, new: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text(f"ALTER TABLE {old} RENAME TO {new}"))
    finally:
        await engine.dispose()


async def test_login_works_while_log_unwritable(
    gateway: GatewayHarness, caplog: pytest.LogCaptureFixture
) -> None:
    assert gateway.config is not None
    url = gateway.config.gateway.database.url
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    await rename_table(url, "sso_log", "sso_log_away")

    statuses = []
    for _ in range(3):
        response = await launch(gateway.client("noord"), "noord", userId="ysis-jan")
        statuses.append(response.status)
    await asyncio.sleep(0.5)
    await rename_table(url, "sso_log_away", "sso_log")
    rows = await gateway.sso_log()

    assert statuses == [303, 303, 303]
    assert [row.entry.event for row in rows] == ["launch", "logged_in"] * 3
    failures = [
        record
        for record in caplog.records
        if getattr(record, "event", "") == "sso_log_write_failed"
    ]
    # Further failures within a minute are counted, not logged.
    assert len(failures) == 1


async def test_stop_flushes_queue(gateway: GatewayHarness) -> None:
    assert gateway.config is not None
    url = gateway.config.gateway.database.url
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    await rename_table(url, "sso_log", "sso_log_away")
    await launch(gateway.client("noord"), "noord", userId="ysis-jan")

    stopping = asyncio.create_task(gateway.stop())
    await asyncio.sleep(0.3)
    await rename_table(url, "sso_log_away", "sso_log")
    await stopping

    rows = await gateway.sso_log()
    assert [row.entry.event for row in rows] == ["launch", "logged_in"]


async def test_purge_at_start(make_gateway: MakeGateway, tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    try:
        await SqlSsoLog(engine, "old-gateway").append([Entry("launch", old)])
    finally:
        await engine.dispose()

    gateway = await make_gateway(
        database_url=url, gateway_overrides={"sso_log": {"retention": "2d"}}
    )
    rows = await wait_for_event(gateway, "log_purged")

    assert [row.entry.event for row in rows] == ["log_purged"]
    assert rows[0].id == 2
    assert rows[0].entry.detail is not None
    assert rows[0].entry.detail.startswith("deleted 1 row(s) logged before ")


async def wait_for_event(gateway: GatewayHarness, event: str) -> list[Row]:
    """Return the rows once one of ``event`` is among them (within 10 s)."""
    for _ in range(100):
        rows = await gateway.sso_log()
        if named(rows, event):
            return rows
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {event} row within 10 s: {rows}")


@pytest.mark.postgres
async def test_cached_login_with_database_down(
    postgres_database_url: str, make_gateway: MakeGateway
) -> None:
    url = make_url(postgres_database_url)
    relay = TcpRelay(url.host or "127.0.0.1", url.port or 5432)
    port = await relay.start()
    relayed = url.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    gateway = await make_gateway(database_url=relayed)
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    try:
        # The first launch puts the link in the Redis cache.
        first = await launch(gateway.client("noord"), "noord", userId="ysis-jan")
        # Written before the cut: a cut during a commit leaves the writer
        # unsure whether the rows landed, and it writes them again.
        await gateway.sso_log()
        await relay.cut()
        second = await launch(gateway.client("noord"), "noord", userId="ysis-jan")
        await asyncio.sleep(0.5)
        await relay.restore()
        rows = await gateway.sso_log(flush_within=30)
    finally:
        await relay.cut()

    assert first.status == 303
    assert second.status == 303
    assert second.headers["Location"] == "/"
    assert [row.entry.event for row in rows] == ["launch", "logged_in"] * 2
    assert rows[2].entry.request_id == second.headers["X-Request-Id"]
