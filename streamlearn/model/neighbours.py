"""A k-nearest-neighbour vote over the stored samples, seen through one or more views."""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import torch

__all__ = ["NeighbourVote"]

Views = np.ndarray | Sequence[np.ndarray]


def _as_views(views: Views) -> list[np.ndarray]:
    """One array is one view; a sequence of arrays is one view each (rows aligned)."""
    if isinstance(views, np.ndarray):
        views = [views]
    return [np.atleast_2d(np.asarray(view, dtype=np.float32)) for view in views]


def _squared_distances(dot: np.ndarray, query_sq: np.ndarray, ref_sq: np.ndarray) -> np.ndarray:
    """Squared distances |q|^2 - 2 q.r + |r|^2 built in place from the dot products ``dot`` (n, m) of query
    and stored rows, the queries' squared norms ``query_sq`` (n,) and the stored rows' ``ref_sq`` (m,) or (n, m)."""
    dot *= -2.0
    dot += ref_sq
    dot += query_sq[:, None]
    return dot


def _frozen(array: np.ndarray) -> np.ndarray:
    """``array`` marked read-only, so that it can be shared (the vote takes ownership of what it is fitted on)."""
    array.setflags(write=False)
    return array


class NeighbourVote:
    """Distance-weighted vote of the ``k`` stored samples closest to a query, in every view.

    Prototypes summarise a class by its mean; a class made of many small clusters is
    better described by its samples. The learner keeps both and follows whichever has
    been more accurate lately. A sample can be seen through several views (the learned
    embedding and the standardised input): each view finds its own ``k`` neighbours and
    gives one vote, split among them by inverse distance; the class with the most votes
    wins. The encoder may drop what the few-step meta-learning has not yet found useful;
    the input view keeps it, while the embedding view keeps what the encoder has learned.
    Optional class weights then scale each class's votes (the learner's class prior).

    >>> vote = NeighbourVote(k=3)
    >>> vote.fit(np.array([[0.0], [0.1], [5.0], [5.1], [5.2]]), np.array([0, 0, 1, 1, 1]))
    >>> vote.predict(np.array([[0.05], [4.0]]))
    array([0, 1])
    >>> two = NeighbourVote(k=1)
    >>> two.fit([np.array([[0.0], [1.0]]), np.array([[0.0], [1.0]])], np.array([0, 1]))
    >>> two.predict([np.array([[0.2]]), np.array([[0.4]])])  # both views near class 0
    array([0])
    """

    def __init__(self, k: int = 5, exact_up_to: int = 4096, shortlist: int = 16, lookback: int = 256):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if lookback < 1:
            raise ValueError(f"lookback must be >= 1, got {lookback}")
        self.k = k
        self.lookback = lookback
        self.exact_up_to = exact_up_to
        self.shortlist = shortlist
        self.fit(np.zeros((0, 1), np.float32), np.zeros(0, np.int64))

    def fit(self, views: Views, slots: np.ndarray, class_weights: np.ndarray | None = None) -> None:
        """Use the rows of ``views`` (each (m, e_v)) with class ``slots`` (m,) as the neighbours.

        ``class_weights`` (one per slot number up to the largest of ``slots``) scale every
        class's votes, e.g. by how often the class occurs: stored samples are balanced
        across classes, the stream need not be. None weighs every class alike.

        The vote takes the arrays over and marks them read-only (the caller must not change
        them afterwards); they are only ever replaced by the next ``fit``, so :meth:`share`
        can hand them to a snapshot without copying.
        """
        self._views = [_frozen(view) for view in _as_views(views)]
        self._slots = _frozen(np.asarray(slots, dtype=np.int64))
        if any(len(view) != len(self._slots) for view in self._views):
            raise ValueError("every view needs one row per slot")
        self._weights = None if class_weights is None else _frozen(np.asarray(class_weights, dtype=np.float64))
        if self._weights is not None and len(self._slots) and len(self._weights) <= self._slots.max():
            raise ValueError(f"class_weights cover {len(self._weights)} slots, "
                             f"the samples reach slot {self._slots.max()}")
        self._sq = [(view * view).sum(1) for view in self._views]
        self._table: np.ndarray | None = None  # neighbour indices by class, built on first shortlist use

    @property
    def ready(self) -> bool:
        return len(self._slots) >= self.k

    def share(self) -> "NeighbourVote":
        """A copy for a snapshot that shares the (read-only) neighbour arrays: later fits do not reach it."""
        return copy.copy(self)

    @property
    def n_views(self) -> int:
        return len(self._views)

    def predict(self, views: Views, class_distances: np.ndarray | None = None) -> np.ndarray:
        """Voted class slot per query row (-1 when there are fewer than ``k`` neighbours).

        ``views`` must match those given to :meth:`fit`. With more than ``exact_up_to``
        neighbours and the rows' ``class_distances`` (n, slots), e.g. to the prototypes, each
        row searches only the samples of its ``shortlist`` nearest classes: the cost of the
        search stops growing with the number of classes.
        """
        shares = self.shares(views, class_distances)
        return np.full(len(_as_views(views)[0]), -1) if shares is None else shares.argmax(1)

    def shares(
        self, views: Views, class_distances: np.ndarray | None = None, earlier_slots: np.ndarray | None = None
    ) -> np.ndarray | None:
        """Each class's share of every query row's (weighted) votes (n, slots), rows summing to 1.

        None when there are fewer than ``k`` neighbours; ``views`` and ``class_distances`` as for
        :meth:`predict`. ``earlier_slots`` (n,), when given, makes the query rows a batch in stream
        order whose labels are known: the class slot of every row, -1 for a row without one (or of a
        class the vote was not fitted with). Row j then also takes the rows before it (up to
        ``lookback`` of them) as neighbours, as if each had been stored as soon as it was learned,
        which is what a per-sample learner would see; row j never sees its own class nor a later
        row's. (With the shortlist, the batch's rows count whatever their class.)

        >>> vote = NeighbourVote(k=1)
        >>> vote.fit(np.array([[0.0], [5.0]]), np.array([0, 1]))
        >>> batch = np.array([[9.0], [9.1]])  # the first row is labeled class 0; the second has no label
        >>> vote.shares(batch, earlier_slots=np.array([0, -1])).argmax(1).tolist()  # stored only: class 1
        [1, 0]
        """
        queries = _as_views(views)
        if len(queries) != len(self._views):
            raise ValueError(f"expected {len(self._views)} views, got {len(queries)}")
        n = len(queries[0])
        if not self.ready:
            return None
        cand = self._candidates(class_distances) if len(self._slots) > self.exact_up_to else None
        n_slots = int(self._slots.max()) + 1
        earlier = self._earlier(earlier_slots, n, n_slots)
        blocks = None if earlier is None else self._blocks(earlier)
        votes = np.zeros(n * n_slots)
        rows = np.repeat(np.arange(n) * n_slots, self.k)
        for query, ref, ref_sq in zip(queries, self._views, self._sq):
            query_sq = (query * query).sum(1)
            idx, near = self._nearest(query, query_sq, ref, ref_sq, cand)
            found = self._slots[idx]
            if earlier is not None:
                found, near = self._with_earlier(query, query_sq, earlier, blocks, found, near)
            weight = 1.0 / (near + 1e-6 * (near.mean(1, keepdims=True) + 1e-12))
            weight /= weight.sum(1, keepdims=True)
            votes += np.bincount(rows + found.ravel(), weights=weight.ravel(), minlength=len(votes))
        votes = votes.reshape(n, n_slots)
        if self._weights is not None:
            votes *= self._weights[:n_slots]
        votes /= votes.sum(1, keepdims=True)
        return votes

    def _nearest(
        self, query: np.ndarray, query_sq: np.ndarray, ref: np.ndarray, ref_sq: np.ndarray, cand: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Indices and squared distances (n, k) of each query row's ``k`` nearest stored rows."""
        d = query @ ref.T
        if cand is not None:
            safe = np.maximum(cand, 0)
            d, ref_sq = np.take_along_axis(d, safe, axis=1), ref_sq[safe]
        _squared_distances(d, query_sq, ref_sq)
        if cand is not None:
            d[cand < 0] = np.inf
        # torch's top-k: the same k smallest as numpy's argpartition, in a third to a half of the time.
        near, local = torch.topk(torch.from_numpy(d), self.k, dim=1, largest=False, sorted=False)
        idx = local.numpy() if cand is None else np.take_along_axis(cand, local.numpy(), axis=1)
        return idx, np.maximum(near.numpy(), 0.0)

    @staticmethod
    def _earlier(earlier_slots: np.ndarray | None, n: int, n_slots: int) -> np.ndarray | None:
        """The batch's usable class slots (-1: not a neighbour), or None when no row of it can be one."""
        if earlier_slots is None or n < 2:
            return None
        earlier = np.asarray(earlier_slots, dtype=np.int64)
        if earlier.shape != (n,):
            raise ValueError(f"earlier_slots needs one slot per query row ({n}), got shape {earlier.shape}")
        earlier = np.where(earlier < n_slots, earlier, -1)  # a class unknown to the fit has no weight here
        return earlier if (earlier[:-1] >= 0).any() else None

    def _blocks(self, earlier: np.ndarray) -> list[tuple[int, int, int, np.ndarray]]:
        """The batch in blocks of ``lookback`` rows: ``(a, b, lo, blocked)`` for rows ``a:b``, whose candidates
        are rows ``lo:b``; ``blocked[j - a, i - lo]`` unless ``j - lookback <= i < j`` and row i's class is known.

        Rows go in blocks, so the cost of a batch grows with its size, not with its square.
        """
        n, step, out = len(earlier), self.lookback, []
        for a in range(0, n, step):
            b, lo = min(n, a + step), max(0, a - step)
            allowed = np.tri(b - a, b - lo, a - lo - 1, dtype=bool)  # i < j
            if lo < a:
                allowed &= ~np.tri(b - a, b - lo, a - lo - step - 1, dtype=bool)  # i >= j - lookback
            allowed &= earlier[lo:b] >= 0
            out.append((a, b, lo, ~allowed))
        return out

    def _with_earlier(
        self, query: np.ndarray, query_sq: np.ndarray, earlier: np.ndarray,
        blocks: list[tuple[int, int, int, np.ndarray]], found: np.ndarray, near: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Slots and squared distances (n, k) of the ``k`` nearest among the stored rows and the earlier query rows.

        ``found``/``near`` are the stored neighbours' slots and squared distances; ``blocks`` says which
        rows of the batch each row may add (see :meth:`_blocks`).
        """
        slots, dists = np.empty_like(found), np.empty_like(near)
        for a, b, lo, blocked in blocks:
            d = _squared_distances(query[a:b] @ query[lo:b].T, query_sq[a:b], query_sq[lo:b])
            np.maximum(d, 0.0, out=d)
            d[blocked] = np.inf
            best, pos = torch.topk(torch.from_numpy(np.concatenate([near[a:b], d], axis=1)), self.k, dim=1,
                                   largest=False, sorted=False)
            both = np.concatenate([found[a:b], np.broadcast_to(earlier[lo:b], (b - a, b - lo))], axis=1)
            slots[a:b], dists[a:b] = np.take_along_axis(both, pos.numpy(), axis=1), best.numpy()
        return slots, dists

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
        """Arrays for checkpoints: ``view0``, ``view1``, …, ``slots`` and, when set, ``weights``."""
        weights = {} if self._weights is None else {"weights": self._weights.copy()}
        views = {f"view{i}": view.copy() for i, view in enumerate(self._views)}
        return {**views, "slots": self._slots.copy(), **weights}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore from :meth:`state` (a checkpoint of 0.1, with one view saved as ``z``, loads too)."""
        views = [state[f"view{i}"] for i in range(len(state)) if f"view{i}" in state] or [state["z"]]
        self.fit(views, state["slots"], state.get("weights"))
