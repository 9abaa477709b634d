"""Checks on the folders streamlearn writes to, made before the work that fills them."""

from __future__ import annotations

import tempfile
from pathlib import Path

__all__ = ["ensure_writable_folder"]


def ensure_writable_folder(folder: Path) -> None:
    """Create ``folder`` if needed and write a probe file there; raises the OSError now, not after a long run.

    >>> ensure_writable_folder(Path("/proc/no-such-dir"))
    Traceback (most recent call last):
    ...
    FileNotFoundError: [Errno 2] No such file or directory: '/proc/no-such-dir'
    """
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".streamlearn-write-check-"):
        pass
