"""The label registry: maps user labels (str or int) to dense slots, bounded, least-recently-seen evicted."""

from __future__ import annotations

import math
from typing import Union

import numpy as np

__all__ = ["ClassRegistry", "Label", "as_label"]

Label = Union[str, int]


def as_label(value: object) -> Label | None:
    """A label as a plain ``str`` or ``int`` (``None``: unlabeled), whatever container it came from.

    Labels taken from numpy or pandas arrays arrive as numpy scalars; integer labels with gaps
    arrive as floats with NaN for the missing ones. Without this, ``np.str_("a")`` and ``"a"``
    were two classes, ``np.int64`` labels could not be checkpointed, and every NaN became a
    class of its own. ``bool`` stays ``bool`` (the learner's own API allows it; files reject it).

    >>> import numpy as np
    >>> [as_label(v) for v in (np.str_("a"), np.int64(3), 4.0, float("nan"), None, True)]
    ['a', 3, 4, None, None, True]
    >>> as_label(2.5)
    Traceback (most recent call last):
    ...
    ValueError: label 2.5: expected a string, an integer or None
    """
    kind = type(value)
    if value is None or kind is str or kind is int or kind is bool:
        return value  # the usual case, checked first: this runs once per sample
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return None
        if float(value).is_integer():
            return int(value)
    raise ValueError(f"label {value!r}: expected a string, an integer or None")


class ClassRegistry:
    """Dense slot per live label, so prototypes and memory can live in arrays.

    Labels keep their type: ``1`` and ``"1"`` are different classes. When more than
    ``max_classes`` labels are live, the one seen longest ago gives up its slot.

    >>> reg = ClassRegistry(max_classes=2)
    >>> reg.slot_for("cat"), reg.slot_for(7), reg.slot_for("cat")
    ((0, True, None), (1, True, None), (0, False, None))
    >>> reg.slot_for("dog")  # evicts 7, the least recently seen
    (1, True, 7)
    >>> reg.labels()
    ['cat', 'dog']
    """

    def __init__(self, max_classes: int = 1000):
        if max_classes < 1:
            raise ValueError(f"max_classes must be >= 1, got {max_classes}")
        self.max_classes = max_classes
        self._reset()

    def _reset(self) -> None:
        self._slot: dict[tuple[str, Label], int] = {}
        self._label: list[Label | None] = []
        self._last_seen: list[int] = []
        self._clock = 0

    @staticmethod
    def _key(label: Label) -> tuple[str, Label]:
        # 1 and "1" must not collide; bools were rejected by the schema already.
        return (type(label).__name__, label)

    def __len__(self) -> int:
        return len(self._slot)

    @property
    def capacity(self) -> int:
        """Number of slots allocated so far (live or free)."""
        return len(self._label)

    def slot_of(self, label: Label) -> int | None:
        """The slot of a known label, else ``None``."""
        return self._slot.get(self._key(label))

    def label_of(self, slot: int) -> Label | None:
        """The label living in ``slot`` (``None`` for a free slot)."""
        return self._label[slot]

    def slot_for(self, label: Label) -> tuple[int, bool, Label | None]:
        """Slot for ``label``, creating it if needed: ``(slot, is_new, evicted_label)``."""
        self._clock += 1
        key = self._key(label)
        slot = self._slot.get(key)
        if slot is not None:
            self._last_seen[slot] = self._clock
            return slot, False, None
        evicted = None
        if len(self._slot) < self.max_classes:
            slot = self._free_slot()
        else:
            slot = min(range(len(self._label)), key=self._last_seen.__getitem__)
            evicted = self._label[slot]
            del self._slot[self._key(evicted)]
        self._slot[key] = slot
        self._label[slot] = label
        self._last_seen[slot] = self._clock
        return slot, True, evicted

    def _free_slot(self) -> int:
        for slot, label in enumerate(self._label):
            if label is None:
                return slot
        self._label.append(None)
        self._last_seen.append(0)
        return len(self._label) - 1

    def slot_labels(self) -> list[Label | None]:
        """Label of every slot, ``None`` for free ones (index = slot)."""
        return list(self._label)

    def labels(self) -> list[Label]:
        """Live labels in slot order."""
        return [label for label in self._label if label is not None]

    def state(self) -> dict:
        """JSON-able description (labels keep their JSON type)."""
        return {"labels": list(self._label), "last_seen": list(self._last_seen), "clock": self._clock}

    def load_state(self, state: dict) -> None:
        """Restore from :meth:`state`."""
        self._reset()
        self._label = list(state["labels"])
        self._last_seen = [int(v) for v in state["last_seen"]]
        self._clock = int(state["clock"])
        self._slot = {self._key(label): slot for slot, label in enumerate(self._label) if label is not None}
