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

    def __init__(self, k: int = 5, exact_up_to: int = 4096, shortlist: int = 16):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k
        self.exact_up_to = exact_up_to
        self.shortlist = shortlist
        self.fit(np.zeros((0, 1), np.float32), np.zeros(0, np.int64))

    def fit(self, z: np.ndarray, slots: np.ndarray) -> None:
        """Use embeddings ``z`` (m, e) with class ``slots`` (m,) as the neighbours."""
        self._z = np.asarray(z, dtype=np.float32)
        self._slots = np.asarray(slots, dtype=np.int64)
        self._sq = (self._z * self._z).sum(1)
        self._table: np.ndarray | None = None  # neighbour indices by class, built on first shortlist use

    @property
    def ready(self) -> bool:
        return len(self._slots) >= self.k

    def predict(self, z: np.ndarray, class_distances: np.ndarray | None = None) -> np.ndarray:
        """Voted class slot per row of ``z`` (-1 when there are fewer than ``k`` neighbours).

        With more than ``exact_up_to`` neighbours and the rows' ``class_distances`` (n, slots),
        e.g. to the prototypes, each row searches only the samples of its ``shortlist`` nearest
        classes: the cost of the search stops growing with the number of classes.
        """
        z = np.atleast_2d(z)
        if not self.ready:
            return np.full(len(z), -1)
        k = self.k
        cross = z @ self._z.T
        cand = self._candidates(class_distances) if len(self._slots) > self.exact_up_to else None
        if cand is None:
            d = np.maximum((z * z).sum(1, keepdims=True) - 2.0 * cross + self._sq, 0.0)
            idx = np.argpartition(d, k - 1, axis=1)[:, :k]
            near = np.take_along_axis(d, idx, axis=1)
        else:
            safe = np.maximum(cand, 0)
            d = np.maximum((z * z).sum(1, keepdims=True) - 2.0 * np.take_along_axis(cross, safe, axis=1)
                           + self._sq[safe], 0.0)
            d[cand < 0] = np.inf
            local = np.argpartition(d, k - 1, axis=1)[:, :k]
            near = np.take_along_axis(d, local, axis=1)
            idx = np.take_along_axis(cand, local, axis=1)
        weight = 1.0 / (near + 1e-6 * (near.mean(1, keepdims=True) + 1e-12))
        slots = self._slots[idx]
        n_slots = int(self._slots.max()) + 1
        votes = np.zeros((len(z), n_slots))
        np.add.at(votes, (np.repeat(np.arange(len(z)), k), slots.ravel()), weight.ravel())
        return votes.argmax(1)

    def _candidates(self, class_distances: np.ndarray | None) -> np.ndarray | None:
        """Neighbour indices of each row's nearest classes (-1 padded), or None to search them all."""
        n_slots = int(self._slots.max()) + 1
        if class_distances is None or class_distances.shape[1] < n_slots or n_slots <= self.shortlist:
            return None
        if self._table is None:
            order = np.argsort(self._slots, kind="stable")
            counts = np.bincount(self._slots, minlength=n_slots)
            rank = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)
            self._table = np.full((n_slots, int(counts.max())), -1, dtype=np.int64)
            self._table[self._slots[order], rank] = order
        near = np.argpartition(class_distances[:, :n_slots], self.shortlist - 1, axis=1)[:, : self.shortlist]
        cand = self._table[near].reshape(len(near), -1)
        if ((cand >= 0).sum(1) < self.k).any():
            return None  # too few samples among the shortlisted classes: search them all
        return cand

    def state(self) -> dict[str, np.ndarray]:
        return {"z": self._z.copy(), "slots": self._slots.copy()}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.fit(state["z"], state["slots"])
