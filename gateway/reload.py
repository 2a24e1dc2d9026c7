"""Reloading the configuration of a running gateway without dropping a request.

A reload reads both files again, builds the new server TLS context, and only
when both succeeded swaps them in, in one step of the event loop: new
connections get the new context, and each new request uses the new tenants,
pins, CRLs, session keys and the other reloadable settings. Open connections
keep the context of their handshake, and requests in progress are not
interrupted. A failed reload logs each problem in check-config's words and
keeps the configuration in force.

Settings of the listeners, connection pools and clients that the gateway
opens at start (``RESTART_SETTINGS``) keep their old values on a reload, with
a warning that names each changed key.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from gateway.app import build_attempts, build_proxy, session_codecs
from gateway.config.loader import Config, load_config
from gateway.config.models import GatewayConfig
from gateway.errors import ConfigError
from gateway.logs import server_logger
from gateway.state import GATEWAY, Gateway
from gateway.tls import server_context
from gateway.watch import ChangeDetector, Snapshot, snapshot

if TYPE_CHECKING:
    from gateway.serve import RunningGateway

#: Keys of gateway.yaml that apply only at start. A section name covers each
#: of its keys.
RESTART_SETTINGS = (
    "listen",
    "admin",
    "tls.handshake_timeout",
    "upstream",
    "redis",
    "database",
    "limits",
    "link_cache",
)


def _setting(config: GatewayConfig, name: str) -> Any:
    value: Any = config
    for part in name.split("."):
        value = getattr(value, part)
    return value


def restart_changes(old: GatewayConfig, new: GatewayConfig) -> list[str]:
    """Return the restart-only keys whose value differs, as dotted names."""
    changed = []
    for name in RESTART_SETTINGS:
        before, after = _setting(old, name), _setting(new, name)
        if isinstance(before, BaseModel):
            for field in type(before).model_fields:
                if getattr(before, field) != getattr(after, field):
                    changed.append(f"{name}.{field}")
        elif before != after:
            changed.append(name)
    return changed


def keep_restart_settings(old: GatewayConfig, new: GatewayConfig) -> GatewayConfig:
    """Return ``new`` with the old value of every restart-only key."""
    updates: dict[str, Any] = {}
    for name in RESTART_SETTINGS:
        section, _, key = name.partition(".")
        if not key:
            updates[section] = getattr(old, section)
            continue
        current = updates.get(section, getattr(new, section))
        kept = getattr(getattr(old, section), key)
        updates[section] = current.model_copy(update={key: kept})
    return new.model_copy(update=updates)


#: Seconds between two looks at the watch interval.
WATCH_NAP = 0.1


class ReloadFailed(Exception):
    """A reload whose configuration or TLS context could not be built."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def build_reloaded(path: str, old: Config) -> tuple[Config, ssl.SSLContext, list[str]]:
    """Load and check both files, keep the restart-only settings of ``old`` and
    build the TLS context. Return the configuration, the context and the
    restart-only keys that changed, or raise ReloadFailed.
    """
    try:
        loaded = load_config(path)
    except ConfigError as exc:
        raise ReloadFailed(exc.problems) from None
    except Exception as exc:  # noqa: BLE001 - a reload must never end the gateway
        # SECURITY: only the type is named, because the message of an
        # unexpected error might quote a file's contents.
        raise ReloadFailed(
            [
                f"{path}: the configuration cannot be loaded "
                f"({type(exc).__name__}): run 'sso-gateway check-config' on it"
            ]
        ) from None
    kept = restart_changes(old.gateway, loaded.gateway)
    config = dataclasses.replace(
        loaded, gateway=keep_restart_settings(old.gateway, loaded.gateway)
    )
    try:
        context = server_context(config)
    except (ssl.SSLError, OSError) as exc:
        # check-config reads the certificate and the key separately, so only
        # OpenSSL checks here that the key belongs to the certificate.
        settings = config.gateway.tls
        raise ReloadFailed(
            [
                f"{config.path}: tls: the certificate '{settings.certificate}' "
                f"and private key '{settings.private_key}' cannot be loaded "
                f"together: {getattr(exc, 'reason', None) or exc}: check that "
                "the key belongs to the certificate"
            ]
        ) from None
    return config, context, kept


class Reloader:
    """Reloads the configuration of one running gateway, one reload at a time.

    ``request`` may be called from a signal handler or the file watcher; a
    request that arrives during a reload runs one more reload after it.
    ``prepare_context`` is applied to each new TLS context before it is used,
    such as giving it the session ticket keys that all workers share.
    """

    def __init__(
        self,
        running: RunningGateway,
        applied: Snapshot,
        prepare_context: Callable[[ssl.SSLContext], None] | None = None,
    ) -> None:
        self._running = running
        self._prepare = prepare_context
        self.detector = ChangeDetector(applied)
        self._wake = asyncio.Event()
        self._trigger = ""

    @property
    def gateway(self) -> Gateway:
        return self._running.runner.app[GATEWAY]

    def request(self, trigger: str) -> None:
        self._trigger = trigger
        self._wake.set()

    async def run(self) -> None:
        """Run requested reloads until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.reload(self._trigger)
            except Exception:  # noqa: BLE001 - later reloads must still run
                server_logger.exception(
                    "reload failed unexpectedly, the configuration in force stays",
                    extra={"event": "config_reload_failed", "trigger": self._trigger},
                )
                self.gateway.metrics.record_reload(None)

    async def watch(self) -> None:
        """Poll the watched files and request a reload after a settled change."""
        last_poll = time.monotonic()
        while True:
            # Short naps, so that an interval changed by a reload applies at
            # once instead of after the old interval.
            await asyncio.sleep(WATCH_NAP)
            interval = self.gateway.config.gateway.config_watch_interval
            if interval <= 0 or time.monotonic() - last_poll < interval:
                continue
            last_poll = time.monotonic()
            try:
                current = await asyncio.to_thread(snapshot, self.gateway.config.path)
            except Exception:  # noqa: BLE001 - the next poll tries again
                server_logger.exception(
                    "checking the configuration files for changes failed",
                    extra={"event": "config_watch_failed"},
                )
                continue
            if self.detector.settled(current):
                self.request("file change")

    async def reload(self, trigger: str) -> bool:
        """Reload both files now; return whether the new configuration is in force."""
        gateway = self.gateway
        old = gateway.config
        try:
            # Taken before the files are read, so that a change during the
            # load is seen by the next poll.
            self.detector.applied = await asyncio.to_thread(snapshot, old.path)
            config, context, kept = await asyncio.to_thread(
                build_reloaded, str(old.path), old
            )
            if self._prepare is not None:
                self._prepare(context)
        except Exception as exc:  # noqa: BLE001 - a bad file must not end reloading
            problems = (
                exc.problems
                if isinstance(exc, ReloadFailed)
                else [f"{old.path}: the files cannot be read ({type(exc).__name__})"]
            )
            _log_failure(problems, trigger)
            gateway.metrics.record_reload(None)
            return False
        self._swap(gateway, config, context)
        _log_success(config, trigger, kept)
        gateway.metrics.record_reload(config)
        for tenant in sorted(set(old.tenants) - set(config.tenants)):
            await _revoke_removed_tenant(gateway, tenant)
        return True

    def _swap(self, gateway: Gateway, config: Config, context: ssl.SSLContext) -> None:
        """Put the new configuration in force; nothing here awaits."""
        old = gateway.config.gateway
        new = config.gateway
        if new.session.keys != old.session.keys:
            gateway.sessions, gateway.pending = session_codecs(config)
        if new.upstream_signing_keys != old.upstream_signing_keys:
            gateway.proxy = build_proxy(config, gateway.http, gateway.metrics)
        if new.forms != old.forms:
            gateway.attempts = build_attempts(config, gateway.redis)
        # SECURITY: never shortened, because sessions issued under the longer
        # lifetime stay valid if a later reload raises it again.
        gateway.revocations.extend_lifetime(config.longest_session_lifetime)
        gateway.config = config
        self._running.context = context


#: ``revoked_by`` of the revocation that ends a removed tenant's sessions.
TENANT_REMOVED_BY = "configuration reload"


async def _revoke_removed_tenant(gateway: Gateway, tenant: str) -> None:
    """Record that every session of a removed tenant ended.

    The removal alone already refuses those sessions here. The revocation
    keeps them refused if the tenant comes back, and on the other instances.
    """
    try:
        await gateway.revocations.revoke(
            "tenant", tenant, "", revoked_by=TENANT_REMOVED_BY
        )
    except Exception as exc:  # noqa: BLE001 - the reload itself succeeded
        server_logger.error(
            "a removed tenant's sessions could not be revoked: they work again "
            "if the tenant returns; run 'sso-gateway sessions revoke --tenant' "
            "for it",
            extra={
                "event": "tenant_revocation_failed",
                "tenant": tenant,
                "error": type(exc).__name__,
            },
        )
        return
    server_logger.info(
        "sessions of a removed tenant revoked",
        extra={"event": "tenant_sessions_revoked", "tenant": tenant},
    )


def _log_failure(problems: list[str], trigger: str) -> None:
    # SECURITY: the loader's messages name files and keys, never a secret's
    # value, so they can be logged as they are.
    for problem in problems:
        server_logger.error(problem, extra={"event": "config_problem"})
    server_logger.error(
        "configuration reload failed: the configuration in force is kept",
        extra={
            "event": "config_reload_failed",
            "trigger": trigger,
            "errors": len(problems),
        },
    )


def _log_success(config: Config, trigger: str, kept: list[str]) -> None:
    for key in kept:
        server_logger.warning(
            f"{key} changed, but a reload keeps its old value: restart to apply",
            extra={"event": "config_restart_required", "key": key},
        )
    server_logger.info(
        "configuration reloaded",
        extra={
            "event": "config_reloaded",
            "trigger": trigger,
            "config_hash": config.digest[:16],
            "tenants": len(config.tenants),
            "warnings": len(config.warnings),
        },
    )
