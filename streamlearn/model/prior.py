"""How often each class has been labeled lately: the prior that class-balanced memory leaves out."""

from __future__ import annotations

import numpy as np

__all__ = ["ClassPrior"]


class ClassPrior:
    """Recency-weighted count of every class slot among the recent labeled samples.

    The memory keeps the same number of samples of every class, so a neighbour vote over
    it behaves as if all classes were equally frequent. On a stream where one class is
    labeled twenty times as often as another, that costs accuracy; weighting each class's
    votes by how often it has been labeled lately restores the balance of the stream.

    Counts decay by ``1 - rate`` per labeled sample (about the last ``1 / rate`` samples
    count), and every class gets ``pseudo`` extra samples, so that a class seen once, or
    again after a long absence, is not shut out of the vote while its count catches up.

    >>> prior = ClassPrior(rate=0.01, pseudo=1.0)
    >>> prior.update(np.array([0] * 90 + [1] * 10))
    >>> prior.weights(3).round(1).tolist()  # class 0's earlier samples have decayed more; none of class 2
    [54.8, 10.6, 1.0]
    """

    def __init__(self, rate: float = 0.002, pseudo: float = 25.0):
        if not 0.0 < rate < 1.0:
            raise ValueError(f"rate must be in (0, 1), got {rate}")
        self.rate = rate
        self.pseudo = pseudo
        self.counts = np.zeros(0, dtype=np.float64)

    def update(self, slots: np.ndarray) -> None:
        """Count the labeled samples of classes ``slots``, in stream order (older counts decay)."""
        slots = np.asarray(slots, dtype=np.int64)
        if len(slots) == 0:
            return
        if slots.max() >= len(self.counts):
            self.counts = np.concatenate([self.counts, np.zeros(slots.max() + 1 - len(self.counts))])
        keep = 1.0 - self.rate
        self.counts *= keep ** len(slots)
        # The j-th of m samples has decayed m-1-j times by the end of the batch.
        np.add.at(self.counts, slots, keep ** np.arange(len(slots) - 1, -1, -1, dtype=np.float64))

    def weights(self, n_slots: int) -> np.ndarray:
        """Vote weight of every slot ``0..n_slots-1``: its recent count plus the pseudo count."""
        out = np.full(n_slots, self.pseudo)
        known = min(n_slots, len(self.counts))
        out[:known] += self.counts[:known]
        return out

    def clear(self, slot: int) -> None:
        """The slot's class was evicted: its successor starts uncounted."""
        if slot < len(self.counts):
            self.counts[slot] = 0.0

    def state(self) -> dict[str, np.ndarray]:
        """Arrays for checkpoints."""
        return {"counts": self.counts.copy()}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore from :meth:`state`."""
        self.counts = np.asarray(state["counts"], dtype=np.float64).copy()
