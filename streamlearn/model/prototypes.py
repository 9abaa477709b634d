"""The prototype head: each class is one or a few mean embeddings; prediction is the nearest one."""

from __future__ import annotations

import numpy as np

__all__ = ["PrototypeHead"]


class PrototypeHead:
    """Nearest-prototype classifier over embeddings, updated one sample at a time.

    A new class is usable after a single labeled example (its first embedding *is* its
    prototype). Each prototype is a running mean whose update rate never falls below
    ``min_rate``, so it keeps following a class that moves. With ``per_class > 1`` a class
    may grow extra prototypes where its existing ones let a sample be misclassified (as in
    IB2/LVQ), which covers classes made of several clusters; re-estimation after the encoder
    moved runs a few k-means steps per class.

    >>> head = PrototypeHead(embedding_dim=2)
    >>> head.update(0, np.array([0.0, 0.0])); head.update(1, np.array([4.0, 0.0]))
    >>> head.nearest(np.array([1.0, 0.0]))[0]
    0
    >>> head.update(0, np.array([2.0, 0.0]))
    >>> head.prototypes(0).tolist()
    [[1.0, 0.0]]
    """

    def __init__(self, embedding_dim: int, per_class: int = 1, min_rate: float = 0.02, spawn_after: int = 10):
        if per_class < 1:
            raise ValueError(f"per_class must be >= 1, got {per_class}")
        if not 0.0 < min_rate <= 1.0:
            raise ValueError(f"min_rate must be in (0, 1], got {min_rate}")
        self.embedding_dim = embedding_dim
        self.per_class = per_class
        self.min_rate = min_rate
        self.spawn_after = spawn_after
        self._reset()

    def _reset(self) -> None:
        self._protos = np.zeros((0, self.per_class, self.embedding_dim), dtype=np.float32)
        self._counts = np.zeros((0, self.per_class), dtype=np.float64)
        self._active = np.zeros((0, self.per_class), dtype=bool)

    def _ensure(self, slot: int) -> None:
        n = self._protos.shape[0]
        if slot < n:
            return
        grow = max(slot + 1, 2 * n, 8)
        pad = grow - n
        self._protos = np.concatenate([self._protos, np.zeros((pad, self.per_class, self.embedding_dim), np.float32)])
        self._counts = np.concatenate([self._counts, np.zeros((pad, self.per_class))])
        self._active = np.concatenate([self._active, np.zeros((pad, self.per_class), bool)])

    @property
    def has_classes(self) -> bool:
        return bool(self._active.any())

    def class_distances(self, z: np.ndarray) -> np.ndarray:
        """Squared distance from each embedding in ``z`` (n, e) to every class slot: (n, slots); inf if empty."""
        z = np.atleast_2d(z)
        protos = self._protos.reshape(-1, self.embedding_dim)
        if protos.shape[0] == 0:
            return np.full((z.shape[0], 0), np.inf)
        d = (z * z).sum(1, keepdims=True) - 2.0 * z @ protos.T + (protos * protos).sum(1)
        d = np.maximum(d, 0.0).reshape(z.shape[0], self._protos.shape[0], self.per_class)
        d = np.where(self._active[None], d, np.inf)
        return d.min(axis=2)

    @property
    def capacity(self) -> int:
        """Number of class slots the distance matrices of :meth:`class_distances` have."""
        return self._protos.shape[0]

    def refresh(self, distances: np.ndarray, z: np.ndarray, slot: int, z_sq: np.ndarray | None = None) -> None:
        """Recompute column ``slot`` of ``distances`` (= ``class_distances(z)``) after that class changed.

        A batch computes its distance matrix once; each learned sample moves one class, so only
        that column needs updating for the samples still to be predicted.

        >>> head = PrototypeHead(embedding_dim=1)
        >>> head.update(0, np.array([0.0])); head.update(1, np.array([3.0]))
        >>> z = np.array([[1.0], [2.0]]); d = head.class_distances(z)
        >>> head.update(1, np.array([1.0]))  # class 1 moves to 2.0
        >>> head.refresh(d, z, 1); np.array_equal(d, head.class_distances(z))
        True

        ``z_sq``, the squared norms of the rows of ``z``, saves recomputing them on every call.
        """
        if len(z) == 0:
            return
        if z_sq is None:
            z_sq = (z * z).sum(1)
        if self.per_class == 1:
            p = self._protos[slot, 0]
            if self._active[slot, 0]:
                np.maximum(z_sq - 2.0 * (z @ p) + p @ p, 0.0, out=distances[:, slot])
            else:
                distances[:, slot] = np.inf
            return
        protos = self._protos[slot]
        d = np.maximum(z_sq[:, None] - 2.0 * z @ protos.T + (protos * protos).sum(1), 0.0)
        distances[:, slot] = np.where(self._active[slot][None], d, np.inf).min(axis=1)

    @staticmethod
    def pick(distances: np.ndarray) -> tuple[int, float]:
        """``(slot, squared distance)`` of the nearest class in one row of distances; slot -1 if none."""
        if distances.size == 0:
            return -1, float("inf")
        slot = int(distances.argmin())
        dist = float(distances[slot])
        return (slot, dist) if dist != float("inf") else (-1, dist)

    def nearest(self, z: np.ndarray) -> tuple[int, float, np.ndarray]:
        """``(slot, squared distance, distances to all slots)`` for one embedding; slot -1 if no class."""
        d = self.class_distances(z)[0]
        slot, dist = self.pick(d)
        return slot, dist, d

    def update(self, slot: int, z: np.ndarray, missed: bool = False) -> None:
        """Move the class's closest prototype towards ``z``, or start a new one.

        ``missed`` says the head had just predicted another class for ``z``: an established
        class with room for more prototypes then gets a new one at ``z`` (the class has a
        part its prototypes do not cover) instead of dragging an existing one off its cluster.
        """
        if self.per_class == 1 and slot < len(self._active) and self._active[slot, 0]:
            # The common case, once per labeled sample: no growing, no multi-prototype bookkeeping.
            count = self._counts[slot, 0] = self._counts[slot, 0] + 1.0
            proto = self._protos[slot, 0]
            proto += max(1.0 / count, self.min_rate) * (z - proto)
            return
        self._ensure(slot)
        active = self._active[slot]
        if not active.any():
            self._protos[slot, 0] = z
            self._counts[slot, 0] = 1.0
            active[0] = True
            return
        diff = self._protos[slot] - z
        d = np.where(active, (diff * diff).sum(1), np.inf)
        j = int(np.argmin(d))
        if missed and not active.all() and self._counts[slot].sum() >= self.spawn_after:
            j = int(np.argmin(active))
            self._protos[slot, j] = z
            self._counts[slot, j] = 1.0
            active[j] = True
            return
        self._counts[slot, j] += 1.0
        rate = max(1.0 / self._counts[slot, j], self.min_rate)
        self._protos[slot, j] += rate * (z - self._protos[slot, j])

    def refit(self, slot: int, z: np.ndarray, iterations: int = 3) -> None:
        """Re-estimate a class's prototypes from its embeddings ``z`` (m, e, oldest first), e.g. after the encoder changed.

        Each prototype is the mean its running update would have reached on these samples: the
        sample ``a`` places from the newest weighs ``(1 - min_rate) ** a``. A plain mean over the
        memory would pull a class that moves back to where its stored samples were on average
        (on four Gaussian classes rotating twice over 10,000 samples, accuracy 0.826 against 0.92
        for a per-sample MLP); on a class that stays put the two means differ by noise.

        >>> head = PrototypeHead(embedding_dim=1, min_rate=0.5)
        >>> head.refit(0, np.array([[0.0], [4.0]])); head.prototypes(0).tolist()  # weights 0.5 and 1
        [[2.6666667461395264]]
        """
        self._ensure(slot)
        m = z.shape[0]
        if m == 0:
            self.clear(slot)
            return
        weights = (1.0 - self.min_rate) ** np.arange(m - 1, -1, -1, dtype=np.float64)
        k = min(self.per_class, m, max(1, int(self._active[slot].sum())))
        centres = self._protos[slot, :k].copy() if self._active[slot, :k].all() else z[np.linspace(0, m - 1, k).astype(int)]
        for _ in range(iterations if k > 1 else 1):
            assign = ((z[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1) if k > 1 else np.zeros(m, int)
            for j in range(k):
                members = assign == j
                if members.any():
                    centres[j] = weights[members] @ z[members] / weights[members].sum()
        self._protos[slot] = 0.0
        self._active[slot] = False
        self._counts[slot] = 0.0
        self._protos[slot, :k] = centres
        self._active[slot, :k] = True
        for j in range(k):
            self._counts[slot, j] = max(1.0, float((assign == j).sum()))

    def clear(self, slot: int) -> None:
        """Forget a class's prototypes."""
        if slot < self._protos.shape[0]:
            self._active[slot] = False
            self._counts[slot] = 0.0

    def prototypes(self, slot: int) -> np.ndarray:
        """The active prototypes of ``slot`` (k, e)."""
        return self._protos[slot][self._active[slot]].copy()

    def state(self) -> dict[str, np.ndarray]:
        """Arrays for checkpoints and snapshots."""
        return {
            "protos": self._protos.copy(),
            "counts": self._counts.copy(),
            "active": self._active.astype(np.uint8),
        }

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore from :meth:`state`."""
        self._protos = np.asarray(state["protos"], dtype=np.float32).copy()
        self._counts = np.asarray(state["counts"], dtype=np.float64).copy()
        self._active = np.asarray(state["active"]).astype(bool)
