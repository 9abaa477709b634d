"""Known concepts: frozen good states of the model, kept so a recurring concept is restored, not relearned."""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = ["Concept", "ConceptLibrary"]


@dataclass
class Concept:
    """A known-good state of the model for one concept: encoder weights, prototypes, memory, linear head."""

    concept_id: int
    encoder_state: dict[str, torch.Tensor]
    head_state: dict[str, np.ndarray]
    memory_state: dict[str, np.ndarray]
    accuracy: float
    model_version: int
    linear_state: dict[str, np.ndarray] | None = None  # None: captured without a linear head (or by 0.1)

    @classmethod
    def capture(
        cls, concept_id: int, encoder: nn.Module, head, memory, accuracy: float, model_version: int, linear=None
    ) -> "Concept":
        """Copy the live parts into a frozen concept."""
        state = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
        linear_state = linear.state() if linear is not None else None
        return cls(concept_id, state, head.state(), memory.state(), accuracy, model_version, linear_state)

    def forget_slot(self, slot: int) -> None:
        """Drop one class slot's prototypes, memory and weights (its label was evicted and the slot reused)."""
        parts = [(self.head_state, ("active", "counts")), (self.memory_state, ("count", "next"))]
        if self.linear_state is not None:
            parts.append((self.linear_state, ("weight", "bias", "trained")))
        for state, flags in parts:
            for key in flags:
                if key in state and slot < len(state[key]):
                    state[key] = state[key].copy()
                    state[key][slot] = 0

    def encoder(self, template: nn.Module) -> nn.Module:
        """A new encoder module (same architecture as ``template``) holding this concept's weights."""
        enc = copy.deepcopy(template)
        enc.load_state_dict(self.encoder_state)
        return enc.eval()


class ConceptLibrary:
    """Bounded store of concepts, least recently used evicted, so recurring concepts are restored, not relearned.

    >>> lib = ConceptLibrary(capacity=2)
    >>> for i in range(3):
    ...     lib.put(Concept(i, {}, {}, {}, 0.9, i))
    >>> [c.concept_id for c in lib]
    [1, 2]
    """

    def __init__(self, capacity: int = 8):
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self._concepts: OrderedDict[int, Concept] = OrderedDict()

    def put(self, concept: Concept) -> None:
        """Store (or refresh) a concept; the newest version of a concept replaces the older."""
        if self.capacity == 0:
            return
        self._concepts.pop(concept.concept_id, None)
        self._concepts[concept.concept_id] = concept
        while len(self._concepts) > self.capacity:
            self._concepts.popitem(last=False)

    def touch(self, concept_id: int) -> None:
        """Mark a concept as just used."""
        if concept_id in self._concepts:
            self._concepts.move_to_end(concept_id)

    def get(self, concept_id: int) -> Concept | None:
        return self._concepts.get(concept_id)

    def __iter__(self):
        return iter(list(self._concepts.values()))

    def __len__(self) -> int:
        return len(self._concepts)
