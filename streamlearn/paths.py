"""Checks on the folders streamlearn writes to, made before the work that fills them."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["ensure_writable_folder", "open_output", "unwritable_reason", "write_errors_named"]


def ensure_writable_folder(folder: Path) -> None:
    """Create ``folder`` if needed and write a probe file there; raises the OSError now, not after a long run.

    >>> ensure_writable_folder(Path("/proc/no-such-dir"))
    Traceback (most recent call last):
    ...
    FileNotFoundError: [Errno 2] No such file or directory: '/proc/no-such-dir'
    """
    folder.mkdir(parents=True, exist_ok=True)
    _probe(folder)


def unwritable_reason(folder: Path) -> str | None:
    """Why ``folder`` could not be created and written (None if it could); creates nothing.

    The probe file goes to ``folder`` or, if it does not exist yet, to its nearest existing
    parent (whoever may write there may create the rest), and is deleted at once. A command that
    then fails for another reason leaves no empty folder behind.

    >>> unwritable_reason(Path("/tmp/no/such/folder/yet")) is None
    True
    >>> unwritable_reason(Path("/proc/self/no-such-dir"))  # doctest: +ELLIPSIS
    'cannot create /proc/self/no-such-dir: /proc/self is not writable (...)'
    """
    existing = next(p for p in (folder, *folder.absolute().parents) if p.exists())
    try:
        _probe(existing)
    except OSError as exc:
        missing = "" if existing == folder else f"cannot create {folder}: "
        return f"{missing}{existing} is not writable ({exc.strerror or exc})"
    return None


@contextlib.contextmanager
def write_errors_named(name: str | Path) -> Iterator[None]:
    """Give an OSError raised inside the name of the file written there, when it names none.

    A failed ``write`` or ``flush`` (a full disk, a quota) names no file: the user would read
    "No space left on device" without knowing which of the outputs it was.

    >>> with write_errors_named("out.jsonl"):
    ...     raise OSError(28, "No space left on device")
    Traceback (most recent call last):
    ...
    OSError: [Errno 28] No space left on device: 'out.jsonl'
    """
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(name)
        raise


@contextlib.contextmanager
def open_output(path: Path) -> Iterator[IO[str]]:
    """``path`` (its folder created) opened for writing text; a failure to write what the close flushes names it.

    Writes inside still need :func:`write_errors_named`; this covers the close, which after a
    failed write tries again and would otherwise replace the named error with an unnamed one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    out = path.open("w", encoding="utf-8")
    try:
        yield out
    finally:
        with write_errors_named(path):
            out.close()


def _probe(folder: Path) -> None:
    """Create and delete a file in the existing ``folder``; raises the OSError if that cannot be done."""
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".streamlearn-write-check-"):
        pass
