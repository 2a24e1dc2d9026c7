"""Conformance of the SQL link and revocation stores on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import LinkConflict
from gateway.links.sql import SqlLinkStore
from gateway.links.store import SELF_LINK, Link
from gateway.storage.database import create_engine, upgrade
from gateway.storage.revocations import SqlRevocationStore


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """Engine on a freshly migrated database."""
    await asyncio.to_thread(upgrade, database_url)
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def store(engine: AsyncEngine) -> SqlLinkStore:
    return SqlLinkStore(engine)


@pytest.fixture
def revocations(engine: AsyncEngine) -> SqlRevocationStore:
    return SqlRevocationStore(engine)


def assert_utc(value: datetime | None) -> None:
    assert value is not None
    assert value.tzinfo is not None
    assert value.utcoffset() == timedelta(0)


async def test_add_get_round_trip(store: SqlLinkStore) -> None:
    before = datetime.now(UTC)
    added = await store.add("care-north", "ysis-1", "medimo-1", SELF_LINK)
    after = datetime.now(UTC)

    fetched = await store.get("care-north", "ysis-1")

    assert fetched == added
    assert fetched is not None
    assert fetched.medimo_account == "medimo-1"
    assert fetched.created_by == SELF_LINK
    assert fetched.last_used_at is None
    assert_utc(fetched.created_at)
    assert before <= fetched.created_at <= after


async def test_get_unknown_is_none(store: SqlLinkStore) -> None:
    await store.add("care-north", "ysis-1", "medimo-1", SELF_LINK)

    assert await store.get("care-north", "ysis-2") is None
    assert await store.get("care-south", "ysis-1") is None


async def test_find_account_in_tenant(store: SqlLinkStore) -> None:
    added = await store.add("care-north", "ysis-1", "medimo-1", SELF_LINK)

    assert await store.find_account("care-north", "medimo-1") == added
    assert await store.find_account("care-north", "medimo-2") is None
    assert await store.find_account("care-south", "medimo-1") is None


async def test_ysis_user_linked_twice_conflicts(store: SqlLinkStore) -> None:
    first = await store.add("care-north", "ysis-1", "medimo-1", SELF_LINK)

    with pytest.raises(LinkConflict) as caught:
        await store.add("care-north", "ysis-1", "medimo-2", "admin alice")

    assert caught.value.field == "ysis_user"
    assert caught.value.tenant == "care-north"
    assert await store.get("care-north", "ysis-1") == first
    assert await store.list() == [first]
    # Nothing of the failed add was kept, so its Medimo account is still free.
    second = await store.add("care-north", "ysis-2", "medimo-2", SELF_LINK)
    assert second.medimo_account == "medimo-2"


async def test_medimo_account_linked_twice_conflicts(store: SqlLinkStore) -> None:
    first = await store.add("care-north", "ysis-1", "medimo-1", SELF_LINK)

    with pytest.raises(LinkConflict) as caught:
        await store.add("care-north", "ysis-2", "medimo-1", SELF_LINK)

    assert caught.value.field == "medimo_account"
    assert caught.value.tenant == "care-north"
    assert await store.get("care-north", "ysis-2") is None
    assert await store.list() == [first]


async def test_same_account_other_tenant_allowed(store: SqlLinkStore) -> None:
    north = await store.add("care-north", "ysis-1", "medimo-1", SELF_LINK)
    south = await store.add("care-south", "ysis-1", "medimo-1", SELF_LINK)

    assert await store.get("care-north", "ysis-1") == north
    assert await store.get("care-south", "ysis-1") == south


async def test_concurrent_adds_one_wins(store: SqlLinkStore) -> None:
    attempts = [
        store.add("care-north", "ysis-1", f"medimo-{number}", SELF_LINK)
        for number in range(5)
    ]

    results = await asyncio.gather(*attempts, return_exceptions=True)

    winners = [result for result in results if isinstance(result, Link)]
    conflicts = [result for result in results if isinstance(result, LinkConflict)]
    assert len(winners) == 1
    assert len(conflicts) == 4
    assert {conflict.field for conflict in conflicts} == {"ysis_user"}
    assert await store.list() == winners


async def test_remove_returns_link_once(store: SqlLinkStore) -> None:
    added = await store.add("care-north", "ysis-1", "medimo-1", SELF_LINK)
    remaining = await store.add("care-north", "ysis-2", "medimo-2", SELF_LINK)

    removed = await store.remove("care-north", "ysis-1")
    removed_again = await store.remove("care-north", "ysis-1")

    assert removed == added
    assert removed_again is None
    assert await store.get("care-north", "ysis-1") is None
    assert await store.list() == [remaining]
    # The removed Medimo account may be linked again.
    relinked = await store.add("care-north", "ysis-3", "medimo-1", SELF_LINK)
    assert relinked.medimo_account == "medimo-1"


async def test_list_filters_and_orders(store: SqlLinkStore) -> None:
    # Upper case sorts before lower case by code point, unlike most locales.
    pairs = [
        ("care-south", "b"),
        ("care-north", "b"),
        ("care-north", "B"),
        ("care-north", "a"),
        ("Care-east", "z"),
    ]
    for number, (tenant, ysis_user) in enumerate(pairs):
        await store.add(tenant, ysis_user, f"medimo-{number}", SELF_LINK)

    everything = await store.list()
    north = await store.list("care-north")

    assert [(link.tenant, link.ysis_user) for link in everything] == sorted(pairs)
    assert [link.ysis_user for link in north] == ["B", "a", "b"]
    assert {link.tenant for link in north} == {"care-north"}
    assert await store.list("care-west") == []


async def test_touch_sets_last_used_at(store: SqlLinkStore) -> None:
    await store.add("care-north", "ysis-1", "medimo-1", SELF_LINK)
    amsterdam_summer = timezone(timedelta(hours=2))
    when = datetime(2026, 6, 1, 14, 30, 15, 123456, tzinfo=amsterdam_summer)

    await store.touch("care-north", "ysis-1", when)
    await store.touch("care-north", "ysis-unknown", when)

    link = await store.get("care-north", "ysis-1")
    assert link is not None
    assert link.last_used_at == when
    assert_utc(link.last_used_at)
    assert link.last_used_at.hour == 12
    assert await store.get("care-north", "ysis-unknown") is None


async def test_invalid_values_rejected(store: SqlLinkStore) -> None:
    await store.add("care-north", "ysis-1", "medimo-1", SELF_LINK)

    with pytest.raises(ValueError, match="timezone-aware"):
        await store.touch("care-north", "ysis-1", datetime(2026, 6, 1, 12, 0))
    with pytest.raises(ValueError, match="tenant is 64 characters long"):
        await store.add("t" * 64, "ysis-2", "medimo-2", SELF_LINK)
    with pytest.raises(ValueError, match="ysis_user must not be empty"):
        await store.add("care-north", "", "medimo-2", SELF_LINK)
    assert len(await store.list()) == 1


async def test_revocation_add_and_since(revocations: SqlRevocationStore) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)

    session = await revocations.add("session", "care-north", "session-1", later)
    account = await revocations.add("account", "care-north", "medimo-1", later)
    tenant = await revocations.add("tenant", "care-south", "", later)

    assert session.id < account.id < tenant.id
    assert_utc(session.revoked_at)
    assert_utc(session.expires_at)
    assert await revocations.since(0) == [session, account, tenant]
    assert await revocations.since(session.id) == [account, tenant]
    assert await revocations.since(tenant.id) == []


async def test_revocation_records_administrator(
    revocations: SqlRevocationStore,
) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)

    added = await revocations.add(
        "account", "care-north", "medimo-1", later, revoked_by="beheer"
    )

    assert added.revoked_by == "beheer"
    assert await revocations.since(0) == [added]


async def test_revocation_since_skips_expired(
    revocations: SqlRevocationStore,
) -> None:
    now = datetime.now(UTC)
    expired = await revocations.add("session", "care-north", "old", now)
    live = await revocations.add(
        "session", "care-north", "new", now + timedelta(minutes=5)
    )

    found = await revocations.since(0)

    assert found == [live]
    assert expired.id < live.id


async def test_revocation_purge(revocations: SqlRevocationStore) -> None:
    now = datetime.now(UTC)
    live = await revocations.add(
        "account", "care-north", "medimo-1", now + timedelta(hours=1)
    )
    await revocations.add("session", "care-north", "s-1", now - timedelta(hours=1))
    newest = await revocations.add("session", "care-north", "s-2", now)

    purged = await revocations.purge(now)
    purged_again = await revocations.purge(now)
    after_purge = await revocations.add(
        "session", "care-north", "s-3", now + timedelta(hours=1)
    )

    assert purged == 2
    assert purged_again == 0
    assert await revocations.since(0) == [live, after_purge]
    # The id of the purged newest row is never handed out again.
    assert after_purge.id > newest.id


async def test_revocation_rejects_invalid(revocations: SqlRevocationStore) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)

    with pytest.raises(ValueError, match="invalid revocation kind 'user'"):
        await revocations.add("user", "care-north", "x", later)
    with pytest.raises(ValueError, match="empty subject"):
        await revocations.add("tenant", "care-north", "x", later)
    with pytest.raises(ValueError, match="subject must not be empty"):
        await revocations.add("session", "care-north", "", later)
    with pytest.raises(ValueError, match="timezone-aware"):
        await revocations.add("session", "care-north", "s", later.replace(tzinfo=None))
    with pytest.raises(ValueError, match="revoked_by is 129 characters long"):
        await revocations.add("tenant", "care-north", "", later, revoked_by="a" * 129)
    with pytest.raises(ValueError, match="revoked_by must not be empty"):
        await revocations.add("tenant", "care-north", "", later, revoked_by="")
    assert await revocations.since(0) == []
