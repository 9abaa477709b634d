"""Shared pieces of the stream generators: the sample dict, argument checks, label formats.

Generators yield plain dicts in the Sample format of DESIGN.md §2
(``{"id", "features", "label", "task"}``) so they can be written to JSONL or
produced to Kafka as they are.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypedDict

import numpy as np

__all__ = ["LABEL_FORMATS", "SampleDict", "check_fraction", "check_positive", "format_label", "to_arrays"]

LABEL_FORMATS = ("int", "str")


class SampleDict(TypedDict):
    """One generated sample, as it goes on the wire (features as a plain list of floats)."""

    id: str
    features: list[float]
    label: str | int | None
    task: str | None


def check_positive(name: str, value: int, *, allow_zero: bool = False) -> None:
    """Raise ValueError naming ``name`` unless ``value`` is a positive (or zero, if allowed) int.

    >>> check_positive("n", 0, allow_zero=True)
    >>> check_positive("n", 0)
    Traceback (most recent call last):
    ...
    ValueError: n must be a positive integer, got 0
    """
    ok = isinstance(value, int | np.integer) and not isinstance(value, bool)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        kind = "a non-negative" if allow_zero else "a positive"
        raise ValueError(f"{name} must be {kind} integer, got {value!r}")


def check_fraction(name: str, value: float) -> None:
    """Raise ValueError naming ``name`` unless 0 <= ``value`` <= 1.

    >>> check_fraction("unlabeled", 1.5)
    Traceback (most recent call last):
    ...
    ValueError: unlabeled must be in [0, 1], got 1.5
    """
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")


def format_label(label: int, label_format: str) -> str | int:
    """Render an integer class as the requested label type ("int" -> 3, "str" -> "c3").

    >>> format_label(3, "int"), format_label(3, "str")
    (3, 'c3')
    """
    if label_format == "int":
        return int(label)
    if label_format == "str":
        return f"c{int(label)}"
    raise ValueError(f"label_format must be one of {LABEL_FORMATS}, got {label_format!r}")


def to_arrays(samples: Iterable[SampleDict]) -> tuple[np.ndarray, list, list]:
    """Stack samples into (features[n, d] float32, labels, tasks) for batch consumers.

    >>> X, y, t = to_arrays([{"id": "a", "features": [1.0, 2.0], "label": "c1", "task": None}])
    >>> X.dtype, X.shape, y, t
    (dtype('float32'), (1, 2), ['c1'], [None])
    """
    rows, labels, tasks = [], [], []
    for sample in samples:
        rows.append(sample["features"])
        labels.append(sample.get("label"))
        tasks.append(sample.get("task"))
    features = np.asarray(rows, dtype=np.float32)
    if features.ndim != 2:
        features = features.reshape(len(rows), -1)
    return features, labels, tasks
