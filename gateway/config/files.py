"""Reading the files that a configuration names.

Only regular files are read, up to a size limit. A FIFO, a device or a
directory named by mistake would block the read or never end it, and a
reload runs while the gateway serves.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

#: Largest file read: far above any configuration, certificate or CRL.
MAX_FILE_BYTES = 64 * 1024 * 1024


def read_regular_file(path: Path, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """Return the contents of ``path``.

    Raises OSError when the file cannot be opened, and ValueError when it is
    not a regular file or is larger than ``max_bytes``.
    """
    # O_NONBLOCK: opening a FIFO without a writer would otherwise wait.
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(descriptor, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"'{path}' is not a regular file")
        # The size is checked again after the read, for a file that grew.
        data = b"" if info.st_size > max_bytes else file.read(max_bytes + 1)
    if info.st_size > max_bytes or len(data) > max_bytes:
        raise ValueError(f"'{path}' is larger than {max_bytes // (1024 * 1024)} MiB")
    return data
