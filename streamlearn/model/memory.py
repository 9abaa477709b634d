"""Bounded, class-balanced replay memory: the most recent samples of every live class."""

from __future__ import annotations

import numpy as np

__all__ = ["ClassMemory"]


class ClassMemory:
    """A ring buffer of raw feature vectors per class slot.

    Every class keeps its ``per_class`` most recent samples, so a frequent class cannot
    crowd out a rare one and the memory follows the stream when a class changes meaning.

    >>> mem = ClassMemory(n_features=2, per_class=2)
    >>> for v in (1.0, 2.0, 3.0):
    ...     mem.add(0, np.array([v, v]))
    >>> mem.add(3, np.array([9.0, 9.0]))
    >>> mem.samples(0)[:, 0].tolist(), mem.count(3), mem.count(1)
    ([2.0, 3.0], 1, 0)
    """

    def __init__(self, n_features: int, per_class: int = 64):
        if per_class < 1:
            raise ValueError(f"per_class must be >= 1, got {per_class}")
        self.n_features = n_features
        self.per_class = per_class
        self._reset()

    def _reset(self) -> None:
        self._data = np.zeros((0, self.per_class, self.n_features), dtype=np.float32)
        self._count = np.zeros(0, dtype=np.int64)
        self._next = np.zeros(0, dtype=np.int64)
        self._forget_embeddings()

    def _forget_embeddings(self) -> None:
        # Cached embeddings of the stored samples (derived, never saved): valid per slot where _fresh.
        self._z: np.ndarray | None = None
        self._fresh = np.zeros(len(self._count), dtype=bool)

    def _ensure(self, slot: int) -> None:
        if slot < len(self._count):
            return
        grow = max(slot + 1, 2 * len(self._count), 8)
        data = np.zeros((grow, self.per_class, self.n_features), dtype=np.float32)
        data[: len(self._count)] = self._data
        self._data = data
        if self._z is not None:
            z = np.zeros((grow, self.per_class, self._z.shape[2]), dtype=np.float32)
            z[: len(self._count)] = self._z
            self._z = z
        self._fresh = np.concatenate([self._fresh, np.zeros(grow - len(self._fresh), dtype=bool)])
        self._count = np.concatenate([self._count, np.zeros(grow - len(self._count), dtype=np.int64)])
        self._next = np.concatenate([self._next, np.zeros(grow - len(self._next), dtype=np.int64)])

    def add(self, slot: int, x: np.ndarray, z: np.ndarray | None = None) -> None:
        """Store one raw sample for class ``slot``, overwriting its oldest when full.

        ``z``, the sample's embedding, keeps the slot's cached embeddings usable; without it
        the slot must be embedded again (:meth:`stale_slots`).
        """
        self._ensure(slot)
        position = int(self._next[slot])  # read once as a plain int: this runs once per labeled sample
        if z is not None and self._z is not None and self._fresh[slot]:
            self._z[slot, position] = z
        else:
            self._fresh[slot] = False
        self._data[slot, position] = x
        self._next[slot] = (position + 1) % self.per_class
        self._count[slot] = min(int(self._count[slot]) + 1, self.per_class)

    def count(self, slot: int) -> int:
        """Number of samples held for ``slot``."""
        return int(self._count[slot]) if slot < len(self._count) else 0

    def samples(self, slot: int) -> np.ndarray:
        """Samples of ``slot``, oldest first (a copy)."""
        if slot >= len(self._count):
            return np.zeros((0, self.n_features), dtype=np.float32)
        return self._data[slot, self._positions(slot)]

    def clear(self, slot: int) -> None:
        """Forget every sample of ``slot`` (evicted class, or a class whose meaning changed)."""
        if slot < len(self._count):
            self._count[slot] = 0
            self._next[slot] = 0
            self._fresh[slot] = False

    def replace(self, slot: int, xs: np.ndarray) -> None:
        """Make ``xs`` (oldest first) the only samples of ``slot``."""
        self.clear(slot)
        for x in xs[-self.per_class :]:
            self.add(slot, x)

    def slots(self, min_count: int = 1) -> np.ndarray:
        """Slots holding at least ``min_count`` samples."""
        return np.flatnonzero(self._count >= min_count)

    def _positions(self, slot: int) -> np.ndarray:
        """Buffer positions of ``slot``'s samples, oldest first (the order of :meth:`samples`)."""
        return self._index(np.array([slot]))[1]

    def counts(self, slots: np.ndarray) -> np.ndarray:
        """Number of samples held for each of ``slots`` (all below the number of slots ever used)."""
        return self._count[slots].copy()

    def stale_slots(self) -> np.ndarray:
        """Slots holding samples whose cached embeddings are missing."""
        held = self.slots()
        return held[~self._fresh[held]]

    def set_embeddings(self, slot: int, z: np.ndarray) -> None:
        """Cache the embeddings ``z`` of ``slot``'s samples (in :meth:`samples` order)."""
        if self._z is None:
            self._z = np.zeros((len(self._count), self.per_class, z.shape[1]), dtype=np.float32)
        self._z[slot, self._positions(slot)] = z
        self._fresh[slot] = True

    def _index(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Slot and buffer position of every sample of ``slots``: slot by slot, oldest first."""
        counts = self._count[slots]
        owner = np.repeat(slots, counts)
        rank = np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)
        start = np.where(counts == self.per_class, self._next[slots], 0)
        return owner, (np.repeat(start, counts) + rank) % self.per_class

    def embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """Cached embeddings of every stored sample and their slots, in :meth:`all_samples` order.

        Every slot must have been embedded since its last change (no :meth:`stale_slots`).
        """
        held = self.slots()
        if len(held) == 0 or self._z is None:
            return np.zeros((0, 0 if self._z is None else self._z.shape[2]), np.float32), np.zeros(0, np.int64)
        if not self._fresh[held].all():
            raise ValueError("some slots have no cached embeddings; embed them first")
        owner, position = self._index(held)
        return self._z[owner, position], owner

    def all_samples(self, slots: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Every stored sample (of ``slots``, default all) and its slot: ``(x[m, d], slots[m])``."""
        held = self.slots() if slots is None else np.asarray(slots, dtype=np.int64)
        held = held[held < len(self._count)]
        owner, position = self._index(held)
        return self._data[owner, position], owner

    def sample_episode(
        self, rng: np.random.Generator, ways: int, shots: int, queries: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """Draw a support/query episode over up to ``ways`` classes with >= 2 samples.

        Returns ``(support_x, support_class, query_x, query_class)`` with classes numbered
        0..ways-1 inside the episode, or ``None`` when fewer than two classes qualify.
        """
        eligible = self.slots(min_count=2)
        if len(eligible) < 2:
            return None
        chosen = eligible[np.argsort(rng.random(len(eligible)))[:ways]]
        counts = self._count[chosen]
        # Split what each class has between support and query, keeping at least one of each.
        n_s = np.maximum(1, np.minimum(shots, counts - 1))
        n_q = np.maximum(1, np.minimum(queries, counts - n_s))
        # One random order per class over its filled entries (empty entries sort last); keep the first few.
        keys = rng.random((len(chosen), self.per_class))
        keys[np.arange(self.per_class)[None, :] >= counts[:, None]] = np.inf
        width = min(self.per_class, shots + queries)
        order = np.argsort(keys, axis=1)[:, :width]
        position = np.arange(width)[None, :]
        support = position < n_s[:, None]
        query = (position >= n_s[:, None]) & (position < (n_s + n_q)[:, None])
        rows = self._data[chosen[:, None], order]
        classes = np.broadcast_to(np.arange(len(chosen))[:, None], order.shape)
        return rows[support], classes[support], rows[query], classes[query]

    def state(self) -> dict[str, np.ndarray]:
        """Arrays for checkpoints."""
        return {"data": self._data.copy(), "count": self._count.copy(), "next": self._next.copy()}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore from :meth:`state`."""
        self._data = np.asarray(state["data"], dtype=np.float32).copy()
        self._count = np.asarray(state["count"], dtype=np.int64).copy()
        self._next = np.asarray(state["next"], dtype=np.int64).copy()
        self._forget_embeddings()
