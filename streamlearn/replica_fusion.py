"""Fusion of replicas: the learner averages its encoder with its peers' when that does not hurt its own stream.

Replicas of one service each learn from their share of the partitions, from the same
initial weights (same seed and architecture). Averaging their encoders (a uniform
"model soup", as in federated averaging) gives every replica what the others learned and
keeps their embeddings in one space, so a consumer of the embeddings topic can compare
vectors whichever replica wrote them. An average can also be worse for a replica whose
share of the stream differs, so it is judged first, the way repairs are: a head built from
scratch on each encoder, test-then-train over this replica's latest labeled samples.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from streamlearn.drift import DriftMonitor
from streamlearn.repair import prequential_accuracy

__all__ = ["FUSION_OUTCOMES", "FusionMixin", "FusionResult", "average_states"]

logger = logging.getLogger(__name__)

#: What became of a fusion: the average replaced the encoder, scored too low, or could not be judged yet.
FUSION_OUTCOMES = ("fused", "rejected", "deferred")
_MIN_WINDOW = 40  # labeled samples of the live concept needed to judge an average


@dataclass(frozen=True)
class FusionResult:
    """The outcome of one fusion, and the window scores it was decided on (None when not judged)."""

    outcome: str
    own: float | None = None
    fused: float | None = None
    window: int = 0


def average_states(states: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of state dicts with the same keys and shapes (a uniform model soup).

    >>> a = {"w": torch.tensor([0.0, 2.0])}; b = {"w": torch.tensor([2.0, 4.0])}
    >>> average_states([a, b])["w"].tolist()
    [1.0, 3.0]
    """
    if not states:
        raise ValueError("nothing to average")
    return {name: torch.stack([s[name].to(torch.float32) for s in states]).mean(0).to(states[0][name].dtype)
            for name in states[0]}


class FusionMixin:
    """The fusion half of :class:`~streamlearn.learner.Learner` (see the module docstring)."""

    def architecture(self) -> dict[str, int] | None:
        """What an encoder must match to be averaged with this one; None before the first sample."""
        if self._n_features is None:
            return None
        return {"n_features": int(self._n_features), "hidden_dim": int(self.hidden_dim),
                "embedding_dim": int(self.embedding_dim), "seed": int(self.seed)}

    def fuse(self, peer_states: Sequence[Mapping[str, torch.Tensor]], *, margin: float = 0.02) -> FusionResult:
        """Average the encoder with ``peer_states`` (same architecture) if that scores within ``margin`` of it.

        Both are scored on this replica's latest labeled samples since its last repair (at
        least 40, at most 256): a prototype head starts empty and learns them one by one,
        each predicted before it is learned. Kept: the encoder takes the average, the teacher
        follows it (distillation would otherwise pull it back), prototypes and the neighbour
        vote are refitted from memory, the drift detectors start afresh and the version rises.
        """
        if self.encoder is None or not peer_states:
            return FusionResult("deferred")
        self.settle()
        k = min(len(self._recent), self._since_repair)  # the recent window holds the latest 256
        recent = list(self._recent)[-k:] if k else []
        if len(recent) < _MIN_WINDOW:
            return FusionResult("deferred", window=len(recent))
        wx = self.normalizer.transform(np.stack([x for x, _, _ in recent]))
        wy = np.array([y for _, y, _ in recent])
        averaged = average_states([self.encoder.state_dict(), *peer_states])
        candidate = copy.deepcopy(self.encoder)
        candidate.load_state_dict(averaged)
        own = prequential_accuracy(self.encoder, self._empty_head(), wx, wy)
        fused = prequential_accuracy(candidate, self._empty_head(), wx, wy)
        scores = {"own": round(own, 3), "fused": round(fused, 3), "window": len(recent), "peers": len(peer_states)}
        if fused < own - margin:
            logger.info("peer encoders not fused: the average scores lower", extra=scores)
            return FusionResult("rejected", own, fused, len(recent))
        self.encoder.load_state_dict(averaged)  # in place: the optimiser keeps its parameters
        if self.teacher is not None:
            self.teacher.refresh(self.encoder, self.model_version)
        self.monitor = DriftMonitor(delta=self.drift_delta)  # its statistics were of the encoder left behind
        self._repace()
        self._refit_prototypes()
        self._bump()
        logger.info("peer encoders fused", extra={**scores, "model_version": self.model_version})
        return FusionResult("fused", own, fused, len(recent))
