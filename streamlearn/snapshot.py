"""An immutable copy of the model that request handlers can use while the learner keeps learning."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from streamlearn.model.choice import HEADS, weighted_picks
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
    weights: np.ndarray | None = None,
    lead: int = 0,
) -> tuple[list[Label | None], np.ndarray]:
    """Labels and squared distances to the predicted class's prototype for raw ``features`` (n, d).

    With ``weights`` (one per head of :data:`~streamlearn.model.choice.HEADS`), the label is
    the learner's weighted vote of the heads (ties to head ``lead``): the nearest prototype,
    the neighbour ``vote``, the ``linear`` head, and the last two fused; a head that is
    absent or not ready has no vote. Without, it comes from the vote or the linear head when
    one is given, from both fused when both are, else from the nearest prototype. ``None``/inf
    before any class is known. The vote looks at the embedding and, when it holds that view
    too, the standardised input (an export holds the first only); the linear head at both.
    """
    standardised = _standardise(normalizer, features)
    z = encode(encoder, standardised)
    d = head.class_distances(z)
    if d.shape[1] == 0 or not np.isfinite(d).any():
        return [None] * len(z), np.full(len(z), np.inf)
    slots = d.argmin(axis=1)
    shares = vote.shares((z, standardised)[: vote.n_views], d) if vote is not None else None
    probabilities = linear.probabilities(linear_inputs(z, standardised)) if linear is not None and linear.ready else None
    if weights is not None:
        picks = np.full((len(z), len(HEADS)), -1, dtype=np.int64)
        picks[:, 0] = slots
        if shares is not None:
            picks[:, 1] = shares.argmax(1)
        if probabilities is not None:
            picks[:, 2] = probabilities.argmax(1)
            if shares is not None:
                picks[:, 3] = fuse(shares, probabilities)
        picks[picks >= d.shape[1]] = -1  # a slot the prototypes do not know (yet) has no label to give
        slots = weighted_picks(picks, np.asarray(weights, dtype=np.float64), lead)
    elif (beliefs := [b for b in (shares, probabilities) if b is not None]):
        picked = fuse(*beliefs)
        slots = np.where(picked < d.shape[1], picked, slots)
    best = d[np.arange(len(z)), np.minimum(slots, d.shape[1] - 1)]
    return [labels[s] if 0 <= s < len(labels) else None for s in slots], best


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
    weights: tuple[float, ...] | None = None  # the heads' vote weights (None: the vote/linear rule, see predict_with)
    lead: int = 0
    created_at: float = field(default_factory=time.time)

    @classmethod
    def capture(cls, encoder, normalizer, head, slot_labels, vote=None, linear=None, weights=None, lead=0,
                **info) -> "ModelSnapshot":
        """Copy the live parts so later learning cannot change this snapshot."""
        return cls(
            encoder=copy.deepcopy(encoder).eval(),
            normalizer=copy.deepcopy(normalizer),
            head=copy.deepcopy(head),
            slot_labels=list(slot_labels),
            vote=vote.share() if vote is not None else None,  # its arrays are read-only: shared, not copied
            linear=copy.deepcopy(linear),
            weights=None if weights is None else tuple(float(w) for w in weights),
            lead=int(lead),
            **info,
        )

    @property
    def predictor(self) -> str:
        """The head that leads: ``prototypes``, ``vote``, ``linear`` or ``fused`` (vote and linear head)."""
        if self.weights is not None:
            return HEADS[self.lead]
        if self.vote is not None and self.linear is not None:
            return "fused"
        return "linear" if self.linear is not None else "vote" if self.vote is not None else "prototypes"

    @property
    def classes(self) -> list[Label]:
        return [label for label in self.slot_labels if label is not None]

    def embed(self, features: np.ndarray) -> np.ndarray:
        """Embeddings (n, embedding_dim) float32 of raw features (n, n_features); ValueError for other input."""
        return embed_with(self.encoder, self.normalizer, self._rows(features))

    def predict(self, features: np.ndarray) -> tuple[list[Label | None], np.ndarray]:
        """Predicted labels and squared distances to the predicted prototype; ValueError for other input."""
        return predict_with(self.encoder, self.normalizer, self.head, self.slot_labels, self._rows(features),
                            vote=self.vote, linear=self.linear, weights=self.weights, lead=self.lead)

    def _rows(self, features: np.ndarray) -> np.ndarray:
        """``features`` as float32 rows of this model's width, all finite (a library caller gets no API checks)."""
        x = np.asarray(features, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected rows of {self.n_features} features (shape (n, {self.n_features})), "
                             f"got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("features must be finite")
        return x
