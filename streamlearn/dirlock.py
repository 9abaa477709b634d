"""One daemon per checkpoint directory: a lock held on a file in it for as long as the daemon runs.

Two daemons writing one ``checkpoint.dir`` would each keep its last three checkpoints by
deleting the others' (both prune by time written), and each would restore the other's newest
model and offsets on its next start. Replicas of one deployment each need their own directory
(a StatefulSet gives each pod its own volume). The lock is ``flock`` on ``.lock``: the kernel
releases it when the process ends, however it ends, so a killed daemon never leaves a stale one.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
from pathlib import Path

from streamlearn.errors import ConfigError

__all__ = ["DirectoryLock", "LOCK_FILE"]

LOCK_FILE = ".lock"

logger = logging.getLogger(__name__)


class DirectoryLock:
    """An exclusive lock on ``directory`` (which must exist), taken at once or refused with a ConfigError.

    The lock file names the holder (``pid@host``) so the refusal can say who it is.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> first = DirectoryLock(folder, "checkpoint.dir")
    >>> DirectoryLock(folder, "checkpoint.dir")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    streamlearn.errors.ConfigError: checkpoint.dir: ... is in use by another streamlearn daemon (pid ... on ...); give each daemon its own directory
    >>> first.release()
    >>> DirectoryLock(folder, "checkpoint.dir").release()
    """

    def __init__(self, directory: Path, field: str) -> None:
        path = Path(directory) / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 256, 0).decode("utf-8", "replace").strip() or "unknown"
            os.close(fd)
            pid, _, host = holder.partition("@")
            raise ConfigError(field, f"{directory} is in use by another streamlearn daemon (pid {pid} on "
                                     f"{host or 'this host'}); give each daemon its own directory") from None
        except OSError as exc:  # a file system without locks (some network mounts): warn, do not refuse
            logger.warning("cannot lock the directory; make sure no other daemon writes there",
                           extra={"dir": str(directory), "reason": exc.strerror or str(exc)})
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}@{socket.gethostname()}\n".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        """Give the lock up (closing the file does); the file stays, empty of meaning once unlocked."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
