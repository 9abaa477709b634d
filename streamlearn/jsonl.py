"""Reading JSONL input files line by line, as raw bytes with their 1-based line numbers.

Every line is an input record, blank ones included (they are rejected as
``not_json`` by the decoder rather than silently skipped); only the newline
that ends the file does not start another record.

>>> import tempfile, os
>>> with tempfile.NamedTemporaryFile("wb", suffix=".jsonl", delete=False) as f:
...     _ = f.write(b'{"features": [1]}\\r\\n\\n{"features": [2]}\\n')
>>> [(n, raw) for n, raw in iter_lines(f.name)]
[(1, b'{"features": [1]}'), (2, b''), (3, b'{"features": [2]}')]
>>> os.unlink(f.name)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator

__all__ = ["LongLine", "iter_lines", "iter_batches"]

_SKIP_CHUNK = 1 << 20  # the rest of a long line is read (and dropped) this much at a time


class LongLine(bytes):
    """The first bytes of a line longer than the reader's limit; ``size`` is the whole line's length.

    Long enough to be rejected as too large by whoever checks the size, never the whole line:
    a multi-gigabyte line (a JSON array file passed as JSONL) is skipped, not read into memory.
    """

    size: int

    def __new__(cls, head: bytes, size: int) -> "LongLine":
        line = super().__new__(cls, head)
        line.size = size
        return line


def iter_lines(
    path: str | os.PathLike[str], on_bytes: Callable[[int], None] | None = None, *, max_bytes: int | None = None
) -> Iterator[tuple[int, bytes]]:
    """Yield (line_number, raw_line) for each line of a file, without its line ending.

    `on_bytes`, when given, is called with the number of bytes consumed per
    line (used to drive a progress bar over the file size). With `max_bytes`,
    a line longer than that comes as a :class:`LongLine`: its first bytes and its size.

    >>> import tempfile, os
    >>> with tempfile.NamedTemporaryFile("wb", suffix=".jsonl", delete=False) as f:
    ...     _ = f.write(b'[' + b'1,' * 50 + b'1]\\n{"features": [2]}\\n')
    >>> [(n, len(raw), getattr(raw, "size", None)) for n, raw in iter_lines(f.name, max_bytes=20)]
    [(1, 22, 103), (2, 17, None)]
    >>> os.unlink(f.name)
    """
    limit = None if max_bytes is None else max_bytes + 2  # room for the line's own "\r\n"
    with Path(path).open("rb") as handle:
        number = 0
        while True:
            line = handle.readline() if limit is None else handle.readline(limit)
            if not line:
                return
            number += 1
            consumed = len(line)
            if limit is not None and len(line) == limit and not line.endswith(b"\n"):
                ending = _ending(line, 0)  # "\r" and "\n" at the end so far: not content if nothing follows
                while True:  # the rest of a line too long to keep
                    rest = handle.readline(_SKIP_CHUNK)
                    consumed += len(rest)
                    ending = _ending(rest, ending)
                    if not rest or rest.endswith(b"\n"):
                        break
                size = consumed - ending
                # Only line endings past the limit ("...\r\r\n"): the whole content was read after all.
                line = line.rstrip(b"\r\n") if size <= max_bytes else LongLine(line, size)
            else:
                line = line.rstrip(b"\r\n")
            if on_bytes is not None:
                on_bytes(consumed)
            yield number, line


def _ending(piece: bytes, before: int) -> int:
    """Length of the run of "\\r"/"\\n" that ends a line read so far, after ``piece`` (``before``: the run before it)."""
    content = len(piece.rstrip(b"\r\n"))
    return before + len(piece) if content == 0 else len(piece) - content


def iter_batches(lines: Iterator[tuple[int, bytes]], size: int) -> Iterator[list[tuple[int, bytes]]]:
    """Group (line_number, raw) pairs into lists of at most `size`, preserving order.

    >>> [len(b) for b in iter_batches(iter([(i, b"") for i in range(5)]), 2)]
    [2, 2, 1]
    """
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    batch: list[tuple[int, bytes]] = []
    for item in lines:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
