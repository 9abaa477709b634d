"""An immutable copy of the model that request handlers can use while the learner keeps learning."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from streamlearn.model.classes import Label
from streamlearn.model.fusion import fuse
from streamlearn.model.linear import LinearHead, linear_inputs
from streamlearn.model.neighbours import NeighbourVote
from streamlearn.model.normalizer import OnlineStandardizer
from streamlearn.model.prototypes import PrototypeHead

__all__ = ["ModelSnapshot", "embed_with", "encode", "predict_with"]


@torch.no_grad()
def encode(encoder: nn.Module, standardised: np.ndarray) -> np.ndarray:
    """Embeddings (n, e) float32 of already standardised inputs: one forward pass, no gradients."""
    return encoder(torch.from_numpy(standardised)).numpy()


def _standardise(normalizer: OnlineStandardizer, features: np.ndarray) -> np.ndarray:
    """Raw ``features`` (n, d), or any n rows of d values, as standardised float32 rows (n may be 0)."""
    return normalizer.transform(np.asarray(features, dtype=np.float32).reshape(len(features), normalizer.n_features))


def embed_with(encoder: nn.Module, normalizer: OnlineStandardizer, features: np.ndarray) -> np.ndarray:
    """Embeddings (n, e) float32 of raw ``features`` (n, d): standardise, then one forward pass."""
    return encode(encoder, _standardise(normalizer, features))


def predict_with(
    encoder: nn.Module,
    normalizer: OnlineStandardizer,
    head: PrototypeHead,
    labels: list[Label | None],
    features: np.ndarray,
    vote: NeighbourVote | None = None,
    linear: LinearHead | None = None,
) -> tuple[list[Label | None], np.ndarray]:
    """Labels and squared distances to the predicted class's prototype for raw ``features`` (n, d).

    The label comes from the neighbour ``vote`` or the ``linear`` head when one is given,
    from both fused when both are, else from the nearest prototype; ``None``/inf before any
    class is known. A head that is not ready yet gives way to the others. The vote looks
    at the embedding and, when it holds that view too, the standardised input (an export
    holds the first only); the linear head at both.
    """
    standardised = _standardise(normalizer, features)
    z = encode(encoder, standardised)
    d = head.class_distances(z)
    if d.shape[1] == 0 or not np.isfinite(d).any():
        return [None] * len(z), np.full(len(z), np.inf)
    slots = d.argmin(axis=1)
    beliefs = []
    if vote is not None and (shares := vote.shares((z, standardised)[: vote.n_views], d)) is not None:
        beliefs.append(shares)
    if linear is not None and linear.ready:
        beliefs.append(linear.probabilities(linear_inputs(z, standardised)))
    if beliefs:
        picked = fuse(*beliefs)
        slots = np.where(picked < d.shape[1], picked, slots)
    best = d[np.arange(len(z)), slots]
    return [labels[s] if s < len(labels) else None for s in slots], best


@dataclass(frozen=True)
class ModelSnapshot:
    """Frozen encoder, standardiser, prototypes and labels at one model version."""

    encoder: nn.Module
    normalizer: OnlineStandardizer
    head: PrototypeHead
    slot_labels: list[Label | None]
    model_version: int
    n_features: int
    embedding_dim: int
    samples_seen: int
    last_update: float | None
    vote: NeighbourVote | None = None
    linear: LinearHead | None = None
    created_at: float = field(default_factory=time.time)

    @classmethod
    def capture(cls, encoder, normalizer, head, slot_labels, vote=None, linear=None, **info) -> "ModelSnapshot":
        """Copy the live parts so later learning cannot change this snapshot."""
        return cls(
            encoder=copy.deepcopy(encoder).eval(),
            normalizer=copy.deepcopy(normalizer),
            head=copy.deepcopy(head),
            slot_labels=list(slot_labels),
            vote=vote.share() if vote is not None else None,  # its arrays are read-only: shared, not copied
            linear=copy.deepcopy(linear),
            **info,
        )

    @property
    def predictor(self) -> str:
        """Which head gives the labels: ``prototypes``, ``vote``, ``linear`` or ``fused`` (vote and linear head)."""
        if self.vote is not None and self.linear is not None:
            return "fused"
        return "linear" if self.linear is not None else "vote" if self.vote is not None else "prototypes"

    @property
    def classes(self) -> list[Label]:
        return [label for label in self.slot_labels if label is not None]

    def embed(self, features: np.ndarray) -> np.ndarray:
        """Embeddings of raw features (n, n_features)."""
        return embed_with(self.encoder, self.normalizer, features)

    def predict(self, features: np.ndarray) -> tuple[list[Label | None], np.ndarray]:
        """Predicted labels and squared distances to the predicted prototype."""
        return predict_with(self.encoder, self.normalizer, self.head, self.slot_labels, features,
                            vote=self.vote, linear=self.linear)
