"""A short fuzz run of the config loader: any file gives a Config or a ConfigError.

Starting from the valid files of the loader tests, each example replaces
one value, inserts junk into the text, or swaps a whole section. The loader
must answer with a Config or a ConfigError whose every problem names the
file, and never raise anything else.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config.loader import load_config
from gateway.errors import ConfigError
from tests.config.test_loader import GATEWAY, TENANTS, Files, files  # noqa: F401

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=40),
    st.sampled_from(["0.0.0.0/0", "::/0", "10.0.0.1/8", "30m", "-1s", "1e9h", "{env: NOPE}", "certs/ca.pem"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3),
    max_leaves=6,
)

#: Examples per fuzz test: enough to walk every key, short enough for CI.
EXAMPLES = 150

FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def paths_of(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Return the path of every value inside a parsed YAML document."""
    found = [prefix] if prefix else []
    if isinstance(data, dict):
        for key, value in data.items():
            found.extend(paths_of(value, (*prefix, key)))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found.extend(paths_of(value, (*prefix, index)))
    return found


def replaced(data: Any, path: tuple[Any, ...], value: Any) -> Any:
    changed = copy.deepcopy(data)
    target = changed
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return changed


def check_loads_or_explains(path: Path) -> None:
    try:
        load_config(path)
    except ConfigError as error:
        assert error.problems
        for problem in error.problems:
            assert problem.startswith(str(path.parent)), problem


@FUZZ_SETTINGS
@given(data=st.data(), value=VALUES)
def test_tenant_value_replaced(files: Files, data: st.DataObject, value: Any) -> None:
    parsed = yaml.safe_load(TENANTS)
    path = data.draw(st.sampled_from(paths_of(parsed)))

    files.write(tenants=yaml.safe_dump(replaced(parsed, path, value)))

    check_loads_or_explains(files.gateway_path)


@FUZZ_SETTINGS
@given(data=st.data(), value=VALUES)
def test_gateway_value_replaced(files: Files, data: st.DataObject, value: Any) -> None:
    parsed = yaml.safe_load(GATEWAY)
    path = data.draw(st.sampled_from(paths_of(parsed)))

    files.write(gateway=yaml.safe_dump(replaced(parsed, path, value)))

    check_loads_or_explains(files.gateway_path)


@FUZZ_SETTINGS
@given(
    position=st.integers(min_value=0, max_value=len(TENANTS)),
    junk=st.text(alphabet=st.characters(codec="utf-8"), max_size=12),
)
def test_tenants_text_with_junk(files: Files, position: int, junk: str) -> None:
    files.write(tenants=TENANTS[:position] + junk + TENANTS[position:])

    check_loads_or_explains(files.gateway_path)
