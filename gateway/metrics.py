"""The gateway's Prometheus metrics, all named ``sso_gateway_*``.

Each running gateway makes its own ``Metrics`` in the startup hook, with a
registry of its own, so that forked workers and test event loops never share
one. Values that already live elsewhere (link cache counters, certificate
dates, the configuration hash) are read when Prometheus scrapes, so they
cannot drift from the state they describe.

Label values come from closed sets or from the configuration, never from a
request, so that a client cannot grow the number of series.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.config.loader import Certificate, Config, load_certificates
from gateway.links.cache import CacheStats

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
        self.registry = CollectorRegistry(auto_describe=True)
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
            "1 when the last configuration load or reload succeeded, else 0.",
            registry=registry,
        )
        self.config_last_reload_time = Gauge(
            "sso_gateway_config_last_reload_timestamp_seconds",
            "Unix time of the last configuration load or reload attempt.",
            registry=registry,
        )
        self.up = Gauge(
            "sso_gateway_dependency_up",
            "1 when the last health check reached the dependency, else 0.",
            ["dependency"],
            registry=registry,
        )
        self.config_last_reload_success.set(1)
        self.config_last_reload_time.set(time.time())
        for result in ("success", "failure"):
            # Both series exist from the start, so a rate() sees the first one.
            self.config_reloads.labels(result)

    def record_reload(self, *, success: bool) -> None:
        self.config_reloads.labels("success" if success else "failure").inc()
        self.config_last_reload_success.set(1 if success else 0)
        self.config_last_reload_time.set(time.time())

    def watch(self, state: Callable[[], tuple[Config, CacheStats]]) -> None:
        """Report the configuration and the link cache of ``state()`` at scrape time."""
        self.registry.register(_StateCollector(state))


class _StateCollector(Collector):
    """Reads the configuration and link cache counters when Prometheus scrapes."""

    def __init__(self, state: Callable[[], tuple[Config, CacheStats]]) -> None:
        self._state = state
        self._server: tuple[str, list[Certificate]] | None = None

    def describe(self) -> Iterator[Metric]:
        # Described lazily: the families below depend on the configuration.
        return iter(())

    def collect(self) -> Iterator[Metric]:
        config, stats = self._state()
        yield from _cache_metrics(stats)
        info = GaugeMetricFamily(
            "sso_gateway_config_info",
            "The configuration in force: 1, labelled with its hash.",
            labels=["hash"],
        )
        info.add_metric([config.digest[:16]], 1)
        yield info
        yield self._expiry(config)

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
        # Read once per configuration, not on every scrape.
        if self._server is None or self._server[0] != config.digest:
            try:
                certs = load_certificates(config.gateway.tls.certificate)[:1]
            except ValueError:
                certs = []
            self._server = (config.digest, certs)
        return self._server[1]


def _days(cert: Certificate, now: dt.datetime) -> float:
    return (cert.cert.not_valid_after_utc - now).total_seconds() / SECONDS_PER_DAY


def _cache_metrics(stats: CacheStats) -> Iterator[Metric]:
    for name, value, text in (
        ("hits", stats.hits, "Link lookups answered from the Redis cache."),
        ("misses", stats.misses, "Link lookups that went to the database."),
        ("errors", stats.errors, "Failed Redis commands and unreadable cache entries."),
    ):
        family = CounterMetricFamily(f"sso_gateway_link_cache_{name}", text)
        family.add_metric([], value)
        yield family
