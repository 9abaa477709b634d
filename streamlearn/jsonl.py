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

__all__ = ["iter_lines", "iter_batches"]


def iter_lines(
    path: str | os.PathLike[str], on_bytes: Callable[[int], None] | None = None
) -> Iterator[tuple[int, bytes]]:
    """Yield (line_number, raw_line) for each line of a file, without its line ending.

    `on_bytes`, when given, is called with the number of bytes consumed per
    line (used to drive a progress bar over the file size).
    """
    with Path(path).open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if on_bytes is not None:
                on_bytes(len(line))
            yield number, line.rstrip(b"\r\n")


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
