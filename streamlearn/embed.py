"""Embedding a JSONL file with a saved model, one output line per input line (no learning).

Output lines are ``{"id", "embedding", "model_version"}``; a line that fails
validation gives ``{"id", "embedding": null, "model_version", "error", "detail"}``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from streamlearn.errors import SchemaError
from streamlearn.jsonl import iter_batches, iter_lines
from streamlearn.paths import write_errors_named
from streamlearn.schema import Sample, decode_sample, encode_floats, peek_id

__all__ = ["EmbedSummary", "embed_file", "DEFAULT_BATCH_SIZE"]

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 256


@dataclass(frozen=True)
class EmbedSummary:
    """What embed_file did: lines read, how many were embedded, and with which model version."""

    lines: int
    embedded: int
    invalid: int
    model_version: int


def embed_file(
    model: Path | Any,
    path: Path,
    out: IO[str],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_bytes: int = 1_000_000,
) -> EmbedSummary:
    """Embed every line of `path` with the model saved under `model` (or a learner loaded already), writing
    JSON lines to `out`.

    Raises CheckpointError when the model cannot be loaded.
    """
    if isinstance(model, (str, Path)):
        from streamlearn import checkpoint  # heavy (torch); imported only when embedding

        learner, _extra = checkpoint.load(Path(model))
    else:
        learner = model
    version = int(learner.model_version)
    n_features = learner.n_features
    lines = embedded = invalid = 0
    out_name = getattr(out, "name", "the output")  # a file's path, "<stdout>"
    logger.debug("embedding", extra={"path": str(path), "model": str(model), "model_version": version})
    for chunk in iter_batches(iter_lines(path, max_bytes=max_bytes), batch_size):
        rows: list[str | None] = []
        valid: list[tuple[int, Sample]] = []
        for number, raw in chunk:
            lines += 1
            try:
                sample = decode_sample(raw, default_id=str(number), n_features=n_features, max_bytes=max_bytes)
            except SchemaError as exc:
                invalid += 1
                row = {"id": peek_id(raw, max_bytes) or str(number), "embedding": None,
                       "model_version": version, "error": exc.reason, "detail": exc.detail}
                rows.append(_dump(row))
                continue
            valid.append((len(rows), sample))
            rows.append(None)
        if valid:
            vectors = learner.embed(np.stack([sample.features for _, sample in valid]))
            for (slot, sample), vector in zip(valid, vectors):
                rows[slot] = _embedding_line(sample.id, vector, version)
            embedded += len(valid)
        with write_errors_named(out_name):
            out.writelines(f"{row}\n" for row in rows if row is not None)
    with write_errors_named(out_name):
        out.flush()  # what is still buffered: a full disk is named here, not by the close
    logger.debug("embedded", extra={"lines": lines, "embedded": embedded, "invalid": invalid})
    return EmbedSummary(lines=lines, embedded=embedded, invalid=invalid, model_version=version)


def _dump(row: dict[str, Any]) -> str:
    return json.dumps(row, separators=(",", ":"))


def _embedding_line(sample_id: str, vector: np.ndarray, version: int) -> str:
    """One output line, with the vector in float32's shortest round-trip decimals."""
    return f'{{"id":{json.dumps(sample_id)},"embedding":{encode_floats(vector)},"model_version":{version}}}'
