"""Concept-drift monitoring over river's detectors: prediction error and embedding distance."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from river import drift, stats
from river.drift import binary

__all__ = ["DriftEvent", "DriftMonitor", "change_point"]


@dataclass(frozen=True)
class DriftEvent:
    """One detection: which detector fired, where in the stream, and what the learner did about it."""

    detector: str
    sample_index: int
    model_version: int
    ts: float
    action: str

    def to_dict(self) -> dict:
        return asdict(self)


def change_point(errors: np.ndarray, min_size: int = 5) -> int:
    """Length of the most likely post-change tail of a 0/1 error sequence.

    Picks the split that maximises the standardised rise of the error rate, so repair can
    use only the samples that belong to the new concept.

    >>> change_point(np.array([0] * 50 + [1, 1, 0, 1, 1, 1, 1, 1]))
    8
    """
    n = len(errors)
    if n < 2 * min_size:
        return n
    e = np.asarray(errors, dtype=np.float64)
    tail_sum = np.cumsum(e[::-1])[::-1]  # tail_sum[i] = sum(e[i:])
    total = tail_sum[0]
    starts = np.arange(min_size, n - min_size + 1)
    k = n - starts
    head = n - k
    rise = tail_sum[starts] / k - (total - tail_sum[starts]) / head
    score = rise * np.sqrt(k * head / n)
    return int(k[int(np.argmax(score))])


class _Mean(stats.Mean):
    """river's running mean with a direct copy: HDDM_A copies its mean at most samples, and
    river's generic ``clone`` (signature inspection plus deepcopy) cost more than the test itself."""

    def clone(self, new_params: dict | None = None, include_attributes: bool = False) -> "_Mean":
        copy = _Mean()
        if include_attributes:
            copy.n, copy._mean = self.n, self._mean
        return copy


class _HDDMA(binary.HDDMA):
    """river's HDDM_A, unchanged except that its running means are :class:`_Mean`."""

    def _reset(self) -> None:
        super()._reset()
        self._x_min, self._x_max, self._z = _Mean(), _Mean(), _Mean()


class DriftMonitor:
    """Feeds per-sample signals to river detectors and says when the stream has changed.

    * ``hddm``: HDDM_A (one-sided Hoeffding bound) on the 0/1 prediction error of labeled
      samples; fires within a few samples of an abrupt rise of the error.
    * ``adwin``: ADWIN on the same error; slower but also catches gradual rises. Only a
      *rise* counts as drift (ADWIN also fires when the model gets better).
    * ``embedding``: Page-Hinkley on the log distance of every sample (labeled or not) to its
      nearest prototype; catches input drift on unlabeled traffic.

    >>> mon = DriftMonitor(delta=0.002)
    >>> rng = np.random.default_rng(0)
    >>> hits = [(i, d) for i in range(600) if (d := mon.update_error(float(rng.random() < (0.1 if i < 400 else 0.9))))]
    >>> hits[0]
    (409, 'hddm')
    """

    def __init__(self, delta: float = 0.002, ph_threshold: float = 50.0, warmup: int = 30):
        if not 0.0 < delta < 1.0:
            raise ValueError(f"delta must be in (0, 1), got {delta}")
        self.delta = delta
        self.ph_threshold = ph_threshold
        self.warmup = warmup
        self._reset()

    def _reset(self) -> None:
        self._error = drift.ADWIN(delta=self.delta, clock=4)
        self._fast = _HDDMA(drift_confidence=self.delta / 2)
        self.reset_embedding()
        self._n_error = 0

    def reset_embedding(self) -> None:
        """Restart the embedding detector (when the embedding space itself was replaced)."""
        self._embedding = drift.PageHinkley(threshold=self.ph_threshold, mode="up", min_instances=self.warmup)

    def update_error(self, error: float) -> str | None:
        """Feed one 0/1 error; the detector's name when the error rate has risen significantly."""
        before = self._error.estimation
        self._error.update(error)
        self._fast.update(bool(error))
        self._n_error += 1
        if self._n_error < self.warmup:
            return None
        if self._fast.drift_detected:
            return "hddm"
        if self._error.drift_detected and self._error.estimation > before:
            return "adwin"
        return None

    def update_distance(self, squared_distance: float) -> bool:
        """Feed the squared distance of a sample to its nearest prototype; ``True`` on a lasting rise."""
        if not math.isfinite(squared_distance):
            return False
        self._embedding.update(math.log1p(squared_distance))
        return self._embedding.drift_detected

    @property
    def error_rate(self) -> float:
        """ADWIN's current estimate of the error rate."""
        return float(self._error.estimation)
