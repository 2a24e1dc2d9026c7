"""The shipped config/ examples load once their files and secrets exist.

The copies in tmp_path keep every line of the examples. Absolute paths are
moved below tmp_path, each certificate file they name is created with
trustme, and each ``{env: NAME}`` gets a value.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from gateway.config import yamlfile
from gateway.config.loader import Config, load_config

EXAMPLES = Path(__file__).resolve().parents[2] / "config"

#: Tenant keys that name files; crl_file needs a CRL, which trustme cannot make.
TENANT_FILE_KEYS = {"certificates", "ca_file", "crl_file"}


@dataclass
class Examples:
    folder: Path
    gateway_path: Path
    env: dict[str, str]


def env_names(data: Any) -> Iterator[str]:
    """Yield the NAME of every ``{env: NAME}`` in parsed YAML."""
    if isinstance(data, dict):
        if set(data) == {"env"}:
            yield str(data["env"])
            return
        for value in data.values():
            yield from env_names(value)
    elif isinstance(data, list):
        for value in data:
            yield from env_names(value)


def env_value(name: str, folder: Path) -> str:
    if name == "REDIS_URL":
        return "redis://127.0.0.1:6379/0"
    if name == "DATABASE_URL":
        return f"sqlite+aiosqlite:///{folder / 'gateway.db'}"
    return secrets.token_urlsafe(32)


def moved(path: str, folder: Path) -> Path:
    """Return where an absolute example path lives in the copy."""
    return folder / "root" / Path(path).relative_to("/")


def write_pem(blob: trustme.Blob, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    blob.write_to_path(str(path))


def prepare_tls(text: str, folder: Path, ca: trustme.CA) -> str:
    """Create the server certificate and key; return gateway.yaml rewritten."""
    tls = yamlfile.load(EXAMPLES / "gateway.yaml")[0]["tls"]
    server = ca.issue_cert("medimo.example.nl")
    for key, blob in (
        ("certificate", server.cert_chain_pems[0]),
        ("private_key", server.private_key_pem),
    ):
        written = tls[key]
        if Path(written).is_absolute():
            target = moved(written, folder)
            assert text.count(written) == 1, written
            text = text.replace(written, str(target))
        else:
            target = folder / written
        write_pem(blob, target)
    return text


def prepare_tenants(folder: Path, ca: trustme.CA) -> None:
    """Create every certificate and CA file that tenants.yaml names."""
    tenants = yamlfile.load(EXAMPLES / "tenants.yaml")[0]["tenants"]
    for tenant in tenants:
        assert "crl_file" not in tenant, "make a CRL for the example's crl_file"
        for index, path in enumerate(tenant.get("certificates") or []):
            assert not Path(path).is_absolute(), path
            leaf = ca.issue_cert(f"{tenant['name']}-{index}.ysis.example")
            write_pem(leaf.cert_chain_pems[0], folder / path)
        if "ca_file" in tenant:
            tenant_ca = trustme.CA()
            write_pem(tenant_ca.cert_pem, folder / tenant["ca_file"])


@pytest.fixture
def examples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Examples:
    folder = tmp_path / "config"
    folder.mkdir()
    ca = trustme.CA()
    gateway_text = (EXAMPLES / "gateway.yaml").read_text()
    (folder / "gateway.yaml").write_text(prepare_tls(gateway_text, folder, ca))
    shutil.copy(EXAMPLES / "tenants.yaml", folder / "tenants.yaml")
    prepare_tenants(folder, ca)

    env: dict[str, str] = {}
    for name in ("gateway.yaml", "tenants.yaml"):
        data = yamlfile.load(EXAMPLES / name)[0]
        for env_name in env_names(data):
            env[env_name] = env_value(env_name, folder)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return Examples(folder, folder / "gateway.yaml", env)


def test_examples_strict_yaml() -> None:
    for name in ("gateway.yaml", "tenants.yaml"):
        assert yamlfile.read(EXAMPLES / name).problems == []


def test_examples_only_known_file_keys() -> None:
    tenants = yamlfile.load(EXAMPLES / "tenants.yaml")[0]["tenants"]

    for tenant in tenants:
        named = {key for key in tenant if key in TENANT_FILE_KEYS}
        assert named <= {"certificates", "ca_file"}, tenant["name"]


def test_examples_load(examples: Examples) -> None:
    config = load_config(examples.gateway_path)

    assert isinstance(config, Config)
    assert sorted(config.tenants) == ["zorggroep-noord", "zorggroep-zuid"]


def test_examples_use_env_secrets(examples: Examples) -> None:
    assert "SSO_SESSION_KEY" in examples.env
    assert "SSO_UPSTREAM_SIGNING_KEY" in examples.env


def test_examples_keys_from_env(examples: Examples) -> None:
    config = load_config(examples.gateway_path)

    (session_key,) = config.gateway.session.keys
    assert session_key.text() == examples.env["SSO_SESSION_KEY"]
    (signing_key,) = config.gateway.upstream_signing_keys
    assert signing_key.text() == examples.env["SSO_UPSTREAM_SIGNING_KEY"]


def test_examples_only_warnings(examples: Examples) -> None:
    config = load_config(examples.gateway_path)

    assert all(": warning: " in warning for warning in config.warnings)


def test_examples_check_config(examples: Examples) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "--config", str(examples.gateway_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "configuration valid: 2 tenant(s)" in result.stdout


def test_examples_secrets_not_printed(examples: Examples) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "--config", str(examples.gateway_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    for name, value in examples.env.items():
        if not name.endswith("_URL"):
            assert value not in result.stdout + result.stderr, name
