"""Measuring online classifiers: prequential runs, post-switch accuracy, few-shot episodes.

Everything here is model-agnostic: a model is anything with
``process(X, labels) -> predictions`` (see ``baselines.OnlineClassifier``);
streamlearn's Learner is wrapped by ``LearnerModel`` to look the same and to
record the drift flags of its BatchResults.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "FewShotScore",
    "LearnerModel",
    "RunResult",
    "few_shot_accuracy",
    "post_switch_accuracy",
    "prequential_accuracy",
    "rolling_accuracy",
    "run_prequential",
]


@dataclass
class RunResult:
    """One model on one stream: per-sample correctness (NaN = unlabeled), time, detected drifts."""

    model: str
    correct: np.ndarray
    wall_s: float
    drifts: list[int] = field(default_factory=list)

    @property
    def samples_per_s(self) -> float:
        """Throughput of predict+learn (wall time of the process() calls only)."""
        return len(self.correct) / self.wall_s if self.wall_s > 0 else float("inf")


class LearnerModel:
    """Adapts streamlearn's Learner to the baselines' protocol and keeps its drift flags."""

    def __init__(self, learner: object, name: str = "streamlearn") -> None:
        self.name = name
        self.learner = learner
        self.drifts: list[int] = []
        self._seen = 0

    def process(self, X: np.ndarray, labels: Sequence) -> list:
        result = self.learner.process(X, list(labels))
        self.drifts.extend(self._seen + i for i, flag in enumerate(result.drift) if flag)
        self._seen += len(labels)
        return list(result.predictions)

    def embed(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.learner.embed(X))


def run_prequential(model: object, X: np.ndarray, labels: Sequence, batch_size: int) -> RunResult:
    """Feed (X, labels) to ``model`` in batches, test-then-train, and score every prediction.

    >>> class Last:
    ...     name = "last"
    ...     prev = None
    ...     def process(self, X, labels):
    ...         out = []
    ...         for y in labels:
    ...             out.append(self.prev)
    ...             self.prev = y
    ...         return out
    >>> r = run_prequential(Last(), np.zeros((4, 1), np.float32), [1, 1, None, 2], batch_size=3)
    >>> r.correct.tolist()
    [0.0, 1.0, nan, 0.0]
    """
    correct = np.full(len(labels), np.nan)
    wall = 0.0
    for start in range(0, len(labels), batch_size):
        batch_labels = labels[start : start + batch_size]
        t0 = time.perf_counter()
        predictions = model.process(X[start : start + batch_size], batch_labels)
        wall += time.perf_counter() - t0
        for i, (p, y) in enumerate(zip(predictions, batch_labels, strict=True)):
            if y is not None:
                correct[start + i] = float(p is not None and p == y)
    drifts = list(getattr(model, "drifts", None) or getattr(model, "resets", None) or [])
    return RunResult(model.name, correct, wall, drifts)


def prequential_accuracy(correct: np.ndarray) -> float:
    """Mean correctness over labeled samples.

    >>> prequential_accuracy(np.array([1.0, np.nan, 0.0, 1.0]))
    0.6666666666666666
    """
    return float(np.nanmean(correct)) if np.isfinite(correct).any() else float("nan")


def post_switch_accuracy(correct: np.ndarray, switches: Sequence[int], window: int = 100) -> float:
    """Accuracy over the first ``window`` samples after each switch, averaged over switches.

    >>> post_switch_accuracy(np.array([1, 1, 0, 1, 1, 0.0]), [2, 5], window=2)
    0.25
    """
    scores = [prequential_accuracy(correct[s : s + window]) for s in switches if s < len(correct)]
    scores = [s for s in scores if not np.isnan(s)]
    return float(np.mean(scores)) if scores else float("nan")


def rolling_accuracy(correct: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean of correctness over the last ``window`` labeled samples at each index.

    >>> rolling_accuracy(np.array([1.0, 0.0, 1.0, 1.0]), 2).tolist()
    [1.0, 0.5, 0.5, 1.0]
    """
    labeled = np.isfinite(correct)
    hits = np.cumsum(np.where(labeled, correct, 0.0))
    counts = np.cumsum(labeled)
    lag_hits = np.concatenate([np.zeros(window), hits[:-window]]) if window < len(hits) else np.zeros_like(hits)
    lag_counts = np.concatenate([np.zeros(window), counts[:-window]]) if window < len(hits) else np.zeros_like(hits)
    n = counts - lag_counts
    return np.where(n > 0, (hits - lag_hits) / np.maximum(n, 1), np.nan)


@dataclass(frozen=True)
class FewShotScore:
    """Mean episode accuracy and the half-width of its 95% normal confidence interval."""

    mean: float
    ci95: float

    def __str__(self) -> str:
        return f"{100 * self.mean:.1f} ± {100 * self.ci95:.1f}"


def few_shot_accuracy(
    embed: Callable[[np.ndarray], np.ndarray],
    X: np.ndarray,
    y: np.ndarray,
    *,
    ways: int = 5,
    shots: int = 1,
    queries: int = 15,
    episodes: int = 600,
    seed: int = 0,
) -> FewShotScore:
    """Nearest-prototype (Euclidean, mean of the support embeddings) accuracy over random episodes.

    The same seed draws the same episodes for every ``embed``, so methods are compared on paired episodes.

    >>> X = np.repeat(np.eye(5, dtype=np.float32), 20, axis=0)
    >>> few_shot_accuracy(lambda a: a, X, np.repeat(np.arange(5), 20), shots=1, episodes=10).mean
    1.0
    """
    Z = np.asarray(embed(X), dtype=np.float64)
    classes = np.unique(y)
    if len(classes) < ways:
        raise ValueError(f"need at least {ways} classes for {ways}-way episodes, got {len(classes)}")
    members = {c: np.flatnonzero(y == c) for c in classes}
    rng = np.random.default_rng(seed)
    scores = np.empty(episodes)
    for e in range(episodes):
        chosen = rng.choice(classes, size=ways, replace=False)
        protos, query_z, query_y = [], [], []
        for k, c in enumerate(chosen):
            picked = rng.choice(members[c], size=shots + queries, replace=False)
            protos.append(Z[picked[:shots]].mean(axis=0))
            query_z.append(Z[picked[shots:]])
            query_y.append(np.full(queries, k))
        P, Q, t = np.stack(protos), np.concatenate(query_z), np.concatenate(query_y)
        d = ((Q[:, None, :] - P[None, :, :]) ** 2).sum(axis=2)
        scores[e] = float((d.argmin(axis=1) == t).mean())
    return FewShotScore(float(scores.mean()), float(1.96 * scores.std(ddof=1) / np.sqrt(episodes)))
