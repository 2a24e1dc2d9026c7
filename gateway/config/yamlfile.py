"""Read a YAML file strictly, remembering the line of every value.

PyYAML keeps the last of two duplicate keys and reads ``no`` or ``on`` as
booleans. This reader rejects duplicate keys, keeps every plain scalar other
than ``true``, ``false``, ``null`` and numbers as a string, and returns a map
from each value's path (keys and list indexes) to its line, so that validation
errors can say ``file:line``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gateway.config.files import read_regular_file

Location = tuple[str | int, ...]

_INT = re.compile(r"[-+]?[0-9]+\Z")
_FLOAT = re.compile(r"[-+]?([0-9]+\.[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\Z")


class YamlError(Exception):
    """Raised for a file that is missing, unreadable or not valid YAML."""


@dataclass(frozen=True)
class YamlProblem:
    """A rule of this reader that the file breaks, such as a duplicate key."""

    line: int
    location: Location
    message: str


@dataclass(frozen=True)
class Document:
    """A parsed file: its data, the line of every value and its problems.

    A duplicate key keeps its first value and an alias reads as null, so
    that validation can go on and report the other problems of the file too.
    """

    data: Any
    lines: dict[Location, int]
    problems: list[YamlProblem] = field(default_factory=list)


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
    def __init__(self) -> None:
        self.lines: dict[Location, int] = {}
        self.problems: list[YamlProblem] = []
        self.seen: set[int] = set()

    def build(self, node: yaml.Node, location: Location, parent_line: int = 1) -> Any:
        line = node.start_mark.line + 1
        if id(node) in self.seen:
            # SECURITY: an alias repeats a node, and nested aliases expand a
            # small file into a huge document. The composed node keeps the
            # line of its anchor only, so the alias is placed on the line of
            # the key or list that holds it.
            self.lines[location] = parent_line
            self._problem(parent_line, location, "YAML aliases are not allowed")
            return None
        self.lines[location] = line
        if not isinstance(node, yaml.ScalarNode):
            self.seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, location)
        if isinstance(node, yaml.SequenceNode):
            return [
                self.build(item, (*location, index), line)
                for index, item in enumerate(node.value)
            ]
        if isinstance(node, yaml.ScalarNode):
            return _scalar(node)
        self._problem(line, location, "unsupported YAML node")
        return None

    def _mapping(self, node: yaml.MappingNode, location: Location) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                self._problem(line, location, "mapping keys must be plain strings")
                continue
            key = str(key_node.value)
            if key in result:
                first = self.lines[(*location, key)]
                self._problem(
                    line,
                    (*location, key),
                    f"duplicate key {key!r}, first set on line {first}: "
                    "remove one of them",
                )
                continue
            result[key] = self.build(value_node, (*location, key), line)
            self.lines[(*location, key)] = line
        return result

    def _problem(self, line: int, location: Location, message: str) -> None:
        self.problems.append(YamlProblem(line, location, message))


def read(path: Path) -> Document:
    """Parse ``path`` and return its data, lines and every rule it breaks.

    Raises ``YamlError`` for a file that cannot be read or parsed at all.
    """
    try:
        text = read_regular_file(path).decode("utf-8")
    except FileNotFoundError as exc:
        raise YamlError(f"{path}: file not found") from exc
    except (OSError, ValueError) as exc:
        raise YamlError(f"{path}: cannot be read: {exc}") from exc

    try:
        # Composing builds nodes only, so no tag turns into a Python object.
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is None:
            return Document(None, {})
        builder = _Builder()
        data = builder.build(node, ())
    except yaml.YAMLError as exc:
        raise YamlError(f"{path}: invalid YAML: {exc}") from exc
    except ValueError as exc:
        # Such as an integer of more digits than Python converts.
        raise YamlError(f"{path}: invalid YAML: {exc}") from None
    except RecursionError:
        # PyYAML and the builder both recurse once per nesting level.
        raise YamlError(
            f"{path}: invalid YAML: nested too deeply for a configuration file"
        ) from None
    return Document(data, builder.lines, builder.problems)


def load(path: Path) -> tuple[Any, dict[Location, int]]:
    """Parse ``path`` and return its data and the line of every value.

    Raises ``YamlError`` listing every problem, one per line, if the file
    breaks a rule of this reader.
    """
    document = read(path)
    if document.problems:
        raise YamlError(
            "\n".join(
                f"{path}:{problem.line}: {problem.message}"
                for problem in document.problems
            )
        )
    return document.data, document.lines
