"""Data for few-shot evaluation: seen/unseen class splits and a many-class synthetic family.

The learner trains on a stream of the *seen* classes; few-shot episodes are
then drawn from the *unseen* classes, which it never saw. The synthetic
generator gives classes that share structure (latent centroids pushed through
one fixed random nonlinear map, plus nuisance directions and noise
dimensions), so a feature map learned on some classes can transfer to others.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from streamlearn.streams.base import SampleDict, check_fraction, check_positive, format_label
from streamlearn.streams.digits import digits_arrays

__all__ = ["FewShotSplit", "class_stream", "digits_novel_split", "novel_class_split", "synthetic_classes"]


@dataclass(frozen=True)
class FewShotSplit:
    """Arrays of the seen classes (to train on) and the unseen classes (to evaluate few-shot on)."""

    seen_X: np.ndarray
    seen_y: np.ndarray
    unseen_X: np.ndarray
    unseen_y: np.ndarray

    @property
    def seen_classes(self) -> list[int]:
        """Sorted class ids available for training."""
        return sorted(set(self.seen_y.tolist()))

    @property
    def unseen_classes(self) -> list[int]:
        """Sorted class ids held out for few-shot episodes."""
        return sorted(set(self.unseen_y.tolist()))


def novel_class_split(X: np.ndarray, y: np.ndarray, unseen: Sequence[int]) -> FewShotSplit:
    """Split (X, y) by class into seen and unseen parts.

    >>> s = novel_class_split(np.zeros((4, 2)), np.array([0, 1, 2, 1]), unseen=[1])
    >>> s.seen_classes, s.unseen_classes, s.unseen_X.shape
    ([0, 2], [1], (2, 2))
    """
    y = np.asarray(y)
    mask = np.isin(y, np.asarray(list(unseen)))
    if not mask.any() or mask.all():
        raise ValueError(f"unseen must select some but not all classes, got {list(unseen)!r}")
    return FewShotSplit(X[~mask], y[~mask], X[mask], y[mask])


def digits_novel_split(unseen: Sequence[int] = (5, 6, 7, 8, 9)) -> FewShotSplit:
    """Digits split into seen and unseen classes (default: train on 0-4, evaluate on 5-9).

    >>> s = digits_novel_split()
    >>> s.seen_classes, s.unseen_classes, s.seen_X.shape[1]
    ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9], 64)
    """
    X, y = digits_arrays()
    return novel_class_split(X, y, unseen)


def synthetic_classes(
    n_classes: int = 60,
    per_class: int = 100,
    seed: int = 0,
    *,
    n_features: int = 64,
    latent_dim: int = 8,
    noise_dims: int = 16,
    nuisance_dim: int = 4,
    spread: float = 0.45,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate a many-class problem whose classes share one hidden structure.

    Each class has a centroid in a ``latent_dim`` space; a sample is its
    centroid plus Gaussian jitter (``spread``), mapped into
    ``n_features - noise_dims`` dimensions by one fixed random two-layer tanh
    map, plus a shared low-rank nuisance term (large, class-independent),
    plus ``noise_dims`` pure-noise features. Features get arbitrary per-dimension
    scales and offsets, as raw sensor data would. Returns (X[n, d] float32, y[n] int).

    >>> X, y = synthetic_classes(n_classes=3, per_class=2, seed=0)
    >>> X.shape, X.dtype, y.tolist()
    ((6, 64), dtype('float32'), [0, 0, 1, 1, 2, 2])
    >>> bool(np.isfinite(X).all()), bool((X == synthetic_classes(3, 2, seed=0)[0]).all())
    (True, True)
    """
    for name, value in (("n_classes", n_classes), ("per_class", per_class), ("latent_dim", latent_dim)):
        check_positive(name, value)
    check_positive("noise_dims", noise_dims, allow_zero=True)
    check_positive("nuisance_dim", nuisance_dim, allow_zero=True)
    signal_dims = n_features - noise_dims
    if signal_dims < 1:
        raise ValueError(f"n_features must exceed noise_dims, got {n_features} <= {noise_dims}")
    # The "world" (map, scales) depends on the seed only, not on n_classes.
    world = np.random.default_rng([seed, 0])
    hidden = 2 * signal_dims
    W1 = world.normal(0.0, 1.5 / np.sqrt(latent_dim), (latent_dim, hidden))
    b1 = world.normal(0.0, 0.5, hidden)
    W2 = world.normal(0.0, 1.0 / np.sqrt(hidden), (hidden, signal_dims))
    nuisance_map = world.normal(0.0, 1.0, (max(nuisance_dim, 1), n_features)) * (nuisance_dim > 0)
    scales = np.exp(world.uniform(np.log(0.2), np.log(20.0), n_features))
    offsets = world.normal(0.0, 5.0, n_features)

    rng = np.random.default_rng([seed, 1])
    centroids = rng.normal(0.0, 1.0, (n_classes, latent_dim))
    y = np.repeat(np.arange(n_classes), per_class)
    z = centroids[y] + rng.normal(0.0, spread, (len(y), latent_dim))
    signal = np.tanh(np.tanh(z @ W1 + b1) @ W2 * 2.0)
    signal = (signal - signal.mean(0)) / (signal.std(0) + 1e-6)
    noise = rng.normal(0.0, 1.0, (len(y), noise_dims))
    nuisance = rng.normal(0.0, 1.0, (len(y), max(nuisance_dim, 1))) @ nuisance_map * 0.8
    X = np.concatenate([signal, noise], axis=1) + nuisance
    X = X * scales + offsets
    return X.astype(np.float32), y.astype(np.int64)


def class_stream(
    X: np.ndarray,
    y: np.ndarray,
    n: int,
    seed: int = 0,
    *,
    task: str | None = None,
    unlabeled: float = 0.0,
    label_format: str = "int",
    id_prefix: str = "fewshot",
) -> Iterator[SampleDict]:
    """Yield ``n`` samples drawn with replacement from (X, y) in a seeded order.

    >>> s = digits_novel_split()
    >>> out = list(class_stream(s.seen_X, s.seen_y, 3, seed=0, label_format="str"))
    >>> [x["label"] for x in out], len(out[0]["features"])
    (['c3', 'c2', 'c4'], 64)
    """
    check_positive("n", n, allow_zero=True)
    check_fraction("unlabeled", unlabeled)
    if len(X) != len(y) or len(X) == 0:
        raise ValueError(f"X and y must be non-empty and aligned, got {len(X)} and {len(y)}")
    rng = np.random.default_rng([seed, 2])
    order = rng.integers(0, len(y), size=n)
    hidden = rng.random(n) < unlabeled
    for i, j in enumerate(order):
        yield {
            "id": f"{id_prefix}-{i:06d}",
            "features": [float(v) for v in X[j]],
            "label": None if hidden[i] else format_label(int(y[j]), label_format),
            "task": task,
        }
