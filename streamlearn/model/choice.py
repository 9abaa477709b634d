"""Which head predicts: the one that has been most accurate lately on the labeled samples it answered."""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["HEADS", "HeadChoice"]

HEADS = ("prototypes", "vote", "linear", "fused")  # "fused": the vote and the linear head together
_BUILT_ON = {"vote": ("fused",), "linear": ("fused",)}  # heads whose answers depend on another's


class HeadChoice:
    """Running accuracy of every head and the choice of the one whose prediction is used.

    Every head predicts every labeled sample; each available head's running accuracy
    follows its hits at ``rate``. The best one predicts; ties go to the earlier head, and a
    head with a ``margin`` must lead the best of the others by that much. The linear head
    is usually a little worse on clustered data; without its margin it would take the lead
    on noise (its running accuracy fluctuating above the others') and cost accuracy while
    it held it.

    >>> choice = HeadChoice()
    >>> for _ in range(50):
    ...     choice.score((0, 1, 1, 1), known=1)  # the prototypes miss, the other heads hit
    >>> HEADS[choice.best([True, True, True, True])], choice.pick((0, 1, 2, 3))
    ('vote', 1)
    >>> choice.pick((0, -1, -1, -1))  # only the prototypes have an answer
    0
    """

    def __init__(self, rate: float = 0.02, margins: Sequence[float] = (0.0, 0.0, 0.02, 0.0)):
        if len(margins) != len(HEADS):
            raise ValueError(f"one margin per head {HEADS}, got {len(margins)}")
        self.rate = rate
        self.margins = tuple(margins)
        self.accuracy = np.full(len(HEADS), 0.5)

    def best(self, available: Sequence[bool]) -> int:
        """Index into :data:`HEADS` of the head to follow among the ``available`` ones."""
        best = 0
        for h in range(1, len(HEADS)):
            if available[h] and (not available[best] or self.accuracy[h] > self.accuracy[best] + self.margins[h]):
                best = h
        return best

    def pick(self, picks: Sequence[int]) -> int:
        """The class slot to predict, from each head's pick (-1 = that head has no answer)."""
        return picks[self.best([p >= 0 for p in picks])]

    def score(self, picks: Sequence[int], known: int | None) -> None:
        """Fold one labeled sample's hits into the running accuracy of every head that answered."""
        for h, pick in enumerate(picks):
            if pick >= 0:
                self.accuracy[h] += self.rate * ((pick == known) - self.accuracy[h])

    def demote(self, head: str) -> None:
        """A head was started again: it, and every head built on it, must earn its turn from zero."""
        for name in (head, *_BUILT_ON.get(head, ())):
            self.accuracy[HEADS.index(name)] = 0.0

    def load(self, accuracy: np.ndarray) -> None:
        """Restore running accuracies; heads an older checkpoint lacks (0.1 had two, then three) start from zero."""
        self.accuracy[:] = 0.0
        self.accuracy[: len(accuracy)] = accuracy
