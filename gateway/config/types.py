"""Value types of the configuration files: durations, networks and secrets."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, PlainValidator

from gateway.config.files import read_regular_file

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_DURATION = re.compile(r"(?P<number>[0-9]+(\.[0-9]+)?)(?P<unit>ms|s|m|h|d)\Z")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_PREFIX = re.compile(r"(0|[1-9][0-9]{0,2})\Z")
_LEADING_ZERO = re.compile(r"0[0-9]")

#: Largest secret file read: a key, a token or a URL.
MAX_SECRET_BYTES = 64 * 1024

#: Keys shorter than this are rejected (HMAC-SHA256 wants 32 bytes of entropy).
MIN_KEY_BYTES = 32


#: Maximum duration of any setting: a year, so that every clock sum stays
#: far inside the range of datetime and the database.
MAX_DURATION = 366 * 86400.0


def parse_duration(value: Any) -> float:
    """Convert ``30m``, ``10h`` or ``500ms`` into seconds."""
    match = _DURATION.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(
            f"{value!r} is not a duration: write a number and a unit "
            "(ms, s, m, h or d), such as '30m'"
        )
    seconds = float(match["number"]) * _UNIT_SECONDS[match["unit"]]
    if seconds > MAX_DURATION:
        raise ValueError(
            f"{value!r} is longer than the longest duration allowed, 366d"
        )
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]

#: Bounds of a rate-limit window, in seconds.
MIN_WINDOW = 1
MAX_WINDOW = 86400


def parse_window(value: Any) -> float:
    """Convert a rate-limit window such as ``15m`` into whole seconds.

    The ``limits`` library counts windows in whole seconds, so ``1.5s`` and
    ``500ms`` are rejected instead of being rounded.
    """
    seconds = parse_duration(value)
    if not MIN_WINDOW <= seconds <= MAX_WINDOW or seconds != int(seconds):
        raise ValueError(
            f"{value!r} is not a valid window: write a whole number of seconds "
            "from 1s to 1d, such as '15m'"
        )
    return seconds


Window = Annotated[float, BeforeValidator(parse_window)]

_RETENTION = re.compile(r"(?P<count>0|[1-9][0-9]*)(?P<unit>d|y)\Z")

#: Maximum retention period in years. A longer one is most likely a typo.
MAX_RETENTION_YEARS = 100
_MAX_RETENTION = {
    "d": MAX_RETENTION_YEARS * 365 + MAX_RETENTION_YEARS // 4,
    "y": MAX_RETENTION_YEARS,
}


@dataclass(frozen=True)
class RetentionPeriod:
    """How long rows are kept: a whole number of days or calendar years."""

    count: int
    unit: str

    def cutoff(self, now: datetime) -> datetime:
        """Return the time before which a row is older than this period."""
        if self.unit == "d":
            return now - timedelta(days=self.count)
        year = now.year - self.count
        try:
            return now.replace(year=year)
        except ValueError:
            # 29 February: the 28th keeps a day more rather than a day less.
            return now.replace(year=year, day=28)

    def __str__(self) -> str:
        return f"{self.count}{self.unit}"


def parse_retention(value: Any) -> RetentionPeriod:
    """Convert ``5y`` or ``400d`` into a retention period.

    Years are calendar years, so that leap days never shorten the period.
    Fractions and other units are rejected rather than rounded.
    """
    if isinstance(value, RetentionPeriod):
        return value
    match = _RETENTION.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(
            f"{value!r} is not a retention period: write a whole number of "
            "days or years (d or y), such as '5y' or '400d'"
        )
    count, unit = int(match["count"]), match["unit"]
    if count == 0:
        raise ValueError(f"{value!r} is too short: the minimum is 1d")
    if count > _MAX_RETENTION[unit]:
        raise ValueError(
            f"{value!r} is longer than the maximum of {MAX_RETENTION_YEARS} years"
        )
    return RetentionPeriod(count, unit)


Retention = Annotated[
    RetentionPeriod,
    PlainValidator(parse_retention),
    PlainSerializer(str, return_type=str),
]


def parse_network(value: Any) -> IPNetwork:
    """Parse a CIDR strictly: no host bits, no leading zeros, a prefix length."""
    if not isinstance(value, str):
        raise ValueError(
            f"{value!r} is not a CIDR: write it as a string, such as '10.0.0.0/8'"
        )
    text = value.strip()
    address_text, slash, prefix = text.partition("/")
    if not slash:
        single = 128 if ":" in text else 32
        raise ValueError(
            f"{value!r} has no prefix length: write a CIDR, such as '{text}/{single}'"
        )
    octets = address_text.split(".")
    if ":" not in address_text and any(_LEADING_ZERO.match(part) for part in octets):
        raise ValueError(
            f"{value!r} has leading zeros, which some tools read as octal: "
            "write each IPv4 number without them"
        )
    try:
        if "%" in address_text:
            raise ValueError("an allowlist address has no IPv6 zone ID")
        address = ipaddress.ip_address(address_text)
    except ValueError:
        raise ValueError(
            f"{value!r} is not a valid CIDR: {address_text!r} is not an IPv4 "
            "or IPv6 address"
        ) from None
    if not _PREFIX.match(prefix) or int(prefix) > address.max_prefixlen:
        raise ValueError(
            f"{value!r} is not a valid CIDR: the prefix length must be a number "
            f"from 0 to {address.max_prefixlen}"
        )
    network = ipaddress.ip_network(text, strict=False)
    if network.network_address != address:
        raise ValueError(
            f"{value!r} has host bits set: write the network address "
            f"'{network}', or '{address}/{address.max_prefixlen}' for one host"
        )
    return network


Network = Annotated[
    IPNetwork, BeforeValidator(parse_network), PlainSerializer(str, return_type=str)
]


def covers_everyone(network: IPNetwork) -> bool:
    """Tell whether a network admits every IPv4 or every IPv6 address.

    ``::ffff:0:0/96`` counts too: it holds every IPv4 address in mapped form.
    """
    if network.prefixlen == 0:
        return True
    mapped = ipaddress.ip_network("::ffff:0:0/96")
    return network.version == 6 and network.supernet_of(mapped)  # type: ignore[arg-type]


class Secret:
    """A secret value whose repr never shows it."""

    __slots__ = ("_value", "source")

    def __init__(self, value: bytes, source: str) -> None:
        self._value = value
        self.source = source

    def reveal(self) -> bytes:
        return self._value

    def text(self) -> str:
        return self._value.decode("utf-8")

    def fingerprint(self) -> str:
        """Return a short hash that identifies the value in logs and metrics."""
        return hashlib.sha256(self._value).hexdigest()[:12]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return f"Secret({self.source}, ****)"

    __str__ = __repr__


#: SHA-256 of every sample key the project ships (docker-compose, docs).
#: These values are public, so a deployment that uses one is refused.
SAMPLE_KEY_HASHES = frozenset(
    {
        hashlib.sha256(sample.encode()).hexdigest()
        for sample in (
            "change-me-change-me-change-me-change-me",
            "compose-session-key-not-for-production-0001",
            "compose-signing-key-not-for-production-0001",
            "compose-api-token-not-for-production-00001",
            "compose-launch-secret-not-for-production-01",
        )
    }
)


def resolve_secret(value: Any, base: Path, *, min_bytes: int = 0) -> Secret:
    """Read a secret written as ``{env: NAME}`` or ``{file: PATH}``.

    A literal string is refused because secrets do not belong in files that
    are reviewed in git.
    """
    if isinstance(value, Secret):
        return value
    if isinstance(value, str):
        raise ValueError(
            "literal secrets are not allowed: write {env: NAME} or {file: PATH}"
        )
    if (
        not isinstance(value, dict)
        or len(value) != 1
        or not {"env", "file"} & set(value)
    ):
        raise ValueError("a secret must be written as {env: NAME} or {file: PATH}")

    if "env" in value:
        name = value["env"]
        raw = os.environ.get(str(name))
        if raw is None or raw == "":
            raise ValueError(f"environment variable {name!r} is not set or empty")
        secret = Secret(raw.encode("utf-8"), f"env:{name}")
    else:
        path = (base / str(value["file"])).expanduser()
        try:
            raw_bytes = read_regular_file(path, MAX_SECRET_BYTES).strip()
        except OSError as exc:
            raise ValueError(
                f"secret file '{path}' cannot be read: {exc.strerror}"
            ) from None
        if not raw_bytes:
            raise ValueError(f"secret file '{path}' is empty")
        secret = Secret(raw_bytes, f"file:{path}")

    if min_bytes and len(secret.reveal()) < min_bytes:
        raise ValueError(
            f"the key from {secret.source} is {len(secret.reveal())} bytes, "
            f"at least {min_bytes} are required: create one with "
            "'sso-gateway keys generate'"
        )
    if hashlib.sha256(secret.reveal()).hexdigest() in SAMPLE_KEY_HASHES:
        raise ValueError(
            f"the key from {secret.source} is a published sample key: "
            "create one with 'sso-gateway keys generate'"
        )
    return secret
