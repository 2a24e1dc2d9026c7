"""The gateway's Prometheus metrics, all named ``sso_gateway_*``.

Each running gateway makes its own ``Metrics`` in the startup hook, with a
registry of its own, so that forked workers and test event loops never share
one. Certificate dates are read from the configuration in force when
Prometheus scrapes, so they cannot drift from the files they describe.

With ``serve --workers`` the parent sets ``PROMETHEUS_MULTIPROC_DIR`` before
the fork (see ``enable_multiprocess``). Each worker then writes its values
to files there, and the worker that serves ``/metrics`` adds up the
counters and histograms of every worker, ended ones included. Each gauge
says in its ``multiprocess_mode`` how workers combine, and
``sso_gateway_config_info`` has one series per live worker, labelled with
its ``pid``.

Label values come from closed sets or from the configuration, never from a
request, so that a client cannot grow the number of series.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.config.loader import Certificate, Config, load_certificates

#: The folder of the worker processes' metric files; prometheus_client reads
#: the same variable.
MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

#: Route classes of ``sso_gateway_requests_total``, by aiohttp route name.
ROUTE_CLASSES = (
    "launch",
    "link_form",
    "confirm_form",
    "notice",
    "logout",
    "logged_out",
    "proxied",
    "other",
)

#: Launch outcomes: where an admitted launch went, or why it was refused.
LAUNCH_OUTCOMES = (
    "logged_in",
    "link_form",
    "confirm_form",
    "refused_certificate",
    "refused_address",
    "refused_tenant",
    "refused_parameters",
    "refused_signature",
    "refused_self_link",
    "unavailable",
    "failed",
)

#: Refusal reasons of the launch, mapped to their outcome.
_REFUSALS = {
    "unknown_tenant": "refused_tenant",
    "certificate_missing": "refused_certificate",
    "certificate_invalid": "refused_certificate",
    "certificate_mismatch": "refused_certificate",
    "certificate_revoked": "refused_certificate",
    "certificate_ambiguous": "refused_certificate",
    "ip_not_allowed": "refused_address",
    "self_link_not_allowed": "refused_self_link",
    "launch_signature_invalid": "refused_signature",
    "launch_signature_stale": "refused_signature",
    "launch_nonce_reused": "refused_signature",
}

#: Buckets of the upstream latency histogram, in seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

SECONDS_PER_DAY = 86_400


def enable_multiprocess() -> Path:
    """Make a private folder for the workers' metric files and switch to it.

    Call this in the parent before the fork and before any metric exists.
    """
    folder = Path(tempfile.mkdtemp(prefix="sso-gateway-metrics-"))
    os.environ[MULTIPROC_VARIABLE] = str(folder)
    # prometheus_client chooses how values are stored when it is imported,
    # which may have been before the variable was set.
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    return folder


def worker_ended(pid: int) -> None:
    """Drop the gauges of a worker that ended, so live* modes skip it."""
    if MULTIPROC_VARIABLE in os.environ:
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def launch_outcome(status: int, location: str, reason: str | None) -> str:
    """Return the launch outcome of a launch response."""
    if status == 303:
        if location.endswith("/link"):
            return "link_form"
        if location.endswith("/confirm"):
            return "confirm_form"
        return "logged_in"
    if status == 400:
        return "refused_parameters"
    if status == 503:
        return "unavailable"
    if reason in _REFUSALS:
        return _REFUSALS[reason]
    return "failed"


class Metrics:
    """The counters, histograms and gauges of one running gateway."""

    def __init__(self) -> None:
        self.multiprocess = MULTIPROC_VARIABLE in os.environ
        self.registry = CollectorRegistry(auto_describe=True)
        self._config_hash: str | None = None
        self._state: _StateCollector | None = None
        registry = self.registry
        self.requests = Counter(
            "sso_gateway_requests",
            "Requests answered, by route class and HTTP status.",
            ["route", "status"],
            registry=registry,
        )
        self.launches = Counter(
            "sso_gateway_launches",
            "Launches, by tenant and outcome.",
            ["tenant", "outcome"],
            registry=registry,
        )
        self.upstream_latency = Histogram(
            "sso_gateway_upstream_request_duration_seconds",
            "Time until upstream's response headers arrived, by call.",
            ["call"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.requests_in_progress = Gauge(
            "sso_gateway_requests_in_progress",
            "Requests the gateway is handling now.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.tls_handshake_failures = Counter(
            "sso_gateway_tls_handshake_failures",
            "TLS handshakes that failed, client certificate errors included.",
            registry=registry,
        )
        self.config_reloads = Counter(
            "sso_gateway_config_reloads",
            "Configuration reloads, by result (success or failure).",
            ["result"],
            registry=registry,
        )
        self.config_last_reload_success = Gauge(
            "sso_gateway_config_last_reload_success",
            "1 when the last configuration load or reload succeeded, else 0; "
            "with workers, 0 if it failed in any worker.",
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.config_last_reload_time = Gauge(
            "sso_gateway_config_last_reload_timestamp_seconds",
            "Unix time of the last configuration load or reload attempt.",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.config_info = Gauge(
            "sso_gateway_config_info",
            "The configuration in force: 1, labelled with the hash of its "
            "two files (and with pid per worker).",
            ["hash"],
            registry=registry,
            multiprocess_mode="liveall",
        )
        self.up = Gauge(
            "sso_gateway_dependency_up",
            "1 when the last health check reached the dependency, else 0; "
            "with workers, 0 if any worker's check failed.",
            ["dependency"],
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.link_cache = {
            name: Counter(f"sso_gateway_link_cache_{name}", text, registry=registry)
            for name, text in (
                ("hits", "Link lookups answered from the Redis cache."),
                ("misses", "Link lookups that went to the database."),
                ("errors", "Failed Redis commands and unreadable cache entries."),
            )
        }
        self.config_last_reload_success.set(1)
        self.config_last_reload_time.set(time.time())
        for result in ("success", "failure"):
            # Both series exist from the start, so rate() counts the first reload.
            self.config_reloads.labels(result)

    def record_reload(self, config: Config | None) -> None:
        """Count a reload: ``config`` is the new configuration, None a failure."""
        success = config is not None
        self.config_reloads.labels("success" if success else "failure").inc()
        self.config_last_reload_success.set(1 if success else 0)
        self.config_last_reload_time.set(time.time())
        if config is not None:
            self.record_config(config)

    def record_config(self, config: Config) -> None:
        """Label ``sso_gateway_config_info`` with the hash of ``config``."""
        digest = config.digest[:16]
        old = self._config_hash
        if old is not None and old != digest:
            # A worker's file keeps a removed series, so it is zeroed first.
            self.config_info.labels(old).set(0)
            self.config_info.remove(old)
        self.config_info.labels(digest).set(1)
        self._config_hash = digest

    def count_link_cache(self, name: str) -> None:
        self.link_cache[name].inc()

    def watch(self, config: Callable[[], Config]) -> None:
        """Report the certificates of ``config()`` at scrape time."""
        self._state = _StateCollector(config)
        self.registry.register(self._state)

    def exposition(self) -> bytes:
        """Return /metrics: this process's metrics, or every worker's."""
        if not self.multiprocess:
            return bytes(generate_latest(self.registry))
        combined = CollectorRegistry()
        multiprocess.MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
        if self._state is not None:
            # The certificates are the same files for every worker.
            combined.register(self._state)
        return bytes(generate_latest(combined))


class _StateCollector(Collector):
    """Reads the certificates of the configuration when Prometheus scrapes."""

    def __init__(self, config: Callable[[], Config]) -> None:
        self._config = config
        self._server: tuple[Config, list[Certificate]] | None = None

    def describe(self) -> Iterator[Metric]:
        # Described lazily: the families below depend on the configuration.
        return iter(())

    def collect(self) -> Iterator[Metric]:
        yield self._expiry(self._config())

    def _expiry(self, config: Config) -> Metric:
        family = GaugeMetricFamily(
            "sso_gateway_certificate_expiry_days",
            "Days until a certificate expires (negative once it has), by "
            "tenant, kind (pinned, ca or server) and SHA-256 fingerprint prefix.",
            labels=["tenant", "kind", "fingerprint"],
        )
        now = dt.datetime.now(dt.timezone.utc)
        for tenant in config.tenants.values():
            for cert in tenant.pinned:
                family.add_metric([tenant.name, "pinned", cert.fingerprint[:16]], _days(cert, now))
            for cert in tenant.authorities:
                family.add_metric([tenant.name, "ca", cert.fingerprint[:16]], _days(cert, now))
        for cert in self._server_certificates(config):
            family.add_metric(["", "server", cert.fingerprint[:16]], _days(cert, now))
        return family

    def _server_certificates(self, config: Config) -> list[Certificate]:
        # Read once per configuration, not on every scrape. A reload makes a
        # new Config, also when only the certificate file changed.
        if self._server is None or self._server[0] is not config:
            try:
                certs = load_certificates(config.gateway.tls.certificate)[:1]
            except ValueError:
                certs = []
            self._server = (config, certs)
        return self._server[1]


def _days(cert: Certificate, now: dt.datetime) -> float:
    return (cert.cert.not_valid_after_utc - now).total_seconds() / SECONDS_PER_DAY
