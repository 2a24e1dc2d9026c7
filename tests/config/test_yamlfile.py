"""The strict YAML reader: plain scalars, duplicate keys, aliases and lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config import yamlfile


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "file.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("true", True, id="true"),
        pytest.param("false", False, id="false"),
        pytest.param("null", None, id="null"),
        pytest.param("~", None, id="tilde"),
        pytest.param("", None, id="empty"),
        pytest.param("42", 42, id="int"),
        pytest.param("-7", -7, id="negative-int"),
        pytest.param("1.5", 1.5, id="float"),
        pytest.param("no", "no", id="no"),
        pytest.param("yes", "yes", id="yes"),
        pytest.param("on", "on", id="on"),
        pytest.param("off", "off", id="off"),
        pytest.param("y", "y", id="y"),
        pytest.param("True", "True", id="capital-true"),
        pytest.param("NO", "NO", id="capital-no"),
        pytest.param("0x1F", "0x1F", id="hex"),
        pytest.param("0o17", "0o17", id="octal"),
        pytest.param("1_000", "1_000", id="underscore-int"),
        pytest.param(".inf", ".inf", id="infinity"),
        pytest.param("2024-01-01", "2024-01-01", id="date"),
        pytest.param("10h", "10h", id="duration"),
    ],
)
def test_plain_scalar_type(tmp_path: Path, text: str, expected: Any) -> None:
    document = yamlfile.read(write(tmp_path, f"key: {text}\n"))

    assert document.data == {"key": expected}
    assert type(document.data["key"]) is type(expected)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('"true"', id="double-quoted-true"),
        pytest.param("'42'", id="single-quoted-int"),
        pytest.param('"null"', id="double-quoted-null"),
        pytest.param("|\n  no", id="literal-block"),
    ],
)
def test_quoted_scalar_stays_string(tmp_path: Path, text: str) -> None:
    document = yamlfile.read(write(tmp_path, f"key: {text}\n"))

    assert isinstance(document.data["key"], str)


def test_clean_file_has_no_problems(tmp_path: Path) -> None:
    document = yamlfile.read(write(tmp_path, "a: 1\nb:\n  c: [x, y]\n"))

    assert document.data == {"a": 1, "b": {"c": ["x", "y"]}}
    assert document.problems == []


def test_lines_of_keys_and_items(tmp_path: Path) -> None:
    text = "tenants:\n  - name: noord\n    allowed_ips:\n      - 10.0.0.0/8\n"

    document = yamlfile.read(write(tmp_path, text))

    assert document.lines[("tenants",)] == 1
    assert document.lines[("tenants", 0)] == 2
    assert document.lines[("tenants", 0, "name")] == 2
    assert document.lines[("tenants", 0, "allowed_ips")] == 3
    assert document.lines[("tenants", 0, "allowed_ips", 0)] == 4


def test_duplicate_key_reported(tmp_path: Path) -> None:
    document = yamlfile.read(write(tmp_path, "port: 1\nhost: x\nport: 2\n"))

    assert len(document.problems) == 1
    problem = document.problems[0]
    assert problem.line == 3
    assert problem.location == ("port",)
    assert "duplicate key 'port'" in problem.message
    assert "line 1" in problem.message


def test_duplicate_key_keeps_first(tmp_path: Path) -> None:
    document = yamlfile.read(write(tmp_path, "port: 1\nport: 2\n"))

    assert document.data == {"port": 1}


def test_duplicate_nested_key_location(tmp_path: Path) -> None:
    text = "tenants:\n  - name: a\n    views: [default]\n    views: [status]\n"

    document = yamlfile.read(write(tmp_path, text))

    assert [problem.location for problem in document.problems] == [
        ("tenants", 0, "views")
    ]
    assert document.problems[0].line == 4


def test_every_duplicate_reported(tmp_path: Path) -> None:
    text = "a: 1\na: 2\nb:\n  c: 1\n  c: 2\na: 3\n"

    document = yamlfile.read(write(tmp_path, text))

    assert [problem.line for problem in document.problems] == [2, 5, 6]


def test_alias_rejected(tmp_path: Path) -> None:
    text = "base: &base\n  port: 1\ncopy: *base\n"

    document = yamlfile.read(write(tmp_path, text))

    assert document.data["copy"] is None
    assert [problem.message for problem in document.problems] == [
        "YAML aliases are not allowed"
    ]
    assert document.problems[0].line == 3


def test_nested_aliases_not_expanded(tmp_path: Path) -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x]"]
    for index in range(1, 12):
        previous = chr(ord("a") + index - 1)
        name = chr(ord("a") + index)
        lines.append(f"{name}: &{name} [*{previous}, *{previous}, *{previous}]")

    document = yamlfile.read(write(tmp_path, "\n".join(lines) + "\n"))

    assert document.data["l"] == [None, None, None]
    assert len(document.problems) == 33


def test_complex_key_rejected(tmp_path: Path) -> None:
    document = yamlfile.read(write(tmp_path, "? [a, b]\n: 1\nc: 2\n"))

    assert document.data == {"c": 2}
    assert [problem.message for problem in document.problems] == [
        "mapping keys must be plain strings"
    ]


def test_python_tag_builds_no_object(tmp_path: Path) -> None:
    text = "key: !!python/object/apply:os.system ['touch pwned']\n"

    document = yamlfile.read(write(tmp_path, text))

    assert document.data == {"key": ["touch pwned"]}
    assert not (tmp_path / "pwned").exists()


def test_empty_file_is_none(tmp_path: Path) -> None:
    document = yamlfile.read(write(tmp_path, "# only a comment\n"))

    assert document.data is None
    assert document.problems == []


def test_missing_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"

    with pytest.raises(yamlfile.YamlError) as caught:
        yamlfile.read(path)

    assert str(caught.value) == f"{path}: file not found"


def test_invalid_yaml_raises(tmp_path: Path) -> None:
    path = write(tmp_path, "key: [unclosed\n")

    with pytest.raises(yamlfile.YamlError) as caught:
        yamlfile.read(path)

    assert str(caught.value).startswith(f"{path}: invalid YAML: ")


def test_two_documents_raise(tmp_path: Path) -> None:
    path = write(tmp_path, "a: 1\n---\nb: 2\n")

    with pytest.raises(yamlfile.YamlError) as caught:
        yamlfile.read(path)

    assert str(caught.value).startswith(f"{path}: invalid YAML: ")


def test_non_utf8_raises(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("naam: Zorggroep Noördwijk\n".encode("latin-1"))

    with pytest.raises(yamlfile.YamlError) as caught:
        yamlfile.read(path)

    assert str(caught.value).startswith(f"{path}: cannot be read: ")


def test_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(yamlfile.YamlError) as caught:
        yamlfile.read(tmp_path)

    assert str(caught.value).startswith(f"{tmp_path}: cannot be read: ")


def test_load_returns_data_and_lines(tmp_path: Path) -> None:
    data, lines = yamlfile.load(write(tmp_path, "a: 1\nb: two\n"))

    assert data == {"a": 1, "b": "two"}
    assert lines[("b",)] == 2


def test_load_raises_every_problem(tmp_path: Path) -> None:
    path = write(tmp_path, "a: 1\na: 2\nb: 1\nb: 2\n")

    with pytest.raises(yamlfile.YamlError) as caught:
        yamlfile.load(path)

    assert str(caught.value).splitlines() == [
        f"{path}:2: duplicate key 'a', first set on line 1: remove one of them",
        f"{path}:4: duplicate key 'b', first set on line 3: remove one of them",
    ]
