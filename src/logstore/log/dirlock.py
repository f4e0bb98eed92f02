"""One process owns a directory: an exclusive, non-blocking flock on ``<dir>/.lock``.

The kernel drops the lock when the process dies (kill -9 included), so a crashed owner never
leaves the directory locked. Used by partition logs and by the store's data directory.
"""

from __future__ import annotations

import os

from logstore.errors import LogstoreError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory lock
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"


def lock_directory(path: str) -> int:
    """Lock ``path`` for this process; returns the descriptor to release (close) later."""
    fd = os.open(os.path.join(path, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise LogstoreError(f"{path} is already open (in this or another process)") from None
    return fd
