"""Writing generated samples as JSON Lines, the file format `streamlearn replay` and `produce` read."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from streamlearn.streams.base import SampleDict

__all__ = ["write_jsonl"]

logger = logging.getLogger(__name__)


def write_jsonl(samples: Iterable[SampleDict], path: str | os.PathLike) -> int:
    """Write one compact JSON object per line to ``path`` (atomically, creating its folder) and return how many.

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "s.jsonl"
    >>> write_jsonl([{"id": "a", "features": [1.0, 2.5], "label": 3, "task": None}], p)
    1
    >>> p.read_text()
    '{"id":"a","features":[1.0,2.5],"label":3,"task":null}\\n'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)  # e.g. build/ on a fresh clone, as the README's example needs
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            for sample in samples:
                fh.write(json.dumps(sample, separators=(",", ":"), allow_nan=False))
                fh.write("\n")
                count += 1
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    logger.info("wrote samples=%d path=%s", count, path)
    return count
