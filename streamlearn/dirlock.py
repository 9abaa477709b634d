"""One writer per checkpoint directory: a lock held on a file in it while a process writes there.

Two daemons writing one ``checkpoint.dir`` would each keep its last three checkpoints by
deleting the others' (both prune by time written), and each would restore the other's newest
model and offsets on its next start; a ``replay --save-model`` into a daemon's directory would
do the same to that daemon. Replicas of one deployment each need their own directory (a
StatefulSet gives each pod its own volume). The daemon holds the lock for as long as it runs,
a replay while it saves. The lock is ``flock`` on ``.lock``: the kernel releases it when the
process ends, however it ends, so a killed daemon never leaves a stale one.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
from pathlib import Path

from streamlearn.errors import DirectoryInUseError

__all__ = ["DirectoryLock", "LOCK_FILE"]

LOCK_FILE = ".lock"

logger = logging.getLogger(__name__)


class DirectoryLock:
    """An exclusive lock on ``directory`` (which must exist), taken at once or refused.

    ``what`` names the directory in the refusal (a setting or a flag), with the holder the lock
    file names (``pid@host``).

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> first = DirectoryLock(folder, "checkpoint.dir")
    >>> DirectoryLock(folder, "--save-model")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    streamlearn.errors.DirectoryInUseError: --save-model ... is in use by another streamlearn process (pid ... on ...): one process writes a checkpoint directory at a time
    >>> first.release()
    >>> DirectoryLock(folder, "checkpoint.dir").release()
    """

    def __init__(self, directory: Path, what: str) -> None:
        path = Path(directory) / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except PermissionError:  # a lock file another user left: a lock needs no write access to it
            fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 256, 0).decode("utf-8", "replace").strip() or "unknown"
            os.close(fd)
            pid, _, host = holder.partition("@")
            raise DirectoryInUseError(f"{what} {directory} is in use by another streamlearn process (pid {pid} on "
                                      f"{host or 'this host'}): one process writes a checkpoint directory at a time"
                                      ) from None
        except OSError as exc:  # a file system without locks (some network mounts): warn, do not refuse
            logger.warning("cannot lock the directory; make sure no other process writes there",
                           extra={"dir": str(directory), "reason": exc.strerror or str(exc)})
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}@{socket.gethostname()}\n".encode(), 0)
        except OSError:
            pass  # read-only: the refusal of another process will not name this one
        self._fd: int | None = fd

    def release(self) -> None:
        """Give the lock up (closing the file does); the file stays, empty of meaning once unlocked."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DirectoryLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
