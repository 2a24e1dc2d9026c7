"""Read a YAML file strictly, remembering the line of every value.

PyYAML keeps the last of two duplicate keys and reads ``no`` or ``on`` as
booleans. This reader rejects duplicate keys, keeps every plain scalar other
than ``true``, ``false``, ``null`` and numbers as a string, and returns a map
from each value's path (keys and list indexes) to its line, so that validation
errors can say ``file:line``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

Location = tuple[str | int, ...]

_INT = re.compile(r"[-+]?[0-9]+\Z")
_FLOAT = re.compile(r"[-+]?([0-9]+\.[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\Z")


class YamlError(Exception):
    """Raised for a file that is missing, unreadable or not valid YAML."""


def _scalar(node: yaml.ScalarNode) -> Any:
    value = str(node.value)
    if node.style is not None:
        return value
    if value in ("true", "false"):
        return value == "true"
    if value in ("null", "~", ""):
        return None
    if _INT.match(value):
        return int(value)
    if _FLOAT.match(value):
        return float(value)
    return value


class _Builder:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: dict[Location, int] = {}
        self.seen: set[int] = set()

    def build(self, node: yaml.Node, location: Location) -> Any:
        self.lines[location] = node.start_mark.line + 1
        if id(node) in self.seen:
            # SECURITY: an alias repeats a node, and nested aliases expand a
            # small file into a huge document.
            line = node.start_mark.line + 1
            raise YamlError(f"{self.path}:{line}: YAML aliases are not allowed")
        if not isinstance(node, yaml.ScalarNode):
            self.seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, location)
        if isinstance(node, yaml.SequenceNode):
            return [
                self.build(item, (*location, index))
                for index, item in enumerate(node.value)
            ]
        if isinstance(node, yaml.ScalarNode):
            return _scalar(node)
        raise YamlError(f"{self.path}:{node.start_mark.line + 1}: unsupported YAML node")

    def _mapping(self, node: yaml.MappingNode, location: Location) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise YamlError(f"{self.path}:{line}: mapping keys must be plain strings")
            key = str(key_node.value)
            if key in result:
                raise YamlError(f"{self.path}:{line}: duplicate key {key!r}")
            result[key] = self.build(value_node, (*location, key))
            self.lines[(*location, key)] = line
        return result


def load(path: Path) -> tuple[Any, dict[Location, int]]:
    """Parse ``path`` and return its data and the line of every value."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise YamlError(f"{path}: file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise YamlError(f"{path}: cannot be read: {exc}") from exc

    try:
        # Composing builds nodes only, so no tag turns into a Python object.
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise YamlError(f"{path}: invalid YAML: {exc}") from exc
    if node is None:
        return None, {}

    builder = _Builder(path)
    return builder.build(node, ()), builder.lines
