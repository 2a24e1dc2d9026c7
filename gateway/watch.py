"""Change detection for the configuration files and the files they name.

The watched files are read from the YAML as it is on disk, not from the
configuration in force, so that a reload that failed on a missing file is
retried once that file appears. A snapshot contains the SHA-256 of each file
(None for a missing one), so an edit is seen even where it keeps the size
and the modification time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway.config import yamlfile
from gateway.config.files import read_regular_file

#: Keys whose values are file paths, in both files.
FILE_KEYS = frozenset(
    {"certificate", "private_key", "certificates", "ca_file", "crl_file"}
)

#: A path and the SHA-256 of its contents, or None where it cannot be read.
Snapshot = tuple[tuple[str, str | None], ...]


def _parse(path: Path) -> Any:
    try:
        return yamlfile.read(path).data
    except (OSError, yamlfile.YamlError):
        return None


def _resolve(value: Any, base: Path) -> Iterator[Path]:
    values = value if isinstance(value, list) else [value]
    for item in values:
        if isinstance(item, str) and item.strip() and "\0" not in item:
            try:
                path = Path(item).expanduser()
            except RuntimeError:
                # The home folder of an unknown user: the loader reports it.
                continue
            yield path if path.is_absolute() else base / path


def _named(data: Any, base: Path) -> Iterator[Path]:
    """Yield every file that parsed YAML names, relative paths from ``base``."""
    if isinstance(data, dict):
        if set(data) == {"file"}:
            # A secret written as {file: PATH}.
            yield from _resolve(data["file"], base)
            return
        for key, value in data.items():
            if key in FILE_KEYS:
                yield from _resolve(value, base)
            else:
                yield from _named(value, base)
    elif isinstance(data, list):
        for item in data:
            yield from _named(item, base)


def watched_files(gateway_path: Path) -> list[Path]:
    """Return gateway.yaml, its tenants file and every file the two name."""
    gateway_path = gateway_path.absolute()
    base = gateway_path.parent
    data = _parse(gateway_path)
    tenants_path = base / "tenants.yaml"
    if isinstance(data, dict):
        named = list(_resolve(data.get("tenants_file"), base))
        tenants_path = named[0] if named else tenants_path
    files = {gateway_path, tenants_path}
    files.update(_named(data, base))
    files.update(_named(_parse(tenants_path), tenants_path.parent))
    return sorted(files)


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(read_regular_file(path)).hexdigest()
    except (OSError, ValueError):
        return None


def snapshot(gateway_path: Path | str) -> Snapshot:
    """Return the SHA-256 of every watched file, to compare with a later poll."""
    return tuple(
        (str(path), _digest(path)) for path in watched_files(Path(gateway_path))
    )


class ChangeDetector:
    """Decides when the watched files changed and then stayed the same.

    A change counts once two polls in a row saw the same new snapshot, so
    that a certificate and its key written one after the other are loaded
    together, and a half-written file is not loaded at all.
    """

    def __init__(self, applied: Snapshot) -> None:
        #: The snapshot of the last load or reload, successful or not.
        self.applied = applied
        self._previous = applied

    def settled(self, current: Snapshot) -> bool:
        """Record a poll and return whether a reload is due."""
        previous, self._previous = self._previous, current
        return current != self.applied and current == previous
