"""Which head predicts: a vote of the heads, each weighed by how accurate it has been lately."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["HEADS", "HeadChoice", "weighted_picks"]

HEADS = ("prototypes", "vote", "linear", "fused")  # "fused": the vote and the linear head together
_BUILT_ON = {"vote": ("fused",), "linear": ("fused",)}  # heads whose answers depend on another's


def weighted_picks(picks: np.ndarray, weights: np.ndarray, lead: int) -> np.ndarray:
    """Per row of ``picks`` (n, heads; -1 = no answer), the slot with the most weight among the heads' picks.

    A tie goes to the pick of head ``lead``, else to the lowest slot. The vectorised form of
    :meth:`HeadChoice.pick` (for a batch of requests), with the same answers.

    >>> weighted_picks(np.array([[0, 1, 1, -1], [2, 2, 0, 0]]), np.array([1.0, 0.6, 0.6, 0.1]), lead=0).tolist()
    [1, 2]
    """
    picks = np.asarray(picks, dtype=np.int64)
    n = len(picks)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    width = max(int(picks.max()) + 1, 1)
    totals = np.zeros((n, width))
    rows = np.arange(n)
    for h in range(picks.shape[1]):
        answered = picks[:, h] >= 0
        np.add.at(totals, (rows[answered], picks[answered, h]), weights[h])
    best = totals.max(1)
    lead_pick = picks[:, lead]
    lead_total = np.where(lead_pick >= 0, totals[rows, np.maximum(lead_pick, 0)], -1.0)
    out = np.where(lead_total >= best, lead_pick, totals.argmax(1))
    return np.where(best > 0, out, -1)


class HeadChoice:
    """Running accuracy of every head, and the vote of the heads that gives the prediction.

    Every head predicts every labeled sample; each available head's running accuracy
    follows its hits at ``rate``. Each head that has an answer votes for its class with
    weight ``exp(sharpness x (its accuracy - the best accuracy))``: the most accurate head
    counts 1, one 2 points behind e^-1 at the default sharpness of 50. So a clear leader
    decides alone, while a class that two close heads agree on outvotes a head that is only
    slightly ahead. (A hard switch to whichever head led lately followed the noise in the
    running accuracies, and lost about half a point to the best single head on tabular
    streams.) A tie goes to the leading head, :meth:`best`: the most accurate one, where a
    head with a ``margin`` must lead the best of the others by that much. The linear head is
    usually a little worse on clustered data; its margin keeps it from leading on noise.

    >>> choice = HeadChoice()
    >>> for _ in range(50):
    ...     choice.score((0, 1, 1, 1), known=1)  # the prototypes miss, the other heads hit
    >>> HEADS[choice.best([True, True, True, True])], choice.pick((0, 1, 2, 3))
    ('vote', 1)
    >>> choice.pick((0, -1, -1, -1))  # only the prototypes have an answer
    0
    """

    def __init__(self, rate: float = 0.02, margins: Sequence[float] = (0.0, 0.0, 0.02, 0.0),
                 sharpness: float = 50.0):
        if len(margins) != len(HEADS):
            raise ValueError(f"one margin per head {HEADS}, got {len(margins)}")
        self.rate = rate
        self.margins = tuple(margins)
        self.sharpness = sharpness
        self.accuracy = np.full(len(HEADS), 0.5)

    def best(self, available: Sequence[bool]) -> int:
        """Index into :data:`HEADS` of the head to follow among the ``available`` ones."""
        return self._best(self.accuracy.tolist(), available)

    def _best(self, accuracy: list[float], available: Sequence[bool]) -> int:
        """:meth:`best` on the running accuracies as plain floats (the same float64 values)."""
        best = 0
        for h in range(1, len(accuracy)):
            if available[h] and (not available[best] or accuracy[h] > accuracy[best] + self.margins[h]):
                best = h
        return best

    def _weight_list(self, available: Sequence[bool], accuracy: list[float] | None = None) -> list[float]:
        """Each head's vote weight as plain floats (math.exp: per sample, numpy's call overhead would dominate)."""
        if accuracy is None:
            accuracy = self.accuracy.tolist()
        top = max((a for a, ok in zip(accuracy, available) if ok), default=0.0)
        return [math.exp(self.sharpness * (a - top)) if ok else 0.0 for a, ok in zip(accuracy, available)]

    def weights(self, available: Sequence[bool]) -> np.ndarray:
        """Each head's vote weight (0 where not ``available``); the most accurate head's is 1."""
        return np.array(self._weight_list(available))

    def pick(self, picks: Sequence[int]) -> int:
        """The class slot to predict from each head's pick (-1 = that head has no answer): the weighted vote.

        Runs once per sample: when the heads that answered agree (or none did) there is nothing
        to weigh, and otherwise the accuracies are read once, as plain floats.
        """
        answers = {p for p in picks if p >= 0}
        if len(answers) < 2:  # the heads that answered agree: nothing to weigh
            return answers.pop() if answers else picks[0]
        accuracy = self.accuracy.tolist()
        available = [p >= 0 for p in picks]
        lead = picks[self._best(accuracy, available)]
        totals: dict[int, float] = {}
        for pick, weight in zip(picks, self._weight_list(available, accuracy)):
            if pick >= 0:
                totals[pick] = totals.get(pick, 0.0) + weight
        most = max(totals.values())
        return lead if totals[lead] >= most else min(p for p, t in totals.items() if t == most)

    def score(self, picks: Sequence[int], known: int | None) -> None:
        """Fold one labeled sample's hits into the running accuracy of every head that answered.

        Plain floats, written back once: the same float64 arithmetic as element by element on
        the array, without numpy's per-element overhead (this runs once per labeled sample).
        """
        accuracy = self.accuracy.tolist()
        rate = self.rate
        for h, pick in enumerate(picks):
            if pick >= 0:
                accuracy[h] += rate * ((pick == known) - accuracy[h])
        self.accuracy[:] = accuracy

    def demote(self, head: str) -> None:
        """A head was started again: it, and every head built on it, must earn its turn from zero."""
        for name in (head, *_BUILT_ON.get(head, ())):
            self.accuracy[HEADS.index(name)] = 0.0

    def load(self, accuracy: np.ndarray) -> None:
        """Restore running accuracies; heads an older checkpoint lacks (0.1 had two, then three) start from zero."""
        self.accuracy[:] = 0.0
        self.accuracy[: len(accuracy)] = accuracy
