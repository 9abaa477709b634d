"""A k-nearest-neighbour vote over the embedded memory: the local alternative to prototypes."""

from __future__ import annotations

import numpy as np

__all__ = ["NeighbourVote"]


class NeighbourVote:
    """Distance-weighted vote of the ``k`` memory samples closest to an embedding.

    Prototypes summarise a class by its mean; a class made of many small clusters is
    better described by its samples. The learner keeps both and follows whichever has
    been more accurate lately.

    >>> vote = NeighbourVote(k=3)
    >>> vote.fit(np.array([[0.0], [0.1], [5.0], [5.1], [5.2]]), np.array([0, 0, 1, 1, 1]))
    >>> vote.predict(np.array([[0.05], [4.0]]))
    array([0, 1])
    """

    def __init__(self, k: int = 5):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k
        self.fit(np.zeros((0, 1), np.float32), np.zeros(0, np.int64))

    def fit(self, z: np.ndarray, slots: np.ndarray) -> None:
        """Use embeddings ``z`` (m, e) with class ``slots`` (m,) as the neighbours."""
        self._z = np.asarray(z, dtype=np.float32)
        self._slots = np.asarray(slots, dtype=np.int64)
        self._sq = (self._z * self._z).sum(1)

    @property
    def ready(self) -> bool:
        return len(self._slots) >= self.k

    def predict(self, z: np.ndarray) -> np.ndarray:
        """Voted class slot per row of ``z`` (-1 when there are fewer than ``k`` neighbours)."""
        z = np.atleast_2d(z)
        if not self.ready:
            return np.full(len(z), -1)
        d = np.maximum((z * z).sum(1, keepdims=True) - 2.0 * z @ self._z.T + self._sq, 0.0)
        k = self.k
        idx = np.argpartition(d, k - 1, axis=1)[:, :k]
        near = np.take_along_axis(d, idx, axis=1)
        weight = 1.0 / (near + 1e-6 * (near.mean(1, keepdims=True) + 1e-12))
        slots = self._slots[idx]
        n_slots = int(self._slots.max()) + 1
        votes = np.zeros((len(z), n_slots))
        np.add.at(votes, (np.repeat(np.arange(len(z)), k), slots.ravel()), weight.ravel())
        return votes.argmax(1)

    def state(self) -> dict[str, np.ndarray]:
        return {"z": self._z.copy(), "slots": self._slots.copy()}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.fit(state["z"], state["slots"])
