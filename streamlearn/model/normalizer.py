"""Online per-feature standardisation, so unscaled features reach the encoder on a common scale."""

from __future__ import annotations

import numpy as np

__all__ = ["OnlineStandardizer"]

_ROBUST_AFTER = 32  # samples before outliers are clipped while updating (the scale must exist first)


class OnlineStandardizer:
    """Running mean/variance per feature; ``transform`` maps features to clipped z-scores.

    The statistics are exact (Welford) for the first ``1 / min_rate`` samples and then follow
    an exponential moving average with rate ``min_rate``, so they keep tracking a stream whose
    scale drifts without letting one batch move them much.

    Parameters
    ----------
    n_features
        Input dimension.
    min_rate
        Smallest update rate of the moving statistics.
    clip
        z-scores are clipped to ``[-clip, clip]``; features that were constant so far
        would otherwise explode on their first change.

    >>> s = OnlineStandardizer(2)
    >>> s.update(np.array([[0.0, 100.0], [2.0, 300.0]]))
    >>> s.transform(np.array([[1.0, 200.0], [2.0, 300.0]])).round(3).tolist()
    [[0.0, 0.0], [1.0, 1.0]]
    """

    def __init__(self, n_features: int, min_rate: float = 1e-4, clip: float = 6.0, eps: float = 1e-3):
        if n_features < 1:
            raise ValueError(f"n_features must be >= 1, got {n_features}")
        if not 0.0 < min_rate <= 1.0:
            raise ValueError(f"min_rate must be in (0, 1], got {min_rate}")
        self.n_features = n_features
        self.min_rate = min_rate
        self.clip = clip
        self.eps = eps
        self._reset()

    def _reset(self) -> None:
        self.count = 0
        self.mean = np.zeros(self.n_features, dtype=np.float64)
        self.var = np.zeros(self.n_features, dtype=np.float64)
        self._refresh_scale()

    def _refresh_scale(self) -> None:
        std = np.sqrt(self.var)
        # A floor relative to the typical feature scale keeps near-constant features from
        # dominating once they move, whatever the units of the stream are.
        typical = float(np.median(std)) if self.count > 1 else 1.0
        floor = max(self.eps, 0.01 * typical)
        self._mean32 = self.mean.astype(np.float32)
        self._inv_std32 = (1.0 / np.maximum(std, floor)).astype(np.float32)

    def update(self, x: np.ndarray) -> None:
        """Fold a batch ``x`` of shape ``(n, n_features)`` into the statistics."""
        x = np.asarray(x, dtype=np.float64)
        n = x.shape[0]
        if n == 0:
            return
        if self.count >= _ROBUST_AFTER:
            # One absurd (but finite) record must not wreck the scale for millions of samples:
            # values beyond the clip range of the current statistics count as if at its edge.
            reach = self.clip / self._inv_std32.astype(np.float64)
            x = np.clip(x, self.mean - reach, self.mean + reach)
        batch_mean = x.mean(axis=0)
        batch_var = x.var(axis=0)
        total = self.count + n
        weight = max(n / total, min(1.0, n * self.min_rate))
        delta = batch_mean - self.mean
        self.mean = self.mean + weight * delta
        self.var = (1.0 - weight) * (self.var + weight * delta**2) + weight * batch_var
        self.count = total
        self._refresh_scale()

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Clipped z-scores of ``x`` as float32 (count 0: the input unchanged but clipped)."""
        z = (np.asarray(x, dtype=np.float32) - self._mean32) * self._inv_std32
        np.clip(z, -self.clip, self.clip, out=z)
        return z

    def state(self) -> dict[str, np.ndarray]:
        """Arrays that fully describe the statistics (for checkpoints)."""
        return {"mean": self.mean.copy(), "var": self.var.copy(), "count": np.array([self.count], dtype=np.int64)}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore statistics written by :meth:`state`."""
        self.mean = np.asarray(state["mean"], dtype=np.float64).copy()
        self.var = np.asarray(state["var"], dtype=np.float64).copy()
        self.count = int(np.asarray(state["count"]).reshape(-1)[0])
        self._refresh_scale()
