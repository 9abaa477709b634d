"""Recurring-concept streams built from sklearn's bundled 8x8 digits (no download).

A *concept* is a fixed pixel permutation and/or label permutation of the
digits task; concept 0 is the identity. The stream switches abruptly every
``segment`` samples and cycles through the concepts, so each one recurs.
Pixel values stay unscaled (0..16): coping with raw features is the
learner's job, not the stream's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from streamlearn.streams.base import SampleDict, check_fraction, check_positive, format_label

__all__ = [
    "DIGITS_DIM",
    "DigitsConcept",
    "digits_arrays",
    "digits_concepts",
    "digits_permutations",
    "switch_points",
]

logger = logging.getLogger(__name__)

DIGITS_DIM = 64
_MODES = ("mixed", "pixels", "labels", "both")


@dataclass(frozen=True)
class DigitsConcept:
    """One concept of the digits stream: where each pixel moves and what each label becomes."""

    name: str
    pixel_perm: np.ndarray  # new_features = features[pixel_perm]
    label_perm: np.ndarray  # new_label = label_perm[label]

    def apply(self, features: np.ndarray, label: int) -> tuple[np.ndarray, int]:
        """Map one identity-concept sample into this concept."""
        return features[self.pixel_perm], int(self.label_perm[label])


@lru_cache(maxsize=1)
def _load() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # bundled with sklearn, no network

    data = load_digits()
    features = np.asarray(data.data, dtype=np.float32)
    labels = np.asarray(data.target, dtype=np.int64)
    features.setflags(write=False)
    labels.setflags(write=False)
    return features, labels


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Return the 1797 digits as read-only (features[n, 64] float32 in 0..16, labels[n] int).

    >>> X, y = digits_arrays()
    >>> X.shape, int(X.min()), int(X.max()), sorted(set(y.tolist())) == list(range(10))
    ((1797, 64), 0, 16, True)
    """
    return _load()


def _derangement(rng: np.random.Generator, n: int) -> np.ndarray:
    # A permutation without fixed points, so that every pixel/label really moves.
    while True:
        perm = rng.permutation(n)
        if not np.any(perm == np.arange(n)):
            return perm


def digits_concepts(n_concepts: int = 3, seed: int = 0, mode: str = "mixed") -> list[DigitsConcept]:
    """Build the concepts of a digits stream; concept 0 is always the identity.

    ``mode``: "pixels" (pixel permutation only), "labels" (label permutation only),
    "both", or "mixed" (concepts 1, 2, 3, ... cycle through pixels, labels, both).

    >>> [c.name for c in digits_concepts(4, seed=1)]
    ['c0-identity', 'c1-pixels', 'c2-labels', 'c3-both']
    >>> c = digits_concepts(3, seed=1)[2]
    >>> bool((c.pixel_perm == range(64)).all()), bool((c.label_perm != range(10)).all())
    (True, True)
    """
    check_positive("n_concepts", n_concepts)
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    rng = np.random.default_rng(seed)
    identity_px, identity_lb = np.arange(DIGITS_DIM), np.arange(10)
    concepts = [DigitsConcept("c0-identity", identity_px, identity_lb)]
    for k in range(1, n_concepts):
        kind = ("pixels", "labels", "both")[(k - 1) % 3] if mode == "mixed" else mode
        # Draw both permutations always, so concept k does not depend on the mode of others.
        px, lb = _derangement(rng, DIGITS_DIM), _derangement(rng, 10)
        concepts.append(
            DigitsConcept(
                f"c{k}-{kind}",
                px if kind in ("pixels", "both") else identity_px,
                lb if kind in ("labels", "both") else identity_lb,
            )
        )
    return concepts


def switch_points(n: int, segment: int) -> list[int]:
    """Sample indices where an abrupt stream of ``n`` samples switches concept.

    >>> switch_points(3500, 1000)
    [1000, 2000, 3000]
    """
    return list(range(segment, n, segment))


def digits_permutations(
    n: int = 12000,
    seed: int = 0,
    n_concepts: int = 3,
    segment: int = 1000,
    *,
    mode: str = "mixed",
    unlabeled: float = 0.0,
    label_format: str = "int",
    id_prefix: str = "digits",
) -> Iterator[SampleDict]:
    """Yield ``n`` digits samples under recurring concepts, switching every ``segment`` samples.

    Sample i belongs to concept ``(i // segment) % n_concepts``; its ``task`` is
    the concept's name. Images are drawn with replacement in a seeded order;
    a seeded ``unlabeled`` fraction gets ``label: None``.

    >>> s = list(digits_permutations(4, seed=0, segment=2))
    >>> for x in s:
    ...     print(x["id"], x["label"], x["task"])
    digits-000000 5 c0-identity
    digits-000001 0 c0-identity
    digits-000002 5 c1-pixels
    digits-000003 4 c1-pixels
    >>> len(s[0]["features"]), s == list(digits_permutations(4, seed=0, segment=2))
    (64, True)
    """
    check_positive("n", n, allow_zero=True)
    check_positive("segment", segment)
    check_fraction("unlabeled", unlabeled)
    concepts = digits_concepts(n_concepts, seed, mode)
    features, labels = digits_arrays()
    rng = np.random.default_rng([seed, 1])
    order = rng.integers(0, len(labels), size=n)
    hidden = rng.random(n) < unlabeled
    for i in range(n):
        concept = concepts[(i // segment) % n_concepts]
        x, y = concept.apply(features[order[i]], int(labels[order[i]]))
        yield {
            "id": f"{id_prefix}-{i:06d}",
            "features": [float(v) for v in x],
            "label": None if hidden[i] else format_label(y, label_format),
            "task": concept.name,
        }
