"""The ``sso-gateway`` command line."""

from __future__ import annotations

import argparse
import asyncio
import codecs
import datetime as dt
import getpass
import os
import secrets
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from gateway.config.loader import Config, load_certificates, load_config
from gateway.config.types import MIN_KEY_BYTES
from gateway.errors import (
    ConfigError,
    DatabaseUnavailable,
    LinkConflict,
    ListenError,
    SchemaOutdated,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from sqlalchemy.ext.asyncio import AsyncEngine

    from gateway.links.cache import CachedLinkStore
    from gateway.links.sql import SqlLinkStore
    from gateway.links.store import Link
    from gateway.ssolog.entry import Entry
    from gateway.watch import Snapshot

#: Largest key ``keys generate`` prints. HMAC-SHA256 hashes a key longer than
#: 64 bytes down to 32, so longer keys add no strength.
MAX_KEY_BYTES = 1024

DEFAULT_CONFIG = os.environ.get("SSO_GATEWAY_CONFIG", "config/gateway.yaml")

#: Largest ``serve --workers``, a bound against typos such as 400 for 4.
#: Each worker opens pools of its own to upstream, Redis and the database.
MAX_WORKERS = 64


def _config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=DEFAULT_CONFIG,
        help="path of gateway.yaml (default: $SSO_GATEWAY_CONFIG or config/gateway.yaml)",
    )


def _load(path: str) -> Config:
    try:
        config = load_config(path)
    except ConfigError as exc:
        for line in [*exc.problems, *exc.warnings]:
            print(line, file=sys.stderr)
        print(f"configuration has {len(exc.problems)} error(s)", file=sys.stderr)
        raise SystemExit(2) from None
    return config


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for line in [*exc.problems, *exc.warnings]:
            print(line)
        print(f"{len(exc.problems)} error(s), {len(exc.warnings)} warning(s)")
        return 1
    for line in config.warnings:
        print(line)
    print(
        f"configuration valid: {len(config.tenants)} tenant(s), "
        f"{len(config.warnings)} warning(s), hash {config.digest[:16]}"
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway import logs
    from gateway.serve import serve
    from gateway.watch import snapshot

    logs.configure(args.log_level)
    # SIGHUP's default action ends a process. Before the gateway listens
    # there is nothing to reload, and serve() or the workers' parent
    # handles SIGHUP from then on.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # Taken before loading, so that a file changed during the load is
    # reloaded once the watcher runs.
    baseline = snapshot(args.config)
    config = _load(args.config)
    if args.workers > 1:
        return _serve_workers(config, args.workers, baseline)

    def run() -> int:
        try:
            asyncio.run(serve(config, baseline=baseline))
        except ListenError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0

    return _run_database(run)


def _serve_workers(config: Config, workers: int, baseline: Snapshot) -> int:
    from gateway.workers import supervise

    try:
        return supervise(config, workers, baseline)
    except ListenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _worker_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= count <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(
            f"{count} is out of range: use 1 to {MAX_WORKERS} worker processes"
        )
    return count


def _run_database(work: Callable[[], int], failed: str | None = None) -> int:
    """Run the part of a command that uses the database, and return its exit status.

    Every command that opens the database runs through here, so that each
    way the database can fail prints one line on standard error and never a
    traceback. An outdated schema exits 2 and a database that cannot be
    reached exits 1. An error after connecting exits 1 with ``failed`` before
    the driver's reason, unless ``failed`` is None: then it propagates, as
    ``serve`` needs.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from gateway.storage.database import describe_error

    try:
        return work()
    except SchemaOutdated as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DatabaseUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (SQLAlchemyError, OSError) as exc:
        if failed is None:
            raise
        print(f"error: {failed}: {describe_error(exc)}", file=sys.stderr)
        return 1


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    config = _load(args.config)
    return _run_database(
        lambda: _upgrade(config.gateway.database.url),
        failed="upgrading the database schema failed",
    )


def _upgrade(url: str) -> int:
    from gateway.storage.database import head_revision, upgrade

    applied = upgrade(url)
    if not applied:
        print(f"database schema is up to date at revision {head_revision()}")
        return 0
    start = applied[0][0] or "none"
    revisions = ", ".join(revision for _, revision in applied)
    print(
        f"upgraded the database schema from {start} to {applied[-1][1]} "
        f"(applied {revisions})"
    )
    return 0


def _admin_entry(event: str, args: argparse.Namespace, **fields: str | None) -> Entry:
    """Return an SSO log entry of an administrator's change to one link."""
    from gateway.ssolog.entry import Entry

    return Entry(
        event,
        dt.datetime.now(dt.timezone.utc),
        tenant=args.tenant,
        ysis_user=getattr(args, "ysis_user", None),
        operator=args.operator,
        outcome="ok",
        **fields,
    )


async def _with_links(config: Config, action: str, args: argparse.Namespace) -> int:
    from gateway.app import redis_client
    from gateway.links.cache import CachedLinkStore
    from gateway.links.sql import SqlLinkStore
    from gateway.ssolog.commands import log_admin
    from gateway.storage.database import create_engine, require_current_schema

    settings = config.gateway
    engine = create_engine(settings.database.url)
    redis = redis_client(settings.redis.url, settings.redis.timeout)
    try:
        await require_current_schema(engine)
        sql = SqlLinkStore(engine)
        store = CachedLinkStore(
            sql,
            redis,
            ttl=settings.link_cache.ttl,
            negative_ttl=settings.link_cache.negative_ttl,
        )
        if action == "list":
            found = await _listed_links(config, sql, args.tenant)
            if found is None:
                return 1
            for link in found:
                print(_list_line(link))
            return 0
        if action == "add":
            if args.tenant not in config.tenants:
                print(
                    f"error: tenant {args.tenant!r} is not in "
                    f"{config.tenants_path}: add the tenant there first",
                    file=sys.stderr,
                )
                return 1
            code = await _add_link(store, sql, args, settings.link_cache.negative_ttl)
            if code != 0:
                return code
            added = _admin_entry(
                "link_added_by_admin", args, medimo_account=args.account
            )
            return 0 if await log_admin(config, engine, [added]) else 1
        removed = await store.remove(args.tenant, args.ysis_user)
        _warn_stale_cache(store, settings.link_cache.ttl)
        if removed is None:
            if args.tenant not in config.tenants and not await sql.list(args.tenant):
                print(
                    f"error: tenant {args.tenant!r} is not in "
                    f"{config.tenants_path} and has no links",
                    file=sys.stderr,
                )
                return 1
            print(
                f"error: tenant {args.tenant!r}: Ysis user {args.ysis_user!r} is not linked",
                file=sys.stderr,
            )
            return 1
        expires = await _revoke(
            config,
            engine,
            redis,
            "account",
            removed.tenant,
            removed.medimo_account,
            args.operator,
        )
        print(
            f"removed {removed.tenant}/{removed.ysis_user} (was {removed.medimo_account}); its sessions are revoked"
        )
        if removed.tenant not in config.tenants:
            left = len(await sql.list(removed.tenant))
            print(
                f"note: tenant {removed.tenant!r} is not in {config.tenants_path}; "
                f"{left} link(s) of it remain",
                file=sys.stderr,
            )
        entries = [
            _admin_entry(
                "link_removed_by_admin", args, medimo_account=removed.medimo_account
            ),
            _admin_entry(
                "sessions_revoked",
                args,
                medimo_account=removed.medimo_account,
                reason="link_removed",
                detail=f"sessions of the account revoked until {expires.isoformat()}",
            ),
        ]
        return 0 if await log_admin(config, engine, entries) else 1
    finally:
        await redis.aclose()
        await engine.dispose()


async def _listed_links(
    config: Config, sql: SqlLinkStore, tenant: str | None
) -> list[Link] | None:
    """Return the links that ``links list`` or ``export`` prints, or None on an error.

    A tenant that was removed from the tenants file keeps its links, so both
    commands show them, with a note on standard error that no gateway uses
    them any more.
    """
    found = await sql.list(tenant)
    if tenant is not None and tenant not in config.tenants and not found:
        print(
            f"error: tenant {tenant!r} is not in {config.tenants_path} and has no links",
            file=sys.stderr,
        )
        return None
    counts: dict[str, int] = {}
    for link in found:
        if link.tenant not in config.tenants:
            counts[link.tenant] = counts.get(link.tenant, 0) + 1
    for name, count in counts.items():
        print(
            f"note: tenant {name!r} is not in {config.tenants_path}: no gateway "
            f"uses its {count} link(s); remove them with 'sso-gateway links "
            f"remove --tenant {name} --ysis-user USER'",
            file=sys.stderr,
        )
    return found


def _list_line(link: Link) -> str:
    """Return one line of ``links list``, with hidden characters escaped."""
    from gateway.text import terminal_text

    used = link.last_used_at.isoformat(timespec="seconds") if link.last_used_at else "-"
    fields = [
        link.tenant,
        link.ysis_user,
        link.medimo_account,
        link.created_by,
        link.created_at.isoformat(timespec="seconds"),
        used,
    ]
    return "\t".join(terminal_text(field) for field in fields)


async def _add_link(
    store: CachedLinkStore,
    sql: SqlLinkStore,
    args: argparse.Namespace,
    negative_ttl: float,
) -> int:
    from gateway.flows.launch import ACCOUNT_ID
    from gateway.upstream.api import IDENTIFIER

    if not ACCOUNT_ID.match(args.ysis_user):
        print(
            f"error: Ysis user {args.ysis_user!r} is not a valid Ysis account ID: "
            "use 1 to 64 of the characters A-Z, a-z, 0-9 and . _ @ -",
            file=sys.stderr,
        )
        return 1
    if not IDENTIFIER.match(args.account):
        print(
            f"error: Medimo account {args.account!r} is not a valid account ID: "
            "use up to 128 of the characters A-Z, a-z, 0-9 and . _ @ -, "
            "starting with a letter or digit",
            file=sys.stderr,
        )
        return 1
    try:
        link = await store.add(args.tenant, args.ysis_user, args.account, args.operator)
    except LinkConflict as exc:
        print(
            f"error: tenant {args.tenant!r}: {await _conflict(sql, args, exc.field)}",
            file=sys.stderr,
        )
        return 1
    finally:
        _warn_stale_cache(store, negative_ttl)
    print(f"linked {link.tenant}/{link.ysis_user} to {link.medimo_account}")
    return 0


async def _conflict(sql: SqlLinkStore, args: argparse.Namespace, field: str) -> str:
    """Return the message that names the link blocking ``links add``, and the fix."""
    if field == "ysis_user":
        holder = await sql.get(args.tenant, args.ysis_user)
        what = f"Ysis user {args.ysis_user!r} is already linked"
        if holder is not None:
            what += f" to Medimo account {holder.medimo_account!r}"
    else:
        holder = await sql.find_account(args.tenant, args.account)
        what = f"Medimo account {args.account!r} is already linked"
        if holder is not None:
            what += f" to Ysis user {holder.ysis_user!r}"
    if holder is None:
        # The link was removed between the insert and this lookup.
        return f"{what}. Nothing was changed: run the command again"
    return (
        f"{what}. Nothing was changed: remove that link first with 'sso-gateway "
        f"links remove --tenant {args.tenant} --ysis-user {holder.ysis_user}'"
    )


def _warn_stale_cache(store: CachedLinkStore, ttl: float) -> None:
    # This process exits next, so a failed cache delete is never retried.
    if store.pending_invalidations:
        print(
            "warning: the link cache in Redis could not be updated: running "
            f"gateways may use the old link for up to {ttl:g} s",
            file=sys.stderr,
        )


async def _links_to_export(
    config: Config, args: argparse.Namespace
) -> list[Link] | None:
    from gateway.links.sql import SqlLinkStore
    from gateway.storage.database import create_engine, require_current_schema

    engine = create_engine(config.gateway.database.url)
    try:
        await require_current_schema(engine)
        return await _listed_links(config, SqlLinkStore(engine), args.tenant)
    finally:
        await engine.dispose()


def _export_links(config: Config, args: argparse.Namespace) -> int:
    from gateway.links.transfer import write_csv

    found: list[Link] | None = None

    def read() -> int:
        nonlocal found
        found = asyncio.run(_links_to_export(config, args))
        return 0 if found is not None else 1

    code = _run_database(read, failed="reading the link table failed")
    exported = found
    if code != 0 or exported is None:
        return code or 1
    count: int | None
    if args.output in (None, "-"):
        count = write_csv(exported, sys.stdout)
    else:
        count = _write_file(args.output, lambda output: write_csv(exported, output))
    if count is None:
        return 1
    print(f"exported {count} link(s)", file=sys.stderr)
    return 0


def _write_file(path: str, write: Callable[[TextIO], int]) -> int | None:
    """Write a file whole or not at all, and return what ``write`` returned.

    The text goes to a temporary file beside ``path`` that replaces it at
    the end, so a failure leaves an earlier file as it was.
    """
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8", newline="") as output:
            result = write(output)
        os.replace(temporary, target)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        print(
            f"error: {path} cannot be written: {exc.strerror or exc}; nothing was "
            "exported",
            file=sys.stderr,
        )
        return None
    return result


async def _import_links(config: Config, args: argparse.Namespace, text: str) -> int:
    from redis.exceptions import RedisError

    from gateway.app import redis_client
    from gateway.links.cache import link_key
    from gateway.links.sql import SqlLinkStore
    from gateway.links.transfer import plan_import
    from gateway.ssolog.commands import log_admin
    from gateway.ssolog.entry import Entry
    from gateway.storage.database import create_engine, require_current_schema

    settings = config.gateway
    engine = create_engine(settings.database.url)
    try:
        await require_current_schema(engine)
        store = SqlLinkStore(engine)
        plan = plan_import(
            text,
            args.file,
            tenants=config.tenants.keys(),
            current=await store.list(),
            operator=args.operator,
            now=dt.datetime.now(dt.timezone.utc),
        )
        for problem in plan.problems:
            # Each problem shows a row's values as Python literals, escaped.
            print(problem, file=sys.stderr)
        if plan.problems:
            print(f"error: {len(plan.problems)} problem(s); nothing was imported", file=sys.stderr)
            return 1
        for tenant, count in plan.unconfigured.items():
            print(
                f"note: tenant {tenant!r} is not in {config.tenants_path}: its "
                f"{count} row(s) were skipped because the link table has them; "
                f"remove those links with 'sso-gateway links remove --tenant "
                f"{tenant} --ysis-user USER'",
                file=sys.stderr,
            )
        if args.dry_run:
            print(f"would import {len(plan.new)} link(s); {len(plan.existing)} already present")
            return 0
        try:
            await store.add_all(plan.new)
        except LinkConflict:
            print(
                "error: the link table changed during the import; nothing was "
                "imported: run the import again",
                file=sys.stderr,
            )
            return 1
        imported = [
            Entry(
                "links_imported",
                dt.datetime.now(dt.timezone.utc),
                tenant=link.tenant,
                ysis_user=link.ysis_user,
                medimo_account=link.medimo_account,
                operator=args.operator,
                outcome="ok",
            )
            for link in plan.new
        ]
        logged = await log_admin(config, engine, imported)
    finally:
        await engine.dispose()

    # Running gateways may have cached "no link" for these users.
    redis = redis_client(settings.redis.url, settings.redis.timeout)
    try:
        keys = [link_key(link.tenant, link.ysis_user) for link in plan.new]
        for start in range(0, len(keys), 1000):
            await redis.delete(*keys[start : start + 1000])
    except (OSError, RedisError):
        print(
            "warning: the link cache in Redis could not be updated: running "
            f"gateways may miss the new links for up to {settings.link_cache.negative_ttl:g} s",
            file=sys.stderr,
        )
    finally:
        await redis.aclose()
    print(f"imported {len(plan.new)} link(s); {len(plan.existing)} already present")
    return 0 if logged else 1


def cmd_links_transfer(args: argparse.Namespace) -> int:
    if args.links_command == "export":
        return _export_links(_load(args.config), args)
    if not _resolve_operator(args):
        return 1
    config = _load(args.config)
    text = _read_import(args.file)
    if text is None:
        return 1
    return _run_database(
        lambda: asyncio.run(_import_links(config, args, text)),
        failed="nothing was imported, the database failed",
    )


def _read_import(path: str) -> str | None:
    """Return the text of the file to import, or print why it cannot be read."""
    where = path
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        problem = "does not exist: check the path"
    except IsADirectoryError:
        problem = "is a folder: name the CSV file in it"
    except PermissionError:
        problem = "cannot be read: permission denied"
    except OSError as exc:
        problem = f"cannot be read: {exc.strerror or exc}"
    else:
        # Spreadsheets often start UTF-8 CSV with a byte order mark.
        body = data.removeprefix(codecs.BOM_UTF8)
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = body.count(b"\n", 0, exc.start) + 1
            where = f"{path}:{line}:"
            problem = "cannot be read as UTF-8 text: save the file as UTF-8 CSV"
    print(f"error: {where} {problem}; nothing was imported", file=sys.stderr)
    return None


def _resolve_operator(args: argparse.Namespace) -> bool:
    """Fill in ``--operator`` from the login name if needed, and check it.

    Every command that records an administrator goes through here, so that
    one rule (``gateway.text.operator_problem``) decides for all of them.
    Print why and return False when the name cannot be used.
    """
    from gateway.text import operator_problem

    if args.operator is not None:
        problem = operator_problem(args.operator)
        if problem is not None:
            print(f"error: --operator {problem}", file=sys.stderr)
            return False
        return True
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        print(
            "error: the login name is unknown: name the administrator "
            "with --operator NAME",
            file=sys.stderr,
        )
        return False
    problem = operator_problem(name)
    if problem is not None:
        print(
            f"error: the login name {problem}; name the administrator with "
            "--operator NAME",
            file=sys.stderr,
        )
        return False
    args.operator = name
    return True


async def _revoke(
    config: Config,
    engine: AsyncEngine,
    redis: Redis,
    kind: str,
    tenant: str,
    subject: str,
    operator: str,
) -> dt.datetime:
    """Record a revocation in SQL, announce it to the running gateways, return its end.

    The announcement is best effort: SQL has the row, and every gateway reads
    it from there within ``revocations.poll_interval`` without one.
    """
    from gateway.session.announce import AnnounceFailed, announce
    from gateway.storage.revocations import SqlRevocationStore

    expires = dt.datetime.now(dt.UTC) + dt.timedelta(
        seconds=config.longest_session_lifetime
    )
    revocation = await SqlRevocationStore(engine).add(
        kind, tenant, subject, expires, revoked_by=operator
    )
    feed = config.gateway.revocations
    try:
        await announce(redis, revocation.id, config.gateway.redis.timeout)
    except AnnounceFailed as exc:
        # A gateway that lost Redis too reads the database at the fallback
        # interval. One that still has Redis waits for the announcement, which
        # never comes, so its regular read finds the revocation.
        latest = max(feed.poll_interval, feed.fallback_poll_interval)
        print(
            f"warning: Redis could not be reached ({exc}), so the revocation "
            "was not announced. Running gateways read it from the database: "
            f"every {feed.fallback_poll_interval:g} s those that cannot reach "
            f"Redis either, every {feed.poll_interval:g} s the others; all of "
            f"them apply it within {latest:g} s",
            file=sys.stderr,
        )
    return expires


def _text_problem(flag: str, value: str, limit: int) -> str | None:
    """Return why a text argument does not fit its column, if it does not."""
    if not value.strip():
        return f"{flag} must not be empty"
    if len(value) > limit:
        return f"{flag} is {len(value)} characters long, the maximum is {limit}"
    return None


def cmd_links(args: argparse.Namespace) -> int:
    # The operator is checked before anything is written: a link removed
    # without its revocation would leave the account's sessions running.
    if args.links_command != "list" and not _resolve_operator(args):
        return 1
    config = _load(args.config)
    failed = {
        "list": "reading the link table failed",
        "add": "the link table failed",
        "remove": "the link table failed",
    }[args.links_command]
    return _run_database(
        lambda: asyncio.run(_with_links(config, args.links_command, args)),
        failed=failed,
    )


def _sessions_problem(args: argparse.Namespace, config: Config) -> str | None:
    """Return what is wrong with the arguments of ``sessions revoke``, if anything."""
    from gateway.storage.tables import SUBJECT_LENGTH

    if args.tenant not in config.tenants:
        return f"tenant {args.tenant!r} is not in {config.tenants_path}"
    if args.account is not None:
        return _text_problem("--account", args.account, SUBJECT_LENGTH)
    return None


def _revocation_target(args: argparse.Namespace) -> tuple[str, str, str]:
    """Return the kind and subject of the revocation, and what to print."""
    if args.account is None:
        return "tenant", "", f"revoked every session of tenant {args.tenant!r}"
    done = (
        f"revoked the sessions of Medimo account {args.account!r} "
        f"in tenant {args.tenant!r}"
    )
    return "account", args.account, done


async def _revoke_sessions(config: Config, args: argparse.Namespace) -> int:
    from gateway.app import redis_client
    from gateway.links.sql import SqlLinkStore
    from gateway.ssolog.commands import log_admin
    from gateway.storage.database import create_engine, require_current_schema

    settings = config.gateway
    engine = create_engine(settings.database.url)
    redis = redis_client(settings.redis.url, settings.redis.timeout)
    kind, subject, done = _revocation_target(args)
    try:
        await require_current_schema(engine)
        expires = await _revoke(
            config, engine, redis, kind, args.tenant, subject, args.operator
        )
        print(done)
        if kind == "account":
            holder = await SqlLinkStore(engine).find_account(args.tenant, subject)
            if holder is None:
                print(
                    f"note: no link of tenant {args.tenant!r} has Medimo account "
                    f"{subject!r}: check the spelling. Sessions of that account "
                    "may exist all the same, so they are revoked",
                    file=sys.stderr,
                )
        entry = _admin_entry(
            "sessions_revoked",
            args,
            medimo_account=args.account,
            reason="administrator",
            detail=f"{kind} sessions revoked until {expires.isoformat()}",
        )
        return 0 if await log_admin(config, engine, [entry]) else 1
    finally:
        await redis.aclose()
        await engine.dispose()


def cmd_sessions(args: argparse.Namespace) -> int:
    if not _resolve_operator(args):
        return 1
    config = _load(args.config)
    problem = _sessions_problem(args, config)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    return _run_database(
        lambda: asyncio.run(_revoke_sessions(config, args)),
        failed="nothing was revoked, the database failed",
    )


_LOG_FAILED = "accessing the SSO log failed"


def cmd_log(args: argparse.Namespace) -> int:
    from gateway.ssolog.commands import print_rows
    from gateway.ssolog.store import LogQuery

    config = _load(args.config)
    query = LogQuery(
        tenant=args.tenant,
        user=args.user,
        since=args.since,
        until=args.until,
        limit=args.limit,
    )
    return _run_database(
        lambda: asyncio.run(print_rows(config, query)), failed=_LOG_FAILED
    )


def cmd_log_verify(args: argparse.Namespace) -> int:
    from gateway.ssolog.commands import verify

    if _log_filters_given(args):
        return 2
    config = _load(args.config)
    return _run_database(lambda: asyncio.run(verify(config)), failed=_LOG_FAILED)


def cmd_log_purge(args: argparse.Namespace) -> int:
    from gateway.ssolog.commands import purge

    if _log_filters_given(args):
        return 2
    if not _resolve_operator(args):
        return 1
    config = _load(args.config)
    return _run_database(
        lambda: asyncio.run(purge(config, args.operator)), failed=_LOG_FAILED
    )


_LOG_FILTERS = ("tenant", "user", "since", "until", "limit")


def _log_filters_given(args: argparse.Namespace) -> bool:
    given = [name for name in _LOG_FILTERS if getattr(args, name) is not None]
    if given:
        options = ", ".join(f"--{name}" for name in given)
        print(
            f"error: {options} only filter 'sso-gateway log' itself, not "
            f"'log {args.log_command}'",
            file=sys.stderr,
        )
    return bool(given)


def cmd_certs_fingerprint(args: argparse.Namespace) -> int:
    try:
        certs = load_certificates(Path(args.file))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for cert in certs:
        print(f"{cert.fingerprint}  {cert.cert.subject.rfc4514_string()}")
    return 0


def cmd_keys_generate(args: argparse.Namespace) -> int:
    if args.bytes < MIN_KEY_BYTES:
        print(
            f"error: --bytes {args.bytes} is too few: a key needs at least "
            f"{MIN_KEY_BYTES} random bytes",
            file=sys.stderr,
        )
        return 1
    if args.bytes > MAX_KEY_BYTES:
        print(
            f"error: --bytes {args.bytes} is too many: use at most {MAX_KEY_BYTES}",
            file=sys.stderr,
        )
        return 1
    print(secrets.token_urlsafe(args.bytes))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo.run import run_demo

    return run_demo(Path(args.dir), args.port, prepare_only=args.prepare_only)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sso-gateway", description="Ysis single sign-on gateway for Medimo"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    _config_argument(serve)
    serve.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    serve.add_argument(
        "--workers",
        type=_worker_count,
        default=1,
        help=(
            "worker processes that share the listening sockets (default: 1, "
            "which serves in this process); SIGHUP and SIGTERM go to the parent"
        ),
    )
    serve.set_defaults(handler=cmd_serve)

    check = commands.add_parser(
        "check-config", help="validate gateway.yaml and tenants.yaml"
    )
    _config_argument(check)
    check.set_defaults(handler=cmd_check_config)

    demo = commands.add_parser(
        "demo", help="run a self-contained demo with generated certificates"
    )
    demo.add_argument(
        "--dir",
        default="sso-gateway-demo",
        help="folder for the demo's files (default: ./sso-gateway-demo)",
    )
    demo.add_argument(
        "--port", type=int, default=8443, help="gateway port (default: 8443)"
    )
    demo.add_argument(
        "--prepare-only",
        action="store_true",
        help="create the certificates and secrets, then exit",
    )
    demo.set_defaults(handler=cmd_demo)

    db = commands.add_parser("db", help="database schema")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_upgrade = db_commands.add_parser(
        "upgrade", help="run the migrations up to the newest"
    )
    _config_argument(db_upgrade)
    db_upgrade.set_defaults(handler=cmd_db_upgrade)

    links = commands.add_parser("links", help="the link table")
    link_commands = links.add_subparsers(dest="links_command", required=True)
    listing = link_commands.add_parser(
        "list", help="print links as tab-separated lines"
    )
    listing.add_argument("--tenant")
    add = link_commands.add_parser("add", help="link a Ysis user to a Medimo account")
    remove = link_commands.add_parser(
        "remove", help="remove a link and revoke its sessions"
    )
    for sub in (add, remove):
        sub.add_argument("--tenant", required=True)
        sub.add_argument("--ysis-user", required=True)
        # The login name is looked up only when needed, because the lookup
        # fails for a user ID without a passwd entry, as in many containers.
        sub.add_argument(
            "--operator",
            help="name recorded as the administrator (default: login name)",
        )
    add.add_argument("--account", required=True, help="Medimo account ID")
    export = link_commands.add_parser(
        "export", help="write the link table as CSV (columns: see README)"
    )
    export.add_argument("--tenant", help="only this tenant's links")
    export.add_argument(
        "--output", help="file to write (default: standard output)"
    )
    export.set_defaults(handler=cmd_links_transfer)
    load = link_commands.add_parser(
        "import", help="add the links of a CSV file, all or none"
    )
    load.add_argument("file", help="CSV file with a header row")
    load.add_argument(
        "--operator",
        help="created_by of rows without one (default: login name)",
    )
    load.add_argument(
        "--dry-run", action="store_true", help="check the file, change nothing"
    )
    load.set_defaults(handler=cmd_links_transfer)
    for sub in (listing, add, remove):
        sub.set_defaults(handler=cmd_links)
    for sub in (listing, add, remove, export, load):
        _config_argument(sub)

    _add_log_commands(commands)

    sessions = commands.add_parser("sessions", help="sessions of running gateways")
    session_commands = sessions.add_subparsers(dest="sessions_command", required=True)
    revoke = session_commands.add_parser(
        "revoke",
        help="end every session of a tenant, or of one Medimo account in it",
    )
    revoke.add_argument("--tenant", required=True)
    revoke.add_argument(
        "--account",
        help="Medimo account ID whose sessions end (default: every session)",
    )
    revoke.add_argument(
        "--operator",
        help="name recorded as the administrator (default: login name)",
    )
    _config_argument(revoke)
    revoke.set_defaults(handler=cmd_sessions)

    certs = commands.add_parser("certs", help="certificate helpers")
    cert_commands = certs.add_subparsers(dest="certs_command", required=True)
    fingerprint = cert_commands.add_parser(
        "fingerprint", help="print the SHA-256 fingerprint of each certificate in FILE"
    )
    fingerprint.add_argument("file")
    fingerprint.set_defaults(handler=cmd_certs_fingerprint)

    keys = commands.add_parser("keys", help="key helpers")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    generate = key_commands.add_parser("generate", help="print a new random key")
    generate.add_argument(
        "--bytes",
        type=int,
        default=48,
        help=(
            f"random bytes before base64url encoding, {MIN_KEY_BYTES} to "
            f"{MAX_KEY_BYTES} (default: 48)"
        ),
    )
    generate.set_defaults(handler=cmd_keys_generate)
    return parser


def _add_log_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    from gateway.ssolog.commands import parse_time, positive_count

    log = commands.add_parser(
        "log",
        help="print the SSO log as JSON lines; verify or purge it",
        description="Print SSO log rows, oldest first, as one JSON object per line.",
    )
    _config_argument(log)
    log.add_argument("--tenant", metavar="T", help="only rows of this tenant")
    log.add_argument(
        "--user",
        metavar="U",
        help="only rows of this Ysis user ID or Medimo account ID",
    )
    log.add_argument(
        "--since",
        type=parse_time,
        metavar="TIME",
        help="only rows logged at or after this ISO 8601 time (a date: 00:00 UTC)",
    )
    log.add_argument(
        "--until",
        type=parse_time,
        metavar="TIME",
        help="only rows logged before this ISO 8601 time (a date: 00:00 UTC)",
    )
    log.add_argument(
        "--limit",
        type=positive_count,
        metavar="N",
        help="only the newest N matching rows",
    )
    log.set_defaults(handler=cmd_log)
    log_commands = log.add_subparsers(dest="log_command")
    verify = log_commands.add_parser(
        "verify", help="check the hash chain from the oldest row to the newest"
    )
    verify.set_defaults(handler=cmd_log_verify)
    purge = log_commands.add_parser(
        "purge", help="delete rows older than sso_log.retention, and log that"
    )
    purge.add_argument(
        "--operator", help="name recorded as the administrator (default: login name)"
    )
    purge.set_defaults(handler=cmd_log_purge)
    for sub in (verify, purge):
        # SUPPRESS keeps a --config given before the subcommand.
        sub.add_argument(
            "--config",
            default=argparse.SUPPRESS,
            help=(
                "path of gateway.yaml "
                "(default: $SSO_GATEWAY_CONFIG or config/gateway.yaml)"
            ),
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    raise SystemExit(main())
