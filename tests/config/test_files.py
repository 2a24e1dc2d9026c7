"""read_regular_file: only regular files, and only up to a size."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.config.files import read_regular_file


def test_regular_file_read(tmp_path: Path) -> None:
    path = tmp_path / "ca.pem"
    path.write_bytes(b"contents")

    assert read_regular_file(path) == b"contents"


def test_fifo_refused_without_waiting(tmp_path: Path) -> None:
    path = tmp_path / "crl.fifo"
    os.mkfifo(path)

    with pytest.raises(ValueError, match="is not a regular file"):
        read_regular_file(path)


def test_directory_refused(tmp_path: Path) -> None:
    with pytest.raises((ValueError, IsADirectoryError)):
        read_regular_file(tmp_path)


def test_large_file_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.pem"
    path.write_bytes(b"x" * 2048)

    with pytest.raises(ValueError, match="is larger than"):
        read_regular_file(path, max_bytes=1024)


def test_missing_file_is_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_regular_file(tmp_path / "absent.pem")
